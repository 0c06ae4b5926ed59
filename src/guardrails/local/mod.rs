//! Built-in guardrail checks that need no service: the `pii` and `deny_patterns` profiles,
//! run in process, as a pure library (no I/O, no clock, no config reading).
//!
//! **Profiles.**
//! - `pii`: emails, phone numbers (international, North American, national with a trunk 0),
//!   card numbers (13–19 digits, scheme prefix, Luhn), IBANs (mod-97), and secrets: provider
//!   API keys (OpenAI `sk-…`/`sk-proj-…`, Anthropic `sk-ant-…`, Google `AIza…`, GitHub
//!   `ghp_…`/`github_pat_…`, Slack `xox…`), AWS access key ids (`AKIA…`/`ASIA…`), PEM
//!   private-key blocks and JWTs (the header must decode to JSON with `alg`). Every candidate
//!   is validated, so versions, dates, timestamps, line numbers, UUIDs and hashes are not
//!   flagged. Not flagged on purpose: `noreply@`/`no-reply@` addresses (Claude Code puts one in
//!   every commit instruction), `git@host:` SSH addresses, `name@2x.png` image names.
//! - `deny_patterns`: the operator's regexes, case-insensitive unless a pattern says `(?-i)`;
//!   compiled once by [`LocalChecks::new`], which refuses an invalid pattern by naming it.
//!
//! **Modes.** `monitor` and `block` use [`Detector::check`], whose [`Verdict`] names kinds and
//! counts, never the matched text: verdicts go to headers, logs and records, and a secret must
//! never be echoed. `mask` uses [`mask_request`] (or [`Detector::mask_text`]) to replace each
//! match with a typed placeholder, `[EMAIL_1]`, `[CARD_2]`…, the same value getting the same
//! placeholder within a request, and returns the [`Masks`] table; restoring puts the
//! originals back into the answer: [`Masks::restore`] for a whole text,
//! [`Masks::restore_value`] for a whole JSON answer, and [`Restorer`] for streamed text
//! deltas (it holds back a placeholder split across chunks). `Masks` never prints the
//! originals in `Debug`.
//!
//! **What masking touches** ([`mask_request`]): every text the model reads in the client's
//! format: Chat `messages[].content` (string or `text` parts) and `tool_calls[].function
//! .arguments`; Anthropic `system`, `text` blocks, `tool_use.input`, `tool_result.content`,
//! text `document` sources; Responses `instructions`, `input` (string, message parts,
//! `function_call.arguments`, `function_call_output.output`, custom tool calls). Structure,
//! ids, images, tool definitions and signed `thinking` blocks are left alone. Arguments that
//! are JSON text are parsed and their strings masked, so they stay valid JSON.
//!
//! **Cost.** Three passes over the text: secrets and emails as regexes behind literal
//! prefilters, number-like runs by a hand-written pass that skips whole words (see `pii.rs`).
//! `benches/guardrails.rs` measures an 80 KB Claude Code body (`cargo bench --bench
//! guardrails`): about 120 µs for the whole body text, 65 µs for the texts the model reads,
//! measured on a loaded 2-core machine (target ≤ 200 µs). Profiles that are not declared cost
//! nothing: nothing here runs unless called.

mod deny;
mod mask;
mod pii;
mod request;
mod validate;

pub use mask::{Masks, Restorer};
pub use pii::PiiScanner;
pub use request::{mask_request, mask_request_into};

use std::ops::Range;

/// The profile names served here instead of by a `/validate` service.
pub const PII: &str = "pii";
pub const DENY_PATTERNS: &str = "deny_patterns";

/// Whether `profile` is a built-in check (no service call).
pub fn is_local_profile(profile: &str) -> bool {
    profile == PII || profile == DENY_PATTERNS
}

