//! The seed documents of a bake, rendered by pure functions: vmrun's cloud-config
//! (`cloud-init/bake.yaml`) with the run user's key, the pinned host key, the verdict hook and
//! the `bake:` section of vmrun.yaml, then the user's extra user-data merged in.

use yaml_serde::{Mapping, Value};

use crate::config::{BakeConfig, Command};

const TEMPLATE: &str = include_str!("../../cloud-init/bake.yaml");
pub(crate) const VERDICT_SCRIPT: &str = include_str!("../../cloud-init/bake-verdict.sh");
/// Where the verdict script lands in the guest.
const VERDICT_PATH: &str = "/var/lib/vmrun/bake-verdict";

/// Keys vmrun must control for the bake to be verifiable: extra user-data may not set them.
const OWNED_KEYS: &[&str] = &[
    "ssh_keys",
    "ssh_deletekeys",
    "ssh_genkeytypes",
    "power_state",
];
/// List keys where extra user-data adds to what vmrun renders instead of replacing it.
const APPENDED_KEYS: &[&str] = &["users", "packages", "runcmd", "bootcmd", "write_files"];

#[derive(Debug, thiserror::Error, miette::Diagnostic, PartialEq)]
pub enum Error {
    #[error("bake.user-data.{0} is set by vmrun and cannot be overridden")]
    #[diagnostic(help(
        "vmrun pins the host key and watches power_state to know the bake succeeded"
    ))]
    Owned(String),
    #[error("bake.user-data.{0} must be a list: vmrun adds its own entries to it")]
    NotAList(String),
}

/// What a bake puts in its seed besides vmrun.yaml: fresh per bake, so never part of the
/// image's cache key (see [`cache_material`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BakeSecrets {
    /// OpenSSH public key line of vmrun's client key for the run user.
    pub client_public_key: String,
    /// The guest's ed25519 host key pair, OpenSSH formats.
    pub host_private_key: String,
    pub host_public_key: String,
    /// A per-bake token that starts the verdict line on the serial console.
    pub verdict_marker: String,
}

/// The `user-data` document.
pub fn user_data(bake: &BakeConfig, secrets: &BakeSecrets) -> Result<String, Error> {
    let mut doc: Mapping =
        yaml_serde::from_str(TEMPLATE).expect("cloud-init/bake.yaml is a mapping");

    let users = doc
        .get_mut("users")
        .and_then(Value::as_sequence_mut)
        .expect("template has users");
    let user = users[0]
        .as_mapping_mut()
        .expect("template user is a mapping");
    user.insert(
        "ssh_authorized_keys".into(),
        Value::Sequence(vec![secrets.client_public_key.as_str().into()]),
    );

    let mut ssh_keys = Mapping::new();
    ssh_keys.insert(
        "ed25519_private".into(),
        secrets.host_private_key.as_str().into(),
    );
    ssh_keys.insert(
        "ed25519_public".into(),
        secrets.host_public_key.as_str().into(),
    );
    doc.insert("ssh_keys".into(), Value::Mapping(ssh_keys));

    if !bake.packages.is_empty() {
        doc.insert("package_update".into(), true.into());
        doc.insert("packages".into(), strings(&bake.packages));
    }
    if !bake.run.is_empty() {
        doc.insert(
            "runcmd".into(),
            Value::Sequence(bake.run.iter().map(command).collect()),
        );
    }
    let files = doc
        .get_mut("write_files")
        .and_then(Value::as_sequence_mut)
        .expect("template has write_files");
    files.extend(bake.files.iter().map(write_file));
    files.push(file_entry(VERDICT_PATH, VERDICT_SCRIPT, Some("0755"), None));

    let power_state = doc
        .get_mut("power_state")
        .and_then(Value::as_mapping_mut)
        .expect("template has power_state");
    power_state.insert(
        "condition".into(),
        strings(&["/bin/sh", VERDICT_PATH, &secrets.verdict_marker]),
    );

    if let Some(extra) = &bake.user_data {
        merge(&mut doc, extra)?;
    }
    let body = yaml_serde::to_string(&doc).expect("a mapping of plain values serializes");
    Ok(format!("#cloud-config\n{body}"))
}

/// The `meta-data` document: the instance id names the bake, so cloud-init runs once.
pub fn meta_data(instance_id: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: vmrun\n")
}

