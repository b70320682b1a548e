//! The qcow2 header, its extensions and the backing file name: the first cluster of a qcow2
//! image, encoded and decoded here for both the overlay writer and the sniffer.
//!
//! All numbers are big-endian. Layout (docs/interop/qcow2.txt in QEMU's tree):
//! bytes 0..72 are common to versions 2 and 3, 72..104 are version 3 only, and a version 3
//! header of `header_length` 112 adds the compression type byte and padding. Header
//! extensions (type, length, data padded to 8 bytes) follow the header and end with a
//! type-0 extension; the backing file name (not NUL-terminated) follows them.
//!
//! The decoder reports what [`features`](super::features) judges: the encryption method, the
//! incompatible feature bits, and the extensions that make QEMU read more than this file.

pub(crate) const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Header extension type: the backing file's format name ("raw", "qcow2").
pub(crate) const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
/// Header extension type: the name of the external file that holds the guest's data.
pub(crate) const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Header extension type: where the full-disk-encryption (LUKS) header lies.
pub(crate) const EXT_FULL_DISK_ENCRYPTION: u32 = 0x0537_BE77;
/// Header extension type that ends the list.
pub(crate) const EXT_END: u32 = 0;
/// The longest backing file name the format (and QEMU) allows.
pub(crate) const MAX_BACKING_NAME: usize = 1023;
/// The length of the fixed header vmrun writes (version 3 with the compression type byte).
pub(crate) const V3_HEADER_LENGTH: u32 = 112;
const V2_HEADER_LENGTH: usize = 72;
const V3_MIN_HEADER_LENGTH: usize = 104;

/// The fixed header fields vmrun reads or writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    /// 0: none, 1: AES, 2: LUKS.
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    /// Version 3 only (0 for version 2): bits a reader must understand to open the image.
    pub incompatible_features: u64,
    /// Version 3 only (version 2 is always 4, 16-bit refcounts).
    pub refcount_order: u32,
    /// Version 3 only; 72 for version 2.
    pub header_length: u32,
}

/// A decoded first cluster: the header, the extensions vmrun reads and the backing name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FirstCluster {
    pub header: Header,
    pub extensions: Extensions,
    pub backing_name: Option<Vec<u8>>,
}

/// The header extensions vmrun reads; QEMU ignores unknown ones, and so does vmrun.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Extensions {
    pub backing_format: Option<String>,
    /// The external data file's name as recorded (possibly relative to the image).
    pub data_file: Option<Vec<u8>>,
    /// Whether a full-disk-encryption header is recorded.
    pub full_disk_encryption: bool,
}

fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(buf: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Rounds `n` up to a multiple of 8, the alignment of header extension data.
fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// One header extension: type, length, and `data` padded to 8 bytes. `EXT_END` with no data
/// is the marker that ends the list.
pub(crate) fn encode_extension(kind: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + pad8(data.len()));
    out.extend(kind.to_be_bytes());
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(data);
    out.resize(8 + pad8(data.len()), 0);
    out
}

impl Header {
    /// Writes a version 3 header (no compatible or autoclear feature bits, zlib compression)
    /// into `out`, which must be at least [`V3_HEADER_LENGTH`] bytes and zeroed.
    pub fn encode_v3(&self, out: &mut [u8]) {
        let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, MAGIC);
        put(4, &3u32.to_be_bytes());
        put(8, &self.backing_file_offset.to_be_bytes());
        put(16, &self.backing_file_size.to_be_bytes());
        put(20, &self.cluster_bits.to_be_bytes());
        put(24, &self.size.to_be_bytes());
        put(32, &self.crypt_method.to_be_bytes());
        put(36, &self.l1_size.to_be_bytes());
        put(40, &self.l1_table_offset.to_be_bytes());
        put(48, &self.refcount_table_offset.to_be_bytes());
        put(56, &self.refcount_table_clusters.to_be_bytes());
        // 60: nb_snapshots 0, 64: snapshots_offset 0.
        put(72, &self.incompatible_features.to_be_bytes());
        // 80..96: compatible and autoclear feature bits clear.
        put(96, &self.refcount_order.to_be_bytes());
        put(100, &V3_HEADER_LENGTH.to_be_bytes());
        // 104: compression type 0 (zlib), then padding to 112.
    }
}

