//! The `deny_patterns` profile: the operator's regexes, compiled once at start.

use regex::{Regex, RegexBuilder};

use super::{Kind, Match};

/// Ceiling on one compiled pattern, so that a config cannot make the gateway build a huge
/// automaton (the regex crate's own default is 10 MiB).
const SIZE_LIMIT: usize = 2 << 20;

#[derive(Debug, Clone)]
pub struct DenyScanner {
    patterns: Vec<Regex>,
}

impl DenyScanner {
    /// Compiles every pattern, case-insensitive unless the pattern turns it off (`(?-i)`).
    /// Errors name the pattern (by position and text: it is config, not user data): an invalid
    /// regex, one too large, or one that matches the empty string (it would match everywhere).
    pub fn new(patterns: &[String]) -> Result<DenyScanner, String> {
        let compiled = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let n = i + 1;
                let re = RegexBuilder::new(p)
                    .case_insensitive(true)
                    .size_limit(SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        format!("guardrails deny pattern #{n} {p:?} is not a valid regex: {e}")
                    })?;
                if re.is_match("") {
                    return Err(format!(
                        "guardrails deny pattern #{n} {p:?} matches the empty string"
                    ));
                }
                Ok(re)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(DenyScanner { patterns: compiled })
    }

    /// Every match of every pattern, ordered by position, overlaps dropped (the earliest, then
    /// the longest, wins). `Match::pattern` is the 1-based pattern number.
    pub fn scan(&self, text: &str) -> Vec<Match> {
        let mut out = Vec::new();
        for (i, re) in self.patterns.iter().enumerate() {
            for m in re.find_iter(text) {
                if !m.is_empty() {
                    let mut found = Match::new(Kind::Denied, m.range());
                    found.pattern = u32::try_from(i + 1).ok();
                    out.push(found);
                }
            }
        }
        if self.patterns.len() > 1 {
            out.sort_by(|a, b| {
                (a.range.start, std::cmp::Reverse(a.range.end))
                    .cmp(&(b.range.start, std::cmp::Reverse(b.range.end)))
            });
            let mut kept: Vec<Match> = Vec::with_capacity(out.len());
            for m in out {
                if kept.last().is_none_or(|l| l.range.end <= m.range.start) {
                    kept.push(m);
                }
            }
            out = kept;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(p: &[&str]) -> Result<DenyScanner, String> {
        DenyScanner::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn case_insensitive_unless_the_pattern_says_otherwise() {
        let s = scanner(&["project\\s+falcon", "(?-i)SECRET"]).unwrap();
        let text = "About PROJECT  Falcon: secret, SECRET";
        let found: Vec<(&str, Option<u32>)> = s
            .scan(text)
            .into_iter()
            .map(|m| (&text[m.range], m.pattern))
            .collect();
        assert_eq!(found, [("PROJECT  Falcon", Some(1)), ("SECRET", Some(2))]);
    }

    #[test]
    fn invalid_patterns_are_config_errors_naming_them() {
        let err = scanner(&["ok", "unclosed(group"]).unwrap_err();
        assert!(
            err.contains("#2") && err.contains("unclosed(group"),
            "{err}"
        );
        let err = scanner(&["a*"]).unwrap_err();
        assert!(err.contains("empty string"), "{err}");
        let err = scanner(&["\\w{1000}{1000}"]).unwrap_err();
        assert!(err.contains("#1"), "{err}");
    }

    #[test]
    fn overlapping_matches_keep_the_earliest_longest() {
        let s = scanner(&["foo", "foobar", "bar"]).unwrap();
        let text = "xx foobar yy bar";
        let found: Vec<&str> = s.scan(text).into_iter().map(|m| &text[m.range]).collect();
        assert_eq!(found, ["foobar", "bar"]);
    }
}
