//! `--shard auto`: the shard a CI system's parallel job stands for, read from the variables
//! that system sets. A pure function of an environment lookup, so every system is tested
//! without its environment.

use super::Shard;

/// Set explicitly, as `--shard` takes it (1-based `K/N`): for CI systems that do not number
/// their parallel jobs themselves, e.g. a GitHub Actions matrix.
pub const EXPLICIT: &str = "VMRUN_SHARD";

/// A CI system's pair of variables for its parallel jobs.
struct Source {
    system: &'static str,
    index: &'static str,
    count: &'static str,
    /// The number of its first job: 0 or 1.
    first: u32,
}

/// In the order they are looked for.
const SOURCES: [Source; 3] = [
    Source {
        system: "GitLab",
        index: "CI_NODE_INDEX",
        count: "CI_NODE_TOTAL",
        first: 1,
    },
    Source {
        system: "Buildkite",
        index: "BUILDKITE_PARALLEL_JOB",
        count: "BUILDKITE_PARALLEL_JOB_COUNT",
        first: 0,
    },
    Source {
        system: "CircleCI",
        index: "CIRCLE_NODE_INDEX",
        count: "CIRCLE_NODE_TOTAL",
        first: 0,
    },
];

/// A shard found in the environment, and where it came from (for the one line vmrun says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub shard: Shard,
    /// E.g. `GitLab (CI_NODE_INDEX=2, CI_NODE_TOTAL=4)`.
    pub source: String,
}

/// The shard this CI job runs: `VMRUN_SHARD` when set, else the first CI system whose
/// variables are set. An error names what was looked for when nothing is, and the variable
/// and its value when one cannot be used. Empty variables count as unset (a CI template that
/// expands to nothing).
pub fn from_ci(var: impl Fn(&str) -> Option<String>) -> Result<Found, String> {
    let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if let Some(spec) = var(EXPLICIT) {
        let shard = Shard::parse(&spec).map_err(|e| format!("{EXPLICIT}={spec:?}: {e}"))?;
        return Ok(Found {
            shard,
            source: format!("{EXPLICIT}={spec}"),
        });
    }
    for source in &SOURCES {
        if let Some(found) = source.read(var)? {
            return Ok(found);
        }
    }
    let mut looked_for = format!("found no CI shard: looked for {EXPLICIT} (K/N)");
    for s in &SOURCES {
        looked_for += &format!(", {}/{} ({})", s.index, s.count, s.system);
    }
    if var("GITHUB_ACTIONS").as_deref() == Some("true") {
        looked_for += &format!(
            "; GitHub Actions numbers no matrix jobs: set {EXPLICIT} from the matrix, e.g. \
             `{EXPLICIT}: ${{{{ matrix.shard }}}}/${{{{ strategy.job-total }}}}`"
        );
    }
    Err(looked_for)
}

