//! rsync filter rules for copying a project in and artifacts out. rsync checks each path
//! against the rules in order and the first match decides; a directory that is excluded is
//! not entered at all.

use crate::config::SyncConfig;

/// Rules for the project copied into the guest, in this order:
/// 1. `.git` (directory or submodule link file) anywhere: never copied.
/// 2. `test.sync.include`: copied even where a later rule would drop it, so an include can
///    bring back something `.gitignore` ignores (`dist/`). A file inside an excluded
///    directory needs that directory included too (`build/`), since rsync does not enter it.
/// 3. `test.sync.exclude`: not copied.
/// 4. Each directory's `.gitignore`, applied to that directory and below as git does, except
///    that `!` negations are not supported (rsync has no "un-ignore"), and neither
///    `.git/info/exclude` nor git's global excludes are read.
///
/// Patterns are rsync's, relative to the project: a leading `/` anchors at the project
/// root, a pattern without any other `/` matches at any depth, a trailing `/` matches only
/// directories, `*` stays within one path segment and `**` crosses segments.
pub fn push_rules(sync: &SyncConfig) -> Vec<String> {
    let mut rules = vec!["--exclude=.git".to_owned()];
    rules.extend(sync.include.iter().map(|p| format!("--include={p}")));
    rules.extend(sync.exclude.iter().map(|p| format!("--exclude={p}")));
    rules.push("--filter=:- .gitignore".to_owned());
    rules
}

/// Rules that copy back only what `globs` match: every directory is entered, matches are
/// included, everything else excluded (and directories left empty pruned by the caller's
/// `--prune-empty-dirs`).
///
/// Globs are relative to the project root (`junit.xml` is the one at the root, `**/*.xml`
/// any at any depth, `**/` matching zero or more directories as in git). A glob that matches
/// a directory brings the whole directory.
pub fn pull_rules(globs: &[String]) -> Vec<String> {
    let mut rules = vec!["--include=*/".to_owned()];
    for glob in globs {
        let anchored = if glob.starts_with('/') {
            glob.clone()
        } else {
            format!("/{glob}")
        };
        for pattern in zero_directory_forms(&anchored) {
            let contents = format!("{}/**", pattern.trim_end_matches('/'));
            rules.push(format!("--include={pattern}"));
            rules.push(format!("--include={contents}"));
        }
    }
    rules.push("--exclude=*".to_owned());
    rules
}

/// `pattern` and, for each `**/` that starts a segment, the form without it: rsync's `**/`
/// needs at least one directory, git's (and ours) also matches none.
fn zero_directory_forms(pattern: &str) -> Vec<String> {
    let Some(at) = pattern.match_indices("/**/").map(|(i, _)| i).next() else {
        return vec![pattern.to_owned()];
    };
    let (head, tail) = (&pattern[..at], &pattern[at + "/**".len()..]);
    let mut forms = Vec::new();
    for rest in zero_directory_forms(tail) {
        forms.push(format!("{head}/**{rest}"));
        forms.push(format!("{head}{rest}"));
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn push_rules_in_order() {
        let sync = SyncConfig {
            include: strings(&["dist/"]),
            exclude: strings(&["target/", "*.log"]),
        };
        assert_eq!(
            push_rules(&sync),
            strings(&[
                "--exclude=.git",
                "--include=dist/",
                "--exclude=target/",
                "--exclude=*.log",
                "--filter=:- .gitignore"
            ])
        );
    }

    #[test]
    fn pull_rules_anchor_globs_and_take_whole_directories() {
        assert_eq!(
            pull_rules(&strings(&["junit.xml", "/reports/"])),
            strings(&[
                "--include=*/",
                "--include=/junit.xml",
                "--include=/junit.xml/**",
                "--include=/reports/",
                "--include=/reports/**",
                "--exclude=*",
            ])
        );
    }

    #[test]
    fn double_star_slash_also_matches_no_directory() {
        assert_eq!(
            zero_directory_forms("/**/*.xml"),
            strings(&["/**/*.xml", "/*.xml"])
        );
        assert_eq!(
            zero_directory_forms("/a/**/b/**/c"),
            strings(&["/a/**/b/**/c", "/a/b/**/c", "/a/**/b/c", "/a/b/c"])
        );
        assert_eq!(zero_directory_forms("/a/**"), strings(&["/a/**"]));
        assert_eq!(zero_directory_forms("/a**/b"), strings(&["/a**/b"]));
    }
}