/// What the image's cache key hashes of the seed: the user-data as rendered with placeholder
/// secrets, so two bakes of the same inputs share a key although their keys differ.
pub fn cache_material(bake: &BakeConfig) -> Result<String, Error> {
    let placeholders = BakeSecrets {
        client_public_key: "<client key>".into(),
        host_private_key: "<host key>".into(),
        host_public_key: "<host key>".into(),
        verdict_marker: "<marker>".into(),
    };
    user_data(bake, &placeholders)
}

fn merge(doc: &mut Mapping, extra: &Mapping) -> Result<(), Error> {
    for (key, value) in extra {
        let name = key.as_str().unwrap_or_default().to_owned();
        if OWNED_KEYS.contains(&name.as_str()) {
            return Err(Error::Owned(name));
        }
        if APPENDED_KEYS.contains(&name.as_str()) {
            let Value::Sequence(items) = value else {
                return Err(Error::NotAList(name));
            };
            match doc.get_mut(key) {
                Some(Value::Sequence(ours)) => ours.extend(items.iter().cloned()),
                _ => {
                    doc.insert(key.clone(), value.clone());
                }
            }
        } else {
            doc.insert(key.clone(), value.clone());
        }
    }
    Ok(())
}

fn command(c: &Command) -> Value {
    match c {
        Command::Shell(line) => line.as_str().into(),
        Command::Argv(argv) => strings(argv),
    }
}

fn write_file(f: &crate::config::BakeFile) -> Value {
    file_entry(
        &f.path,
        &f.content,
        f.permissions.as_deref(),
        f.owner.as_deref(),
    )
}

fn file_entry(path: &str, content: &str, permissions: Option<&str>, owner: Option<&str>) -> Value {
    let mut entry = Mapping::new();
    entry.insert("path".into(), path.into());
    entry.insert("content".into(), content.into());
    if let Some(p) = permissions {
        entry.insert("permissions".into(), p.into());
    }
    if let Some(o) = owner {
        entry.insert("owner".into(), o.into());
    }
    Value::Mapping(entry)
}

