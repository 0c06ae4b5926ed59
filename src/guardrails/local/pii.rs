//! The `pii` profile's scanner: two regexes (secrets, emails) and one hand-written pass for
//! number-like runs (phones, cards, IBANs), then a validation of every candidate (checksums,
//! layouts, JWT header) so that ordinary numbers, versions, dates, ids and hashes are not
//! flagged.
//!
//! Why not one regex: each part gets its fastest strategy on its own. Secrets all start with
//! a literal (`sk-`, `AKIA`, `-----BEGIN`, `eyJ`...), which the regex crate turns into a SIMD
//! prefilter; emails have an inner literal `@`, found with memchr and extended backwards.
//! Numbers have no literal: as a regex, every digit of every hash and checksum in a coding
//! session restarts the automaton (about 250 µs on an 80 KB body); the pass below skips whole
//! words instead and looks only at digits, `+` and `(` that start one (about 10x faster).
//! Patterns are ASCII only (`(?-u)`), so the DFA never gives up on non-ASCII text.

use regex::Regex;

use super::validate;
use super::{Kind, Match};

const SECRETS: &str = r"(?x-u)
    \bsk-ant-[A-Za-z0-9_-]{32,}
  | \bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}
  | \bAIza[0-9A-Za-z_-]{35,}
  | \bgh[pousr]_[A-Za-z0-9]{36,}
  | \bgithub_pat_[A-Za-z0-9_]{22,}
  | \bxox[abposr]-[A-Za-z0-9-]{10,}
  | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b
  | -----BEGIN\ [A-Z0-9\ ]{0,40}PRIVATE\ KEY-----
      (?:[A-Za-z0-9+/=\s\\]|(?:Proc-Type|DEK-Info):[A-Za-z0-9\ ,:-]*)*
      (?:-----END\ [A-Z0-9\ ]{0,40}PRIVATE\ KEY-----)?
  | \beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*
";

