//! What happens to an upstream response on its way to the client. One implementation,
//! called from Pingora's `response_filter`/`response_body_filter` on the proxy path and from
//! the forwarding loop on the large-body path, so both paths behave the same.
//!
//! Same-format traffic passes through byte for byte while a [`StreamMeter`] reads usage off
//! the stream. Upstream auth failures become a 502 in the client's dialect (the provider's
//! complaint is about the gateway's credential, not the client's).

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;

use crate::error::{Dialect, ErrorKind, GatewayError};
use crate::meter::{usage_from_body, StreamMeter, Usage, Wire};
use crate::translate::sse::{SseEvent, SseParser};

/// Non-streamed bodies are kept (to read their usage) up to this size.
const MAX_KEPT_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug)]
enum Mode {
    /// An SSE stream passing through, metered as it goes.
    Stream(Box<StreamMeter>),
    /// An OpenAI chat stream whose usage chunk the gateway asked for and the client did not:
    /// events are re-framed one by one, without that chunk.
    StreamHidingUsage(Box<StreamMeter>, Box<SseParser>),
    /// A JSON body passing through; a copy is kept to read usage at the end.
    Json(BytesMut),
    /// The upstream body is swallowed and replaced with this one at the end.
    Replace(Bytes),
    /// Passed through untouched (errors, unknown content).
    Plain,
}

#[derive(Debug)]
pub struct ResponseTap {
    mode: Mode,
    wire: Wire,
    dialect: Dialect,
    pub status: u16,
    pub usage: Option<Usage>,
    pub bytes_out: u64,
    pub is_stream: bool,
    /// The stream ended without its terminal event, or with an error event.
    pub incomplete: bool,
    finished: bool,
}

impl ResponseTap {
    /// Inspects the upstream response header and edits it for the client.
    pub fn on_header(
        resp: &mut ResponseHeader,
        wire: Wire,
        dialect: Dialect,
        provider: &str,
        hide_usage_chunk: bool,
    ) -> ResponseTap {
        let status = resp.status.as_u16();
        let ctype = resp
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut mode = if (200..300).contains(&status) {
            if ctype.starts_with("text/event-stream") && hide_usage_chunk {
                Mode::StreamHidingUsage(
                    Box::new(StreamMeter::new(wire)),
                    Box::new(SseParser::new()),
                )
            } else if ctype.starts_with("text/event-stream") {
                Mode::Stream(Box::new(StreamMeter::new(wire)))
            } else if ctype.contains("json") {
                Mode::Json(BytesMut::new())
            } else {
                Mode::Plain
            }
        } else {
            Mode::Plain
        };
        let mut out_status = status;
        if status == 401 || status == 403 {
            let e = GatewayError::new(
                ErrorKind::Upstream,
                format!("The provider '{provider}' rejected the gateway's credentials (HTTP {status}). This is a gateway configuration problem, not your key."),
            )
            .with_code("upstream_auth_failed");
            out_status = e.status();
            mode = Mode::Replace(e.body(dialect));
        }
        let is_stream = matches!(mode, Mode::Stream(_) | Mode::StreamHidingUsage(..));
        if matches!(mode, Mode::StreamHidingUsage(..)) {
            resp.remove_header("content-length");
        }
        // Strip what no longer describes the body we send, and upstream identity headers.
        for h in ["server", "alt-svc", "set-cookie", "via"] {
            resp.remove_header(h);
        }
        if let Mode::Replace(body) = &mode {
            let _ = resp.set_status(out_status);
            let _ = resp.insert_header("content-type", "application/json");
            let _ = resp.insert_header("content-length", body.len().to_string());
            resp.remove_header("transfer-encoding");
        }
        if is_stream {
            // Proxies between us and the client must not buffer the stream.
            let _ = resp.insert_header("x-accel-buffering", "no");
            let _ = resp.insert_header("cache-control", "no-cache");
        }
        ResponseTap {
            mode,
            wire,
            dialect,
            status: out_status,
            usage: None,
            bytes_out: 0,
            is_stream,
            incomplete: false,
            finished: false,
        }
    }

    /// Processes one upstream body piece in place (`None` = nothing to send now).
    pub fn on_body(&mut self, body: &mut Option<Bytes>, eos: bool) {
        match &mut self.mode {
            Mode::Stream(meter) => {
                if let Some(b) = body.as_ref() {
                    meter.observe(b);
                }
                if eos {
                    meter.finish();
                    self.finish_stream();
                }
            }
            Mode::StreamHidingUsage(meter, parser) => {
                let mut out = Vec::new();
                if let Some(b) = body.as_ref() {
                    meter.observe(b);
                    parser.feed(b, &mut |ev| reframe_without_usage(ev, &mut out));
                }
                if eos {
                    parser.finish(&mut |ev| reframe_without_usage(ev, &mut out));
                    meter.finish();
                    self.finish_stream();
                }
                *body = (!out.is_empty()).then(|| Bytes::from(out));
            }
            Mode::Json(kept) => {
                if let Some(b) = body.as_ref() {
                    if kept.len() + b.len() <= MAX_KEPT_BODY {
                        kept.extend_from_slice(b);
                    }
                }
                if eos {
                    let v: Option<serde_json::Value> = serde_json::from_slice(kept).ok();
                    self.usage = v.as_ref().and_then(|v| usage_from_body(self.wire, v));
                    self.finished = true;
                }
            }
            Mode::Replace(replacement) => {
                *body = if eos { Some(replacement.clone()) } else { None };
                if eos {
                    self.finished = true;
                }
            }
            Mode::Plain => {
                if eos {
                    self.finished = true;
                }
            }
        }
        if let Some(b) = body.as_ref() {
            self.bytes_out += b.len() as u64;
        }
    }

