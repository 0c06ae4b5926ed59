//! One access line: its fields (stable names, documented in README "Monitoring") and its two
//! renderings, JSON and `key=value` text.

use serde::Serialize;

/// The fields of an access line. Renaming one breaks operators' log pipelines: add, never
/// rename.
#[derive(Serialize)]
pub struct Line<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    /// The request id (`x-request-id` of the answer; the client's own when it sent one).
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub endpoint: &'a str,
    /// The virtual key's id (never the key).
    pub key_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    /// The model the client asked for.
    pub model: &'a str,
    pub provider: Option<&'a str>,
    /// The model sent upstream (after routing).
    pub upstream_model: Option<&'a str>,
    pub status: u16,
    pub latency_ms: u64,
    /// First byte from the upstream, from the request's start.
    pub ttfb_ms: Option<u64>,
    pub bytes_out: u64,
    pub stream: bool,
    /// Served by the direct path (`gateway/direct.rs`) rather than Pingora's proxy path.
    pub direct: bool,
    pub attempts: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub tool_calls: u64,
    pub client_gone: bool,
    /// The guardrail profiles that blocked the request.
    pub guardrail_blocked: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl Line<'_> {
    pub fn json(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(512);
        let _ = serde_json::to_writer(&mut buf, self);
        buf.push(b'\n');
        buf
    }

    /// The text line, as env_logger would have framed it (`[ts INFO  tollgate::access]`).
    pub fn text(&self) -> Vec<u8> {
        format!(
            "[{} INFO  tollgate::access] rid={} method={} path={} endpoint={} key={} model={:?} provider={} upstream_model={:?} status={} latency_ms={} ttfb_ms={} bytes_out={} stream={} large_body={} attempts={} tokens_in={} tokens_out={} tool_calls={} client_gone={} guardrail_blocked={} error={:?}\n",
            self.ts,
            self.request_id,
            self.method,
            self.path.escape_debug(),
            self.endpoint,
            self.key_id.unwrap_or("-"),
            self.model,
            self.provider.unwrap_or("-"),
            self.upstream_model.unwrap_or(""),
            self.status,
            self.latency_ms,
            self.ttfb_ms.map_or(-1, |t| t as i64),
            self.bytes_out,
            self.stream,
            self.direct,
            self.attempts,
            self.tokens_in,
            self.tokens_out,
            self.tool_calls,
            self.client_gone,
            self.guardrail_blocked.unwrap_or("-").escape_debug(),
            self.error.unwrap_or(""),
        )
        .into_bytes()
    }
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_millis(1_796_667_483_004),
            "2026-12-07T18:18:03.004Z"
        );
    }
}
