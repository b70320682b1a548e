//! Whole-file parsing: valid files, and where and how invalid ones are reported.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use miette::{GraphicalReportHandler, GraphicalTheme};

use super::*;

/// An invalid file's message, and the 1-based line and column its label points at.
fn error_at(text: &str) -> (String, Option<(usize, usize)>) {
    match parse(text, Path::new("vmrun.yaml")).unwrap_err() {
        Error::Invalid { message, span, .. } => {
            let position = span.map(|span| {
                let before = &text[..span.offset()];
                let line = before.matches('\n').count() + 1;
                let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
                (line, column)
            });
            (message, position)
        }
        other => panic!("expected an invalid-file error, got {other:?}"),
    }
}

/// The text under an invalid file's label.
fn labelled(text: &str) -> &str {
    match parse(text, Path::new("vmrun.yaml")).unwrap_err() {
        Error::Invalid {
            span: Some(span), ..
        } => &text[span.offset()..span.offset() + span.len()],
        other => panic!("expected a labelled error, got {other:?}"),
    }
}

fn parsed(text: &str) -> Config {
    parse(text, Path::new("vmrun.yaml")).unwrap()
}

#[test]
fn unknown_top_level_key_is_named_with_the_expected_keys() {
    let text = "image: base\nbogus: 1\n";
    assert_eq!(
        error_at(text),
        (
            "unknown field `bogus`, expected one of `image`, `vm`, `bake`, `test`".into(),
            Some((2, 1))
        )
    );
    assert_eq!(labelled(text), "bogus");
}

#[test]
fn unknown_nested_key_is_named_with_its_section() {
    let text = "vm: {cpu: 2}\n";
    assert_eq!(
        error_at(text),
        (
            "vm: unknown field `cpu`, expected `cpus` or `memory`".into(),
            Some((1, 6))
        )
    );
    assert_eq!(labelled(text), "cpu");
}

#[test]
fn unknown_key_in_a_list_item_names_the_item() {
    let text = "bake:\n  files:\n    - path: /etc/foo\n      mode: '0644'\n";
    assert_eq!(
        error_at(text),
        (
            "bake.files[0]: unknown field `mode`, expected one of \
             `path`, `content`, `permissions`, `owner`"
                .into(),
            Some((4, 7))
        )
    );
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let text = "vm:\n  cpus: two\n";
    assert_eq!(
        error_at(text),
        (
            "vm.cpus: invalid type: string \"two\", expected a number of cpus from 1 to 64".into(),
            Some((2, 9))
        )
    );
    assert_eq!(labelled(text), "two");
}

#[test]
fn wrong_type_for_a_section_is_reported_at_the_section() {
    let (message, position) = error_at("test: [pytest]\n");
    assert_eq!(
        message,
        "test: invalid type: sequence, expected struct TestConfig"
    );
    assert_eq!(position, Some((1, 7)));
}

#[test]
fn broken_yaml_is_reported_where_the_parser_stopped() {
    let (message, position) = error_at("vm:\n  cpus: 2\n memory: 1G\n");
    assert_eq!(
        message,
        "did not find expected key, while parsing a block mapping"
    );
    assert_eq!(position, Some((3, 2)));

    let (message, position) = error_at("image: \"base\n");
    assert!(
        message.starts_with("found unexpected end of stream"),
        "{message}"
    );
    assert_eq!(position, Some((2, 1)));
}

#[test]
fn errors_without_a_location_have_no_label() {
    assert_eq!(
        error_at("image: a\n---\nimage: b\n"),
        (
            "deserializing from YAML containing more than one document is not supported".into(),
            None
        )
    );
}

#[test]
fn positions_count_bytes_across_crlf_and_non_ascii_text() {
    let text = "image: \"été\"\r\nbogus: 1\r\n";
    assert_eq!(error_at(text).1, Some((2, 1)));
    assert_eq!(labelled(text), "bogus");
}

#[test]
fn cpus_out_of_range() {
    assert_eq!(
        error_at("vm:\n  cpus: 0\n"),
        (
            "vm.cpus: invalid cpu count `0`: expected 1 to 64".into(),
            Some((2, 9))
        )
    );
    assert_eq!(
        error_at("vm: {cpus: 65}\n"),
        (
            "vm.cpus: invalid cpu count `65`: expected 1 to 64".into(),
            Some((1, 12))
        )
    );
    assert_eq!(
        error_at("vm: {cpus: -1}\n").0,
        "vm.cpus: invalid cpu count `-1`: expected 1 to 64"
    );
}

#[test]
fn bad_memory_size() {
    let text = "vm:\n  cpus: 2\n  memory: 12Q\n";
    assert_eq!(
        error_at(text),
        (
            "vm.memory: invalid memory size `12Q`: expected a number with M, G, MiB or GiB".into(),
            Some((3, 11))
        )
    );
    assert_eq!(labelled(text), "12Q");
    assert_eq!(
        error_at("vm:\n  memory: 64\n"),
        (
            "vm.memory: invalid memory size `64`: at least 128 MiB".into(),
            Some((2, 11))
        )
    );
}

