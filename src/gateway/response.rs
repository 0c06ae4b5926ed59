//! What happens to an upstream response on its way to the client. One implementation,
//! called from Pingora's `response_filter`/`response_body_filter` on the proxy path and from
//! the direct path's delivery loop (see `gateway` for which request takes which path), so
//! both paths behave the same.
//!
//! Same-format traffic passes through byte for byte while a [`StreamMeter`] reads usage off
//! the stream. Cross-format traffic goes through a [`StreamTranscoder`] (streams) or a body
//! converter (JSON and errors). Upstream auth failures become a 502 in the client's format
//! (the provider's complaint is about the gateway's credential, not the client's).

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;

use crate::error::{ErrorKind, GatewayError};
use crate::meter::{usage_from_fields, StreamMeter, Usage, UsageNumbers};
use crate::responses::resolve::Turn;
use crate::traces::assemble::StreamAnswer;
use crate::translate::pipeline::Answer;
use crate::translate::sse::{write_text, SseEvent, SseParser};
use crate::translate::{Format, Stamp, StreamTranscoder};
use std::sync::Arc;

/// Whether the answer is translated: the client's format differs from the provider's.
#[derive(Debug, Clone)]
pub enum Translation {
    /// Same format: pass through.
    None,
    /// Different formats: the pair's answer side (from `translate::pipeline`).
    Cross(Box<Answer>),
}

/// A fresh stamp for a translated answer: its ids' token and the time.
fn stamp() -> Stamp {
    Stamp::new(crate::ids::generate_id(""), crate::clock::now_secs())
}

/// Everything the tap needs to know about the request.
#[derive(Debug, Clone)]
pub struct TapSpec {
    /// The format the provider answers in (what passes through is metered in it).
    pub upstream: Format,
    /// The client's format (errors are enveloped in it).
    pub client: Format,
    pub provider: String,
    pub hide_usage_chunk: bool,
    pub translation: Translation,
    /// The client asked for a stream (an upstream JSON answer is then re-rendered as one).
    pub client_stream: bool,
    /// A Responses answer to store (see `crate::responses`).
    pub turn: Option<Arc<Turn>>,
    /// `traces.capture: full` for this request: the most answer bytes its trace keeps.
    pub trace_body_max: Option<usize>,
    /// `cost_in_stream: true` on a stream: its price, to put the cost in its final usage
    /// event (set where the answer starts: the price is the deployment's that answers).
    pub stream_cost: Option<crate::meter::price::Price>,
}

const TRUNCATED: &str = "The upstream stream ended before completion.";

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
    /// A stream transcoded event by event.
    Transcode(Box<dyn StreamTranscoder>),
    /// A JSON body kept whole and converted at the end (non-streamed answers, errors).
    Convert(BytesMut, Converter),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Converter {
    /// A translated answer (upstream → C → client).
    Answer,
    /// An upstream error body into the client's format (status kept).
    Error { status: u16 },
}

#[derive(Debug)]
pub struct ResponseTap {
    mode: Mode,
    upstream: Format,
    client: Format,
    translation: Translation,
    client_stream: bool,
    pub status: u16,
    pub usage: Option<Usage>,
    pub bytes_out: u64,
    pub is_stream: bool,
    /// The stream ended without its terminal event, or with an error event.
    pub incomplete: bool,
    /// Where a Responses answer is stored once complete (taken when it is).
    turn: Option<Arc<Turn>>,
    /// Content delta events sent to the client: what a broken stream is billed by when
    /// the provider's own count is lower or missing (see `delivered_output`).
    deltas_out: u64,
    finished: bool,
    /// `traces.capture: full` only: what the trace keeps of the answer.
    trace: Option<Box<AnswerCapture>>,
    /// `cost_in_stream: true` only: the client's events re-framed, the cost added to the
    /// final usage event.
    stream_cost: Option<Box<StreamCost>>,
}

#[derive(Debug)]
struct StreamCost {
    price: crate::meter::price::Price,
    parser: SseParser,
}

/// The answer a `capture: full` trace keeps: a non-streamed body up to `max` bytes (copied
/// once), or a stream's event count and the answer put back together from its events
/// (`traces::assemble`; no copy of its chunks).
#[derive(Debug)]
struct AnswerCapture {
    max: usize,
    body: BytesMut,
    truncated: bool,
    events: u64,
    ended_with_newline: bool,
    stream: Option<Box<StreamAnswer>>,
    /// The answer once taken (`captured_answer`).
    kept: Option<Bytes>,
}

