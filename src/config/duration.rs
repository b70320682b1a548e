//! Durations: `test.timeout` and `--timeout`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serializer};

/// The units, largest first; a duration names each at most once, in this order (`1h30m`).
const UNITS: [(&str, Duration); 4] = [
    ("h", Duration::from_secs(3600)),
    ("m", Duration::from_secs(60)),
    ("s", Duration::from_secs(1)),
    ("ms", Duration::from_millis(1)),
];

/// Parses `90s`, `10m`, `1h30m`, `500ms`: numbers with units, largest unit first; more than
/// zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration `{text}`: expected a number with ms, s, m or h, like 90s or 1h30m"
        )
    };
    let mut total = Duration::ZERO;
    let mut rest = text;
    let mut smaller_than = 0; // index into UNITS: the next part's unit must be at or after it
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let letters = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let number: u32 = rest[..digits].parse().map_err(|_| invalid())?;
        let unit = &rest[digits..digits + letters];
        let position = UNITS[smaller_than..]
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or_else(invalid)?;
        let part = UNITS[smaller_than + position]
            .1
            .checked_mul(number)
            .ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
        smaller_than += position + 1;
        rest = &rest[digits + letters..];
    }
    if total.is_zero() {
        return Err(format!("invalid duration `{text}`: must be more than zero"));
    }
    Ok(total)
}

/// The inverse of [`parse_duration`], to the millisecond: `1h30m`, `1s500ms`.
pub(super) fn format_duration(duration: Duration) -> String {
    let mut nanos = duration.as_nanos();
    let mut out = String::new();
    for (name, unit) in UNITS {
        let count = nanos / unit.as_nanos();
        if count > 0 {
            out.push_str(&format!("{count}{name}"));
            nanos %= unit.as_nanos();
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// For `Option<Duration>` fields: `#[serde(deserialize_with = "...")]`.
pub(super) fn deserialize_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    struct DurationValue(Duration);
    impl<'de> Deserialize<'de> for DurationValue {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct DurationVisitor;
            impl Visitor<'_> for DurationVisitor {
                type Value = DurationValue;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a duration like 90s or 1h30m")
                }
                fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationValue, E> {
                    parse_duration(text).map(DurationValue).map_err(E::custom)
                }
            }
            deserializer.deserialize_str(DurationVisitor)
        }
    }
    Ok(Option::<DurationValue>::deserialize(deserializer)?.map(|value| value.0))
}

/// For `Option<Duration>` fields: `#[serde(serialize_with = "...")]`.
pub(super) fn serialize_option<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_str(&format_duration(*duration)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_combinations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("1h2m3s4ms"),
            Ok(Duration::from_millis(3_723_004))
        );
    }

    #[test]
    fn rejects_bare_numbers_unknown_units_and_out_of_order_parts() {
        for text in [
            "",
            "90",
            "10x",
            "m",
            "1.5h",
            "30m1h",
            "1m1m",
            "1h 30m",
            "-1s",
            "99999999999h",
        ] {
            assert_eq!(
                parse_duration(text).unwrap_err(),
                format!(
                    "invalid duration `{text}`: expected a number with ms, s, m or h, \
                     like 90s or 1h30m"
                )
            );
        }
    }

    #[test]
    fn rejects_zero() {
        assert_eq!(
            parse_duration("0s").unwrap_err(),
            "invalid duration `0s`: must be more than zero"
        );
        assert_eq!(
            parse_duration("0h0m").unwrap_err(),
            "invalid duration `0h0m`: must be more than zero"
        );
    }

    #[test]
    fn format_is_the_inverse_of_parse() {
        for text in ["90ms", "1s500ms", "1h30m", "2h", "59m59s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
