//! The QEMU command line of a persistent VM, from its record and layout.

use std::ffi::OsString;

use super::layout::VmLayout;
use super::record::VmRecord;
use crate::net::isolate;
use crate::qemu::args::{Control, Machine, command_line};

/// The unit's command: QEMU (for the `outbound` network, in vmrun's isolated namespace, with
/// its files in the runtime directory) and its arguments: headless, the VM's overlay disk,
/// user networking with the SSH forward and the user's, the serial console into the pipe the
/// unit's console writer makes ([`super::console`]), the QMP and guest-agent sockets.
pub fn qemu_argv(record: &VmRecord, layout: &VmLayout) -> Result<Vec<OsString>, isolate::Error> {
    let machine = Machine {
        accel: record.accel,
        size: record.size(),
        disk: layout.disk(),
        seed: None,
        console: super::console::CONSOLE_FD,
        network: record.network,
        forwards: record.all_forwards(),
        control: Some(Control {
            qmp: layout.qmp_socket(),
            guest_agent: layout.agent_socket(),
            generation: None,
            ram: None,
            incoming: None,
            portable_cpu: false,
        }),
        persistent: Some(record.name.clone()),
    };
    let (program, args) = isolate::command(
        machine.network,
        &layout.runtime,
        &machine.forwards,
        &record.qemu,
        command_line(&machine),
    )?;
    Ok(std::iter::once(program.into_os_string())
        .chain(args)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Home;
    use std::path::Path;

    #[test]
    fn whole_command_line() {
        let db = crate::name::VmName::new("db").unwrap();
        let layout = VmLayout::new(&Home::under(Path::new("/v")), Path::new("/u"), &db);
        let record = VmRecord {
            name: "db".into(),
            image: "base".into(),
            image_key: "k".into(),
            cpus: 2,
            memory_mib: 1024,
            accel: crate::qemu::args::Accel::Tcg,
            ssh_port: 40022,
            forwards: vec!["udp:5353:53".parse().unwrap()],
            network: crate::net::Network::Host,
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            created: 1,
        };
        let line: Vec<String> = qemu_argv(&record, &layout)
            .unwrap()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            line.join(" "),
            "/usr/bin/qemu-system-x86_64 -nodefaults -no-user-config -display none \
             -machine q35 -name db \
             -accel tcg,thread=multi -smp 2 -m 1024M \
             -drive file=/v/state/vms/db/disk.qcow2,if=virtio,format=qcow2,discard=unmap \
             -netdev user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=udp:127.0.0.1:5353-:53 \
             -device virtio-net-pci,netdev=net0 \
             -chardev file,id=serial0,path=/dev/fd/3 -serial chardev:serial0 \
             -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 \
             -chardev socket,id=qmp,server=on,wait=off,path=/v/run/vms/db/qmp.sock \
             -mon chardev=qmp,mode=control \
             -chardev socket,id=qga0,server=on,wait=off,path=/v/run/vms/db/qga.sock \
             -device virtio-serial-pci,id=virtio-serial0 \
             -device virtserialport,bus=virtio-serial0.0,chardev=qga0,name=org.qemu.guest_agent.0"
        );
    }
}
