//! Pure functions from a machine description to QEMU's command line: the one place vmrun's
//! QEMU command lines are composed (runs, bakes, warm captures and resumes, persistent VMs,
//! the KVM probe). Each piece returns its own arguments so it can be checked without
//! starting QEMU.

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::net::Network;
use crate::net::forward::Forward;

/// How QEMU runs guest code; written `kvm` or `tcg` wherever it is stored or shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A VM's size: its vCPUs and its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSize {
    pub cpus: u32,
    pub memory_mib: u64,
}

impl std::fmt::Display for MachineSize {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} cpus and {} MiB", self.cpus, self.memory_mib)
    }
}

/// Everything QEMU needs to know about one VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub accel: Accel,
    pub size: MachineSize,
    /// The VM's writable disk (a qcow2 overlay).
    pub disk: PathBuf,
    /// A cloud-init seed attached read-only, when the boot needs one.
    pub seed: Option<PathBuf>,
    /// The descriptor QEMU inherits for the serial console (a [`crate::qemu::serial::Console`]).
    pub console: RawFd,
    /// What the guest may reach; with [`Network::Outbound`] QEMU must be started in an
    /// isolated namespace ([`crate::net::isolate`]), where its forwards listen.
    pub network: Network,
    pub forwards: Vec<Forward>,
    /// The monitor and guest agent of a machine vmrun talks to while it runs.
    pub control: Option<Control>,
    /// A persistent VM's name: a guest reboot then resets the machine instead of ending QEMU.
    pub persistent: Option<String>,
}

/// What vmrun reaches a running machine through, and what a saved one resumes from. None of
/// it is part of a migrated state, so it may differ between the QEMU that saved a warm state
/// and each one that resumes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    pub qmp: PathBuf,
    pub guest_agent: PathBuf,
    /// A VM generation id (vmgenid) for a warm machine: a new one on every resume makes the
    /// guest kernel reseed its random number generator.
    pub generation: Option<String>,
    /// The guest's RAM as a memory backend of its own (a warm machine's) instead of QEMU's
    /// built-in RAM.
    pub ram: Option<Ram>,
    /// The saved state to resume from; `None` boots.
    pub incoming: Option<Incoming>,
    /// Under KVM, the named [`PORTABLE_CPU`] instead of the host's CPU: a state saved with it
    /// resumes on another host (TCG's CPU is the same everywhere already).
    pub portable_cpu: bool,
}

/// A warm machine's RAM: a memory backend named `ram0`, which a migrated or snapshotted
/// state names its RAM by (QEMU's built-in RAM has another name).
#[derive(Debug, Clone, PartialEq)]
pub enum Ram {
    File(RamFile),
    /// Anonymous memory: a persistent VM made from a warm state boots with it after its first
    /// start, so that snapshots saved in any of its starts load in any other.
    Anonymous,
}

/// Guest RAM backed by a file (`memory-backend-file`). The QEMU that saves a warm state maps
/// it shared, so the guest's RAM is written into the file, and migrates with `x-ignore-shared`,
/// so the saved device state leaves the RAM out. Each QEMU that resumes it maps the same file
/// private: pages are read from the page cache, which every clone on the host shares, and a
/// page the guest writes becomes the clone's own copy; the file never changes.
#[derive(Debug, Clone, PartialEq)]
pub struct RamFile {
    pub path: PathBuf,
    pub shared: bool,
}

/// A saved state to resume: QEMU starts with `-incoming defer` and is given the state over
/// its monitor once the migration capabilities are set (see [`crate::warm::resume`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incoming {
    /// How many images the disk's backing chain has, the disk itself included. A QEMU that
    /// resumes re-opens them all when the state is in, and by default drops their pages from
    /// the host's page cache then (`drop-cache`, meant for storage shared between hosts):
    /// every clone would evict the image the other clones read.
    pub layers: usize,
}

/// The CPU model of warm machines under KVM: x86-64-v3 as Haswell has it (AVX2, BMI1/2, FMA,
/// MOVBE), without TSX, and without PCID/INVPCID, which nested KVM on cloud CI runners does
/// not always pass on. Every CPU of GitHub's, GitLab's and the large clouds' x86 runners since
/// Intel Haswell (2013) and AMD Zen (2017) has these. `enforce`: on a host that lacks one,
/// QEMU refuses to start instead of running a different CPU than the state was saved with.
pub const PORTABLE_CPU: &str = "Haswell-noTSX,-pcid,-invpcid,enforce";

