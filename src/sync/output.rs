//! The lines vmrun reads from rsync's stdout: `--list-only` entries, the item lines it asks
//! for with `--out-format`, and `--info=progress2` totals. rsync writes every name with its
//! control characters (and a backslash that would look like an escape) as `\#ooo`, so each
//! entry is one line, whatever the guest named its files.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Prefix of the item lines, so they cannot be confused with rsync's other messages.
const ITEM_PREFIX: &[u8] = b"vmrun-item ";

/// What a listed file is, from the first letter of its permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
    Unknown,
}

impl Kind {
    fn from_letter(letter: u8) -> Kind {
        match letter {
            b'-' => Kind::File,
            b'd' => Kind::Directory,
            b'l' => Kind::Symlink,
            b'b' => Kind::BlockDevice,
            b'c' => Kind::CharDevice,
            b'p' => Kind::Fifo,
            b's' => Kind::Socket,
            _ => Kind::Unknown,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Directory => "directory",
            Kind::Symlink => "symlink",
            Kind::BlockDevice => "block device",
            Kind::CharDevice => "char device",
            Kind::Fifo => "FIFO",
            Kind::Socket => "socket",
            Kind::Unknown => "unknown type",
        }
    }
}

/// One line of `rsync --list-only --no-h`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// As the guest reports it; a sparse file's apparent size.
    pub size: u64,
    /// Relative to the listed directory, unescaped.
    pub name: Vec<u8>,
}

/// Parses `-rw-r--r--       1234 2026/12/01 21:50:38 name` (permissions, size without digit
/// separators, modification time, name); `None` for any other line.
pub fn list_entry(line: &[u8]) -> Option<Entry> {
    let (permissions, rest) = line.split_at_checked(10)?;
    let rest = rest.strip_prefix(b" ")?.trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let size = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b" ")?;
    // `YYYY/MM/DD HH:MM:SS `, then the name.
    let (time, name) = rest.split_at_checked(20)?;
    let shape = |i: usize, c: u8| time.get(i) == Some(&c);
    if !(shape(4, b'/') && shape(7, b'/') && shape(10, b' ') && shape(13, b':') && shape(19, b' '))
        || name.is_empty()
    {
        return None;
    }
    Some(Entry {
        kind: Kind::from_letter(permissions[0]),
        size,
        name: unescape(name),
    })
}

/// The `--out-format` that makes rsync print an item line for each file it handles: its
/// itemized change, its size and its name.
pub fn item_format() -> &'static OsStr {
    OsStr::from_bytes(b"--out-format=vmrun-item %i %l %n")
}

/// A file from an item line (see [`item_format`]): its size and unescaped name. `None` for
/// directories and other lines.
pub fn file_item(line: &[u8]) -> Option<(u64, Vec<u8>)> {
    let item = line.strip_prefix(ITEM_PREFIX)?;
    // %i is 11 characters; the second is the item's type.
    let (changes, rest) = item.split_at_checked(11)?;
    if changes[1] != b'f' {
        return None;
    }
    let rest = rest.strip_prefix(b" ")?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let size = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
    Some((size, unescape(&rest[space + 1..])))
}

/// The bytes transferred so far, from a `--info=progress2 --no-h` line
/// (`   1234567  12%  1.23MB/s  0:00:01 (xfr#1, to-chk=3/5)`).
pub fn progress_bytes(line: &[u8]) -> Option<u64> {
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let bytes = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
    let percent = words.next()?.strip_suffix(b"%")?;
    percent.iter().all(u8::is_ascii_digit).then_some(bytes)
}

