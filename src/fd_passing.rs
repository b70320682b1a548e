//! Open descriptors sent over a unix socket (SCM_RIGHTS): the rsync relay hands vmrun its
//! stdin, stdout and stderr, so the data never passes through the relay process; vmrun hands
//! a persistent VM's QEMU the saved state it resumes (QMP `getfd`). The unsafe code of both is
//! here, kept to the two system calls and their control buffer.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The most descriptors one message carries (stdin, stdout, stderr).
pub const MAX_FDS: usize = 3;

/// Room for one SCM_RIGHTS message of [`MAX_FDS`] descriptors, aligned as `cmsghdr` must be
/// (a `u64` array is; a byte array would not be).
#[repr(C)]
struct Control {
    bytes: [u64; 8],
}

impl Control {
    fn new() -> Control {
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE((MAX_FDS * mem::size_of::<RawFd>()) as u32) };
        assert!(space as usize <= mem::size_of::<Control>());
        Control { bytes: [0; 8] }
    }
}

/// Sends `data` with `fds` attached to its first byte; how many bytes went (a stream socket
/// may take fewer than all: the caller writes the rest without descriptors). Retried when a
/// signal interrupts it.
pub fn send(socket: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    loop {
        match send_once(socket, data, fds) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            sent => return sent,
        }
    }
}

fn send_once(socket: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    assert!(!data.is_empty() && !fds.is_empty() && fds.len() <= MAX_FDS);
    let mut control = Control::new();
    let fd_bytes = mem::size_of_val(fds);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid (no buffers); the pointers set below outlive the call,
    // and the control buffer is aligned and large enough for one header with `fds` (checked
    // in `Control::new`), which is all that is written into it.
    let sent = unsafe {
        let mut message: libc::msghdr = mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.bytes.as_mut_ptr().cast();
        message.msg_controllen = libc::CMSG_SPACE(fd_bytes as u32) as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr(),
            libc::CMSG_DATA(header).cast::<RawFd>(),
            fds.len(),
        );
        libc::sendmsg(socket.as_raw_fd(), &message, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Receives into `buffer`, and takes the descriptors that came with those bytes (close-on-exec,
/// so the rsync processes vmrun starts meanwhile do not inherit them); how many bytes came.
/// Descriptors past [`MAX_FDS`] are closed by the kernel and not seen.
pub fn receive(socket: &UnixStream, buffer: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = Control::new();
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: as in `send`; recvmsg writes at most msg_controllen bytes of control data.
    let (received, message) = unsafe {
        let mut message: libc::msghdr = mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.bytes.as_mut_ptr().cast();
        message.msg_controllen = mem::size_of::<Control>() as _;
        let received = libc::recvmsg(socket.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC);
        (received, message)
    };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled the control buffer and set msg_controllen; the CMSG macros
    // walk only within it, and each SCM_RIGHTS descriptor is a new one this process owns.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                let count = ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    Ok((received as usize, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};

    #[test]
    fn descriptors_arrive_open_and_close_on_exec() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut read_end, write_end) = std::io::pipe().unwrap();
        assert_eq!(send(&a, b"hello", &[write_end.as_raw_fd()]).unwrap(), 5);
        drop(write_end);
        let mut buffer = [0u8; 16];
        let (n, mut fds) = receive(&b, &mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let fd = fds.pop().unwrap();
        // SAFETY: fcntl on a descriptor this test owns.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        File::from(fd).write_all(b"through").unwrap();
        let mut text = String::new();
        read_end.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through");
    }

    #[test]
    fn plain_bytes_bring_no_descriptors() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        let mut buffer = [0u8; 4];
        let (n, fds) = receive(&b, &mut buffer).unwrap();
        assert_eq!((n, fds.len()), (1, 0));
    }
}
