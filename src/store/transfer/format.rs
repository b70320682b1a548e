//! The export file: the framing of [`crate::framed`] with magic `VMRUNIMG`, version 1,
//! and a header `{"key", "name", "files": [{"name", "size", "sha256"}, ...]}` whose trailer
//! is its sha256.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::member::Member;
use crate::framed::{self, Kind, check_files, damaged, shown};
use crate::sha256::Sha256;

pub use crate::framed::{Fault, Reading, from_stream, read_exact};

pub const MAGIC: &[u8; 8] = b"VMRUNIMG";
/// The magic as messages show it.
pub const MAGIC_TEXT: &str = "VMRUNIMG";
/// The format this vmrun writes, and the newest it reads.
pub const VERSION: u32 = 1;
/// The largest header: a few hundred bytes in practice.
pub const MAX_HEADER: u32 = framed::MAX_HEADER;

/// An export among framed files.
pub const EXPORT: Kind = Kind {
    magic: MAGIC,
    version: VERSION,
    max_header: MAX_HEADER,
    not_this_kind: || Fault::NotAnExport,
    newer: |version| Fault::NewerFormat { version },
};

/// What an export holds: the image's key, the name it was exported under, and its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The store key: the entry's directory name, and `key` in its `image.json`.
    pub key: String,
    pub name: String,
    pub files: Vec<FileEntry>,
}

pub type FileEntry = framed::FileEntry<Member>;

impl Header {
    /// Whether the header describes an image this vmrun can store: each member at most once
    /// and within its size, the members an entry needs, one source, all of the warm state or
    /// none of it, a key that is a store key and a name that is an image name.
    pub fn check(&self) -> Result<(), Fault> {
        let bad = |what: String| Err(Fault::Header { what });
        if !is_store_key(&self.key) {
            return bad(format!(
                "key `{}` is not 64 lowercase hex digits",
                shown(&self.key)
            ));
        }
        if let Err(e) = crate::name::check("image", &self.name) {
            return bad(e.to_string());
        }
        let seen = check_files(&self.files).map_err(|what| Fault::Header { what })?;
        let required = [
            Member::Manifest,
            Member::HostKey,
            Member::ClientKey,
            Member::Disk,
        ];
        if let Some(missing) = required.iter().find(|m| !seen.contains(m)) {
            return bad(format!("it lacks `{missing}`"));
        }
        if seen.iter().filter(|m| m.is_source()).count() != 1 {
            return bad("it must hold exactly one of `source.qcow2` and `source.raw`".into());
        }
        // A warm state saved before its RAM had a file of its own has none: it is imported
        // as it is, and runs boot cold from it (its machine record says why).
        let warm = [Member::WarmMachine, Member::WarmDisk, Member::WarmState];
        let held = warm.iter().filter(|m| seen.contains(m)).count();
        if (held != 0 || seen.contains(&Member::WarmRam)) && held != warm.len() {
            return bad("it holds part of the warm state (`warm/`), not all of it".into());
        }
        Ok(())
    }

    /// The size of the files together.
    pub fn total_size(&self) -> u64 {
        framed::total_size(&self.files)
    }
}

/// 64 lowercase hex digits, as bakes make keys: safe as a directory name.
pub fn is_store_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes the magic and the version: what comes before the compressed stream.
pub fn write_prelude(out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    EXPORT.write_prelude(out)
}

/// Writes the header, its length before it and its digest after it.
pub fn write_header(out: &mut (impl Write + ?Sized), header: &Header) -> io::Result<()> {
    let json = serde_json::to_vec(header).expect("header serializes");
    EXPORT.write_header(out, &json, Sha256::of(&json).bytes())
}

/// Reads the magic and the version; returns the version (1..=[`VERSION`]).
pub fn read_prelude(input: &mut impl Read) -> Result<u32, Reading> {
    EXPORT.read_prelude(input)
}

