//! Server-Sent Events, both ways. The parser is incremental (the WHATWG grammar): bytes arrive
//! split anywhere (mid-line, mid-CRLF, mid-UTF-8); lines end in LF, CRLF or CR; `data:` lines
//! of one event are joined with LF; lines starting with ':' are comments; a blank line
//! dispatches. Memory is bounded by the largest single event (plus one partial line).
//! The writers frame events the way every transcoder and tap sends them.

use bytes::BufMut;
use serde_json::Value;

/// The terminator of an OpenAI chat stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// A comment line: keeps a connection busy without being an event.
pub const KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// Appends one event whose data is a JSON value, on one `data:` line: `event: <name>\n` first
/// when it has a name (Anthropic and Responses streams), none for OpenAI chat chunks. The
/// JSON is serialised straight into `out`.
pub fn write_json<B: BufMut>(out: &mut B, name: Option<&str>, data: &Value) {
    if let Some(name) = name {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_slice(b"\n");
    }
    out.put_slice(b"data: ");
    // Writing into memory cannot fail, and a `Value` always serialises.
    serde_json::to_writer((&mut *out).writer(), data).expect("a JSON value serialises into memory");
    out.put_slice(b"\n\n");
}

/// Appends one event whose data is text: one `data:` line per line of it.
pub fn write_text<B: BufMut>(out: &mut B, name: Option<&str>, data: &str) {
    if let Some(name) = name {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_slice(b"\n");
    }
    for line in data.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_slice(b"\n");
    }
    out.put_slice(b"\n");
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any (Anthropic names every event; OpenAI names none).
    pub event: Option<String>,
    /// The `data:` lines joined with '\n'.
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF in the next chunk belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// Upper bound on a pending line or event, to refuse unbounded growth.
    limit: usize,
    overflowed: bool,
}

/// Default per-event limit: far above any real event, far below memory trouble.
pub const DEFAULT_EVENT_LIMIT: usize = 16 * 1024 * 1024;

impl SseParser {
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_EVENT_LIMIT)
    }

    pub fn with_limit(limit: usize) -> Self {
        SseParser {
            limit,
            ..Default::default()
        }
    }

    /// True once an event or line exceeded the limit (its content was dropped).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Feeds bytes; calls `emit` for each complete event, in order.
    pub fn feed(&mut self, mut input: &[u8], emit: &mut dyn FnMut(SseEvent)) {
        if input.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if input.first() == Some(&b'\n') {
                input = &input[1..];
            }
        }
        while !input.is_empty() {
            match memchr::memchr2(b'\n', b'\r', input) {
                Some(i) => {
                    if self.line.is_empty() {
                        self.take_line(&input[..i], emit);
                    } else {
                        self.push_line(&input[..i]);
                        let line = std::mem::take(&mut self.line);
                        self.take_line(&line, emit);
                        self.line = line;
                        self.line.clear();
                    }
                    let was_cr = input[i] == b'\r';
                    input = &input[i + 1..];
                    if was_cr {
                        if input.is_empty() {
                            self.after_cr = true;
                        } else if input[0] == b'\n' {
                            input = &input[1..];
                        }
                    }
                }
                None => {
                    self.push_line(input);
                    break;
                }
            }
        }
    }

    /// Ends the input: a final event without its blank line is dispatched (a truncated
    /// stream's last event is still seen), a partial line is processed first.
    pub fn finish(&mut self, emit: &mut dyn FnMut(SseEvent)) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.take_line(&line, emit);
        }
        self.dispatch(emit);
    }

    fn push_line(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > self.limit {
            self.overflowed = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn take_line(&mut self, line: &[u8], emit: &mut dyn FnMut(SseEvent)) {
        if line.is_empty() {
            self.dispatch(emit);
            return;
        }
        if line[0] == b':' {
            return; // comment (keep-alive)
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() > self.limit {
                    self.overflowed = true;
                    return;
                }
                if self.has_data {
                    self.data.push('\n');
                }
                push_utf8(&mut self.data, value);
                self.has_data = true;
            }
            b"event" => {
                let mut name = String::new();
                push_utf8(&mut name, value);
                self.event = Some(name);
            }
            _ => {} // id, retry and unknown fields are not needed by any transcoder
        }
    }

    fn dispatch(&mut self, emit: &mut dyn FnMut(SseEvent)) {
        if self.has_data || self.event.is_some() {
            emit(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        self.has_data = false;
        self.event = None;
        self.data.clear();
    }
}

/// Appends bytes as text: valid UTF-8 (always, from a real provider) is checked with SIMD
/// and copied; anything else is decoded lossily, as the SSE grammar says.
fn push_utf8(dst: &mut String, v: &[u8]) {
    match simdutf8::basic::from_utf8(v) {
        Ok(s) => dst.push_str(s),
        Err(_) => dst.push_str(&String::from_utf8_lossy(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut |e| out.push(e));
        }
        p.finish(&mut |e| out.push(e));
        out
    }

    fn ev(e: Option<&str>, d: &str) -> SseEvent {
        SseEvent {
            event: e.map(String::from),
            data: d.into(),
        }
    }

    #[test]
    fn basic_events_and_comments() {
        let s = b"event: message_start\ndata: {\"a\":1}\n\n: ping\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        assert_eq!(
            parse_all(&[s]),
            vec![
                ev(Some("message_start"), "{\"a\":1}"),
                ev(None, "x\ny"),
                ev(None, "[DONE]")
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let s: &[u8] = b"event: a\r\ndata: one\r\n\r\ndata:two\r\r: c\n\nevent: b\ndata: {\"t\":\"\xc3\xa9\"}\n\n";
        let whole = parse_all(&[s]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1], ev(None, "two"));
        assert_eq!(whole[2].data, "{\"t\":\"é\"}");
        for i in 0..s.len() {
            for j in i..s.len() {
                assert_eq!(
                    parse_all(&[&s[..i], &s[i..j], &s[j..]]),
                    whole,
                    "split at {i},{j}"
                );
            }
        }
    }

    #[test]
    fn truncated_final_event_is_dispatched_at_finish() {
        assert_eq!(
            parse_all(&[b"data: {\"x\":1}"]),
            vec![ev(None, "{\"x\":1}")]
        );
    }

    #[test]
    fn written_events_parse_back() {
        let mut out = Vec::new();
        write_json(&mut out, Some("ping"), &serde_json::json!({"type": "ping"}));
        write_json(&mut out, None, &serde_json::json!({"a": "x\ny"}));
        write_text(&mut out, None, "one\ntwo");
        out.extend_from_slice(DONE);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "event: ping\ndata: {\"type\":\"ping\"}\n\ndata: {\"a\":\"x\\ny\"}\n\ndata: one\ndata: two\n\ndata: [DONE]\n\n"
        );
        assert_eq!(
            parse_all(&[&out]),
            vec![
                ev(Some("ping"), "{\"type\":\"ping\"}"),
                ev(None, "{\"a\":\"x\\ny\"}"),
                ev(None, "one\ntwo"),
                ev(None, "[DONE]")
            ]
        );
    }

    #[test]
    fn oversized_events_are_dropped_not_buffered() {
        let mut p = SseParser::with_limit(8);
        let mut out = Vec::new();
        p.feed(b"data: 0123456789abcdef\n\ndata: ok\n\n", &mut |e| {
            out.push(e)
        });
        assert!(p.overflowed());
        assert_eq!(out.last().unwrap().data, "ok");
    }
}