/// What a match is. `as_str` is the name used in verdicts; `tag` the placeholder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Phone,
    Card,
    Iban,
    ApiKey,
    AwsKey,
    PrivateKey,
    Jwt,
    /// A match of an operator's `deny_patterns` regex.
    Denied,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Email,
        Kind::Phone,
        Kind::Card,
        Kind::Iban,
        Kind::ApiKey,
        Kind::AwsKey,
        Kind::PrivateKey,
        Kind::Jwt,
        Kind::Denied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
            Kind::Iban => "iban",
            Kind::ApiKey => "api_key",
            Kind::AwsKey => "aws_key",
            Kind::PrivateKey => "private_key",
            Kind::Jwt => "jwt",
            Kind::Denied => "deny_pattern",
        }
    }

    /// The placeholder's name: `[EMAIL_1]`, `[API_KEY_2]`, `[DENIED_1]`.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::Card => "CARD",
            Kind::Iban => "IBAN",
            Kind::ApiKey => "API_KEY",
            Kind::AwsKey => "AWS_KEY",
            Kind::PrivateKey => "PRIVATE_KEY",
            Kind::Jwt => "JWT",
            Kind::Denied => "DENIED",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One finding: its kind and byte range in the scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub kind: Kind,
    pub range: Range<usize>,
    /// For `deny_patterns`: the 1-based number of the pattern that matched.
    pub pattern: Option<u32>,
}

impl Match {
    pub fn new(kind: Kind, range: Range<usize>) -> Match {
        Match {
            kind,
            range,
            pattern: None,
        }
    }
}

/// The outcome of `monitor`/`block` over some texts. `explanation` lists kinds and counts
/// (e.g. `"pii: 2 email, 1 api_key"`), never matched text.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub valid: bool,
    pub explanation: String,
    /// 1.0 when something was found, else 0.0 (the service contract's `score`).
    pub score: f64,
    /// Matches per kind, in `Kind` order, only kinds that were found.
    pub counts: Vec<(Kind, usize)>,
}

/// One compiled profile.
#[derive(Debug, Clone)]
pub struct Detector {
    profile: &'static str,
    scanner: Scanner,
}

#[derive(Debug, Clone)]
enum Scanner {
    Pii(pii::PiiScanner),
    Deny(deny::DenyScanner),
}

impl Detector {
    /// The `pii` detector.
    pub fn pii() -> Detector {
        Detector {
            profile: PII,
            scanner: Scanner::Pii(pii::PiiScanner::new()),
        }
    }

    /// A `deny_patterns` detector (see [`LocalChecks::new`] for the rules).
    pub fn deny_patterns(patterns: &[String]) -> Result<Detector, String> {
        Ok(Detector {
            profile: DENY_PATTERNS,
            scanner: Scanner::Deny(deny::DenyScanner::new(patterns)?),
        })
    }

    pub fn profile(&self) -> &'static str {
        self.profile
    }

    /// Every match in `text`, by position, without overlaps.
    pub fn scan(&self, text: &str) -> Vec<Match> {
        match &self.scanner {
            Scanner::Pii(s) => s.scan(text),
            Scanner::Deny(s) => s.scan(text),
        }
    }

    /// The verdict over `texts` (for `monitor` and `block`).
    pub fn check<'a>(&self, texts: impl IntoIterator<Item = &'a str>) -> Verdict {
        let mut counts = [0usize; Kind::ALL.len()];
        let mut patterns: Vec<u32> = Vec::new();
        for text in texts {
            for m in self.scan(text) {
                counts[m.kind.index()] += 1;
                if let Some(p) = m.pattern {
                    if !patterns.contains(&p) {
                        patterns.push(p);
                    }
                }
            }
        }
        let counts: Vec<(Kind, usize)> = Kind::ALL
            .iter()
            .map(|&k| (k, counts[k.index()]))
            .filter(|&(_, n)| n > 0)
            .collect();
        if counts.is_empty() {
            return Verdict {
                valid: true,
                explanation: format!("{}: nothing found", self.profile),
                score: 0.0,
                counts,
            };
        }
        let listed: Vec<String> = counts
            .iter()
            .map(|(k, n)| format!("{n} {}", k.as_str()))
            .collect();
        let mut explanation = format!("{}: {}", self.profile, listed.join(", "));
        if !patterns.is_empty() {
            patterns.sort_unstable();
            let numbers: Vec<String> = patterns.iter().map(|p| format!("#{p}")).collect();
            explanation.push_str(&format!(" (patterns {})", numbers.join(", ")));
        }
        Verdict {
            valid: false,
            explanation,
            score: 1.0,
            counts,
        }
    }

    /// `text` with every match replaced by its placeholder (recorded in `masks`), or None
    /// when nothing matched (no allocation).
    pub fn mask_text(&self, text: &str, masks: &mut Masks) -> Option<String> {
        let found = self.scan(text);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for m in found {
            out.push_str(&text[at..m.range.start]);
            out.push_str(masks.placeholder(m.kind, &text[m.range.clone()]));
            at = m.range.end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }
}

