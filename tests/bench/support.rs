//! What the benches share: the home they use and the image they bake there first.

use std::path::{Path, PathBuf};
use std::process::Command;

const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");

/// `VMRUN_TEST_HOME`, as the tests use, else one under the target directory.
pub fn home() -> PathBuf {
    std::env::var_os("VMRUN_TEST_HOME")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmrun-home"))
}

/// vmrun with `args` in `dir`, on `home`.
pub fn vmrun(home: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(VMRUN);
    cmd.args(args).current_dir(dir).env("VMRUN_HOME", home);
    cmd
}

/// Bakes `debian:bookworm` as `bench` in `home` (a store hit after the first time).
pub fn bake_bench_image(home: &Path, project: &Path) {
    let bake = vmrun(
        home,
        project,
        &["bake", "--image", "debian:bookworm", "--name", "bench"],
    )
    .output()
    .unwrap();
    assert!(
        bake.status.success(),
        "bake: {}",
        String::from_utf8_lossy(&bake.stderr)
    );
}