const EMAILS: &str = r"(?x-u)
    [A-Za-z0-9._%+-]+ @ [A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?
    (?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)* \.[A-Za-z]{2,24}
";

/// Image names such as `logo@2x.png` look like addresses.
const FILE_SUFFIXES: &[&str] = &["png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "avif"];

/// Compiled once (at start), shared by every request.
#[derive(Debug, Clone)]
pub struct PiiScanner {
    secrets: Regex,
    emails: Regex,
}

impl Default for PiiScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl PiiScanner {
    pub fn new() -> Self {
        let build = |p: &str| Regex::new(p).expect("built-in pii pattern compiles");
        PiiScanner {
            secrets: build(SECRETS),
            emails: build(EMAILS),
        }
    }

    /// The secrets (API keys, tokens, private keys) in `text`, validated like `scan`'s:
    /// what request traces redact (`traces::redact`).
    pub fn secrets(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        self.secrets
            .find_iter(text)
            .filter(|m| secret_kind(m.as_str()).is_some())
            .map(|m| m.range())
            .collect()
    }

    /// Every match in `text`, ordered by position, never overlapping (a secret wins over an
    /// email or a number inside it).
    pub fn scan(&self, text: &str) -> Vec<Match> {
        let mut secrets = Vec::new();
        for m in self.secrets.find_iter(text) {
            if let Some(kind) = secret_kind(m.as_str()) {
                secrets.push(Match::new(kind, m.range()));
            }
        }
        let mut others = Vec::new();
        if text.as_bytes().contains(&b'@') {
            for m in self.emails.find_iter(text) {
                if is_email(text, m.range()) {
                    others.push(Match::new(Kind::Email, m.range()));
                }
            }
        }
        number_candidates(text, &mut others);
        if secrets.is_empty() && others.is_empty() {
            return secrets;
        }
        others.sort_by_key(|m| m.range.start);
        merge(secrets, others)
    }
}

/// Which secret a match of SECRETS is, or None when its validation fails.
fn secret_kind(s: &str) -> Option<Kind> {
    if let Some(body) = s.strip_prefix("sk-") {
        return validate::looks_random(body).then_some(Kind::ApiKey);
    }
    if s.starts_with("AKIA") || s.starts_with("ASIA") {
        return Some(Kind::AwsKey);
    }
    if s.starts_with("-----BEGIN") {
        return Some(Kind::PrivateKey);
    }
    if s.starts_with("eyJ") {
        return validate::is_jwt(s).then_some(Kind::Jwt);
    }
    // AIza, gh?_, github_pat_, xox?-: the prefix is specific enough; the body must still be
    // random.
    let body = s.split_once(['_', '-']).map_or(s, |(_, b)| b);
    (validate::looks_random(body) || s.starts_with("AIza")).then_some(Kind::ApiKey)
}

fn is_email(text: &str, range: std::ops::Range<usize>) -> bool {
    let s = &text[range.clone()];
    let (local, domain) = s.split_once('@').unwrap_or((s, ""));
    let local = local.trim_start_matches(['.', '-', '+']);
    if local.is_empty() || matches!(local.to_ascii_lowercase().as_str(), "noreply" | "no-reply") {
        return false;
    }
    let tld = domain.rsplit('.').next().unwrap_or("");
    if FILE_SUFFIXES.iter().any(|f| tld.eq_ignore_ascii_case(f)) {
        return false;
    }
    // `git@github.com:org/repo`: an SSH address, not a person's.
    !(local == "git" && text.as_bytes().get(range.end) == Some(&b':'))
}

fn is_word(b: Option<&u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Finds the number-like runs of `text` and validates them (see [`numbers`], [`iban_prefix`]).
/// A run starts at a digit that begins a word, or at `+`/`(` before a digit, and goes on over
/// digits and separators of one or two of ` ().-` between digits; 7 digits at least. An IBAN
/// candidate is a word of two capitals and two digits, compact or followed by groups of four.
fn number_candidates(text: &str, out: &mut Vec<Match>) {
    let bytes = text.as_bytes();
    let n = bytes.len();
    let mut i = 0;
    while i < n {
        match CLASS[usize::from(bytes[i])] {
            OTHER => {
                i += 1;
                continue;
            }
            DIGIT => {
                let (end, digits) = number_run(bytes, i);
                if digits >= 7 {
                    numbers(text, i..end, out);
                }
                i = end;
            }
            OPENER if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let (end, digits) = number_run(bytes, i);
                if digits >= 7 {
                    numbers(text, i..end, out);
                }
                i = end;
            }
            OPENER => {
                i += 1;
                continue;
            }
            UPPER => {
                if let Some(end) = iban_run(bytes, i) {
                    if let Some(len) = iban_prefix(&text[i..end]) {
                        out.push(Match::new(Kind::Iban, i..i + len));
                    }
                    i = end;
                }
            }
            _ => {}
        }
        // Digits inside a word (hashes, identifiers) start nothing.
        while i < n && CLASS[usize::from(bytes[i])] >= WORD {
            i += 1;
        }
    }
}

const OTHER: u8 = 0;
const OPENER: u8 = 1;
const WORD: u8 = 2;
const DIGIT: u8 = 3;
const UPPER: u8 = 4;

/// Byte classes for the number pass: `+`/`(` may open a number; word bytes are skipped a
/// word at a time.
static CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_uppercase() {
            UPPER
        } else if c.is_ascii_lowercase() || c == b'_' {
            WORD
        } else if c == b'+' || c == b'(' {
            OPENER
        } else {
            OTHER
        };
        b += 1;
    }
    t
};

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The end of the number-like run starting at `start`, and its digit count.
fn number_run(bytes: &[u8], start: usize) -> (usize, usize) {
    let is_sep = |b: u8| matches!(b, b' ' | b'(' | b')' | b'.' | b'-');
    let mut j = start;
    if !bytes[j].is_ascii_digit() {
        j += 1;
    }
    let (mut end, mut digits) = (j, 0);
    while j < bytes.len() {
        if bytes[j].is_ascii_digit() {
            digits += 1;
            j += 1;
            end = j;
            continue;
        }
        let mut k = j;
        while k < bytes.len() && k - j < 2 && is_sep(bytes[k]) {
            k += 1;
        }
        if k == j || !bytes.get(k).is_some_and(u8::is_ascii_digit) {
            break;
        }
        j = k;
    }
    (end, digits)
}

