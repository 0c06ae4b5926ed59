//! The usage record: one per request that reached (or tried to reach) a provider. Its token
//! counts are written and read by the meter (`Usage::record_into`, `Usage::of_record`).

use serde::{Deserialize, Serialize};

use super::money::Micros;

/// Stored compactly: empty options, zero counts and false flags are left out (a record is
/// written per request), and read back as their defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct UsageRecord {
    /// Unique id (also the idempotency key when records are replayed).
    pub id: String,
    /// Milliseconds since the Unix epoch, at the end of the request.
    pub ts_ms: u64,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The application's end user the request named (`user`, `safety_identifier`,
    /// `metadata.user_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
    pub endpoint: String,
    pub provider: String,
    /// The model the client asked for.
    pub model: String,
    pub upstream_model: String,
    /// Claude Code's `x-claude-code-session-id`, or another client's session header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// All prompt tokens (uncached + cache read + cache write).
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub completion_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cached_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cost_micros: Micros,
    /// HTTP status sent to the client (0: the client went away first).
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Tokens were estimated because the upstream reported none.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
    /// A tool loop's model turn: its number (from 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_iteration: u64,
    /// Gateway tool calls run after this turn (web search, code execution).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_calls: u64,
    /// MCP calls through `/mcp`: the size of the tool's result in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub response_bytes: u64,
    /// What each guardrail check said (absent on requests without guardrails).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<GuardrailOutcome>,
}

/// One guardrail check of a request, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct GuardrailOutcome {
    pub profile: String,
    /// `input` or `output`.
    pub stage: String,
    /// `valid`, `flagged`, `inconclusive` or `unavailable`.
    pub verdict: String,
    /// This check refused the request (or replaced the answer).
    pub blocked: bool,
    pub latency_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Writes `s` as a JSON string, escaped exactly as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            out.extend_from_slice(&[b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes the fields of a JSON object in order (the opening brace is already written).
struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl ObjectWriter<'_> {
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        json_str(self.out, v);
    }

    fn opt_str(&mut self, k: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }

    fn num(&mut self, k: &str, mut v: u64) {
        self.key(k);
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&digits[i..]);
    }

    fn nonzero(&mut self, k: &str, v: u64) {
        if v != 0 {
            self.num(k, v);
        }
    }

    fn yes(&mut self, k: &str, v: bool) {
        if v {
            self.key(k);
            self.out.extend_from_slice(b"true");
        }
    }
}

impl UsageRecord {
    /// The record as JSON, byte for byte what `serde_json::to_vec` writes (the stored form;
    /// written per request, so without serde's machinery).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        let mut w = ObjectWriter {
            out: &mut out,
            first: true,
        };
        w.str("id", &self.id);
        w.num("ts_ms", self.ts_ms);
        w.str("request_id", &self.request_id);
        w.opt_str("key_id", &self.key_id);
        w.opt_str("user_id", &self.user_id);
        w.opt_str("end_user", &self.end_user);
        w.str("endpoint", &self.endpoint);
        w.str("provider", &self.provider);
        w.str("model", &self.model);
        w.str("upstream_model", &self.upstream_model);
        w.opt_str("session_id", &self.session_id);
        w.nonzero("prompt_tokens", self.prompt_tokens);
        w.nonzero("completion_tokens", self.completion_tokens);
        w.nonzero("cached_tokens", self.cached_tokens);
        w.nonzero("cache_write_tokens", self.cache_write_tokens);
        w.nonzero("reasoning_tokens", self.reasoning_tokens);
        w.nonzero("total_tokens", self.total_tokens);
        w.nonzero("cost_micros", self.cost_micros);
        w.num("status", self.status as u64);
        w.opt_str("error", &self.error);
        w.nonzero("latency_ms", self.latency_ms);
        if let Some(t) = self.ttft_ms {
            w.num("ttft_ms", t);
        }
        w.yes("stream", self.stream);
        w.yes("estimated", self.estimated);
        w.nonzero("tool_iteration", self.tool_iteration);
        w.nonzero("tool_calls", self.tool_calls);
        w.nonzero("response_bytes", self.response_bytes);
        if !self.guardrails.is_empty() {
            // Rare (guardrails configured): serde's own encoding.
            w.key("guardrails");
            let _ = serde_json::to_writer(&mut *w.out, &self.guardrails);
        }
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full(text: &str) -> UsageRecord {
        UsageRecord {
            id: format!("use_{text}"),
            ts_ms: u64::MAX,
            request_id: text.into(),
            key_id: Some(text.into()),
            user_id: Some(format!("{text}\u{7f}\u{1f}")),
            end_user: Some(format!("{text}-end")),
            endpoint: "chat".into(),
            provider: text.into(),
            model: text.into(),
            upstream_model: String::new(),
            session_id: Some(text.into()),
            prompt_tokens: 1,
            completion_tokens: 10,
            cached_tokens: 100,
            cache_write_tokens: 1000,
            reasoning_tokens: 12345,
            total_tokens: 9_999_999_999,
            cost_micros: 7,
            status: 200,
            error: Some(text.into()),
            latency_ms: 3,
            ttft_ms: Some(0),
            stream: true,
            estimated: true,
            tool_iteration: 3,
            tool_calls: 2,
            response_bytes: 4096,
            guardrails: vec![GuardrailOutcome {
                profile: text.into(),
                stage: "input".into(),
                verdict: "flagged".into(),
                blocked: true,
                latency_ms: 12,
            }],
        }
    }

    #[test]
    fn json_is_what_serde_writes() {
        let tricky = "a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1}\u{1f} é 漢 😀 </script>";
        for r in [
            UsageRecord::default(),
            full(""),
            full(tricky),
            full("plain"),
        ] {
            assert_eq!(
                String::from_utf8(r.to_json()).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
            assert_eq!(
                serde_json::from_slice::<UsageRecord>(&r.to_json()).unwrap(),
                r
            );
        }
        let mut r = full("x");
        r.ttft_ms = None;
        r.status = 0;
        r.key_id = None;
        assert_eq!(r.to_json(), serde_json::to_vec(&r).unwrap());
    }

    proptest! {
        #[test]
        fn any_strings_encode_like_serde(s in any::<String>(), n in any::<u64>(), st in any::<u16>()) {
            let mut r = full(&s);
            r.ts_ms = n;
            r.latency_ms = n / 3;
            r.status = st;
            prop_assert_eq!(r.to_json(), serde_json::to_vec(&r).unwrap());
        }
    }
}