impl AnswerCapture {
    fn observe(&mut self, b: &[u8], stream: bool) {
        if stream {
            // Events end with a blank line; one may be split between two pieces.
            if self.ended_with_newline && b.first() == Some(&b'\n') {
                self.events += 1;
            }
            self.events += memchr::memmem::find_iter(b, b"\n\n").count() as u64;
            self.ended_with_newline = b.last() == Some(&b'\n');
            if let Some(a) = self.stream.as_mut() {
                a.feed(b);
            }
        } else {
            let room = self.max.saturating_sub(self.body.len());
            self.body.extend_from_slice(&b[..b.len().min(room)]);
            self.truncated |= b.len() > room;
        }
    }
}

impl ResponseTap {
    /// Inspects the upstream response header and edits it for the client.
    pub fn on_header(resp: &mut ResponseHeader, spec: &TapSpec) -> ResponseTap {
        let (upstream, client, provider) = (spec.upstream, spec.client, spec.provider.as_str());
        let status = resp.status.as_u16();
        let ctype = resp
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let sse = ctype.starts_with("text/event-stream");
        let ok = (200..300).contains(&status);
        let mut mode = match (&spec.translation, ok) {
            (Translation::None, true) if sse && spec.hide_usage_chunk => Mode::StreamHidingUsage(
                Box::new(StreamMeter::new(upstream)),
                Box::new(SseParser::new()),
            ),
            (Translation::None, true) if sse => Mode::Stream(Box::new(StreamMeter::new(upstream))),
            (Translation::None, true) if ctype.contains("json") => Mode::Json(BytesMut::new()),
            (Translation::None, _) => Mode::Plain,
            (Translation::Cross(c), true) if sse => match c.stream(&stamp()) {
                Some(t) => Mode::Transcode(t),
                None => Mode::Stream(Box::new(StreamMeter::new(upstream))),
            },
            (Translation::Cross(_), true) => Mode::Convert(BytesMut::new(), Converter::Answer),
            (Translation::Cross(_), false) => {
                Mode::Convert(BytesMut::new(), Converter::Error { status })
            }
        };
        if let Translation::Cross(c) = &spec.translation {
            if !c.dropped_tools().is_empty() {
                let _ = resp.insert_header("x-tollgate-dropped-tools", c.dropped_tools().join(","));
            }
        }
        let mut out_status = status;
        if status == 401 || status == 403 {
            let e = GatewayError::new(
                ErrorKind::Upstream,
                format!("The provider '{provider}' rejected the gateway's credentials (HTTP {status}). This is a gateway configuration problem, not your key."),
            )
            .with_code("upstream_auth_failed");
            out_status = e.status();
            mode = Mode::Replace(e.body(client));
        }
        let is_stream = matches!(
            mode,
            Mode::Stream(_) | Mode::StreamHidingUsage(..) | Mode::Transcode(_)
        );
        if matches!(
            mode,
            Mode::StreamHidingUsage(..) | Mode::Transcode(_) | Mode::Convert(..)
        ) {
            // The body changes length: send it chunked.
            resp.remove_header("content-length");
            let _ = resp.insert_header("transfer-encoding", "chunked");
        }
        if matches!(mode, Mode::Transcode(_)) {
            let _ = resp.insert_header("content-type", "text/event-stream; charset=utf-8");
        }
        let converts_to_stream =
            spec.client_stream && matches!(mode, Mode::Convert(_, Converter::Answer));
        if matches!(mode, Mode::Convert(..)) {
            let ct = if converts_to_stream {
                "text/event-stream; charset=utf-8"
            } else {
                "application/json"
            };
            let _ = resp.insert_header("content-type", ct);
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
            upstream,
            client,
            translation: spec.translation.clone(),
            client_stream: spec.client_stream,
            status: out_status,
            usage: None,
            bytes_out: 0,
            is_stream,
            incomplete: false,
            deltas_out: 0,
            finished: false,
            turn: spec.turn.clone(),
            trace: spec.trace_body_max.map(|max| {
                Box::new(AnswerCapture {
                    max,
                    body: BytesMut::new(),
                    truncated: false,
                    events: 0,
                    ended_with_newline: false,
                    stream: is_stream.then(|| Box::new(StreamAnswer::new(client, max))),
                    kept: None,
                })
            }),
            stream_cost: spec.stream_cost.filter(|_| is_stream).map(|price| {
                Box::new(StreamCost {
                    price,
                    parser: SseParser::new(),
                })
            }),
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
                    if let Some(ev) = self.finish_stream(TRUNCATED) {
                        let mut b = BytesMut::from(body.take().unwrap_or_default().as_ref());
                        b.extend_from_slice(&ev);
                        *body = Some(b.freeze());
                    }
                }
            }
            Mode::StreamHidingUsage(meter, parser) => {
                // Re-framed events are about as long as the piece they came in.
                let mut out = Vec::with_capacity(body.as_ref().map_or(0, |b| b.len() + 64));
                // One parse serves both the meter and the re-framing.
                if let Some(b) = body.as_ref() {
                    parser.feed(b, &mut |ev| {
                        meter.on_event(&ev);
                        reframe_without_usage(ev, &mut out)
                    });
                }
                if eos {
                    parser.finish(&mut |ev| {
                        meter.on_event(&ev);
                        reframe_without_usage(ev, &mut out)
                    });
                    meter.finish();
                    if let Some(ev) = self.finish_stream(TRUNCATED) {
                        out.extend_from_slice(&ev);
                    }
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
                    self.usage = usage_of_json(self.upstream, kept);
                    self.finished = true;
                }
            }
            Mode::Transcode(t) => {
                let mut out = BytesMut::new();
                if let Some(b) = body.as_ref() {
                    t.feed(b, &mut out);
                }
                if eos {
                    t.finish(&mut out);
                    self.usage = t.usage();
                    self.incomplete = !t.completed();
                    self.finished = true;
                }
                // Stored before the terminal event reaches the client: its next request
                // may refer to this response at once.
                if let Some(turn) = &self.turn {
                    if let Some(object) = t.take_final_response() {
                        turn.commit(object, self.upstream);
                        self.turn = None;
                    }
                }
                *body = (!out.is_empty()).then(|| out.freeze());
            }
            Mode::Convert(kept, conv) => {
                if let Some(b) = body.take() {
                    if kept.len() + b.len() <= MAX_KEPT_BODY {
                        kept.extend_from_slice(&b);
                    }
                }
                if eos {
                    let conv = *conv;
                    let kept = std::mem::take(kept);
                    *body = Some(self.convert(&kept, conv));
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
        if self.stream_cost.is_some() {
            self.add_stream_cost(body, eos);
        }
        if let Some(b) = body.as_ref() {
            self.bytes_out += b.len() as u64;
            if self.is_stream {
                self.deltas_out += count_deltas(self.client, b);
            }
            if let Some(t) = self.trace.as_mut() {
                t.observe(b, self.is_stream);
            }
        }
    }

    /// `cost_in_stream`: re-frames the client's events, the cost of the usage metered so far
    /// added to the final usage event (as `tollgate_cost_usd`, a string of US dollars).
    fn add_stream_cost(&mut self, body: &mut Option<Bytes>, eos: bool) {
        let Some(mut sc) = self.stream_cost.take() else {
            return;
        };
        let cost = self.reported_usage().map(|u| sc.price.cost(&u));
        let client = self.client;
        let mut out = Vec::with_capacity(body.as_ref().map_or(0, |b| b.len() + 64));
        if let Some(b) = body.as_ref() {
            sc.parser
                .feed(b, &mut |ev| with_cost(client, ev, cost, &mut out));
        }
        if eos {
            sc.parser
                .finish(&mut |ev| with_cost(client, ev, cost, &mut out));
        }
        *body = (!out.is_empty()).then(|| Bytes::from(out));
        self.stream_cost = Some(sc);
    }

    /// `capture: full`: the answer sent to the client, cut at `traces.max_body_bytes` (and
    /// whether it was): the body as sent, or a stream's answer put back together.
    /// Both the OpenTelemetry content events and the stored trace read it: the first call
    /// takes the body (or puts a stream's answer together), later calls share those bytes.
    pub fn captured_answer(&mut self) -> Option<(Bytes, bool)> {
        let t = self.trace.as_mut()?;
        if t.kept.is_none() {
            let b = match t.stream.take() {
                Some(mut a) => {
                    let (b, cut) = a.finish();
                    t.truncated = cut;
                    Bytes::from(b)
                }
                None => std::mem::take(&mut t.body).freeze(),
            };
            t.kept = Some(b);
        }
        Some((t.kept.clone()?, t.truncated))
    }

    /// `capture: full`: the events of a streamed answer sent to the client.
    pub fn captured_events(&self) -> Option<u64> {
        self.trace.as_ref().map(|t| t.events)
    }

    /// Output tokens when the upstream reported none: a token per content delta of a
    /// stream (its framing is most of its bytes), else ~4 bytes per token of the body.
    pub fn estimated_output(&self) -> u64 {
        if self.is_stream {
            self.deltas_out
        } else {
            self.bytes_out / 4
        }
    }

    /// Output tokens to bill for a stream that broke before its end: what the provider
    /// reported so far, or one token per content delta the client received when that is
    /// more (providers stream about a token per delta; Anthropic's `message_start` says 1
    /// and Gemini counts only at the end). `None` for a stream that ended properly.
    pub fn delivered_output(&self, reported: u64) -> Option<u64> {
        let broken = self.is_stream && (self.incomplete || !self.finished);
        broken.then(|| reported.max(self.deltas_out))
    }

    /// At least `n` content deltas were produced (counted event by event by a stream's
    /// output checks, where the byte scan may miss a needle split between two pieces).
    pub fn produced_deltas(&mut self, n: u64) {
        self.deltas_out = self.deltas_out.max(n);
    }

    /// The whole body has been parsed already (the direct path's read-ahead check), and this
    /// is its usage: a passthrough JSON answer need neither be kept nor parsed again.
    pub fn body_already_parsed(&mut self, usage: Option<UsageNumbers>) {
        if matches!(self.mode, Mode::Json(_)) {
            self.usage = usage.and_then(|u| usage_from_fields(self.upstream, &u));
            self.mode = Mode::Plain;
        }
    }

    /// Converts a whole upstream JSON body into the client's format.
    fn convert(&mut self, body: &[u8], conv: Converter) -> Bytes {
        let v: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) if matches!(conv, Converter::Error { .. }) => serde_json::Value::Null,
            Err(_) => {
                self.incomplete = true;
                let e = GatewayError::new(
                    ErrorKind::Upstream,
                    "The provider returned an invalid response body.",
                );
                return e.body(self.client);
            }
        };
        match (conv, &self.translation) {
            (Converter::Answer, Translation::Cross(c)) => {
                let (body, usage, object) = c.convert_keeping(&v, self.client_stream, &stamp());
                self.usage = usage;
                if let (Some(turn), Some(object)) = (self.turn.take(), object) {
                    turn.commit(object, self.upstream);
                }
                body
            }
            (Converter::Error { status }, Translation::Cross(c)) => {
                c.error(status, &v).body(self.client)
            }
            _ => Bytes::from(v.to_string()),
        }
    }

    /// Ends a passthrough stream. A stream the upstream cut short without its terminal
    /// event (and without an error event of its own) gets an error event in the client's
    /// format, which is returned to be sent last.
    fn finish_stream(&mut self, why: &str) -> Option<Bytes> {
        let (Mode::Stream(meter) | Mode::StreamHidingUsage(meter, _)) = &self.mode else {
            return None;
        };
        self.usage = meter.saw_usage.then_some(meter.usage);
        self.incomplete = !meter.completed || meter.errored;
        self.finished = true;
        if meter.completed || meter.errored {
            return None;
        }
        let e = GatewayError::new(ErrorKind::Upstream, why).with_code("stream_truncated");
        let ev = e.sse_event(self.client);
        self.bytes_out += ev.len() as u64;
        Some(ev)
    }

    /// The upstream failed after the response started. For a stream that has not ended,
    /// returns the error event that ends it properly in the client's format.
    pub fn on_upstream_error(&mut self, message: &str) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        match &mut self.mode {
            Mode::Transcode(t) => {
                let mut out = BytesMut::new();
                t.fail(message, &mut out);
                self.usage = t.usage();
                self.incomplete = !t.completed();
                self.finished = true;
                self.bytes_out += out.len() as u64;
                (!out.is_empty()).then(|| out.freeze())
            }
            Mode::Stream(meter) | Mode::StreamHidingUsage(meter, _) => {
                meter.finish();
                let ev = self.finish_stream(&format!("The upstream stream failed: {message}"));
                self.incomplete = true;
                ev
            }
            _ => None,
        }
    }

    /// The usage the upstream reported, also when the stream did not reach its end here:
    /// Codex, for one, closes the connection right after `response.completed`, before the
    /// chunked body's terminator, and that turn must be billed as reported, not estimated.
    pub fn reported_usage(&self) -> Option<Usage> {
        if self.usage.is_some() {
            return self.usage;
        }
        match &self.mode {
            Mode::Stream(m) | Mode::StreamHidingUsage(m, _) => m.saw_usage.then_some(m.usage),
            Mode::Transcode(t) => t.usage(),
            _ => None,
        }
    }

    /// The body we send has a length fixed in the header already, or is chunked by us.
    pub fn replaces_body(&self) -> bool {
        matches!(self.mode, Mode::Replace(_))
    }

    /// Whether this response gets gateway keep-alives while the upstream is silent.
    pub fn sends_keepalives(&self) -> bool {
        matches!(self.mode, Mode::Transcode(_)) && !self.finished
    }

    /// A keep-alive in the client's stream grammar.
    pub fn keepalive(&mut self) -> Option<Bytes> {
        match &mut self.mode {
            Mode::Transcode(t) if !self.finished => {
                let mut out = BytesMut::new();
                t.keepalive(&mut out);
                self.bytes_out += out.len() as u64;
                (!out.is_empty()).then(|| out.freeze())
            }
            _ => None,
        }
    }

    /// The body is rewritten (transcoded or converted): the header says chunked.
    pub fn rewrites_body(&self) -> bool {
        matches!(
            self.mode,
            Mode::Transcode(_) | Mode::Convert(..) | Mode::StreamHidingUsage(..)
        )
    }

    pub fn finished(&self) -> bool {
        self.finished
    }
}

