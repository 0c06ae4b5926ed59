//! Pure, I/O-free transcoding between the Anthropic Messages (A), OpenAI Chat Completions
//! (C), OpenAI Responses (R) and Gemini generateContent (G) formats: requests, non-streamed
//! responses, errors, and streams as explicit state machines fed by the incremental SSE
//! parser. Nothing here does I/O or blocks; the gateway calls these from its filters.
//! (Reference: shared/reference/wire-formats.md.)
//!
//! C is the hub: A↔C, R↔C and G↔C are written once each, and the other pairs are their
//! compositions (R on an Anthropic model is R→C→A for the request and A→C→R for the
//! stream, chained with [`Chain`]).

pub mod sse;

use bytes::BytesMut;

use crate::meter::Usage;

/// A stream transcoder: upstream bytes in (split anywhere), client bytes out, emitted as soon
/// as their input arrives. Memory is bounded by the largest single event.
pub trait StreamTranscoder: Send + Sync + std::fmt::Debug {
    /// Feeds upstream bytes; appends whatever client bytes they complete to `out`.
    fn feed(&mut self, input: &[u8], out: &mut BytesMut);
    /// The upstream body ended (cleanly or not): appends the client's terminal events, or an
    /// error event when the upstream stream was incomplete.
    fn finish(&mut self, out: &mut BytesMut);
    /// The upstream connection failed mid-stream: appends an error event in the client's
    /// dialect (nothing if the client stream already ended).
    fn fail(&mut self, message: &str, out: &mut BytesMut);
    /// Appends a keep-alive in the client's grammar (the upstream has been silent).
    fn keepalive(&mut self, out: &mut BytesMut);
    /// Usage as reported by the upstream (canonical numbers), if it reported any.
    fn usage(&self) -> Option<Usage>;
    /// The upstream stream reached its normal end.
    fn completed(&self) -> bool;
}

/// Two transcoders in series: the first one's client output is the second one's upstream
/// input (A → C → R, G → C → A, ...). Usage is the upstream's, read by the first stage.
#[derive(Debug)]
pub struct Chain {
    first: Box<dyn StreamTranscoder>,
    second: Box<dyn StreamTranscoder>,
    /// The intermediate bytes of one call (reused between calls).
    buf: BytesMut,
}

impl Chain {
    pub fn new(first: Box<dyn StreamTranscoder>, second: Box<dyn StreamTranscoder>) -> Self {
        Chain {
            first,
            second,
            buf: BytesMut::new(),
        }
    }

    fn pass(&mut self, out: &mut BytesMut) {
        if !self.buf.is_empty() {
            self.second.feed(&self.buf, out);
            self.buf.clear();
        }
    }
}

impl StreamTranscoder for Chain {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) {
        self.first.feed(input, &mut self.buf);
        self.pass(out);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.first.finish(&mut self.buf);
        self.pass(out);
        self.second.finish(out);
    }

    fn fail(&mut self, message: &str, out: &mut BytesMut) {
        // The first stage ends its stream (an error chunk, or a normal end if it was
        // finishing); the second renders that in the client's grammar.
        self.first.fail(message, &mut self.buf);
        self.pass(out);
        self.second.fail(message, out);
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        self.second.keepalive(out);
    }

    fn usage(&self) -> Option<Usage> {
        self.first.usage()
    }

    fn completed(&self) -> bool {
        self.second.completed()
    }
}

pub mod a2c;
pub mod c2a;
pub mod gemini;
pub mod r2c;
pub mod shared;
