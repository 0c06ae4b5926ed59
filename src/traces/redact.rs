//! Redaction of the bodies a `capture: full` trace keeps, always on, run by the trace
//! writer (off the request path) before anything is stored:
//! - credential fields (`authorization`, `x-api-key`, `api_key`, MCP `authorization_token`,
//!   every value of a `headers` object) wherever they are in the JSON;
//! - secrets the guardrails' `pii` scanner recognises (`sk-...`, `AKIA...`, JWTs, private
//!   keys) and `Bearer <token>` in any string;
//! - the operator's paths (`traces.redact`).
//!
//! A body that is not JSON (or was cut) is redacted as text: the same secrets, and the value
//! of any `"credential": "..."` pair.
//!
//! Path grammar: dot-separated keys from the body's root (an optional `$.` prefix), each key
//! optionally followed by `[*]` (every element of an array) or `[N]` (one element):
//! `messages[*].content`, `$.metadata.user_email`, `tools[0].headers`.

use once_cell::sync::Lazy;
use regex::Regex;
use serde_json::Value;

use crate::guardrails::local::PiiScanner;

pub const REDACTED: &str = "[redacted]";

static SCANNER: Lazy<PiiScanner> = Lazy::new(PiiScanner::new);
static BEARER: Lazy<Regex> =
    Lazy::new(|| Regex::new(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{6,}").expect("valid"));
static CREDENTIAL_PAIR: Lazy<Regex> = Lazy::new(|| {
    Regex::new(
        r#"(?i)"(authorization|proxy-authorization|x-api-key|x-goog-api-key|api[-_]?key|authorization_token|access_token|password)"\s*:\s*"(?:[^"\\]|\\.)*""#,
    )
    .expect("valid")
});

fn is_credential_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "authorization"
            | "proxy-authorization"
            | "x-api-key"
            | "x-goog-api-key"
            | "api-key"
            | "api_key"
            | "apikey"
            | "authorization_token"
            | "access_token"
            | "password"
    )
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Every,
    Index(usize),
}

/// An operator redaction path (`traces.redact`).
#[derive(Debug, Clone, PartialEq)]
pub struct Path(Vec<Step>);

impl Path {
    pub fn parse(s: &str) -> Result<Path, String> {
        let s = s.trim();
        let s = s.strip_prefix("$.").unwrap_or(s);
        if s.is_empty() {
            return Err("empty path".into());
        }
        let mut steps = Vec::new();
        for part in s.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if name.is_empty() {
                return Err("empty key".into());
            }
            steps.push(Step::Key(name.to_string()));
            while !rest.is_empty() {
                let end = rest.find(']').ok_or("unclosed '['")?;
                let inner = &rest[1..end];
                steps.push(if inner == "*" {
                    Step::Every
                } else {
                    Step::Index(inner.parse().map_err(|_| "expected [*] or [N]")?)
                });
                rest = &rest[end + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err("unexpected text after ']'".into());
                }
            }
        }
        Ok(Path(steps))
    }

    fn apply(&self, v: &mut Value) {
        fn walk(v: &mut Value, steps: &[Step]) {
            let Some((first, rest)) = steps.split_first() else {
                *v = Value::String(REDACTED.into());
                return;
            };
            match (first, v) {
                (Step::Key(k), Value::Object(m)) => {
                    if let Some(x) = m.get_mut(k) {
                        walk(x, rest)
                    }
                }
                (Step::Every, Value::Array(a)) => a.iter_mut().for_each(|x| walk(x, rest)),
                (Step::Index(i), Value::Array(a)) => {
                    if let Some(x) = a.get_mut(*i) {
                        walk(x, rest)
                    }
                }
                _ => {}
            }
        }
        walk(v, &self.0)
    }
}

/// Secrets and bearer tokens in free text.
fn redact_str(s: &str) -> Option<String> {
    let mut ranges = SCANNER.secrets(s);
    ranges.extend(BEARER.find_iter(s).map(|m| m.range()));
    if ranges.is_empty() {
        return None;
    }
    ranges.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for r in ranges {
        if r.start < at {
            at = at.max(r.end);
            continue;
        }
        out.push_str(&s[at..r.start]);
        out.push_str(REDACTED);
        at = r.end;
    }
    out.push_str(&s[at..]);
    Some(out)
}

fn redact_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Some(r) = redact_str(s) {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_value),
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if is_credential_key(k) {
                    *x = Value::String(REDACTED.into());
                } else if k.eq_ignore_ascii_case("headers") && x.is_object() {
                    if let Value::Object(h) = x {
                        h.values_mut()
                            .for_each(|hv| *hv = Value::String(REDACTED.into()));
                    }
                } else {
                    redact_value(x);
                }
            }
        }
        _ => {}
    }
}

/// A body as stored: redacted JSON when it parses, else redacted text.
pub fn redact_body(raw: &[u8], paths: &[Path]) -> String {
    if let Ok(mut v) = serde_json::from_slice::<Value>(raw) {
        redact_value(&mut v);
        for p in paths {
            p.apply(&mut v);
        }
        return v.to_string();
    }
    let text = String::from_utf8_lossy(raw);
    let text = CREDENTIAL_PAIR.replace_all(&text, |c: &regex::Captures| {
        format!("\"{}\":\"{REDACTED}\"", &c[1])
    });
    redact_str(&text).unwrap_or_else(|| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(Path::parse("messages[*].content").is_ok());
        assert!(Path::parse("$.metadata.user_email").is_ok());
        assert!(Path::parse("a[0][*].b").is_ok());
        assert!(Path::parse("a[").is_err());
        assert!(Path::parse("a[x]").is_err());
        assert!(Path::parse("a..b").is_err());
        assert!(Path::parse("").is_err());
    }

    #[test]
    fn json_bodies() {
        let key = "sk-proj-Zq8xV3mK9pL2wR7tY4nB6cD1fG5hJ0kQ";
        let body = serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": format!("use {key} and Bearer abcdef123456 ok")}],
            "metadata": {"user_email": "a@b.example", "team": "x"},
            "mcp_servers": [{"url": "https://x", "authorization_token": "tok-secret-1",
                             "headers": {"X-Custom": "hdr-secret-2"}}],
            "api_key": "plain-secret-3"
        });
        let paths = vec![Path::parse("$.metadata.user_email").unwrap()];
        let out = redact_body(body.to_string().as_bytes(), &paths);
        for s in [
            key,
            "abcdef123456",
            "a@b.example",
            "tok-secret-1",
            "hdr-secret-2",
            "plain-secret-3",
        ] {
            assert!(!out.contains(s), "{s} in {out}");
        }
        assert!(out.contains("\"team\":\"x\""));
        assert!(out.contains("use [redacted] and [redacted] ok"));
    }

    #[test]
    fn text_bodies() {
        let out = redact_body(
            br#"{"authorization_token": "tok-1", "x": "Bearer zzzzzzzzzz", "cut"#,
            &[],
        );
        assert!(
            !out.contains("tok-1") && !out.contains("zzzzzzzzzz"),
            "{out}"
        );
    }
}
