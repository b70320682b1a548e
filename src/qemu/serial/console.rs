//! The pipe QEMU writes the serial console into, and the thread that reads it: QEMU inherits
//! the write end and opens it as `/dev/fd/N` (a `-chardev file`, see
//! `crate::qemu::args`); the thread keeps the log capped and, for a watcher
//! that wants them, hands on the console's lines, each cut at a bound.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::capped::{CappedLog, LIMITS};
use crate::bounded_lines::{BoundedLines, Piece};
use crate::pipe::pipe;

/// A console line longer than this reaches a watcher in pieces.
const LINE_CAP: usize = 16 * 1024;
/// Lines waiting for the watcher; when it falls behind, the reader waits, and so does QEMU's
/// serial port (the guest's console slows down; nothing is lost).
const LINES_QUEUED: usize = 1024;

/// The console's lines, without line endings, for a watcher.
pub type Lines = Receiver<String>;

/// One VM's console: the pipe and the thread that drains it into the log.
pub struct Console {
    /// QEMU's end, held until QEMU has its own copy.
    qemu_end: Option<OwnedFd>,
    fd: RawFd,
    reader: Option<JoinHandle<()>>,
}

impl Console {
    /// A console written, capped, to `log` (made anew).
    pub fn to_log(log: &Path) -> io::Result<Console> {
        let (read, write) = pipe()?;
        Console::start(log, read, write, None)
    }

    /// [`to_log`](Self::to_log), and its lines handed on as they come.
    pub fn with_lines(log: &Path) -> io::Result<(Console, Lines)> {
        let (read, write) = pipe()?;
        let (sender, lines) = sync_channel(LINES_QUEUED);
        Ok((Console::start(log, read, write, Some(sender))?, lines))
    }

    /// [`to_log`](Self::to_log) with QEMU's end at descriptor `fd`, for a QEMU command line
    /// written before this process started (a persistent VM's unit). `fd` must not be open.
    pub fn at_fd(log: &Path, fd: RawFd) -> io::Result<Console> {
        // SAFETY: F_GETFD only asks about the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            return Err(io::Error::other(format!("descriptor {fd} is already open")));
        }
        let (mut read, mut write) = pipe()?;
        if read.as_raw_fd() == fd {
            // The lowest free descriptor may be the one asked for: move the read end aside,
            // or placing the write end there would close it.
            read = read.try_clone()?;
        }
        if write.as_raw_fd() != fd {
            // SAFETY: dup3 onto a descriptor that is not open (checked above, and the read end
            // is elsewhere) closes nothing of anyone's.
            if unsafe { libc::dup3(write.as_raw_fd(), fd, libc::O_CLOEXEC) } != fd {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just made by dup3 and nothing else owns it.
            write = unsafe { OwnedFd::from_raw_fd(fd) };
        }
        Console::start(log, read, write, None)
    }

    fn start(
        log: &Path,
        read: OwnedFd,
        write: OwnedFd,
        lines: Option<SyncSender<String>>,
    ) -> io::Result<Console> {
        let log = CappedLog::create(log, LIMITS)?;
        let fd = write.as_raw_fd();
        let reader = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || drain(File::from(read), log, lines))?;
        Ok(Console {
            qemu_end: Some(write),
            fd,
            reader: Some(reader),
        })
    }

    /// The descriptor QEMU writes to (it must inherit it under this number).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// QEMU's end, to pass to QEMU; `None` once [`qemu_started`](Self::qemu_started).
    pub fn qemu_end(&self) -> Option<BorrowedFd<'_>> {
        self.qemu_end.as_ref().map(|fd| fd.as_fd())
    }

    /// QEMU has its end: vmrun closes its own, so the pipe ends when QEMU exits.
    pub fn qemu_started(&mut self) {
        self.qemu_end = None;
    }

    /// Waits until everything QEMU wrote is in the log. Call it after QEMU exited: until
    /// then the pipe stays open.
    pub fn finish(&mut self) {
        self.qemu_started();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Reads the console until QEMU closes it. When the log cannot be written (a full disk) or
/// the watcher is gone, that part stops; the pipe is still drained, so QEMU never waits on it.
fn drain(mut from: File, log: CappedLog, lines: Option<SyncSender<String>>) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut log = Some(log);
    let mut lines = lines.map(|sender| (sender, BoundedLines::new(LINE_CAP)));
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if log
            .as_mut()
            .is_some_and(|log| log.append(&buffer[..n]).is_err())
        {
            log = None;
        }
        if let Some((sender, split)) = &mut lines
            && split
                .push(&buffer[..n], |piece| sender.send(line_text(piece)))
                .is_err()
        {
            lines = None;
        }
    }
    if let Some((sender, mut split)) = lines {
        let rest = split.rest();
        if !rest.is_empty() {
            let _ = sender.send(line_text(Piece::End(&rest)));
        }
    }
}