    fn finish_stream(&mut self) {
        if let Mode::Stream(meter) | Mode::StreamHidingUsage(meter, _) = &self.mode {
            self.usage = meter.saw_usage.then_some(meter.usage);
            self.incomplete = !meter.completed || meter.errored;
            self.finished = true;
        }
    }

    /// The upstream failed after the response started. For a stream that has not ended,
    /// returns the error event that ends it properly in the client's dialect.
    pub fn on_upstream_error(&mut self, message: &str) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        match &mut self.mode {
            Mode::Stream(meter) | Mode::StreamHidingUsage(meter, _) => {
                meter.finish();
                let already_done = meter.completed;
                self.finish_stream();
                self.incomplete = true;
                if already_done {
                    return None;
                }
                let e = GatewayError::new(
                    ErrorKind::Upstream,
                    format!("The upstream stream failed: {message}"),
                );
                let ev = e.sse_event(self.dialect);
                self.bytes_out += ev.len() as u64;
                Some(ev)
            }
            _ => None,
        }
    }

    /// The upstream body is replaced by one of ours (its length is set in the header).
    pub fn replaces_body(&self) -> bool {
        matches!(self.mode, Mode::Replace(_))
    }

    pub fn finished(&self) -> bool {
        self.finished
    }
}

/// Writes an OpenAI chat event back out unless it is the usage-only chunk (`choices: []`
/// with `usage`), which the client did not ask for.
fn reframe_without_usage(ev: SseEvent, out: &mut Vec<u8>) {
    let d = ev.data.as_str();
    if d.contains("\"usage\"") && d.contains("\"choices\":[]") {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(d) {
            if v["choices"].as_array().is_some_and(|c| c.is_empty()) && v["usage"].is_object() {
                return;
            }
        }
    }
    if let Some(name) = &ev.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in d.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(status: u16, ctype: &str) -> ResponseHeader {
        let mut h = ResponseHeader::build(status, None).unwrap();
        h.insert_header("content-type", ctype).unwrap();
        h.insert_header("server", "upstream").unwrap();
        h
    }

    #[test]
    fn stream_passes_through_and_meters() {
        let mut h = header(200, "text/event-stream");
        let mut tap = ResponseTap::on_header(&mut h, Wire::OpenAiChat, Dialect::OpenAi, "p", false);
        assert!(h.headers.get("server").is_none());
        let chunk = Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n");
        let mut b = Some(chunk.clone());
        tap.on_body(&mut b, false);
        assert_eq!(b.as_ref(), Some(&chunk));
        tap.on_body(&mut None, true);
        assert_eq!(tap.usage.unwrap().total(), 5);
        assert!(!tap.incomplete);
    }

    #[test]
    fn injected_usage_chunk_is_hidden_but_metered() {
        let mut h = header(200, "text/event-stream");
        let mut tap = ResponseTap::on_header(&mut h, Wire::OpenAiChat, Dialect::OpenAi, "p", true);
        let input = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let mut out = Vec::new();
        for piece in input.chunks(5) {
            let mut b = Some(Bytes::copy_from_slice(piece));
            tap.on_body(&mut b, false);
            out.extend_from_slice(&b.unwrap_or_default());
        }
        let mut end = None;
        tap.on_body(&mut end, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"content\":\"hi\"") && text.ends_with("data: [DONE]\n\n"));
        assert!(!text.contains("prompt_tokens"));
        assert_eq!(tap.usage.unwrap().total(), 5);
    }

    #[test]
    fn upstream_auth_failure_becomes_502_in_client_dialect() {
        let mut h = header(401, "application/json");
        let mut tap = ResponseTap::on_header(
            &mut h,
            Wire::Anthropic,
            Dialect::Anthropic,
            "anthropic",
            false,
        );
        assert_eq!(h.status.as_u16(), 502);
        let mut b = Some(Bytes::from_static(b"{\"error\":\"bad key sk-secret\"}"));
        tap.on_body(&mut b, false);
        assert!(b.is_none());
        let mut end = None;
        tap.on_body(&mut end, true);
        let v: serde_json::Value = serde_json::from_slice(&end.unwrap()).unwrap();
        assert_eq!(v["type"], "error");
        assert!(!v.to_string().contains("sk-secret"));
    }

    #[test]
    fn broken_stream_gets_an_error_event() {
        let mut h = header(200, "text/event-stream");
        let mut tap =
            ResponseTap::on_header(&mut h, Wire::Anthropic, Dialect::Anthropic, "p", false);
        tap.on_body(&mut Some(Bytes::from_static(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5}}}\n\n")), false);
        let ev = tap.on_upstream_error("connection reset").unwrap();
        assert!(ev.starts_with(b"event: error\n"));
        assert!(tap.incomplete);
        assert_eq!(tap.usage.unwrap().input, 5);
        assert!(tap.on_upstream_error("again").is_none());
    }
}
