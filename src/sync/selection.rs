//! Which of the listed artifacts come back: regular files only, in the order rsync listed
//! them, until their sizes add up to more than the cap. Everything else the globs matched
//! (symlinks, devices, FIFOs, sockets) is named, never copied.

use super::OverCap;
use super::output::{Entry, Kind};
use crate::config::ByteSize;
use crate::guest_text;

/// How many skipped names one notice shows; a guest can make millions.
const SKIPPED_SHOWN: usize = 20;

/// An artifact that is not a regular file or a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: Vec<u8>,
    pub kind: Kind,
}

#[derive(Debug, Default)]
pub struct Selection {
    /// Names of the regular files to copy, relative to the guest's directory.
    pub files: Vec<Vec<u8>>,
    /// Their sizes together, as listed.
    pub bytes: u64,
    pub skipped: Vec<Skipped>,
    /// The file whose size took the total past the cap; it and the files after it are left.
    pub over_cap: Option<OverCap>,
}

/// Chooses from `entries` (a listing, in its order) what to copy within `cap` bytes.
pub fn select(entries: impl IntoIterator<Item = Entry>, cap: ByteSize) -> Selection {
    let mut selection = Selection::default();
    for entry in entries {
        match entry.kind {
            Kind::Directory => {}
            Kind::File if selection.over_cap.is_some() => {}
            Kind::File => {
                let total = selection.bytes.saturating_add(entry.size);
                if total > cap.bytes() {
                    selection.over_cap = Some(OverCap {
                        artifact: guest_text::line(&entry.name),
                        total,
                        cap,
                    });
                } else {
                    selection.bytes = total;
                    selection.files.push(entry.name);
                }
            }
            kind => selection.skipped.push(Skipped {
                name: entry.name,
                kind,
            }),
        }
    }
    selection
}

/// `skipped 3 artifacts that are not regular files: a (symlink), b (char device), c (FIFO)`,
/// names made visible, at most [`SKIPPED_SHOWN`] of them.
pub fn describe_skipped(skipped: &[Skipped]) -> String {
    let shown: Vec<String> = skipped
        .iter()
        .take(SKIPPED_SHOWN)
        .map(|s| format!("{} ({})", guest_text::line(&s.name), s.kind.describe()))
        .collect();
    let what = match skipped.len() {
        1 => "artifact that is not a regular file",
        _ => "artifacts that are not regular files",
    };
    let mut text = format!("skipped {} {what}: {}", skipped.len(), shown.join(", "));
    if skipped.len() > SKIPPED_SHOWN {
        text += &format!(" and {} more", skipped.len() - SKIPPED_SHOWN);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, size: u64, name: &str) -> Entry {
        Entry {
            kind,
            size,
            name: name.as_bytes().to_vec(),
        }
    }

    fn names(selection: &Selection) -> Vec<&str> {
        selection
            .files
            .iter()
            .map(|n| std::str::from_utf8(n).unwrap())
            .collect()
    }

    #[test]
    fn regular_files_within_the_cap_in_listing_order() {
        let entries = [
            entry(Kind::Directory, 4096, "."),
            entry(Kind::File, 600, "a.xml"),
            entry(Kind::Symlink, 11, "passwd"),
            entry(Kind::Directory, 4096, "d"),
            entry(Kind::File, 400, "d/b.xml"),
            entry(Kind::CharDevice, 0, "d/null"),
        ];
        let selection = select(entries, ByteSize::from_bytes(1000));
        assert_eq!(names(&selection), ["a.xml", "d/b.xml"]);
        assert_eq!(selection.bytes, 1000);
        assert!(selection.over_cap.is_none());
        assert_eq!(
            selection.skipped,
            [
                Skipped {
                    name: b"passwd".to_vec(),
                    kind: Kind::Symlink
                },
                Skipped {
                    name: b"d/null".to_vec(),
                    kind: Kind::CharDevice
                },
            ]
        );
    }

    #[test]
    fn the_file_past_the_cap_and_every_file_after_it_stay() {
        let entries = [
            entry(Kind::File, 10, "a"),
            entry(Kind::File, 1 << 40, "big\n.xml"),
            entry(Kind::File, 1, "c"),
            entry(Kind::Fifo, 0, "fifo"),
        ];
        let selection = select(entries, ByteSize::from_bytes(1 << 30));
        assert_eq!(names(&selection), ["a"]);
        assert_eq!(selection.bytes, 10);
        let over = selection.over_cap.unwrap();
        assert_eq!(over.artifact, r"big\x0a.xml");
        assert_eq!(over.total, (1 << 40) + 10);
        // Still listed: what was skipped after the cap.
        assert_eq!(selection.skipped.len(), 1);
        assert_eq!(
            over.to_string(),
            concat!(
                r"the artifacts reach 1.0 TiB with big\x0a.xml, past ",
                r"test.artifacts-max-size (1GiB): it and the artifacts after it were not copied"
            )
        );
    }

    #[test]
    fn a_listing_of_nothing_selects_nothing() {
        let selection = select([], ByteSize::from_bytes(0));
        assert!(selection.files.is_empty() && selection.skipped.is_empty());
        assert!(selection.over_cap.is_none());
    }

    #[test]
    fn skipped_items_in_one_line_with_visible_names() {
        let one = [Skipped {
            name: b"link".to_vec(),
            kind: Kind::Symlink,
        }];
        assert_eq!(
            describe_skipped(&one),
            "skipped 1 artifact that is not a regular file: link (symlink)"
        );
        let three = [
            Skipped {
                name: b"a".to_vec(),
                kind: Kind::Symlink,
            },
            Skipped {
                name: b"b\x1b[31m".to_vec(),
                kind: Kind::CharDevice,
            },
            Skipped {
                name: b"c\nd".to_vec(),
                kind: Kind::Socket,
            },
        ];
        assert_eq!(
            describe_skipped(&three),
            concat!(
                r"skipped 3 artifacts that are not regular files: ",
                r"a (symlink), b\x1b[31m (char device), c\x0ad (socket)"
            )
        );
        let many: Vec<Skipped> = (0..25)
            .map(|i| Skipped {
                name: format!("l{i}").into_bytes(),
                kind: Kind::Fifo,
            })
            .collect();
        let text = describe_skipped(&many);
        assert!(text.starts_with("skipped 25 artifacts"), "{text}");
        assert!(text.ends_with("l19 (FIFO) and 5 more"), "{text}");
    }
}
