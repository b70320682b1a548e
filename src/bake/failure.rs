//! What a failed provisioning says: each cloud-init module that failed, with the lines it
//! printed on the serial console, and how to fix or skip it from vmrun.yaml. The end of the
//! console (the shutdown that follows the verdict) explains nothing, so it is shown only when
//! the console names no failed module.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::console::{self, ModuleFailure};
use crate::guest_text;

/// Failed modules shown; any more are counted.
const MODULES_SHOWN: usize = 5;
/// More than the capped serial log ever holds.
const READ_LIMIT: u64 = 16 << 20;

/// The failed modules' console lines, made safe to show; `None` when the console names none.
pub fn report(serial_log: &Path) -> Option<String> {
    let failures = failures_in(serial_log);
    if failures.is_empty() {
        return None;
    }
    let mut out = String::new();
    for failure in failures.iter().take(MODULES_SHOWN) {
        out.push_str(&module_report(failure, serial_log));
    }
    if failures.len() > MODULES_SHOWN {
        out.push_str(&format!(
            "({} more failed modules in {})\n",
            failures.len() - MODULES_SHOWN,
            serial_log.display()
        ));
    }
    Some(out.trim_end().to_owned())
}

/// How to fix or skip each failed module: from the console, else from cloud-init's `errors`
/// (`('locale', ProcessExecutionError(...)); ...`).
pub fn help(errors: &str, serial_log: &Path) -> String {
    let mut modules: Vec<String> = failures_in(serial_log)
        .into_iter()
        .map(|f| f.module)
        .collect();
    if modules.is_empty() {
        modules = modules_in_errors(errors);
    }
    modules.dedup();
    let mut lines: Vec<String> = modules
        .iter()
        .take(MODULES_SHOWN)
        .map(|module| module_help(module))
        .collect();
    if lines.is_empty() {
        lines.push(format!(
            "the whole console is in {}; cloud-init's own log is /var/log/cloud-init.log \
             in the guest",
            serial_log.display()
        ));
    }
    lines.join("\n")
}

fn module_report(failure: &ModuleFailure, serial_log: &Path) -> String {
    let mut out = format!(
        "cloud-init module `{}` failed; its lines on the serial console ({}):\n",
        guest_text::line(&failure.module),
        serial_log.display()
    );
    if failure.omitted > 0 {
        out.push_str(&format!("  ({} earlier lines)\n", failure.omitted));
    }
    if failure.lines.is_empty() {
        out.push_str("  (none: it printed nothing)\n");
    }
    for line in &failure.lines {
        out.push_str(&format!("  {}\n", guest_text::line(line)));
    }
    out
}

fn module_help(module: &str) -> String {
    let module = guest_text::line(module);
    match module.replace('_', "-").as_str() {
        "locale" => "the image's cloud-init sets the system locale (en_US.UTF-8 unless told \
                     otherwise) and this image cannot make it: in vmrun.yaml, name one it has \
                     (`bake: {user-data: {locale: C.UTF-8}}`) or skip the module \
                     (`bake: {user-data: {locale: false}}`)"
            .to_owned(),
        "scripts-user" => "a command of `bake.run` in vmrun.yaml failed (its output is above): \
                           fix the command"
            .to_owned(),
        "package-update-upgrade-install" => "installing `bake.packages` from vmrun.yaml failed: \
                                             check the package names and that the guest reaches \
                                             its package mirror"
            .to_owned(),
        "write-files" => "writing `bake.files` from vmrun.yaml failed: check their paths, \
                          owners and permissions"
            .to_owned(),
        _ => format!(
            "the image's cloud-init runs module `{module}`: configure it in vmrun.yaml under \
             `bake: {{user-data: ...}}` (its cloud-config keys), or fix the image"
        ),
    }
}

fn failures_in(serial_log: &Path) -> Vec<ModuleFailure> {
    let mut bytes = Vec::new();
    let read = File::open(serial_log).and_then(|f| f.take(READ_LIMIT).read_to_end(&mut bytes));
    match read {
        Ok(_) => console::module_failures(&String::from_utf8_lossy(&bytes)),
        Err(_) => Vec::new(),
    }
}

/// The module names in the verdict's errors: each error that is a `('NAME', ...)` pair.
fn modules_in_errors(errors: &str) -> Vec<String> {
    errors
        .split("; ")
        .filter_map(|error| {
            let name = error.strip_prefix("('")?;
            let end = name.find("', ")?;
            Some(name[..end].to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const LOCALE: &str = "\
[   36.5] cloud-init[361]: Cloud-init v. 22.4.2 running 'modules:config' at Wed, 02 Dec 2026
[   36.6] cloud-init[361]: *** update-locale: Error: invalid locale settings:  LANG=en_US.UTF-8
[   36.7] cloud-init[361]: \x1b]0;owned\x07 2026-12-02 00:34:43,277 - a guest's escape
[   36.8] cloud-init[361]: 2026-12-02 00:34:43,277 - util.py[WARNING]: Running module locale \
(<module 'cloudinit.config.cc_locale'>) failed
[   72.8] reboot: Power down
";

    #[test]
    fn names_the_module_with_its_lines_made_safe() {
        let (_dir, path) = log(LOCALE);
        assert_eq!(
            report(&path).unwrap(),
            format!(
                "cloud-init module `locale` failed; its lines on the serial console ({}):\n  \
                 *** update-locale: Error: invalid locale settings:  LANG=en_US.UTF-8\n  \
                 \\x1b]0;owned\\x07 2026-12-02 00:34:43,277 - a guest's escape",
                path.display()
            )
        );
        let help = help("('locale', ProcessExecutionError(...))", &path);
        assert!(
            help.contains("`bake: {user-data: {locale: C.UTF-8}}`"),
            "{help}"
        );
        assert!(
            help.contains("`bake: {user-data: {locale: false}}`"),
            "{help}"
        );
    }

    #[test]
    fn without_module_lines_there_is_no_report_and_the_errors_name_the_modules() {
        let (_dir, path) = log("[ 72.8] reboot: Power down\n");
        assert_eq!(report(&path), None);
        let two = help(
            "('scripts-user', RuntimeError('x')); ('ntp', ValueError('y'))",
            &path,
        );
        assert_eq!(two.lines().count(), 2, "{two}");
        assert!(two.contains("`bake.run`"), "{two}");
        assert!(two.contains("module `ntp`"), "{two}");
        let help = help("no cloud-init result: [Errno 2] No such file", &path);
        assert!(help.contains(&path.display().to_string()), "{help}");
    }

    #[test]
    fn many_failures_are_counted() {
        let mut text = String::new();
        for i in 0..(MODULES_SHOWN + 2) {
            text.push_str(&format!(
                "[ 1.0] cloud-init[1]: util.py[WARNING]: Running module m{i} (<module>) failed\n"
            ));
        }
        let (_dir, path) = log(&text);
        let report = report(&path).unwrap();
        assert_eq!(
            report.matches("(none: it printed nothing)").count(),
            MODULES_SHOWN
        );
        assert!(report.ends_with(&format!("(2 more failed modules in {})", path.display())));
    }
}