/// The whole command line, in one fixed order: device order decides PCI slots, which must
/// match between a warm state's saving QEMU and every resuming one.
pub fn command_line(m: &Machine) -> Vec<OsString> {
    let mut args = match &m.persistent {
        None => base_args(),
        Some(name) => [persistent_base_args(), name_args(name)].concat(),
    };
    let portable = m.control.as_ref().is_some_and(|c| c.portable_cpu);
    args.extend(match (m.accel, portable) {
        (Accel::Kvm, true) => os(&["-accel", "kvm", "-cpu", PORTABLE_CPU]),
        (accel, _) => accel_args(accel),
    });
    args.extend(size_args(m.size));
    if let Some(ram) = m.control.as_ref().and_then(|c| c.ram.as_ref()) {
        args.extend(ram_args(ram, m.size));
    }
    let layers = m
        .control
        .as_ref()
        .and_then(|c| c.incoming)
        .map_or(0, |i| i.layers);
    args.extend(disk_args(&m.disk, layers));
    if let Some(seed) = &m.seed {
        args.extend(seed_args(seed));
    }
    args.extend(net_args(&m.forwards, m.network));
    args.extend(serial_args(m.console));
    args.extend(rng_args());
    if let Some(control) = &m.control {
        args.extend(qmp_args(&control.qmp));
        args.extend(guest_agent_args(&control.guest_agent));
        if let Some(generation) = &control.generation {
            args.extend([
                "-device".into(),
                format!("vmgenid,guid={generation}").into(),
            ]);
        }
        if control.incoming.is_some() {
            args.extend(os(&["-incoming", "defer"]));
        }
    }
    args
}

/// The KVM probe's machine: vmrun's machine type and `accel` arguments, 64 MiB, the probe
/// disk on IDE (what SeaBIOS boots without drivers), COM1 into `console`, and isa-debug-exit
/// so the guest can end QEMU itself.
pub fn probe_command_line(accel: &[OsString], disk: &Path, console: RawFd) -> Vec<OsString> {
    let mut line = base_args();
    line.extend_from_slice(accel);
    line.extend(["-m".into(), "64M".into()]);
    line.extend([
        "-drive".into(),
        option_list("file=", disk, ",format=raw,if=ide"),
    ]);
    line.extend(serial_args(console));
    line.extend([
        "-device".into(),
        "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
    ]);
    line
}

/// A paused KVM machine with the [`PORTABLE_CPU`] and nothing else: QEMU refuses to start it
/// at once on a host whose CPU lacks a feature of the model (`enforce`).
pub fn portable_cpu_check_command_line() -> Vec<OsString> {
    let mut line = base_args();
    line.extend(os(&[
        "-accel",
        "kvm",
        "-cpu",
        PORTABLE_CPU,
        "-m",
        "64M",
        "-S",
    ]));
    line
}

/// Headless, no default devices, no host config files; a guest reboot ends QEMU so a failed
/// boot or a guest that panics cannot loop forever.
fn base_args() -> Vec<OsString> {
    os(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-machine",
        "q35",
    ])
}

pub fn accel_args(accel: Accel) -> Vec<OsString> {
    match accel {
        Accel::Kvm => os(&["-accel", "kvm", "-cpu", "host"]),
        // Multi-threaded TCG so each vCPU gets a host thread. The translation cache is
        // capped: QEMU's default (1 GiB) lets a clone running varied code grow it to 300-600
        // MB, which multiplies by `--jobs`. 64 MiB held a code-heavy command's clone at about
        // 220 MB PSS with no slower cold boot or command; 32 MiB made cold boots 30% slower.
        Accel::Tcg => os(&["-accel", "tcg,thread=multi,tb-size=64"]),
    }
}

fn size_args(size: MachineSize) -> Vec<OsString> {
    vec![
        "-smp".into(),
        size.cpus.to_string().into(),
        "-m".into(),
        format!("{}M", size.memory_mib).into(),
    ]
}

