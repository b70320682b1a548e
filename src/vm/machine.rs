//! The QEMU command line of a persistent VM, from its record and layout.

use std::ffi::OsString;

use super::Error;
use super::layout::VmLayout;
use super::record::VmRecord;
use crate::net::isolate;
use crate::qemu::args::{Control, Machine, Ram};
use crate::warm::{self, WarmState};

/// The unit's command: QEMU (for the `outbound` network, in vmrun's isolated namespace, with
/// its files in the runtime directory) and its arguments: headless, the VM's overlay disk,
/// user networking with the SSH forward and the user's, the serial console into the pipe the
/// unit's console writer makes ([`super::console`]), the QMP and guest-agent sockets.
///
/// A VM made from a warm state has the warm machine's devices, in the same order, at every
/// start: snapshots name the RAM and devices they hold, so one saved in any start loads in
/// any other. With `resume` (its first start), the machine is the warm state's clone,
/// waiting for the state ([`super::warm_start`]); later starts boot its disk with RAM of
/// its own.
pub fn qemu_argv(
    record: &VmRecord,
    layout: &VmLayout,
    resume: Option<&WarmState>,
) -> Result<Vec<OsString>, Error> {
    let cold = Machine {
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
    let machine = match (record.warm, resume) {
        (None, _) => cold,
        (Some(_), Some(state)) => state.clone_machine(&cold, &layout.runtime)?,
        (Some(_), None) => Machine {
            control: Some(warm::machine::control(
                &layout.runtime,
                Ram::Anonymous,
                None,
            )),
            ..cold
        },
    };
    let (program, args) = isolate::command(&machine, &layout.runtime, &record.qemu)?;
    Ok(std::iter::once(program.into_os_string())
        .chain(args)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Home;
    use crate::qemu::args::{Accel, MachineSize, command_line};
    use crate::vm::record::WarmStart;
    use std::path::Path;

    fn record() -> VmRecord {
        VmRecord {
            name: "db".into(),
            image: "base".into(),
            image_key: "k".into(),
            cpus: 2,
            memory_mib: 1024,
            accel: Accel::Tcg,
            ssh_port: 40022,
            forwards: vec!["udp:5353:53".parse().unwrap()],
            network: crate::net::Network::Host,
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            created: 1,
            warm: None,
        }
    }

    /// A line's devices and their order: what a migrated or snapshotted state must find
    /// again. Left out is what may differ between the QEMU that saved a warm state and a VM
    /// that resumes it: the name, `-no-reboot`, `-incoming`, paths, forwards, the vmgenid
    /// generation, how the RAM file is mapped, the page-cache options.
    fn devices(line: &[OsString]) -> Vec<String> {
        let mut out = Vec::new();
        let mut args = line.iter().map(|a| a.to_string_lossy().into_owned());
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-name" | "-incoming" => drop(args.next()),
                "-no-reboot" => {}
                _ => out.push(
                    arg.split(',')
                        .filter(|o| {
                            !["hostfwd=", "share=", "guid=", "mem-path="]
                                .iter()
                                .any(|p| o.starts_with(p))
                                && !o.contains("drop-cache")
                        })
                        .map(|o| match o.split_once('=') {
                            Some((key, value)) if value.starts_with('/') => format!("{key}=/"),
                            _ => o.to_owned(),
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            }
        }
        out
    }

    #[test]
    fn a_vm_made_from_a_warm_state_has_the_saving_machines_devices_at_every_start() {
        let dir = tempfile::tempdir().unwrap();
        let size = MachineSize {
            cpus: 2,
            memory_mib: 1024,
        };
        let entry = dir.path().join("store/k");
        let warm_dir = entry.join(crate::warm::DIR);
        std::fs::create_dir_all(&warm_dir).unwrap();
        std::fs::write(entry.join("disk.raw"), [0u8; 512]).unwrap();
        crate::disk::Overlay::create(&warm_dir.join("disk.qcow2"), &entry.join("disk.raw"))
            .unwrap();
        let saving = crate::warm::saving_machine(
            Accel::Tcg,
            size,
            warm_dir.join("disk.qcow2"),
            9,
            40000,
            &dir.path().join("capture"),
            &warm_dir,
        );
        let saved = command_line(&saving);
        let state = WarmState {
            disk: warm_dir.join("disk.qcow2"),
            ram: warm_dir.join("ram"),
            state: warm_dir.join("state"),
            machine: crate::warm::machine::tests::saved(),
        };
        let db = crate::name::VmName::new("db").unwrap();
        let layout = VmLayout::new(&Home::under(dir.path()), Path::new("/u"), &db);
        std::fs::create_dir_all(&layout.state).unwrap();
        crate::disk::Overlay::create(&layout.disk(), &state.disk).unwrap();
        let record = VmRecord {
            warm: Some(WarmStart { resume: true }),
            ..record()
        };
        let first = qemu_argv(&record, &layout, Some(&state)).unwrap();
        let later = qemu_argv(&record, &layout, None).unwrap();
        let text = |line: &[OsString]| -> Vec<String> {
            line.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert!(devices(&saved).contains(&"vmgenid".to_owned()));
        assert_eq!(devices(&first[1..]), devices(&saved));
        assert_eq!(text(&first[first.len() - 2..]), ["-incoming", "defer"]);
        let ram = text(&first)
            .into_iter()
            .find(|a| a.starts_with("memory-backend-file"))
            .unwrap();
        assert!(ram.contains("/store/k/warm/ram,share=off"), "{ram}");
        // Later starts boot with RAM of their own, under the same name.
        let with_own_ram: Vec<String> = devices(&saved)
            .iter()
            .map(|a| a.replace("memory-backend-file", "memory-backend-ram"))
            .collect();
        assert_eq!(devices(&later[1..]), with_own_ram);
        assert!(!text(&later).contains(&"-incoming".to_owned()));
        // Each start has a generation of its own.
        let guid = |line: &[OsString]| text(line).into_iter().find(|a| a.contains("guid="));
        assert_ne!(guid(&first), guid(&later));
        assert_ne!(guid(&first), guid(&saved));
    }

    #[test]
    fn whole_command_line() {
        let db = crate::name::VmName::new("db").unwrap();
        let layout = VmLayout::new(&Home::under(Path::new("/v")), Path::new("/u"), &db);
        let record = record();
        let line: Vec<String> = qemu_argv(&record, &layout, None)
            .unwrap()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            line.join(" "),
            "/usr/bin/qemu-system-x86_64 -nodefaults -no-user-config -display none \
             -machine q35 -name db \
             -accel tcg,thread=multi,tb-size=64 -smp 2 -m 1024M \
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
