//! Making a file sparse where it holds zeros: a saved guest RAM has pages the guest touched
//! and left zero, which need no disk blocks.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

const PAGE: usize = 4096;
const CHUNK: usize = 1 << 20;

/// Frees the blocks of every 4 KiB page of `file` that holds only zeros; the content reads
/// the same. Only the parts that have blocks are read (SEEK_DATA/SEEK_HOLE). Returns the
/// bytes punched out.
pub fn punch_zero_pages(file: &File) -> io::Result<u64> {
    let size = file.metadata()?.len();
    let mut punched = 0;
    let mut buffer = vec![0u8; CHUNK];
    let mut at = 0;
    while at < size {
        let Some(data) = seek(file, at, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(file, data, libc::SEEK_HOLE)?.unwrap_or(size);
        let mut offset = data;
        while offset < end {
            let len = ((end - offset) as usize).min(CHUNK);
            file.read_exact_at(&mut buffer[..len], offset)?;
            let mut run: Option<u64> = None;
            for (i, page) in buffer[..len].chunks(PAGE).enumerate() {
                let page_at = offset + (i * PAGE) as u64;
                match (page.iter().all(|&b| b == 0), run) {
                    (true, None) => run = Some(page_at),
                    (false, Some(start)) => {
                        punched += punch(file, start, page_at - start)?;
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(start) = run {
                punched += punch(file, start, offset + len as u64 - start)?;
            }
            offset += len as u64;
        }
        at = end;
    }
    Ok(punched)
}

/// `lseek` with `whence`; `None` past the last data (ENXIO).
fn seek(file: &File, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a descriptor the File owns; it changes only the file offset, which
    // nothing here relies on (reads are positioned).
    let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, whence) };
    if at >= 0 {
        return Ok(Some(at as u64));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(e),
    }
}

fn punch(file: &File, offset: u64, len: u64) -> io::Result<u64> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a descriptor the File owns, within the file's size.
    let done = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_pages_lose_their_blocks_and_the_content_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ram");
        let mut content = vec![0u8; 64 * PAGE];
        for page in [0, 5, 6, 40, 63] {
            content[page * PAGE + 17] = page as u8 + 1;
        }
        std::fs::write(&path, &content).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        let before = file.metadata().unwrap().blocks();
        let punched = punch_zero_pages(&file).unwrap();
        let after = file.metadata().unwrap().blocks();
        assert_eq!(punched, 59 * PAGE as u64);
        assert!(after < before, "{before} blocks before, {after} after");
        assert_eq!(std::fs::read(&path).unwrap(), content);
        // Nothing more to punch the second time.
        assert_eq!(punch_zero_pages(&file).unwrap(), 0);
    }
}