/// The end of an IBAN-shaped run at `start` (a word start): `[A-Z]{2}[0-9]{2}` then either
/// capitals and digits up to 34 in all, or groups of four separated by single spaces (the
/// last may be shorter). None when the word does not have that shape.
fn iban_run(bytes: &[u8], start: usize) -> Option<usize> {
    let head = bytes.get(start..start + 4)?;
    if !(head[..2].iter().all(u8::is_ascii_uppercase) && head[2..].iter().all(u8::is_ascii_digit)) {
        return None;
    }
    let alnum = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let run = |from: usize| bytes[from..].iter().take_while(|b| alnum(b)).count();
    let first = 4 + run(start + 4);
    let mut end = start + first;
    if first == 4 {
        // Grouped: ` XXXX` repeated, a shorter group ends it.
        while bytes.get(end) == Some(&b' ') {
            let len = run(end + 1);
            if len == 0 || len > 4 || end + 1 - start + len > 42 {
                break;
            }
            end += 1 + len;
            if len < 4 {
                break;
            }
        }
    } else if first > 34 {
        return None;
    }
    (!bytes.get(end).copied().is_some_and(is_word_byte) && end - start >= 15).then_some(end)
}

/// Validates a number-like candidate. The regex joins runs separated by single spaces
/// (`+44 20 7946 0958 4111 1111 1111 1111`), so when the whole run is not one number, the
/// longest valid span at each space-separated token is taken instead.
fn numbers(text: &str, range: std::ops::Range<usize>, out: &mut Vec<Match>) {
    let bytes = text.as_bytes();
    if range.start > 0 && is_word(bytes.get(range.start - 1)) {
        return;
    }
    let s = &text[range.clone()];
    // Token boundaries: the start, every space, and the end unless a word runs on from it.
    let mut starts = vec![0];
    let mut ends = Vec::new();
    for (i, b) in s.bytes().enumerate() {
        if b == b' ' {
            ends.push(i);
            starts.push(i + 1);
        }
    }
    if !is_word(bytes.get(range.end)) {
        ends.push(s.len());
    }
    let mut from = 0;
    for &start in &starts {
        if start < from {
            continue;
        }
        let found = ends
            .iter()
            .rev()
            .filter(|&&end| end > start)
            .find_map(|&end| number_at(&s[start..end]).map(|kind| (kind, end)));
        if let Some((kind, end)) = found {
            out.push(Match::new(kind, range.start + start..range.start + end));
            from = end;
        }
    }
}

fn number_at(s: &str) -> Option<Kind> {
    let first = s.as_bytes()[0];
    if s.bytes().filter(u8::is_ascii_digit).count() < 7 {
        return None;
    }
    if first.is_ascii_digit() && validate::is_card(s) {
        return Some(Kind::Card);
    }
    validate::is_phone(s).then_some(Kind::Phone)
}

/// The length of the IBAN that `s` starts with: all of it, or fewer groups of four when the
/// candidate ran into a following word (`… 7034 CODE`).
fn iban_prefix(s: &str) -> Option<usize> {
    let mut end = s.len();
    loop {
        if validate::is_iban(&s[..end]) {
            return Some(end);
        }
        end = s[..end].rfind(' ')?;
        if end < 18 {
            return None;
        }
    }
}

/// Secrets first; another match is kept only where no secret overlaps it. Both inputs are
/// sorted by start.
fn merge(secrets: Vec<Match>, others: Vec<Match>) -> Vec<Match> {
    if secrets.is_empty() {
        return dedup_overlaps(others);
    }
    let mut out = Vec::with_capacity(secrets.len() + others.len());
    let mut si = 0;
    for m in others {
        while si < secrets.len() && secrets[si].range.end <= m.range.start {
            out.push(secrets[si].clone());
            si += 1;
        }
        let overlaps = secrets.get(si).is_some_and(|s| s.range.start < m.range.end);
        if !overlaps {
            out.push(m);
        }
    }
    out.extend(secrets[si..].iter().cloned());
    dedup_overlaps(out)
}

