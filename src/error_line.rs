//! An error and its causes on one line, for messages that quote an error inside a sentence
//! (a hint, a notice) where a full report would not fit.

/// `error: cause: cause of the cause ...`
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open /dev/kvm")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_the_causes_in_order() {
        let e = Outer(std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(
            one_line(&e),
            "cannot open /dev/kvm: Permission denied (os error 13)"
        );
        assert_eq!(one_line(&std::io::Error::other("alone")), "alone");
    }
}
