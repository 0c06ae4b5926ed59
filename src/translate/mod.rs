//! Pure, I/O-free transcoding between the Anthropic Messages, OpenAI Chat Completions, OpenAI
//! Responses and Gemini generateContent formats: requests, non-streamed answers, errors, and
//! streams. Nothing here does I/O, blocks, reads the clock or draws random numbers: what an
//! answer needs of those comes in a [`Stamp`]. The rules are in docs/translation.md.
//!
//! Chat is the hub: each other format is translated to and from Chat once, one file per
//! direction (`anthropic_to_chat`, `chat_to_anthropic`, `responses_to_chat`,
//! `chat_to_responses`, `chat_to_gemini`, `gemini_to_chat`), and the other pairs are their
//! compositions (a Responses client on an Anthropic model: Responses → Chat → Anthropic for
//! the request, Anthropic → Chat → Responses for the answer, chained with [`Chain`]).
//! [`pipeline`] is the pair matrix: the one place that says which pieces serve a pair.

pub mod sse;

use bytes::BytesMut;

use crate::meter::Usage;

/// An API shape, on either side of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// OpenAI Chat Completions (`/v1/chat/completions`), and the OpenAI shape of everything
    /// else (embeddings, moderations, errors of local endpoints).
    Chat,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
    /// Google Gemini generateContent (providers only: no client speaks it to tollgate).
    Gemini,
}

/// What a translation may not make up itself, so that its output is a function of its input:
/// the random token the ids of an answer are built from (`msg_<token>`, `chatcmpl-<token>`,
/// `resp_<token>`, and the item and call ids derived from those), and the time, in Unix
/// seconds, for `created` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub token: String,
    pub now: u64,
}

impl Stamp {
    pub fn new(token: impl Into<String>, now: u64) -> Self {
        Stamp {
            token: token.into(),
            now,
        }
    }
}

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
    /// The Responses object of a completed stream, once (a Responses client's; the stored
    /// responses keep it). None for other formats and before the end.
    fn take_final_response(&mut self) -> Option<serde_json::Value> {
        None
    }
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

    fn take_final_response(&mut self) -> Option<serde_json::Value> {
        self.second.take_final_response()
    }
}

pub mod anthropic_to_chat;
pub mod chat_stream;
pub mod chat_to_anthropic;
pub mod chat_to_gemini;
pub mod chat_to_responses;
pub mod gemini_to_chat;
pub mod lifecycle;
pub mod pipeline;
pub mod responses_to_chat;
pub mod shared;
pub mod upstream_error;
