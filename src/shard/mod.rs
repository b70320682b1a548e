//! `--shard`: which part of a suite one `vmrun test` runs. The guest command sees it as
//! `VMRUN_SHARD_INDEX` (K, from 1) and `VMRUN_SHARD_COUNT` (N); what it runs of the suite for
//! them is its own choice.

mod ci;

pub use ci::from_ci;

use std::fmt;

/// Shard `index` of `count`, 1 <= index <= count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Shard `index` (from 1) of `count`; an error when there is no such shard.
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 || index == 0 || index > count {
            return Err(format!(
                "shard {index} of {count} does not exist (shards are 1 to N)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// `K/N`, as `--shard` and `VMRUN_SHARD` take it.
    pub fn parse(spec: &str) -> Result<Shard, String> {
        let (k, n) = spec.split_once('/').ok_or("expected K/N, e.g. 2/4")?;
        Shard::new(number(k, "shard number")?, number(n, "shard count")?)
    }

    /// From 1.
    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// The variables the guest command gets.
    pub fn env(self) -> [(String, String); 2] {
        [
            ("VMRUN_SHARD_INDEX".into(), self.index.to_string()),
            ("VMRUN_SHARD_COUNT".into(), self.count.to_string()),
        ]
    }
}

/// `K/N`.
impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

fn number(text: &str, what: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_of_n() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(
            Shard::parse(" 1 / 1 ").map(|s| s.to_string()),
            Ok("1/1".into())
        );
        assert!(Shard::parse("0/4").unwrap_err().contains("does not exist"));
        assert!(Shard::parse("5/4").is_err());
        assert!(Shard::parse("1/0").is_err());
        assert!(Shard::parse("2").unwrap_err().contains("K/N"));
        assert!(Shard::parse("a/4").unwrap_err().contains("\"a\""));
        assert!(Shard::parse("-1/4").is_err());
        assert!(Shard::parse("1/99999999999").is_err());
    }

    #[test]
    fn the_guest_sees_k_and_n() {
        let env = Shard::new(3, 8).unwrap().env();
        assert_eq!(env[0], ("VMRUN_SHARD_INDEX".into(), "3".into()));
        assert_eq!(env[1], ("VMRUN_SHARD_COUNT".into(), "8".into()));
    }
}
