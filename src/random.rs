//! Random tokens from the kernel: run ids, per-bake markers.

/// `bytes` random bytes as lowercase hex (2 × `bytes` digits).
pub fn hex(bytes: usize) -> String {
    crate::hex::encode(&self::bytes(bytes))
}

/// `count` random bytes.
pub fn bytes(count: usize) -> Vec<u8> {
    let bytes = count;
    let mut buf = vec![0u8; bytes];
    let mut filled = 0;
    while filled < bytes {
        // SAFETY: the pointer and length describe the unfilled rest of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), bytes - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            panic!(
                "the kernel's random number generator failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_differ_and_have_the_length_asked_for() {
        let (a, b) = (super::hex(8), super::hex(8));
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
