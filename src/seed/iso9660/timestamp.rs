//! The one time stamped on every record of an image, so identical inputs give identical bytes.

use crate::seed::Error;
use crate::utc::UtcTime;

/// A UTC time in whole seconds since 1970, as recorded in an image's volume descriptors,
/// directory records and Rock Ridge TF entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp(u64);

impl Timestamp {
    /// 2000-01-01T00:00:00Z: used when SOURCE_DATE_EPOCH is not set.
    pub const DEFAULT: Timestamp = Timestamp(946_684_800);

    /// 2155-12-31T23:59:59Z, the last second a directory record (years since 1900 in one
    /// byte) can hold.
    pub const MAX_SECONDS: u64 = 5_869_583_999;

    /// The time `seconds` after 1970-01-01T00:00:00Z, if a directory record can hold it.
    pub fn from_unix(seconds: u64) -> Option<Timestamp> {
        (seconds <= Self::MAX_SECONDS).then_some(Timestamp(seconds))
    }

    /// SOURCE_DATE_EPOCH (reproducible-builds.org) when set, else [`Timestamp::DEFAULT`].
    /// A set but malformed value is an error, never a silent fallback.
    pub fn from_env() -> Result<Timestamp, Error> {
        match std::env::var_os("SOURCE_DATE_EPOCH") {
            None => Ok(Self::DEFAULT),
            Some(value) => Self::parse_source_date_epoch(&value.to_string_lossy()),
        }
    }

    /// Parses a SOURCE_DATE_EPOCH value: decimal seconds since 1970, nothing else.
    pub fn parse_source_date_epoch(value: &str) -> Result<Timestamp, Error> {
        let invalid = || Error::SourceDateEpoch {
            value: value.to_owned(),
        };
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        value
            .parse()
            .ok()
            .and_then(Self::from_unix)
            .ok_or_else(invalid)
    }

    /// The 7-byte form of directory records (ECMA-119 9.1.5), also used by Rock Ridge TF.
    pub(super) fn directory_form(self) -> [u8; 7] {
        let t = self.civil();
        let year = u8::try_from(t.year - 1900).expect("year range is checked at construction");
        [year, t.month, t.day, t.hour, t.minute, t.second, 0]
    }

    /// The 17-byte form of volume descriptors (ECMA-119 8.4.26.1): digits, then a zero offset
    /// from GMT.
    pub(super) fn descriptor_form(self) -> [u8; 17] {
        let t = self.civil();
        let digits = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        );
        let mut out = [0; 17];
        out[..16].copy_from_slice(digits.as_bytes());
        out
    }

    fn civil(self) -> UtcTime {
        UtcTime::from_unix(self.0)
    }
}

/// The "not specified" 17-byte date (ECMA-119 8.4.26.1) for expiration and effective dates.
pub(super) const UNSPECIFIED_DESCRIPTOR_DATE: [u8; 17] = *b"0000000000000000\0";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_is_the_millennium() {
        assert_eq!(Timestamp::DEFAULT.directory_form(), [100, 1, 1, 0, 0, 0, 0]);
        assert_eq!(&Timestamp::DEFAULT.descriptor_form(), b"2000010100000000\0");
    }

    #[test]
    fn known_dates() {
        let t = Timestamp::parse_source_date_epoch("1709251199").unwrap();
        assert_eq!(&t.descriptor_form(), b"2024022923595900\0");
        let last = Timestamp::from_unix(Timestamp::MAX_SECONDS).unwrap();
        assert_eq!(last.directory_form(), [255, 12, 31, 23, 59, 59, 0]);
        assert_eq!(
            Timestamp::from_unix(0).unwrap().directory_form(),
            [70, 1, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn malformed_source_date_epoch_is_an_error() {
        for bad in [
            "",
            " 1",
            "1.5",
            "-1",
            "0x10",
            "abc",
            "5869584000",
            "99999999999999999999999",
        ] {
            let err = Timestamp::parse_source_date_epoch(bad).unwrap_err();
            assert!(
                matches!(&err, Error::SourceDateEpoch { value } if value == bad),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("SOURCE_DATE_EPOCH"));
        }
    }

    proptest! {
        #[test]
        fn both_forms_agree(seconds in 0..=Timestamp::MAX_SECONDS) {
            let t = Timestamp::from_unix(seconds).unwrap();
            let short = t.directory_form();
            let long = String::from_utf8(t.descriptor_form()[..16].to_vec()).unwrap();
            let field = |range: std::ops::Range<usize>| long[range].parse::<i64>().unwrap();
            prop_assert_eq!(field(0..4), 1900 + i64::from(short[0]));
            for (i, range) in [(1, 4..6), (2, 6..8), (3, 8..10), (4, 10..12), (5, 12..14)] {
                prop_assert_eq!(field(range), i64::from(short[i]));
            }
            prop_assert!((1..=12).contains(&short[1]) && (1..=31).contains(&short[2]));
        }
    }
}