/// Drops any match overlapping an earlier one (an email and a number can share digits).
fn dedup_overlaps(matches: Vec<Match>) -> Vec<Match> {
    let mut out: Vec<Match> = Vec::with_capacity(matches.len());
    for m in matches {
        if out.last().is_none_or(|l| l.range.end <= m.range.start) {
            out.push(m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        PiiScanner::new()
            .scan(text)
            .into_iter()
            .map(|m| (m.kind, &text[m.range]))
            .collect()
    }

    fn only(text: &str, kind: Kind, found: &str) {
        assert_eq!(kinds(text), vec![(kind, found)], "in {text:?}");
    }

    fn none(text: &str) {
        assert_eq!(kinds(text), vec![], "in {text:?}");
    }

    #[test]
    fn emails() {
        only(
            "mail jane.doe+tag@mail.example.co.uk today",
            Kind::Email,
            "jane.doe+tag@mail.example.co.uk",
        );
        only("<a@b.io>", Kind::Email, "a@b.io");
        none("Co-Authored-By: Claude <noreply@anthropic.com>");
        none("git clone git@github.com:org/repo.git");
        none("icon: logo@2x.png, npm i lodash@4.17.21, @types/node, user@localhost");
    }

    #[test]
    fn phones() {
        only("call +1 415 555 2671.", Kind::Phone, "+1 415 555 2671");
        only("tel (415) 555-2671 x", Kind::Phone, "(415) 555-2671");
        only("ring 020 7946 0958 now", Kind::Phone, "020 7946 0958");
        only("+44 (0)20 7946 0958", Kind::Phone, "+44 (0)20 7946 0958");
        only("Tel: 01 23 45 67 89", Kind::Phone, "01 23 45 67 89");
    }

    #[test]
    fn cards() {
        only(
            "card 4111 1111 1111 1111 exp",
            Kind::Card,
            "4111 1111 1111 1111",
        );
        only("amex=378282246310005;", Kind::Card, "378282246310005");
        none("card 4111 1111 1111 1112 (bad Luhn)");
    }

    #[test]
    fn ibans() {
        only(
            "IBAN: DE89 3704 0044 0532 0130 00, BIC",
            Kind::Iban,
            "DE89 3704 0044 0532 0130 00",
        );
        only(
            "to GB82WEST12345698765432.",
            Kind::Iban,
            "GB82WEST12345698765432",
        );
        none("IBAN: DE89 3704 0044 0532 0130 01 (bad checksum)");
        only(
            "BE68 5390 0754 7034 CODE",
            Kind::Iban,
            "BE68 5390 0754 7034",
        );
    }

    #[test]
    fn secrets() {
        let openai = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";
        only(&format!("OPENAI_API_KEY={openai}\n"), Kind::ApiKey, openai);
        let legacy = "sk-Zx81Qw7Er6Ty5Ui4Op3As2Df1Gh0JkLzXcVbNm9876543210";
        only(&format!("key: {legacy}"), Kind::ApiKey, legacy);
        let ant = "sk-ant-api03-AbCdEfGh1234567890_IjKlMnOpQrStUvWxYz-0123456789abcdef";
        only(&format!("\"{ant}\""), Kind::ApiKey, ant);
        let google = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q";
        only(&format!("k={google}"), Kind::ApiKey, google);
        let ghp = "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R";
        only(&format!("token {ghp}"), Kind::ApiKey, ghp);
        let pat = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF";
        only(pat, Kind::ApiKey, pat);
        let slack = "xoxb-1234567890-0987654321-AbCdEfGhIjKl";
        only(&format!("SLACK={slack}"), Kind::ApiKey, slack);
        only(
            "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
            Kind::AwsKey,
            "AKIAIOSFODNN7EXAMPLE",
        );
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        only(&format!("Bearer {jwt}"), Kind::Jwt, jwt);
    }

    #[test]
    fn private_keys_with_and_without_end() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1c3+4x/9aB==\nQm9vaw==\n-----END RSA PRIVATE KEY-----";
        only(&format!("key:\n{pem}\nthanks"), Kind::PrivateKey, pem);
        // As it appears inside JSON text (escaped newlines), and cut off before the end line.
        let cut = r"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nAbCd";
        only(&format!("{cut}\"}}"), Kind::PrivateKey, cut);
        none("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----");
    }

    #[test]
    fn ordinary_text_is_not_flagged() {
        none("version 1.2.3, 10.0.19041.1, v2.14.0-rc.1, Python 3.12.1");
        none("uuid 550e8400-e29b-41d4-a716-446655440000 and 12345678-1234-1234-1234-123456789012");
        none("commit 9fceb02d0ae598e95dc970b74767f19372d61af8 (a1b2c3d)");
        none("sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        none("at 2024-01-15T12:30:45.123Z, 2024-01-15 12:30:45, 15/01/2024, 1700000000, 1700000000123");
        none("src/main.rs:1234:56, line 4823, port 8080, 127.0.0.1:8080, 192.168.100.200");
        none("let x = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; 3.14159265358979; 1e-10; 0x7fffffff");
        none("task-management-system-overview and risk-assessment-document-v2");
        none("sk-learn-compatible-estimator-interface (no digits)");
        none("total 123456789 bytes; id=98765432101234");
        none("2024-01-15 12:30:45 +0200 took 1234567 ms");
        none("eyJmb28iOiJiYXIifQ.eyJzdWIiOiJ4In0.c2lnbmF0dXJl (no alg)");
    }

    proptest::proptest! {
        /// Any text made of PII and ordinary fragments masks to a text that holds none of the
        /// PII and restores to the original.
        #[test]
        fn mask_then_restore_is_identity(picks in proptest::collection::vec(0usize..FRAGMENTS.len(), 0..24)) {
            let text: String = picks.iter().map(|&i| FRAGMENTS[i].0).collect::<Vec<_>>().join(" ");
            let pii = crate::guardrails::local::Detector::pii();
            let mut masks = crate::guardrails::local::Masks::default();
            let masked = pii.mask_text(&text, &mut masks).unwrap_or_else(|| text.clone());
            for &i in &picks {
                let (fragment, is_pii) = FRAGMENTS[i];
                proptest::prop_assert_eq!(masked.contains(fragment), !is_pii, "{}", fragment);
            }
            proptest::prop_assert_eq!(masks.restore(&masked), text);
        }
    }

    const FRAGMENTS: &[(&str, bool)] = &[
        ("jane@example.com", true),
        ("+44 20 7946 0958", true),
        ("(415) 555-2671", true),
        ("4111 1111 1111 1111", true),
        ("DE89 3704 0044 0532 0130 00", true),
        ("AKIAIOSFODNN7EXAMPLE", true),
        ("sk-ant-api03-AbCdEfGh1234567890_IjKlMnOpQrStUvWxYz-0123456789abcdef", true),
        ("ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R", true),
        ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", true),
        ("version 1.2.3;", false),
        ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8;", false),
        ("at 2024-01-15T12:30:45Z;", false),
        ("uuid 550e8400-e29b-41d4-a716-446655440000;", false),
        ("line 4823,", false),
        ("ts=1700000000123,", false),
        ("x = y;", false),
    ];

    #[test]
    fn numbers_run_together_are_taken_apart() {
        assert_eq!(
            kinds("+44 20 7946 0958 4111 1111 1111 1111 7"),
            [
                (Kind::Phone, "+44 20 7946 0958"),
                (Kind::Card, "4111 1111 1111 1111")
            ]
        );
        assert_eq!(
            kinds("Jane 020 7946 0958 42"),
            [(Kind::Phone, "020 7946 0958")]
        );
        none("4111 1111 1111 1111x");
    }

    #[test]
    fn matches_are_ordered_and_separate() {
        let text = "a@b.io then 4111111111111111 then AKIAIOSFODNN7EXAMPLE then c@d.io";
        let found: Vec<Kind> = PiiScanner::new()
            .scan(text)
            .iter()
            .map(|m| m.kind)
            .collect();
        assert_eq!(found, [Kind::Email, Kind::Card, Kind::AwsKey, Kind::Email]);
    }
}