/// Undoes rsync's `\#ooo` (octal) escapes.
fn unescape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let escape = name
            .get(i..i + 5)
            .filter(|e| e.starts_with(b"\\#") && e[2..].iter().all(|d| (b'0'..=b'7').contains(d)));
        match escape {
            Some(e) => {
                out.push(
                    e[2..]
                        .iter()
                        .fold(0u8, |n, d| n.wrapping_mul(8).wrapping_add(d - b'0')),
                );
                i += 5;
            }
            None => {
                out.push(name[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lines_as_rsync_prints_them() {
        let entry = |line: &[u8]| list_entry(line).unwrap();
        assert_eq!(
            entry(b"-rw-r--r-- 1099511627776 2026/12/01 21:50:38 big.xml"),
            Entry {
                kind: Kind::File,
                size: 1 << 40,
                name: b"big.xml".to_vec()
            }
        );
        assert_eq!(
            entry(b"-rwsr-xr-x      125640 2026/12/01 21:50:37 dir/with space/suid"),
            Entry {
                kind: Kind::File,
                size: 125640,
                name: b"dir/with space/suid".to_vec()
            }
        );
        assert_eq!(
            entry(b"-rw-r--r--           0 2026/12/01 21:50:38 nl\\#012name"),
            Entry {
                kind: Kind::File,
                size: 0,
                name: b"nl\nname".to_vec()
            }
        );
        // A name that starts with a space keeps it.
        assert_eq!(
            entry(b"-rw-r--r--           1 2026/12/01 21:50:38  lead").name,
            b" lead"
        );
        let kinds: Vec<Kind> = [
            &b"drwxrwxrwt        4096 2026/12/01 21:50:38 d777"[..],
            b"lrwxrwxrwx          11 2026/12/01 21:50:38 lpasswd",
            b"brw-r--r--           0 2026/12/01 21:50:37 blk",
            b"crw-rw-rw-           0 2026/12/01 21:50:37 chr",
            b"prw-r--r--           0 2026/12/01 21:50:37 fifo",
            b"srwxr-xr-x           0 2026/12/01 21:50:37 sock",
            b"?rwxr-xr-x           0 2026/12/01 21:50:37 odd",
        ]
        .into_iter()
        .map(|line| entry(line).kind)
        .collect();
        use Kind::*;
        assert_eq!(
            kinds,
            [
                Directory,
                Symlink,
                BlockDevice,
                CharDevice,
                Fifo,
                Socket,
                Unknown
            ]
        );
        for other in [
            &b"receiving incremental file list"[..],
            b"skipping non-regular file \"chr\"",
            b"-rw-r--r--   1,234 2026/12/01 21:50:38 with-separators",
            b"-rw-r--r--           1 2026/12/01 21:50:38 ",
            b"",
        ] {
            assert_eq!(
                list_entry(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn item_lines_give_files_only() {
        assert_eq!(
            file_item(b"vmrun-item >f+++++++++ 1234 a/b c"),
            Some((1234, b"a/b c".to_vec()))
        );
        assert_eq!(
            file_item(b"vmrun-item .f          7 up-to-date"),
            Some((7, b"up-to-date".to_vec()))
        );
        assert_eq!(
            file_item(br"vmrun-item >f+++++++++ 0 nl\#012x\#134#1"),
            Some((0, b"nl\nx\\#1".to_vec()))
        );
        assert_eq!(file_item(b"vmrun-item cd+++++++++ 4096 a/"), None);
        assert_eq!(file_item(b"skipping non-regular file \"x\""), None);
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            progress_bytes(b"     1073741824  42%   12.00MB/s    0:00:01  "),
            Some(1 << 30)
        );
        assert_eq!(
            progress_bytes(b"             10 100%    0.00kB/s    0:00:00 (xfr#1, to-chk=12/16)"),
            Some(10)
        );
        assert_eq!(progress_bytes(b"vmrun-item >f+++++++++ 10 exe"), None);
        assert_eq!(progress_bytes(b"12 files"), None);
    }

    #[test]
    fn unescaping() {
        assert_eq!(unescape(br"a\#012b\#c\#1x\#134"), b"a\nb\\#c\\#1x\\");
    }
}