/// The built-in checks of one configuration, compiled once at start.
#[derive(Debug, Clone)]
pub struct LocalChecks {
    pii: Detector,
    deny: Detector,
}

impl LocalChecks {
    /// `deny_patterns` from the config. An invalid pattern is an error naming it (for a
    /// config error at start).
    pub fn new(deny_patterns: &[String]) -> Result<LocalChecks, String> {
        Ok(LocalChecks {
            pii: Detector::pii(),
            deny: Detector::deny_patterns(deny_patterns)?,
        })
    }

    /// The detector of a built-in profile (`pii`, `deny_patterns`), None for other profiles
    /// (they go to a `/validate` service).
    pub fn detector(&self, profile: &str) -> Option<&Detector> {
        match profile {
            PII => Some(&self.pii),
            DENY_PATTERNS => Some(&self.deny),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_list_kinds_and_counts_never_text() {
        let checks = LocalChecks::new(&[]).unwrap();
        let pii = checks.detector("pii").unwrap();
        let key = "AKIAIOSFODNN7EXAMPLE";
        let v = pii.check(["a@b.io and c@d.io", key]);
        assert!(!v.valid);
        assert_eq!(v.explanation, "pii: 2 email, 1 aws_key");
        assert_eq!(v.counts, vec![(Kind::Email, 2), (Kind::AwsKey, 1)]);
        assert_eq!(v.score, 1.0);
        assert!(!v.explanation.contains(key));
        let clean = pii.check(["nothing here"]);
        assert!(clean.valid);
        assert_eq!(clean.score, 0.0);
    }

    #[test]
    fn deny_verdict_names_pattern_numbers() {
        let checks = LocalChecks::new(&["falcon".into(), "(?-i)CONFIDENTIAL".into()]).unwrap();
        let deny = checks.detector(DENY_PATTERNS).unwrap();
        let v = deny.check(["Falcon, falcon, CONFIDENTIAL, confidential"]);
        assert_eq!(
            v.explanation,
            "deny_patterns: 3 deny_pattern (patterns #1, #2)"
        );
        assert!(checks.detector("prompt-injection").is_none());
        assert!(is_local_profile("pii") && !is_local_profile("prompt-injection"));
    }

    #[test]
    fn config_errors_name_the_pattern() {
        let err = LocalChecks::new(&["(".into()]).unwrap_err();
        assert!(err.contains("\"(\""), "{err}");
    }

    #[test]
    fn mask_text_reuses_placeholders_for_the_same_value() {
        let pii = Detector::pii();
        let mut masks = Masks::default();
        let out = pii
            .mask_text("a@b.io, 4111 1111 1111 1111, a@b.io, c@d.io", &mut masks)
            .unwrap();
        assert_eq!(out, "[EMAIL_1], [CARD_1], [EMAIL_1], [EMAIL_2]");
        assert_eq!(masks.len(), 3);
        assert!(pii.mask_text("clean", &mut masks).is_none());
        assert_eq!(
            masks.restore(&out),
            "a@b.io, 4111 1111 1111 1111, a@b.io, c@d.io"
        );
    }
}
