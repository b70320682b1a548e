//! The `Content-Range` header of a 206 or 416 response (RFC 9110, section 14.4).

/// `bytes FIRST-LAST/COMPLETE`, with `COMPLETE` unknown when the server sent `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub complete: Option<u64>,
}

impl ContentRange {
    /// Parses a satisfied range; `None` for anything else (including `bytes */N`).
    pub fn parse(value: &str) -> Option<ContentRange> {
        let (unit, rest) = value.trim().split_once(' ')?;
        if !unit.eq_ignore_ascii_case("bytes") {
            return None;
        }
        let (range, complete) = rest.trim().split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
        let complete = match complete {
            "*" => None,
            n => Some(n.parse().ok()?),
        };
        let valid = first <= last && complete.is_none_or(|n| last < n);
        valid.then_some(ContentRange {
            first,
            last,
            complete,
        })
    }

    /// Whether this is the rest of the file from `offset`: what a `Range: bytes=OFFSET-` asked for.
    pub fn is_rest_from(&self, offset: u64) -> bool {
        self.first == offset && self.complete.is_none_or(|n| self.last + 1 == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_satisfied_ranges() {
        let r = ContentRange::parse("bytes 100-999/1000").unwrap();
        assert_eq!(
            r,
            ContentRange {
                first: 100,
                last: 999,
                complete: Some(1000)
            }
        );
        assert!(r.is_rest_from(100));
        assert!(!r.is_rest_from(0));
        let r = ContentRange::parse("Bytes 5-9/*").unwrap();
        assert_eq!(r.complete, None);
        assert!(r.is_rest_from(5));
    }

    #[test]
    fn a_range_short_of_the_end_is_not_the_rest() {
        let r = ContentRange::parse("bytes 100-199/1000").unwrap();
        assert!(!r.is_rest_from(100));
    }

    #[test]
    fn rejects_malformed_and_unsatisfied_ranges() {
        for value in [
            "",
            "bytes */1000",
            "items 0-1/2",
            "bytes 9-5/10",
            "bytes 0-10/10",
            "bytes 0-x/10",
            "bytes 0-9",
            "bytes -1-9/10",
        ] {
            assert_eq!(ContentRange::parse(value), None, "{value:?}");
        }
    }
}