impl Source {
    /// This system's shard, `None` when its variables are not set.
    fn read(&self, var: impl Fn(&str) -> Option<String>) -> Result<Option<Found>, String> {
        let (index, count) = match (var(self.index), var(self.count)) {
            (None, None) => return Ok(None),
            (Some(index), Some(count)) => (index, count),
            // GitLab sets its total (1) but no index for a job without `parallel:`.
            (None, Some(count)) if count.trim() == "1" => (self.first.to_string(), count),
            (index, _) => {
                let (set, unset) = match index {
                    Some(_) => (self.index, self.count),
                    None => (self.count, self.index),
                };
                return Err(format!("{set} is set but {unset} is not ({})", self.system));
            }
        };
        let source = format!(
            "{} ({}={index}, {}={count})",
            self.system, self.index, self.count
        );
        let bad = |e: String| {
            format!(
                "{}={index:?}, {}={count:?} ({}, jobs numbered from {}): {e}",
                self.index, self.count, self.system, self.first
            )
        };
        let k = super::number(&index, "job number").map_err(bad)?;
        let n = super::number(&count, "job count").map_err(bad)?;
        let k = k
            .checked_sub(self.first)
            .and_then(|k| k.checked_add(1))
            .ok_or_else(|| bad(format!("job {k} does not exist")))?;
        let shard = Shard::new(k, n).map_err(bad)?;
        Ok(Some(Found { shard, source }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(vars: &[(&str, &str)]) -> Result<Found, String> {
        from_ci(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn shard(vars: &[(&str, &str)]) -> Result<String, String> {
        found(vars).map(|f| f.shard.to_string())
    }

    #[test]
    fn gitlab_numbers_from_one() {
        let gitlab = found(&[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "4")]).unwrap();
        assert_eq!(gitlab.shard, Shard::new(2, 4).unwrap());
        assert_eq!(gitlab.source, "GitLab (CI_NODE_INDEX=2, CI_NODE_TOTAL=4)");
        assert_eq!(
            shard(&[("CI_NODE_INDEX", "4"), ("CI_NODE_TOTAL", "4")]),
            Ok("4/4".into())
        );
        // A job without `parallel:` has a total of 1 and no index.
        assert_eq!(shard(&[("CI_NODE_TOTAL", "1")]), Ok("1/1".into()));
    }

    #[test]
    fn buildkite_and_circleci_number_from_zero() {
        let buildkite = [
            ("BUILDKITE_PARALLEL_JOB", "0"),
            ("BUILDKITE_PARALLEL_JOB_COUNT", "3"),
        ];
        assert_eq!(shard(&buildkite), Ok("1/3".into()));
        assert_eq!(
            shard(&[("CIRCLE_NODE_INDEX", "3"), ("CIRCLE_NODE_TOTAL", "4")]),
            Ok("4/4".into())
        );
        assert_eq!(shard(&[("CIRCLE_NODE_TOTAL", "1")]), Ok("1/1".into()));
        let circle = found(&[("CIRCLE_NODE_INDEX", "0"), ("CIRCLE_NODE_TOTAL", "2")]).unwrap();
        assert_eq!(
            circle.source,
            "CircleCI (CIRCLE_NODE_INDEX=0, CIRCLE_NODE_TOTAL=2)"
        );
    }

    #[test]
    fn vmrun_shard_is_explicit_and_wins() {
        let explicit = found(&[
            ("VMRUN_SHARD", "3/5"),
            ("CI_NODE_INDEX", "1"),
            ("CI_NODE_TOTAL", "2"),
        ])
        .unwrap();
        assert_eq!(explicit.shard, Shard::new(3, 5).unwrap());
        assert_eq!(explicit.source, "VMRUN_SHARD=3/5");
        // Empty is unset: the next system counts.
        assert_eq!(
            shard(&[
                ("VMRUN_SHARD", ""),
                ("CI_NODE_INDEX", "1"),
                ("CI_NODE_TOTAL", "2")
            ]),
            Ok("1/2".into())
        );
    }

    #[test]
    fn nothing_found_names_what_was_looked_for() {
        let none = shard(&[]).unwrap_err();
        for name in [
            "VMRUN_SHARD",
            "CI_NODE_INDEX/CI_NODE_TOTAL (GitLab)",
            "BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT (Buildkite)",
            "CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL (CircleCI)",
        ] {
            assert!(none.contains(name), "{none}");
        }
        assert!(!none.contains("GitHub"), "{none}");
        let github = shard(&[("GITHUB_ACTIONS", "true")]).unwrap_err();
        assert!(
            github.contains("`VMRUN_SHARD: ${{ matrix.shard }}/${{ strategy.job-total }}`"),
            "{github}"
        );
    }

    #[test]
    fn malformed_values_are_named_with_their_variable() {
        let bad = shard(&[("VMRUN_SHARD", "2of4")]).unwrap_err();
        assert!(
            bad.starts_with("VMRUN_SHARD=\"2of4\": expected K/N"),
            "{bad}"
        );
        let bad = shard(&[("VMRUN_SHARD", "5/4")]).unwrap_err();
        assert!(bad.contains("does not exist"), "{bad}");

        let bad = shard(&[("CI_NODE_INDEX", "x"), ("CI_NODE_TOTAL", "4")]).unwrap_err();
        assert!(
            bad.starts_with("CI_NODE_INDEX=\"x\", CI_NODE_TOTAL=\"4\" (GitLab"),
            "{bad}"
        );
        assert!(bad.ends_with("\"x\" is not a job number"), "{bad}");
        // GitLab's first job is 1: 0 is not one of its jobs.
        let bad = shard(&[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "4")]).unwrap_err();
        assert!(
            bad.contains("(GitLab, jobs numbered from 1): job 0 does not exist"),
            "{bad}"
        );
        let bad = shard(&[("CI_NODE_INDEX", "5"), ("CI_NODE_TOTAL", "4")]).unwrap_err();
        assert!(bad.contains("does not exist"), "{bad}");

        // Buildkite's last job of 3 is 2.
        let past = [
            ("BUILDKITE_PARALLEL_JOB", "3"),
            ("BUILDKITE_PARALLEL_JOB_COUNT", "3"),
        ];
        assert!(shard(&past).unwrap_err().contains("does not exist"));
        let bad = shard(&[("CIRCLE_NODE_INDEX", "-1"), ("CIRCLE_NODE_TOTAL", "4")]).unwrap_err();
        assert!(bad.contains("is not a job number"), "{bad}");
        let huge = [
            ("CIRCLE_NODE_INDEX", "4294967295"),
            ("CIRCLE_NODE_TOTAL", "4294967295"),
        ];
        assert!(shard(&huge).is_err());
    }

    #[test]
    fn half_a_pair_is_an_error() {
        let bad = shard(&[("CIRCLE_NODE_INDEX", "1")]).unwrap_err();
        assert_eq!(
            bad,
            "CIRCLE_NODE_INDEX is set but CIRCLE_NODE_TOTAL is not (CircleCI)"
        );
        let bad = shard(&[("BUILDKITE_PARALLEL_JOB_COUNT", "4")]).unwrap_err();
        assert_eq!(
            bad,
            "BUILDKITE_PARALLEL_JOB_COUNT is set but BUILDKITE_PARALLEL_JOB is not (Buildkite)"
        );
    }
}