/// Counts the content delta events in a piece of a client stream (a needle split between
/// two pieces is missed: an estimate, used only for broken streams).
fn count_deltas(client: Format, b: &[u8]) -> u64 {
    use memchr::memmem::Finder;
    use once_cell::sync::Lazy;
    static ANTHROPIC: Lazy<Finder<'static>> =
        Lazy::new(|| Finder::new(b"event: content_block_delta"));
    static RESPONSES: Lazy<Finder<'static>> = Lazy::new(|| Finder::new(b".delta\n"));
    static CHAT: Lazy<Finder<'static>> = Lazy::new(|| Finder::new(b"\"delta\":{\""));
    let f = match client {
        Format::Anthropic => &ANTHROPIC,
        Format::Responses => &RESPONSES,
        Format::Chat | Format::Gemini => &CHAT,
    };
    f.find_iter(b).count() as u64
}

/// The `usage` of a JSON answer that passes through: only that field is built, the rest of
/// the body is skipped (a same-format answer is forwarded as it came).
/// A JSON answer's `usage` (the rest of the body is validated and skipped).
#[derive(serde::Deserialize)]
pub struct UsageOnly {
    pub usage: Option<UsageNumbers>,
}

fn usage_of_json(format: Format, body: &[u8]) -> Option<Usage> {
    let u = serde_json::from_slice::<UsageOnly>(body).ok()?.usage?;
    usage_from_fields(format, &u)
}