/// The disk; with `keep_cached` layers, each one's file node told to keep its pages in the
/// host's page cache when a migration completes (see [`Incoming::layers`]).
fn disk_args(disk: &Path, keep_cached: usize) -> Vec<OsString> {
    let mut options = String::from(",if=virtio,format=qcow2,discard=unmap");
    for layer in 0..keep_cached {
        options.push(',');
        options.push_str(&"backing.".repeat(layer));
        options.push_str("file.drop-cache=off");
    }
    vec!["-drive".into(), option_list("file=", disk, &options)]
}

/// The guest's RAM from `ram`'s file, as the machine's memory.
fn ram_args(ram: &Ram, size: MachineSize) -> Vec<OsString> {
    let backend = match ram {
        Ram::File(file) => {
            let share = if file.shared { "on" } else { "off" };
            let prefix = format!(
                "memory-backend-file,id=ram0,size={}M,mem-path=",
                size.memory_mib
            );
            option_list(&prefix, &file.path, &format!(",share={share}"))
        }
        Ram::Anonymous => format!("memory-backend-ram,id=ram0,size={}M", size.memory_mib).into(),
    };
    vec![
        "-object".into(),
        backend,
        "-machine".into(),
        "memory-backend=ram0".into(),
    ]
}

fn seed_args(seed: &Path) -> Vec<OsString> {
    vec![
        "-drive".into(),
        option_list("file=", seed, ",if=virtio,format=raw,readonly=on"),
    ]
}