#[test]
fn artifacts_max_size_defaults_to_1_gib_and_names_a_bad_value() {
    assert_eq!(
        parsed("").test.artifacts_max_size_or_default().bytes(),
        1 << 30
    );
    assert_eq!(
        parsed("test:\n  artifacts-max-size: 50M\n")
            .test
            .artifacts_max_size_or_default()
            .bytes(),
        50 << 20
    );
    assert_eq!(
        error_at("test:\n  artifacts-max-size: 1GB\n"),
        (
            "test.artifacts-max-size: invalid size `1GB`: expected a number of bytes \
             or one with K, M, G or T"
                .into(),
            Some((2, 23))
        )
    );
}

#[test]
fn bad_duration() {
    let text = "test:\n  timeout: 10x\n";
    assert_eq!(
        error_at(text),
        (
            "test.timeout: invalid duration `10x`: expected a number with ms, s, m or h, \
             like 90s or 1h30m"
                .into(),
            Some((2, 12))
        )
    );
    assert_eq!(
        error_at("test:\n  timeout: 90\n").0,
        "test.timeout: invalid duration `90`: expected a number with ms, s, m or h, \
         like 90s or 1h30m"
    );
    assert_eq!(
        error_at("test:\n  timeout: 0s\n"),
        (
            "test.timeout: invalid duration `0s`: must be more than zero".into(),
            Some((2, 12))
        )
    );
}

#[test]
fn bad_env_name_is_reported_at_the_name() {
    let text = "test:\n  env:\n    OK: 1\n    1FOO: x\n";
    let (message, position) = error_at(text);
    assert_eq!(
        message,
        "test.env: invalid environment variable name `1FOO`: expected letters, digits and `_`, \
         not starting with a digit"
    );
    assert_eq!(position, Some((4, 5)));
    assert_eq!(labelled(text), "1FOO");
}

#[test]
fn bad_sha256() {
    let text = "image:\n  source: https://example.org/x.qcow2\n  sha256: ABC\n";
    assert_eq!(
        error_at(text),
        (
            "image.sha256: invalid sha256 `ABC`: expected 64 hex digits".into(),
            Some((3, 11))
        )
    );
}

#[test]
fn bad_image_source() {
    assert_eq!(
        error_at("image: ftp://example.org/x\n"),
        (
            "image: invalid image `ftp://example.org/x`: expected a baked image name, \
             a local path, an http(s) URL or debian:<suite>"
                .into(),
            Some((1, 8))
        )
    );
    let (message, position) = error_at(&format!("image: {{sha256: {}}}\n", "a".repeat(64)));
    assert_eq!(message, "image: missing field `source`");
    assert_eq!(position, Some((1, 8)));
}

#[test]
fn relative_bake_file_path() {
    let text = "bake:\n  files:\n    - path: etc/foo\n      content: x\n";
    assert_eq!(
        error_at(text),
        (
            "bake.files[0].path: invalid path `etc/foo`: expected an absolute path".into(),
            Some((3, 13))
        )
    );
}

#[test]
fn bad_permissions() {
    let text = "bake:\n  files:\n    - {path: /x, permissions: '0948'}\n";
    let (message, position) = error_at(text);
    assert_eq!(
        message,
        "bake.files[0].permissions: invalid permissions `0948`: \
         expected 3 or 4 octal digits, like \"0644\""
    );
    assert_eq!(position, Some((3, 31)));
    assert_eq!(labelled(text), "'0948'");
}

#[test]
fn empty_commands() {
    assert_eq!(
        error_at("test:\n  command: []\n"),
        (
            "test.command: invalid command: the argument list is empty".into(),
            Some((2, 12))
        )
    );
    assert_eq!(
        error_at("bake:\n  run:\n    - echo hi\n    - ''\n"),
        (
            "bake.run[1]: invalid command: the command string is empty".into(),
            Some((4, 7))
        )
    );
}

#[test]
fn empty_files_and_sections_are_the_default_config() {
    for text in [
        "",
        "\n",
        "# nothing yet\n",
        "vm:\nbake:\ntest:\n",
        "test:\n  env:\n  sync:\n",
    ] {
        assert_eq!(parsed(text), Config::default(), "{text:?}");
    }
}