/// Writes a client event back out, with `tollgate_cost_usd` in its usage when it is the
/// final usage event of its format (chat: the chunk with `usage`; Anthropic:
/// `message_delta`; Responses: the closing `response.*` event).
fn with_cost(
    client: Format,
    ev: SseEvent,
    cost: Option<crate::records::Micros>,
    out: &mut Vec<u8>,
) {
    let d = ev.data.as_str();
    if let (Some(c), true) = (cost, d.contains("\"usage\"")) {
        if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(d) {
            let closing = matches!(
                v["type"].as_str(),
                Some("response.completed" | "response.incomplete" | "response.failed")
            );
            let usage = match client {
                Format::Anthropic if v["type"] == "message_delta" => v.get_mut("usage"),
                Format::Responses if closing => {
                    v.get_mut("response").and_then(|r| r.get_mut("usage"))
                }
                Format::Chat => v.get_mut("usage"),
                _ => None,
            };
            if let Some(u) = usage.and_then(serde_json::Value::as_object_mut) {
                u.insert(
                    "tollgate_cost_usd".into(),
                    crate::records::money::format_usd(c).into(),
                );
                crate::translate::sse::write_json(out, ev.event.as_deref(), &v);
                return;
            }
        }
    }
    write_text(out, ev.event.as_deref(), d);
}

