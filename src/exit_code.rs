//! vmrun's exit codes: a contract with the scripts and CI pipelines that call it.
//!
//! `vmrun test` exits with the guest command's own code, so vmrun's own failures use codes
//! from a block a test suite is unlikely to return (see README, "Exit codes").

/// Command-line usage error (clap's own code).
pub const USAGE: u8 = 2;
/// The guest command ran past `--timeout`.
pub const TIMEOUT: u8 = 124;
/// Bad input: a configuration file, an argument value, or an input file that cannot be used.
pub const BAD_INPUT: u8 = 240;
/// A program vmrun needs (QEMU, rsync, ssh, mmdebstrap, ...) is not installed.
pub const MISSING_TOOL: u8 = 241;
/// Building, fetching or baking an image failed.
pub const IMAGE_FAILED: u8 = 242;
/// A VM did not start or did not become reachable.
pub const VM_FAILED: u8 = 243;
/// An I/O or other internal failure of vmrun itself.
pub const INTERNAL: u8 = 244;