/// Reads the header from the decompressed stream and checks it ([`Header::check`]).
pub fn read_header(input: &mut impl Read) -> Result<Header, Reading> {
    let raw = EXPORT.read_header(input)?;
    if Sha256::of(&raw.json).bytes() != &raw.trailer {
        return Err(damaged("its header does not match the header's sha256"));
    }
    let header: Header = framed::parse(&raw.json)?;
    header.check()?;
    Ok(header)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn header() -> Header {
        let file = |name, size| FileEntry {
            name,
            size,
            sha256: Sha256::of([size as u8]),
        };
        Header {
            key: "a".repeat(64),
            name: "base".into(),
            files: vec![
                file(Member::Manifest, 10),
                file(Member::HostKey, 5),
                file(Member::ClientKey, 7),
                file(Member::Disk, 4096),
                file(Member::SourceQcow2, 8192),
            ],
        }
    }

    fn encoded(header: &Header) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, header).unwrap();
        out
    }

    fn fault(result: Result<impl std::fmt::Debug, Reading>) -> Fault {
        match result {
            Err(Reading::Fault(fault)) => fault,
            other => panic!("not a fault: {other:?}"),
        }
    }

    #[test]
    fn prelude_and_header_round_trip() {
        let mut bytes = Vec::new();
        write_prelude(&mut bytes).unwrap();
        assert_eq!(&bytes[..8], b"VMRUNIMG");
        assert_eq!(read_prelude(&mut &bytes[..]).unwrap(), VERSION);
        let bytes = encoded(&header());
        assert_eq!(read_header(&mut &bytes[..]).unwrap(), header());
    }

    #[test]
    fn other_files_and_newer_versions_are_named() {
        assert_eq!(
            fault(read_prelude(&mut &b"\x28\xb5\x2f\xfdjunkjunk"[..])),
            Fault::NotAnExport
        );
        let newer = [&MAGIC[..], &2u32.to_be_bytes()].concat();
        assert_eq!(
            fault(read_prelude(&mut &newer[..])),
            Fault::NewerFormat { version: 2 }
        );
        assert!(matches!(
            fault(read_prelude(&mut &MAGIC[..6])),
            Fault::CutShort { .. }
        ));
    }

    #[test]
    fn a_changed_or_cut_header_is_refused() {
        let mut bytes = encoded(&header());
        assert!(matches!(
            fault(read_header(&mut &bytes[..20])),
            Fault::CutShort { .. }
        ));
        bytes[12] ^= 1;
        assert_eq!(
            fault(read_header(&mut &bytes[..])).to_string(),
            "it is damaged: its header does not match the header's sha256"
        );
        let huge = (MAX_HEADER + 1).to_be_bytes();
        assert!(
            fault(read_header(&mut &huge[..]))
                .to_string()
                .contains("65537 bytes long")
        );
    }

    #[test]
    fn headers_that_would_store_something_else_are_refused() {
        let check = |change: &dyn Fn(&mut Header)| {
            let mut h = header();
            change(&mut h);
            fault(read_header(&mut &encoded(&h)[..])).to_string()
        };
        assert!(check(&|h| h.key = "../../etc".into()).contains("not 64 lowercase hex"));
        assert!(check(&|h| h.key = "A".repeat(64)).contains("not 64 lowercase hex"));
        assert!(check(&|h| h.name = "../x".into()).contains("invalid image name"));
        assert!(check(&|h| h.files.push(h.files[0].clone())).contains("lists `image.json` twice"));
        assert!(check(&|h| h.files.truncate(1)).contains("lacks `host_ed25519.pub`"));
        assert!(check(&|h| h.files.retain(|f| !f.name.is_source())).contains("exactly one of"));
        assert!(check(&|h| h.files[0].size = 1 << 21).contains("more than the 1048576"));
        let warm = |h: &mut Header| {
            h.files.push(FileEntry {
                name: Member::WarmState,
                ..h.files[0].clone()
            })
        };
        assert!(check(&warm).contains("part of the warm state"));
        let unknown = serde_json::to_vec(&header()).unwrap();
        let unknown = String::from_utf8(unknown)
            .unwrap()
            .replace("disk.qcow2", "../x.qcow2");
        let mut bytes = (unknown.len() as u32).to_be_bytes().to_vec();
        bytes.extend(unknown.as_bytes());
        bytes.extend(Sha256::of(unknown.as_bytes()).bytes());
        assert!(
            fault(read_header(&mut &bytes[..]))
                .to_string()
                .contains("`../x.qcow2` is not")
        );
    }

    proptest! {
        /// Whatever the bytes, reading them never panics: it is a header or a fault.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_prelude(&mut &bytes[..]);
            let _ = read_header(&mut &bytes[..]);
        }

        /// A valid header with bytes flipped, cut or appended is refused or read whole.
        #[test]
        fn mangled_headers_never_panic(
            at in any::<prop::sample::Index>(),
            flip in 1u8..,
            cut in any::<prop::sample::Index>(),
        ) {
            let good = encoded(&header());
            let mut flipped = good.clone();
            let i = at.index(flipped.len());
            flipped[i] ^= flip;
            prop_assert!(read_header(&mut &flipped[..]).is_err());
            let cut = cut.index(good.len());
            prop_assert!(read_header(&mut &good[..cut]).is_err());
        }
    }
}