const FULL: &str = concat!(
    r#"
image: {source: "https://example.org/x.qcow2""#,
    r#", sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}
vm:
  cpus: 2
  memory: 2G
bake:
  packages: [curl, git]
  run:
    - echo hi
    - [touch, /x]
  files:
    - path: /etc/foo
      content: "text"
      permissions: "0644"
      owner: root:root
    - path: /etc/bar
  user-data:
    timezone: Europe/Paris
test:
  command: pytest -q
  env: {KEY: value, _N2: 1}
  sync:
    include: [ "src/**" ]
    exclude: [ "target/", ".venv/" ]
  artifacts: [ "junit.xml", "logs/**" ]
  artifacts-max-size: 200M
  timeout: 1h30m
  network: none
"#
);

fn full_config() -> Config {
    let mut user_data = yaml_serde::Mapping::new();
    user_data.insert("timezone".into(), "Europe/Paris".into());
    Config {
        image: Some(ImageSpec {
            source: "https://example.org/x.qcow2".into(),
            sha256: Some("0123456789abcdef".repeat(4).parse().unwrap()),
        }),
        vm: VmConfig {
            cpus: Some(2),
            memory: Some("2048".parse().unwrap()),
        },
        bake: BakeConfig {
            packages: vec!["curl".into(), "git".into()],
            run: vec![
                Command::Shell("echo hi".into()),
                Command::Argv(vec!["touch".into(), "/x".into()]),
            ],
            files: vec![
                BakeFile {
                    path: "/etc/foo".into(),
                    content: "text".into(),
                    permissions: Some("0644".into()),
                    owner: Some("root:root".into()),
                },
                BakeFile {
                    path: "/etc/bar".into(),
                    content: String::new(),
                    permissions: None,
                    owner: None,
                },
            ],
            user_data: Some(user_data),
        },
        test: TestConfig {
            command: Some(Command::Shell("pytest -q".into())),
            env: BTreeMap::from([("KEY".into(), "value".into()), ("_N2".into(), "1".into())]),
            sync: SyncConfig {
                include: vec!["src/**".into()],
                exclude: vec!["target/".into(), ".venv/".into()],
            },
            artifacts: vec!["junit.xml".into(), "logs/**".into()],
            artifacts_max_size: Some("200M".parse().unwrap()),
            timeout: Some(Duration::from_secs(5400)),
            network: crate::net::Network::None,
        },
    }
}

#[test]
fn full_example_parses_to_the_expected_config() {
    assert_eq!(parsed(FULL), full_config());
}

#[test]
fn serialized_config_parses_back_to_itself() {
    let config = full_config();
    let text = yaml_serde::to_string(&config).unwrap();
    assert_eq!(parsed(&text), config, "{text}");
    assert_eq!(
        parsed(&yaml_serde::to_string(&Config::default()).unwrap()),
        Config::default()
    );
}

#[test]
fn string_image_and_argv_command() {
    let config = parsed("image: debian:bookworm\ntest:\n  command: [cargo, test, --, -q]\n");
    assert_eq!(
        config.image,
        Some(ImageSpec {
            source: "debian:bookworm".into(),
            sha256: None
        })
    );
    assert_eq!(
        config.test.command,
        Some(Command::Argv(
            ["cargo", "test", "--", "-q"].map(String::from).to_vec()
        ))
    );
}

#[test]
fn report_names_the_file_and_shows_the_line() {
    let err = parse("vm:\n  cpus: two\n", Path::new("ci/vmrun.yaml")).unwrap_err();
    let mut report = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .render_report(&mut report, &err)
        .unwrap();
    assert!(report.contains("ci/vmrun.yaml:2:9"), "{report}");
    assert!(report.contains("cpus: two"), "{report}");
    assert!(report.contains("vm.cpus: invalid type"), "{report}");
}

#[test]
fn load_names_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.yaml");
    let err = load(&path).unwrap_err();
    assert!(matches!(&err, Error::Read { path: p, .. } if *p == path));
    assert_eq!(err.to_string(), format!("cannot read {}", path.display()));
}

#[test]
fn load_default_prefers_the_explicit_file_then_vmrun_yaml() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_default(None, dir.path()).unwrap(), Config::default());
    assert!(matches!(
        load_default(Some(Path::new("other.yaml")), dir.path()),
        Err(Error::Read { .. })
    ));

    std::fs::write(dir.path().join(FILE_NAME), "vm: {cpus: 3}\n").unwrap();
    std::fs::write(dir.path().join("other.yaml"), "vm: {cpus: 4}\n").unwrap();
    assert_eq!(load_default(None, dir.path()).unwrap().vm.cpus, Some(3));
    assert_eq!(
        load_default(Some(Path::new("other.yaml")), dir.path())
            .unwrap()
            .vm
            .cpus,
        Some(4)
    );
}

#[test]
fn an_unknown_network_is_named_with_the_known_ones() {
    let text = "test:\n  network: open\n";
    let (message, at) = error_at(text);
    assert!(
        message.contains(
            "test.network: unknown variant `open`, expected one of `none`, `outbound`, `host`"
        ),
        "{message}"
    );
    assert_eq!(at, Some((2, 12)));
}