/// Decodes the first cluster of a qcow2 image (version 2 or 3; the caller checked the magic
/// and version). `buf` holds the file's first bytes: its first cluster, or the whole file if
/// shorter. Returns why the image is damaged on failure.
pub(crate) fn decode(buf: &[u8]) -> Result<FirstCluster, String> {
    if buf.len() < V2_HEADER_LENGTH {
        return Err(format!("its header is cut short at {} bytes", buf.len()));
    }
    let version = be32(buf, 4);
    let cluster_bits = be32(buf, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(format!("cluster_bits {cluster_bits} is outside 9..=21"));
    }
    let cluster_size = 1usize << cluster_bits;
    let (refcount_order, header_length, incompatible_features) = if version >= 3 {
        if buf.len() < V3_MIN_HEADER_LENGTH {
            return Err(format!(
                "its version 3 header is cut short at {} bytes",
                buf.len()
            ));
        }
        let header_length = be32(buf, 100);
        if (header_length as usize) < V3_MIN_HEADER_LENGTH || header_length as usize > cluster_size
        {
            return Err(format!(
                "header_length {header_length} is outside 104..={cluster_size}"
            ));
        }
        (be32(buf, 96), header_length, be64(buf, 72))
    } else {
        (4, V2_HEADER_LENGTH as u32, 0)
    };
    let header = Header {
        version,
        backing_file_offset: be64(buf, 8),
        backing_file_size: be32(buf, 16),
        cluster_bits,
        size: be64(buf, 24),
        crypt_method: be32(buf, 32),
        l1_size: be32(buf, 36),
        l1_table_offset: be64(buf, 40),
        refcount_table_offset: be64(buf, 48),
        refcount_table_clusters: be32(buf, 56),
        incompatible_features,
        refcount_order,
        header_length,
    };

    // The backing name, and therefore everything before it, lies in the first cluster.
    let backing_name = if header.backing_file_offset == 0 {
        None
    } else {
        let size = header.backing_file_size as usize;
        if size > MAX_BACKING_NAME {
            return Err(format!(
                "its backing file name is {size} bytes (at most {MAX_BACKING_NAME})"
            ));
        }
        let start = usize::try_from(header.backing_file_offset)
            .ok()
            .filter(|start| {
                start
                    .checked_add(size)
                    .is_some_and(|end| end <= cluster_size)
            })
            .ok_or("its backing file name lies outside the first cluster")?;
        let name = buf
            .get(start..start + size)
            .ok_or("the file ends inside its backing file name")?;
        Some(name.to_vec())
    };

    let extensions_end = match header.backing_file_offset {
        0 => cluster_size.min(buf.len()),
        offset => offset as usize,
    };
    let extensions = read_extensions(buf, header.header_length as usize, extensions_end)?;
    Ok(FirstCluster {
        header,
        extensions,
        backing_name,
    })
}

/// Walks the header extensions in `buf[start..end]` and keeps those vmrun reads.
fn read_extensions(buf: &[u8], start: usize, end: usize) -> Result<Extensions, String> {
    let mut at = start;
    let mut found = Extensions::default();
    // Space for less than one extension header means there are no (more) extensions: a
    // version 2 image from an old QEMU stores its backing name right after the header.
    while at + 8 <= end {
        let kind = be32(buf, at);
        let len = be32(buf, at + 4) as usize;
        if kind == EXT_END {
            break;
        }
        let data = at + 8;
        if data + len > end {
            return Err(format!(
                "header extension {kind:#010x} runs past the first cluster"
            ));
        }
        let bytes = &buf[data..data + len];
        match kind {
            EXT_BACKING_FORMAT => {
                found.backing_format = Some(String::from_utf8_lossy(bytes).into_owned());
            }
            EXT_DATA_FILE => found.data_file = Some(bytes.to_vec()),
            EXT_FULL_DISK_ENCRYPTION => found.full_disk_encryption = true,
            _ => {}
        }
        at = data + pad8(len);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::super::layout::Layout;
    use super::*;

    #[test]
    fn v3_header_round_trips() {
        let header = Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: 16,
            size: 1 << 30,
            crypt_method: 2,
            l1_size: 2,
            l1_table_offset: 0x30000,
            refcount_table_offset: 0x10000,
            refcount_table_clusters: 1,
            incompatible_features: 1 << 63 | 1,
            refcount_order: 4,
            header_length: V3_HEADER_LENGTH,
        };
        let mut buf = vec![0u8; 4096];
        header.encode_v3(&mut buf);
        let decoded = decode(&buf).unwrap();
        assert_eq!(decoded.header, header);
        assert_eq!(decoded.extensions, Extensions::default());
        assert_eq!(decoded.backing_name, None);
    }

    #[test]
    fn short_and_nonsense_headers_are_damaged() {
        let mut buf = vec![0u8; 200];
        buf[..4].copy_from_slice(MAGIC);
        buf[7] = 3;
        assert!(decode(&buf[..50]).unwrap_err().contains("cut short"));
        buf[23] = 40;
        assert!(decode(&buf).unwrap_err().contains("cluster_bits 40"));
    }

    #[test]
    fn data_file_and_encryption_extensions_are_read() {
        let image = Layout::with_extensions(
            1 << 20,
            b"/base.raw",
            &[
                (EXT_FULL_DISK_ENCRYPTION, &[0; 16]),
                (EXT_DATA_FILE, b"/etc/shadow"),
                (0x1234_5678, b"unknown to vmrun"),
                (EXT_BACKING_FORMAT, b"raw"),
            ],
        )
        .to_bytes();
        let decoded = decode(&image).unwrap();
        assert_eq!(
            decoded.extensions,
            Extensions {
                backing_format: Some("raw".to_owned()),
                data_file: Some(b"/etc/shadow".to_vec()),
                full_disk_encryption: true,
            }
        );
        assert_eq!(decoded.backing_name.as_deref(), Some(&b"/base.raw"[..]));
    }

    #[test]
    fn an_extension_running_past_the_cluster_is_damage() {
        let mut buf = vec![0u8; 512];
        buf[..4].copy_from_slice(MAGIC);
        buf[7] = 3;
        buf[23] = 9;
        buf[100..104].copy_from_slice(&112u32.to_be_bytes());
        buf[112..116].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        buf[116..120].copy_from_slice(&4000u32.to_be_bytes());
        assert!(decode(&buf).unwrap_err().contains("runs past"));
    }
}
