//! The command-line tree (DESIGN.md, "Command-line contract"). Raw flags only: validation into
//! typed values happens where each command starts, once.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::net::Network;
use crate::net::forward::Forward;
use crate::sha256::Sha256;

#[derive(Debug, Parser)]
#[command(
    name = "vmrun",
    version,
    about = "Run a project's tests inside throwaway QEMU virtual machines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a cloud-init NoCloud seed ISO (volume label `cidata`), like cloud-localds.
    Seed(SeedArgs),
    /// Provision an image with cloud-init and store it under a name.
    Bake(BakeArgs),
    /// List baked images, or remove one.
    Images(ImagesArgs),
    /// Run the project's tests in a throwaway VM.
    Test(TestArgs),
    /// Open a shell in the VM of a kept run.
    Ssh(SshArgs),
    /// Resume the VM a failed run left in a bundle (`vmrun test --capture-failures`) and
    /// run COMMAND in it over SSH, or a shell; the bundle stays as it is.
    Open(OpenArgs),
    /// Manage persistent VMs run as systemd user units.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Check what vmrun needs on this host (QEMU, KVM, tools, namespaces, systemd, disk space)
    /// and say what to install or change; exit 1 when something vmrun needs fails.
    Doctor(DoctorArgs),
    /// Internal: start QEMU in an isolated network namespace (`outbound` network).
    #[command(hide = true)]
    Isolate(IsolateArgs),
    /// Internal: rsync's remote shell during a run, relayed over the run's SSH session.
    #[command(name = crate::ssh::relay::SUBCOMMAND, hide = true)]
    RsyncRelay(RsyncRelayArgs),
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Where to write the ISO.
    #[arg(short = 'o', long = "output", value_name = "OUT.iso")]
    pub output: PathBuf,
    #[arg(long, value_name = "FILE")]
    pub user_data: PathBuf,
    /// Default: an instance-id derived from the inputs and a local-hostname.
    #[arg(long, value_name = "FILE")]
    pub meta_data: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub network_config: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub vendor_data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BakeArgs {
    /// A local qcow2/raw file, an http(s) URL, or debian:bookworm; default: `image:` in vmrun.yaml.
    #[arg(long, value_name = "PATH|URL|debian:bookworm")]
    pub image: Option<String>,
    /// Expected sha256 of the source image, 64 hex digits (checked after download or import).
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<Sha256>,
    /// Name for the baked image; default: derived from the source (e.g. debian-bookworm).
    #[arg(long)]
    pub name: Option<String>,
    /// vmrun.yaml to read; default: ./vmrun.yaml if it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Give up on provisioning after this long (e.g. 30m).
    #[arg(long, value_name = "DUR", default_value = "30m")]
    pub timeout: String,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<ImagesCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Remove a baked image.
    Rm { name: String },
    /// Write a baked image (its disk layers, keys and warm state) to one file.
    Export {
        name: String,
        /// The file to write; `-` for standard output.
        #[arg(short, long, value_name = "FILE|-")]
        output: PathBuf,
    },
    /// Store an image written by `images export`, checked, under its key.
    Import {
        /// The file to read; `-` for standard input.
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
        /// The name to give it; default: the name it was exported under.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Baked image to run in; default: `image:` in vmrun.yaml (baked first if it is a source).
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The directory synced into the guest; default: the current directory.
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// On failure, keep the VM up (until Ctrl-C) and print how to get in.
    #[arg(long)]
    pub keep: bool,
    /// When a run fails, times out or is interrupted, save its VM as it was into
    /// DIR/RUN_ID.vmrun, for `vmrun open`.
    #[arg(long, value_name = "DIR")]
    pub capture_failures: Option<PathBuf>,
    /// End the command after this long (exit 124); default: `test.timeout`.
    #[arg(long, value_name = "DUR")]
    pub timeout: Option<String>,
    /// Boot the image instead of resuming its warm state.
    #[arg(long)]
    pub cold: bool,
    /// Give up when the guest is not reachable over SSH after this long.
    #[arg(long, value_name = "DUR", default_value = "5m")]
    pub boot_timeout: String,
    /// Run N times, each in a fresh VM.
    #[arg(long, value_name = "N")]
    pub repeat: Option<u32>,
    /// Repeat until a run fails (at most --repeat times when given, else without end).
    #[arg(long)]
    pub until_fail: bool,
    /// Runs at the same time.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub jobs: u32,
    /// Run shard K of N: exports VMRUN_SHARD_INDEX=K and VMRUN_SHARD_COUNT=N to the command.
    /// `auto`: K and N from the CI system (VMRUN_SHARD=K/N, GitLab, Buildkite, CircleCI).
    #[arg(long, value_name = "K/N|auto")]
    pub shard: Option<String>,
    /// What the guest may reach: none, outbound (the outside world, not the host) or host
    /// (also the host's loopback, as 10.0.2.2); default: `test.network` from vmrun.yaml, else
    /// outbound.
    #[arg(long, value_name = "NETWORK")]
    pub network: Option<Network>,
    /// Write a JUnit XML report of the runs to FILE (one testcase per run).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the summary table as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json_report: Option<PathBuf>,
    /// Where artifacts (`test.artifacts`) are copied; one subdirectory per run when repeating.
    #[arg(long, value_name = "DIR", default_value = "vmrun-artifacts")]
    pub artifacts_dir: PathBuf,
    /// The command to run in the guest; default: `test.command` from vmrun.yaml.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// An array of {check, status: ok|warn|fail, detail, fix} instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IsolateArgs {
    /// The VM's directory for slirp4netns's socket and the namespace's resolv.conf.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    #[arg(long, value_name = "[tcp|udp:]ADDR:HOST:GUEST")]
    pub forward: Vec<Forward>,
    /// QEMU and its arguments.
    #[arg(last = true, required = true, value_name = "QEMU")]
    pub qemu: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct RsyncRelayArgs {
    /// The run's relay socket.
    pub socket: PathBuf,
    /// What rsync gives its remote shell: the host, then the remote command's words.
    #[arg(last = true, required = true, value_name = "REMOTE")]
    pub remote: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The run's id, as `vmrun test` prints it.
    pub run_id: String,
    /// A command to run instead of a login shell.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    /// The bundle, `RUN_ID.vmrun`.
    pub bundle: PathBuf,
    /// Print what is in the bundle instead of opening it.
    #[arg(long)]
    pub info: bool,
    /// With --info: as JSON.
    #[arg(long, requires = "info")]
    pub json: bool,
    /// A command to run instead of a login shell.
    #[arg(last = true, value_name = "COMMAND", conflicts_with = "info")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create and start a VM; returns when its guest answers SSH.
    Create(VmCreateArgs),
    /// Start a VM; returns when its guest answers SSH.
    Start {
        name: String,
        /// Return once QEMU runs, without waiting for the guest to answer SSH.
        #[arg(long)]
        no_wait: bool,
    },
    Stop {
        name: String,
    },
    /// Stop and start a VM; returns when its guest answers SSH.
    Restart {
        name: String,
        /// Return once QEMU runs, without waiting for the guest to answer SSH.
        #[arg(long)]
        no_wait: bool,
    },
    Delete {
        name: String,
    },
    Status {
        name: String,
    },
    Logs {
        name: String,
    },
    Ssh {
        name: String,
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Forward {
        name: String,
        #[arg(value_parser = ["add", "remove"])]
        action: String,
        #[arg(value_name = "[tcp|udp:]HOST:GUEST")]
        spec: String,
    },
    Snapshot {
        name: String,
        #[arg(value_parser = ["save", "load", "list", "delete"])]
        action: String,
        tag: Option<String>,
    },
    /// Start the VM whenever the user's systemd manager starts (at login; at boot with lingering).
    Enable {
        name: String,
    },
    /// Stop starting the VM with the user's systemd manager.
    Disable {
        name: String,
    },
    /// The VM unit's ExecStop: ACPI power-off over QMP (and the guest agent), then wait for QEMU to
    /// exit.
    #[command(hide = true)]
    Powerdown {
        #[arg(long, value_name = "SOCKET")]
        qmp: PathBuf,
        #[arg(long, value_name = "SOCKET")]
        agent: PathBuf,
    },
    /// The VM unit's ExecStart: QEMU, with its serial console written capped to a log.
    #[command(hide = true)]
    Qemu {
        #[arg(long, value_name = "LOG")]
        console: PathBuf,
        #[arg(last = true, required = true, value_name = "QEMU")]
        argv: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Args)]
pub struct VmCreateArgs {
    pub name: String,
    #[arg(long)]
    pub image: String,
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    #[arg(long, value_name = "[tcp|udp:]HOST:GUEST")]
    pub forward: Vec<String>,
    /// What the guest may reach: none, outbound (the outside world, not the host) or host.
    #[arg(long, value_name = "NETWORK", default_value_t = Network::Outbound)]
    pub network: Network,
    /// Return once QEMU runs, without waiting for the guest to answer SSH.
    #[arg(long)]
    pub no_wait: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// rsync appends the host and the remote command, options and all, after the relay's `--`.
    #[test]
    fn the_rsync_relay_takes_rsyncs_words_and_is_hidden() {
        let cli = Cli::try_parse_from([
            "vmrun",
            "__rsync-relay",
            "/r/ssh/relay",
            "--",
            "guest",
            "rsync",
            "--server",
            "-logDtpre.iLsfxCIvu",
            ".",
        ])
        .unwrap();
        let Command::RsyncRelay(args) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(args.socket, PathBuf::from("/r/ssh/relay"));
        assert_eq!(
            args.remote,
            ["guest", "rsync", "--server", "-logDtpre.iLsfxCIvu", "."]
        );
        let help = Cli::command().render_help().to_string();
        assert!(!help.contains("rsync-relay"), "{help}");
    }

    #[test]
    fn test_command_after_double_dash() {
        let cli =
            Cli::try_parse_from(["vmrun", "test", "--repeat", "3", "--", "pytest", "-x"]).unwrap();
        let Command::Test(args) = cli.command else {
            panic!("not test")
        };
        assert_eq!(args.repeat, Some(3));
        assert_eq!(args.command, ["pytest", "-x"]);
    }

    #[test]
    fn bake_sha256_is_parsed_before_anything_runs() {
        let digest = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        let cli =
            Cli::try_parse_from(["vmrun", "bake", "--image", "d.img", "--sha256", digest]).unwrap();
        let Command::Bake(args) = cli.command else {
            panic!("not bake")
        };
        assert_eq!(args.sha256, Some(Sha256::of("test")));
        let err = Cli::try_parse_from(["vmrun", "bake", "--image", "d.img", "--sha256", "ABC"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid sha256 `ABC`: expected 64 hex digits"),
            "{err}"
        );
    }

    #[test]
    fn vm_forward_rejects_unknown_action() {
        assert!(Cli::try_parse_from(["vmrun", "vm", "forward", "db", "move", "8080:80"]).is_err());
    }
}