fn line_text(piece: Piece) -> String {
    let (Piece::End(bytes) | Piece::Cut(bytes)) = piece;
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    String::from_utf8_lossy(bytes.strip_suffix(b"\r").unwrap_or(bytes)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_through(console: &mut Console, bytes: &[u8]) {
        let mut qemu = File::from(console.qemu_end().unwrap().try_clone_to_owned().unwrap());
        console.qemu_started();
        qemu.write_all(bytes).unwrap();
    }

    #[test]
    fn what_qemu_writes_reaches_the_log_and_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let (mut console, lines) = Console::with_lines(&path).unwrap();
        write_through(&mut console, b"boot\r\ncloud-init ok\npartial");
        console.finish();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"boot\r\ncloud-init ok\npartial"
        );
        assert_eq!(
            lines.iter().collect::<Vec<_>>(),
            ["boot", "cloud-init ok", "partial"]
        );
    }

    #[test]
    fn a_flood_keeps_the_log_capped_and_the_lines_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let (mut console, lines) = Console::with_lines(&path).unwrap();
        let watcher = std::thread::spawn(move || lines.iter().map(|l| l.len()).max());
        let mut qemu = File::from(console.qemu_end().unwrap().try_clone_to_owned().unwrap());
        console.qemu_started();
        qemu.write_all(b"first line\n").unwrap();
        for _ in 0..(12 << 20) / 65536 {
            qemu.write_all(&[b'x'; 65536]).unwrap();
        }
        qemu.write_all(b"\nverdict\n").unwrap();
        drop(qemu);
        console.finish();
        assert_eq!(watcher.join().unwrap(), Some(LINE_CAP));
        let log = std::fs::read(&path).unwrap();
        assert!(
            log.len() as u64 <= LIMITS.head + LIMITS.tail + LIMITS.slack + 200,
            "{}",
            log.len()
        );
        assert!(log.starts_with(b"first line\n"));
        assert!(log.ends_with(b"x\nverdict\n"));
        let text = String::from_utf8_lossy(&log);
        assert!(
            text.contains("bytes of the console left out here"),
            "a marker"
        );
    }

    #[test]
    fn a_gone_watcher_does_not_stop_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let (mut console, lines) = Console::with_lines(&path).unwrap();
        drop(lines);
        write_through(&mut console, &b"line\n".repeat(5000));
        console.finish();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 25000);
    }

    #[test]
    fn placed_at_a_free_descriptor_only() {
        let dir = tempfile::tempdir().unwrap();
        let taken = File::open("/dev/null").unwrap();
        let err = Console::at_fd(&dir.path().join("a.log"), taken.as_raw_fd())
            .err()
            .unwrap();
        assert!(err.to_string().contains("already open"), "{err}");
        let mut console = Console::at_fd(&dir.path().join("b.log"), 900).unwrap();
        assert_eq!(console.fd(), 900);
        write_through(&mut console, b"at 900\n");
        console.finish();
        assert_eq!(
            std::fs::read(dir.path().join("b.log")).unwrap(),
            b"at 900\n"
        );
    }

    #[test]
    fn placed_at_the_descriptor_the_pipe_itself_would_get() {
        let dir = tempfile::tempdir().unwrap();
        // The lowest free descriptor, which pipe2 hands out first (unless another test's
        // thread takes it meanwhile: then this checks the plain case).
        let lowest = File::open("/dev/null").unwrap().as_raw_fd();
        let mut console = Console::at_fd(&dir.path().join("c.log"), lowest).unwrap();
        assert_eq!(console.fd(), lowest);
        write_through(&mut console, b"placed\n");
        console.finish();
        assert_eq!(
            std::fs::read(dir.path().join("c.log")).unwrap(),
            b"placed\n"
        );
    }
}