fn strings<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Sequence(items.iter().map(|s| s.as_ref().into()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BakeFile;

    fn secrets() -> BakeSecrets {
        BakeSecrets {
            client_public_key: "ssh-ed25519 AAAAclient vmrun".into(),
            host_private_key:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nxyz\n-----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
            host_public_key: "ssh-ed25519 AAAAhost".into(),
            verdict_marker: "vmrun-bake-1234".into(),
        }
    }

    fn parse(doc: &str) -> Mapping {
        assert!(doc.starts_with("#cloud-config\n"));
        yaml_serde::from_str(doc).unwrap()
    }

    #[test]
    fn defaults_render_user_keys_and_verdict_hook() {
        let doc = parse(&user_data(&BakeConfig::default(), &secrets()).unwrap());
        assert_eq!(doc["users"][0]["name"], "vmrun");
        assert_eq!(
            doc["users"][0]["ssh_authorized_keys"][0],
            "ssh-ed25519 AAAAclient vmrun"
        );
        assert_eq!(doc["ssh_keys"]["ed25519_public"], "ssh-ed25519 AAAAhost");
        assert_eq!(
            doc["ssh_keys"]["ed25519_private"],
            secrets().host_private_key.as_str()
        );
        assert_eq!(doc["power_state"]["mode"], "poweroff");
        let condition = &doc["power_state"]["condition"];
        assert_eq!(condition[1], VERDICT_PATH);
        assert_eq!(condition[2], "vmrun-bake-1234");
        let files = doc["write_files"].as_sequence().unwrap();
        assert_eq!(files.len(), 2);
        let drop_in = files[0]["content"].as_str().unwrap();
        assert_eq!(
            files[0]["path"],
            "/etc/systemd/system/ssh.service.d/vmrun-no-reexec.conf"
        );
        assert!(
            drop_in.contains("exec /usr/sbin/sshd -D -r $$SSHD_OPTS"),
            "{drop_in}"
        );
        assert_eq!(files[1]["content"], VERDICT_SCRIPT);
        assert!(doc.get("packages").is_none() && doc.get("runcmd").is_none());
    }

    /// The hook's failure line, as `sh` on this host prints it for a result.json holding
    /// `errors` (the paths it reads and writes moved to a temporary directory).
    fn verdict_line(errors: &serde_json::Value) -> String {
        let dir = tempfile::tempdir().unwrap();
        let result = dir.path().join("result.json");
        let console = dir.path().join("console");
        std::fs::write(
            &result,
            serde_json::json!({"v1": {"errors": errors}}).to_string(),
        )
        .unwrap();
        let script = VERDICT_SCRIPT
            .replace("/run/cloud-init/result.json", result.to_str().unwrap())
            .replace("/dev/ttyS0", console.to_str().unwrap());
        let status = std::process::Command::new("sh")
            .args(["-c", &script, "sh", "vmrun-bake-1234"])
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_to_string(console).unwrap()
    }

    #[test]
    fn the_verdict_is_one_line_whatever_the_errors_hold() {
        // As cloud-init 22.4 records a failed `locale` module: a repr with `\n` escapes.
        let locale = "('locale', ProcessExecutionError(\"Unexpected error while running \
                      command.\\nCommand: ['update-locale', 'LANG=en_US.UTF-8']\\nExit code: 1\")";
        assert_eq!(
            verdict_line(&serde_json::json!([locale, "two\nlines"])),
            "vmrun-bake-1234 failed: ('locale', ProcessExecutionError(\"Unexpected error while \
             running command. Command: ['update-locale', 'LANG=en_US.UTF-8'] Exit code: 1\"); \
             two lines\n"
        );
        assert_eq!(
            verdict_line(&serde_json::json!(["100% \\t %s"])),
            "vmrun-bake-1234 failed: 100% \\t %s\n",
            "printed as it is"
        );
    }

    #[test]
    fn bake_section_becomes_packages_runcmd_and_files() {
        let bake = BakeConfig {
            packages: vec!["curl".into(), "git".into()],
            run: vec![
                Command::Shell("echo hi > /x".into()),
                Command::Argv(vec!["touch".into(), "/y z".into()]),
            ],
            files: vec![BakeFile {
                path: "/etc/motd".into(),
                content: "hello\n".into(),
                permissions: Some("0644".into()),
                owner: Some("root:root".into()),
            }],
            user_data: None,
        };
        let doc = parse(&user_data(&bake, &secrets()).unwrap());
        assert_eq!(doc["package_update"], true);
        assert_eq!(doc["packages"][1], "git");
        assert_eq!(doc["runcmd"][0], "echo hi > /x");
        assert_eq!(doc["runcmd"][1][1], "/y z");
        assert_eq!(doc["write_files"][1]["path"], "/etc/motd");
        assert_eq!(doc["write_files"][1]["owner"], "root:root");
        assert_eq!(doc["write_files"][2]["path"], VERDICT_PATH);
    }

    #[test]
    fn extra_user_data_appends_lists_and_sets_other_keys() {
        let extra: Mapping = yaml_serde::from_str(
            "runcmd: [[echo, extra]]\ntimezone: Europe/Paris\nusers: [default]\n",
        )
        .unwrap();
        let bake = BakeConfig {
            run: vec![Command::Shell("first".into())],
            user_data: Some(extra),
            ..Default::default()
        };
        let doc = parse(&user_data(&bake, &secrets()).unwrap());
        assert_eq!(doc["runcmd"][0], "first");
        assert_eq!(doc["runcmd"][1][1], "extra");
        assert_eq!(doc["timezone"], "Europe/Paris");
        assert_eq!(doc["users"][1], "default");
        assert_eq!(doc["users"][0]["name"], "vmrun");
    }

    #[test]
    fn extra_user_data_cannot_take_over_keys_or_power_state() {
        for key in ["ssh_keys", "power_state"] {
            let extra: Mapping = yaml_serde::from_str(&format!("{key}: {{}}\n")).unwrap();
            let bake = BakeConfig {
                user_data: Some(extra),
                ..Default::default()
            };
            assert_eq!(user_data(&bake, &secrets()), Err(Error::Owned(key.into())));
        }
        let extra: Mapping = yaml_serde::from_str("packages: curl\n").unwrap();
        let bake = BakeConfig {
            user_data: Some(extra),
            ..Default::default()
        };
        assert_eq!(
            user_data(&bake, &secrets()),
            Err(Error::NotAList("packages".into()))
        );
    }

    #[test]
    fn cache_material_ignores_secrets_but_not_config() {
        let a = cache_material(&BakeConfig::default()).unwrap();
        assert!(!a.contains("AAAA"));
        assert_eq!(a, cache_material(&BakeConfig::default()).unwrap());
        let with_pkg = BakeConfig {
            packages: vec!["curl".into()],
            ..Default::default()
        };
        assert_ne!(a, cache_material(&with_pkg).unwrap());
    }

    #[test]
    fn meta_data_names_the_instance() {
        assert_eq!(
            meta_data("vmrun-bake-ab"),
            "instance-id: vmrun-bake-ab\nlocal-hostname: vmrun\n"
        );
    }
}
