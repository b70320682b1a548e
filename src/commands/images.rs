//! `vmrun images [--json]`, `vmrun images rm NAME`, and `images export` / `images import`.

use std::process::ExitCode;

use serde::Serialize;

use crate::cli::{ImagesArgs, ImagesCommand};
use crate::error::Error;
use crate::human_size::human_size;
use crate::name::ImageName;
use crate::paths::Home;
use crate::store::{NamedImage, Store, transfer};
use crate::ui::Ui;
use crate::utc::UtcTime;

/// One row of the listing; also the `--json` form.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    key: String,
    /// Bytes the baked layer takes on disk (the source it stands on is shared).
    size: u64,
    source: String,
    /// RFC 3339, UTC.
    created: String,
    cpus: u32,
    memory_mib: u64,
}

impl Row {
    fn of(named: NamedImage) -> Row {
        let size = named.image.disk_usage();
        let m = named.image.manifest;
        Row {
            name: named.name,
            key: m.key,
            size,
            source: m.source,
            created: UtcTime::from_unix(m.created).to_string(),
            cpus: m.cpus,
            memory_mib: m.memory_mib,
        }
    }
}

pub(super) fn run(args: ImagesArgs) -> Result<ExitCode, Error> {
    let home = Home::from_env()?;
    let store = Store::new(&home);
    match args.command {
        Some(ImagesCommand::Rm { name }) => {
            // VMs made before vmrun kept image references are counted too.
            crate::vm::adopt_image_references(&home)?;
            store.remove(&ImageName::new(&name)?)?;
            eprintln!("removed image `{name}`");
        }
        Some(ImagesCommand::Export { name, output }) => {
            let name = ImageName::new(&name)?;
            let ui = Ui::for_stderr();
            let sink = |event| ui.render(event);
            let output = transfer::Output::parse(&output);
            let exported = transfer::export(&store, &name, &output, &sink)?;
            eprintln!(
                "exported image `{name}` ({}, {} of files{})",
                &exported.key[..12],
                human_size(exported.bytes),
                if exported.warm {
                    ", warm state included"
                } else {
                    ", no warm state"
                }
            );
        }
        Some(ImagesCommand::Import { file, name }) => {
            let name = name.as_deref().map(ImageName::new).transpose()?;
            let ui = Ui::for_stderr();
            let sink = |event| ui.render(event);
            let input = transfer::Input::parse(&file);
            let imported = transfer::import(&input, name, &home, &sink)?;
            eprintln!(
                "imported image `{}` ({}{}{})",
                imported.name,
                &imported.key[..12],
                if imported.existed {
                    ", already stored"
                } else {
                    ""
                },
                if imported.warm {
                    ", with its warm state"
                } else {
                    ", no warm state"
                }
            );
        }
        None => {
            let rows: Vec<Row> = store.list()?.into_iter().map(Row::of).collect();
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("rows serialize")
                );
            } else {
                print!("{}", table(&rows));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<24} {:<12} {:>9}  {:<20}  {}\n",
        "NAME", "KEY", "SIZE", "CREATED", "SOURCE"
    );
    for r in rows {
        out += &format!(
            "{:<24} {:<12} {:>9}  {:<20}  {}\n",
            r.name,
            &r.key[..r.key.len().min(12)],
            human_size(r.size),
            r.created,
            r.source
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns() {
        let row = Row {
            name: "base".into(),
            key: "0123456789abcdef".into(),
            size: 2 << 20,
            source: "debian:bookworm".into(),
            created: "2026-11-23T22:42:15Z".into(),
            cpus: 2,
            memory_mib: 1024,
        };
        let t = table(&[row]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].starts_with("base"));
        assert!(lines[1].contains(" 0123456789ab "));
        assert!(lines[1].contains("2.0 MiB"));
        assert!(lines[1].ends_with("debian:bookworm"));
    }
}
