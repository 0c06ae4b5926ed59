//! An incremental Server-Sent Events parser (the WHATWG grammar): bytes arrive split
//! anywhere (mid-line, mid-CRLF, mid-UTF-8); lines end in LF, CRLF or CR; `data:` lines of one
//! event are joined with LF; lines starting with ':' are comments; a blank line dispatches.
//! Memory is bounded by the largest single event (plus one partial line).

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