/// Writes an OpenAI chat event back out unless it is the usage-only chunk (`choices: []`
/// with `usage`), which the client did not ask for.
fn reframe_without_usage(ev: SseEvent, out: &mut Vec<u8>) {
    let d = ev.data.as_str();
    use crate::meter::{finders, has};
    if has(&finders::NO_CHOICES, d) && has(&finders::QUOTED_USAGE, d) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(d) {
            if v["choices"].as_array().is_some_and(|c| c.is_empty()) && v["usage"].is_object() {
                return;
            }
        }
    }
    write_text(out, ev.event.as_deref(), d);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(upstream: Format, client: Format, hide: bool) -> TapSpec {
        TapSpec {
            upstream,
            client,
            provider: "p".into(),
            hide_usage_chunk: hide,
            translation: Translation::None,
            client_stream: false,
            turn: None,
            trace_body_max: None,
            stream_cost: None,
        }
    }

    fn header(status: u16, ctype: &str) -> ResponseHeader {
        let mut h = ResponseHeader::build(status, None).unwrap();
        h.insert_header("content-type", ctype).unwrap();
        h.insert_header("server", "upstream").unwrap();
        h
    }

    #[test]
    fn json_answer_usage_is_read_without_building_the_body() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":7,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3}},"system_fingerprint":"f"}"#;
        let u = usage_of_json(Format::Chat, body).unwrap();
        assert_eq!((u.input, u.cache_read, u.output), (4, 3, 2));
        let a = br#"{"type":"message","usage":{"input_tokens":5,"output_tokens":1},"content":[]}"#;
        assert_eq!(usage_of_json(Format::Anthropic, a).unwrap().input, 5);
        assert!(usage_of_json(Format::Chat, b"{\"id\":1}").is_none());
        assert!(usage_of_json(Format::Chat, b"not json").is_none());
    }

    #[test]
    fn stream_passes_through_and_meters() {
        let mut h = header(200, "text/event-stream");
        let mut tap = ResponseTap::on_header(&mut h, &spec(Format::Chat, Format::Chat, false));
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
        let mut tap = ResponseTap::on_header(&mut h, &spec(Format::Chat, Format::Chat, true));
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
        let mut tap =
            ResponseTap::on_header(&mut h, &spec(Format::Anthropic, Format::Anthropic, false));
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
            ResponseTap::on_header(&mut h, &spec(Format::Anthropic, Format::Anthropic, false));
        tap.on_body(&mut Some(Bytes::from_static(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5}}}\n\n")), false);
        let ev = tap.on_upstream_error("connection reset").unwrap();
        assert!(ev.starts_with(b"event: error\n"));
        assert!(tap.incomplete);
        assert_eq!(tap.usage.unwrap().input, 5);
        assert!(tap.on_upstream_error("again").is_none());
    }

    #[test]
    fn full_trace_capture_keeps_a_cut_answer_or_counts_stream_events() {
        let mut a = AnswerCapture {
            max: 5,
            body: BytesMut::new(),
            truncated: false,
            events: 0,
            ended_with_newline: false,
            stream: None,
            kept: None,
        };
        a.observe(b"abc", false);
        a.observe(b"defg", false);
        assert_eq!((&a.body[..], a.truncated), (&b"abcde"[..], true));
        // Three events, the last one's blank line split between two pieces.
        let mut s = AnswerCapture {
            max: 5,
            body: BytesMut::new(),
            truncated: false,
            events: 0,
            ended_with_newline: false,
            stream: None,
            kept: None,
        };
        s.observe(b"data: 1\n\ndata: 2\n\ndata: 3\n", true);
        s.observe(b"\n", true);
        assert_eq!((s.events, s.body.len()), (3, 0));
    }
}