/// User networking (netdev `net0`) with host forwards as QEMU's rules (the form
/// `hostfwd_add net0 RULE` takes at run time too). [`Network::None`] restricts the guest to
/// those forwards; [`Network::Outbound`] binds them in the isolated namespace.
fn net_args(forwards: &[Forward], network: Network) -> Vec<OsString> {
    let mut netdev = String::from("user,id=net0");
    if network == Network::None {
        netdev.push_str(",restrict=on");
    }
    for forward in forwards {
        netdev.push_str(",hostfwd=");
        netdev.push_str(&forward.rule(network));
    }
    os(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"])
}

/// Headless like [`base_args`], but a guest reboot resets the machine instead of ending QEMU:
/// a long-lived VM comes back from `reboot` in the guest.
fn persistent_base_args() -> Vec<OsString> {
    base_args()
        .into_iter()
        .filter(|a| a != "-no-reboot")
        .collect()
}

/// The guest's name in QEMU's process title and messages.
fn name_args(name: &str) -> Vec<OsString> {
    vec!["-name".into(), option_list("", Path::new(name), "")]
}

/// A QMP monitor on a unix socket that QEMU listens on without waiting for a client.
fn qmp_args(socket: &Path) -> Vec<OsString> {
    vec![
        "-chardev".into(),
        option_list("socket,id=qmp,server=on,wait=off,path=", socket, ""),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
    ]
}

/// The guest agent's channel: a virtio-serial port named `org.qemu.guest_agent.0` (which
/// qemu-guest-agent in the guest opens), backed by a unix socket that QEMU listens on.
fn guest_agent_args(socket: &Path) -> Vec<OsString> {
    vec![
        "-chardev".into(),
        option_list("socket,id=qga0,server=on,wait=off,path=", socket, ""),
        "-device".into(),
        "virtio-serial-pci,id=virtio-serial0".into(),
        "-device".into(),
        "virtserialport,bus=virtio-serial0.0,chardev=qga0,name=org.qemu.guest_agent.0".into(),
    ]
}

/// The serial console into the inherited descriptor `fd`, a pipe vmrun reads: the guest's
/// console never reaches a file directly, where a guest writing forever would fill the disk.
/// A `file` chardev opens `/dev/fd/N` anew, which for a pipe is the same pipe.
fn serial_args(fd: RawFd) -> Vec<OsString> {
    vec![
        "-chardev".into(),
        format!("file,id=serial0,path=/dev/fd/{fd}").into(),
        "-serial".into(),
        "chardev:serial0".into(),
    ]
}

/// A virtio RNG: the guest's kernel seeds its pool from the host at boot instead of waiting
/// for entropy, which under TCG takes long.
fn rng_args() -> Vec<OsString> {
    os(&[
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        "virtio-rng-pci,rng=rng0",
    ])
}

/// `prefix` + `path` with commas doubled (QEMU's escape in option lists) + `suffix`.
fn option_list(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut bytes = prefix.as_bytes().to_vec();
    for &b in path.as_os_str().as_bytes() {
        bytes.push(b);
        if b == b',' {
            bytes.push(b',');
        }
    }
    bytes.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(bytes)
}

fn os(items: &[&str]) -> Vec<OsString> {
    items.iter().map(|s| OsStr::new(s).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            accel: Accel::Tcg,
            size: MachineSize {
                cpus: 2,
                memory_mib: 1024,
            },
            disk: "/runs/a/disk.qcow2".into(),
            seed: Some("/runs/a/seed.iso".into()),
            console: 7,
            network: Network::Host,
            forwards: vec![Forward::ssh(40022)],
            control: None,
            persistent: None,
        }
    }

    fn text(line: &[OsString]) -> Vec<String> {
        line.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_warm_machines_saving_and_resuming_lines_differ_only_in_instance_parts() {
        let warm = |dir: &str, generation: &str, incoming: Option<Incoming>| Machine {
            disk: format!("{dir}/disk.qcow2").into(),
            seed: None,
            control: Some(Control {
                qmp: format!("{dir}/qmp.sock").into(),
                guest_agent: format!("{dir}/qga.sock").into(),
                generation: Some(generation.into()),
                ram: Some(Ram::File(RamFile {
                    path: "/store/k/warm/ram".into(),
                    shared: incoming.is_none(),
                })),
                incoming,
                portable_cpu: true,
            }),
            ..machine()
        };
        let save = command_line(&warm("/a", "g1", None));
        let incoming = Incoming { layers: 3 };
        let resume = command_line(&warm("/b", "g2", Some(incoming)));
        assert_eq!(resume.len(), save.len() + 2);
        let shape = |line: &[OsString]| -> Vec<String> {
            text(line)
                .iter()
                .map(|a| {
                    a.replace("/a/", "/X/")
                        .replace("/b/", "/X/")
                        .replace("g1", "G")
                        .replace("g2", "G")
                        .replace("share=on", "share=S")
                        .replace("share=off", "share=S")
                        .replace(
                            ",file.drop-cache=off,backing.file.drop-cache=off,\
                             backing.backing.file.drop-cache=off",
                            "",
                        )
                })
                .collect()
        };
        assert_eq!(shape(&save), shape(&resume[..save.len()]));
        assert_eq!(text(&resume[save.len()..]), ["-incoming", "defer"]);
        let (save, resume) = (text(&save), text(&resume));
        let at = |needle: &str| save.iter().position(|a| a.contains(needle)).unwrap();
        assert!(at("qmp.sock") < at("qga.sock") && at("qga.sock") < at("vmgenid,guid=g1"));
        assert!(
            at("virtio-rng-pci") < at("qmp.sock"),
            "control after the test machine"
        );
        // The saving QEMU writes the RAM into the file; resuming ones map it private.
        let ram = "memory-backend-file,id=ram0,size=1024M,mem-path=/store/k/warm/ram";
        assert_eq!(save[at(ram)], format!("{ram},share=on"));
        assert_eq!(resume[at(ram)], format!("{ram},share=off"));
        assert_eq!(save[at(ram) + 2], "memory-backend=ram0");
        // Only the resuming QEMU keeps its chain's page cache when the state is in.
        assert!(!save[at("-drive") + 1].contains("drop-cache"));
        assert!(resume[at("-drive") + 1].ends_with(
            "discard=unmap,file.drop-cache=off,backing.file.drop-cache=off,\
             backing.backing.file.drop-cache=off"
        ));
    }

    #[test]
    fn warm_machines_under_kvm_run_the_portable_cpu_and_others_the_hosts() {
        let with = |portable_cpu| Machine {
            accel: Accel::Kvm,
            control: Some(Control {
                qmp: "/q".into(),
                guest_agent: "/g".into(),
                generation: None,
                ram: None,
                incoming: None,
                portable_cpu,
            }),
            ..machine()
        };
        let cpu = |m: &Machine| {
            let line = text(&command_line(m));
            line[line.iter().position(|a| a == "-cpu").unwrap() + 1].clone()
        };
        assert_eq!(cpu(&with(true)), PORTABLE_CPU);
        assert_eq!(cpu(&with(false)), "host");
        let cold = Machine {
            accel: Accel::Kvm,
            ..machine()
        };
        assert_eq!(cpu(&cold), "host");
        // TCG's CPU is the same on every host: no model is named.
        let tcg = Machine {
            accel: Accel::Tcg,
            ..with(true)
        };
        assert!(!text(&command_line(&tcg)).contains(&"-cpu".to_owned()));
    }

    #[test]
    fn a_persistent_machine_is_named_resets_on_reboot_and_has_no_vmgenid() {
        let kept = Machine {
            seed: None,
            control: Some(Control {
                qmp: "/run/db/qmp.sock".into(),
                guest_agent: "/run/db/qga.sock".into(),
                generation: None,
                ram: None,
                incoming: None,
                portable_cpu: false,
            }),
            persistent: Some("db".into()),
            ..machine()
        };
        let line = text(&command_line(&kept));
        assert_eq!(
            line[line.iter().position(|a| a == "-accel").unwrap() + 1],
            "tcg,thread=multi,tb-size=64"
        );
        assert!(!line.contains(&"-no-reboot".to_owned()));
        assert_eq!(
            line[line.iter().position(|a| a == "-name").unwrap() + 1],
            "db"
        );
        assert!(line.iter().any(|a| a.contains("path=/run/db/qmp.sock")));
        assert!(!line.iter().any(|a| a.contains("vmgenid")));
    }

    #[test]
    fn whole_command_line() {
        let line: Vec<String> = command_line(&machine())
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            line.join(" "),
            "-nodefaults -no-user-config -display none -no-reboot -machine q35 \
             -accel tcg,thread=multi,tb-size=64 -smp 2 -m 1024M \
             -drive file=/runs/a/disk.qcow2,if=virtio,format=qcow2,discard=unmap \
             -drive file=/runs/a/seed.iso,if=virtio,format=raw,readonly=on \
             -netdev user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22 \
             -device virtio-net-pci,netdev=net0 \
             -chardev file,id=serial0,path=/dev/fd/7 -serial chardev:serial0 \
             -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0"
        );
    }

    #[test]
    fn no_seed_no_seed_drive() {
        let m = Machine {
            seed: None,
            ..machine()
        };
        assert_eq!(
            command_line(&m).iter().filter(|a| *a == "-drive").count(),
            1
        );
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        assert_eq!(
            disk_args(Path::new("/a,b/c d.qcow2"), 0)[1],
            "file=/a,,b/c d.qcow2,if=virtio,format=qcow2,discard=unmap"
        );
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        assert_eq!(
            accel_args(Accel::Kvm),
            os(&["-accel", "kvm", "-cpu", "host"])
        );
    }

    #[test]
    fn persistent_machines_reset_on_reboot() {
        let base = base_args();
        let persistent = persistent_base_args();
        assert!(base.contains(&"-no-reboot".into()));
        assert_eq!(persistent.len(), base.len() - 1);
        assert!(!persistent.contains(&"-no-reboot".into()));
    }

    #[test]
    fn monitor_and_agent_sockets() {
        let qmp: Vec<_> = qmp_args(Path::new("/run/v,m/qmp.sock"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            qmp.join(" "),
            "-chardev socket,id=qmp,server=on,wait=off,path=/run/v,,m/qmp.sock \
             -mon chardev=qmp,mode=control"
        );
        let qga: Vec<_> = guest_agent_args(Path::new("/run/vm/qga.sock"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            qga.join(" "),
            "-chardev socket,id=qga0,server=on,wait=off,path=/run/vm/qga.sock \
             -device virtio-serial-pci,id=virtio-serial0 \
             -device virtserialport,bus=virtio-serial0.0,chardev=qga0,name=org.qemu.guest_agent.0"
        );
        assert_eq!(name_args("db"), os(&["-name", "db"]));
    }

    #[test]
    fn forwards_bind_loopback_unless_an_address_is_given() {
        let forwards = [Forward::ssh(2222), "udp:0.0.0.0:5353:53".parse().unwrap()];
        let netdev = net_args(&forwards, Network::Host);
        assert_eq!(
            netdev[1],
            "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:0.0.0.0:5353-:53"
        );
    }

    #[test]
    fn no_network_restricts_the_guest_to_the_forwards() {
        let netdev = net_args(&[Forward::ssh(2222)], Network::None);
        assert_eq!(
            netdev[1],
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"
        );
    }

    #[test]
    fn isolated_forwards_listen_on_the_namespaces_addresses() {
        let netdev = net_args(&[Forward::ssh(2222)], Network::Outbound);
        assert_eq!(netdev[1], "user,id=net0,hostfwd=tcp::2222-:22");
    }
}
