//! The life of a translated stream, written once for every transcoder (docs/translation.md,
//! "Stream lifecycle"): SSE parsing, the phase, when the client's stream ends normally, when
//! it ends in an error (truncation, a broken connection, an error from upstream), and when
//! keep-alives may be sent. A transcoder supplies only its event mapping ([`Events`]) and
//! the client's side ([`ClientStream`], shared by the transcoders whose clients speak Chat);
//! [`Lifecycle`] is generic over it, so each pair compiles to its own code with no dynamic
//! dispatch per event.

use bytes::BytesMut;
use serde_json::Value;

use super::sse::{SseEvent, SseParser};
use super::StreamTranscoder;
use crate::error::{ErrorKind, GatewayError};
use crate::meter::Usage;

/// Where a translated stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing has been sent to the client yet.
    Init,
    /// The client's stream has started.
    Open,
    /// The upstream said how the turn ends; the client's terminal events wait for the
    /// upstream's own end (a usage chunk, `[DONE]`, or the end of the body).
    Finishing,
    /// The client's stream ended normally.
    Done,
    /// The client's stream ended with an error event.
    Failed,
}

/// One upstream event whose data is JSON.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    pub data: &'a Value,
    /// The event's name (Anthropic names every event; OpenAI and Gemini none).
    pub name: Option<&'a str>,
}

/// What an event does to the stream: the next step, or an error that ends it.
pub type Step = Result<Next, GatewayError>;

/// What an upstream event means for the stream as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// The turn's end is known (a finish reason); the terminal events wait.
    Finishing,
    /// The upstream's terminal event arrived: end the client's stream normally now.
    Complete,
    /// The upstream's terminator arrived before the turn's end: the stream is truncated.
    Truncated,
}

/// The client's side of a translated stream: how it opens, ends normally, ends in an error,
/// and keeps the connection alive, in the client's format. The lifecycle calls these only
/// while the stream is neither done nor failed.
pub trait ClientStream {
    /// Writes the events that open the client's stream (called once, through [`open`]).
    fn start(&mut self, out: &mut BytesMut);
    /// Writes the client's terminal events (a normal end).
    fn complete(&mut self, phase: &mut Phase, out: &mut BytesMut);
    /// Writes the error event that ends the client's stream.
    fn fail(&mut self, e: GatewayError, phase: &mut Phase, out: &mut BytesMut);
    /// Writes a keep-alive in the client's grammar.
    fn keepalive(&mut self, phase: &mut Phase, out: &mut BytesMut);
}

/// One transcoder's event mapping: upstream chunks in, client events out through its
/// [`ClientStream`].
pub trait Events: Send + Sync + std::fmt::Debug {
    type Client: ClientStream;
    fn client(&mut self) -> &mut Self::Client;
    /// Maps one upstream chunk. May open the client's stream ([`open`]); every other change
    /// of phase is asked for by the result, and an error ends the stream with that error.
    fn on_chunk(&mut self, c: Chunk, phase: &mut Phase, out: &mut BytesMut) -> Step;
    /// `data: [DONE]`, OpenAI's terminator (other upstreams never send it).
    fn on_done(&mut self, _phase: Phase) -> Next {
        Next::Continue
    }
    /// Event data that is not JSON (skipped unless the mapping says otherwise). Chunks that
    /// do parse are passed to `on_chunk`.
    fn on_malformed(&mut self) -> Result<(), GatewayError> {
        Ok(())
    }
    /// Usage as the upstream reported it (canonical numbers), if it reported any.
    fn usage(&self) -> Option<Usage>;
    /// See [`StreamTranscoder::take_final_response`].
    fn take_final_response(&mut self) -> Option<Value> {
        None
    }
}

/// Opens the client's stream if nothing was sent yet.
pub fn open<C: ClientStream + ?Sized>(client: &mut C, phase: &mut Phase, out: &mut BytesMut) {
    if *phase == Phase::Init {
        *phase = Phase::Open;
        client.start(out);
    }
}

/// The error a client sees when the upstream's stream ended before the turn did.
pub fn truncated() -> GatewayError {
    GatewayError::new(
        ErrorKind::Upstream,
        "upstream stream ended before completion",
    )
    .with_code("stream_truncated")
    .with_status(502)
}

/// A transcoder: the shared lifecycle around one event mapping.
#[derive(Debug)]
pub struct Lifecycle<T> {
    parser: SseParser,
    phase: Phase,
    events: T,
}

impl<T: Events> Lifecycle<T> {
    pub fn wrap(events: T) -> Self {
        Lifecycle {
            parser: SseParser::new(),
            phase: Phase::Init,
            events,
        }
    }

    /// The event mapping, with what it gathered (a replayed answer reads its result here).
    pub fn into_events(self) -> T {
        self.events
    }

    fn ended(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    fn on_event(&mut self, ev: SseEvent, out: &mut BytesMut) {
        if self.ended() {
            return;
        }
        let step = if ev.data.is_empty() {
            Ok(Next::Continue)
        } else if ev.data.trim() == "[DONE]" {
            Ok(self.events.on_done(self.phase))
        } else {
            match serde_json::from_str::<Value>(&ev.data) {
                Ok(data) => {
                    let c = Chunk {
                        data: &data,
                        name: ev.event.as_deref(),
                    };
                    self.events.on_chunk(c, &mut self.phase, out)
                }
                Err(_) => self.events.on_malformed().map(|()| Next::Continue),
            }
        };
        match step {
            Ok(Next::Continue) => {}
            Ok(Next::Finishing) => self.phase = Phase::Finishing,
            Ok(Next::Complete) => self.complete(out),
            Ok(Next::Truncated) => self.end_with(truncated(), out),
            Err(e) => self.end_with(e, out),
        }
    }

    fn complete(&mut self, out: &mut BytesMut) {
        if !self.ended() {
            self.events.client().complete(&mut self.phase, out);
            self.phase = Phase::Done;
        }
    }

    fn end_with(&mut self, e: GatewayError, out: &mut BytesMut) {
        if !self.ended() {
            self.events.client().fail(e, &mut self.phase, out);
            self.phase = Phase::Failed;
        }
    }
}

impl<T: Events> StreamTranscoder for Lifecycle<T> {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.feed(input, &mut |ev| self.on_event(ev, out));
        self.parser = parser;
    }

    /// The truncation rule: a stream whose end was announced (a finish reason) completes
    /// even if its terminator never came; one that ends before that fails.
    fn finish(&mut self, out: &mut BytesMut) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.finish(&mut |ev| self.on_event(ev, out));
        self.parser = parser;
        match self.phase {
            Phase::Finishing => self.complete(out),
            Phase::Init | Phase::Open => self.end_with(truncated(), out),
            Phase::Done | Phase::Failed => {}
        }
    }

    fn fail(&mut self, message: &str, out: &mut BytesMut) {
        if self.phase == Phase::Finishing {
            // Only the terminator was lost: the turn itself is whole.
            self.complete(out);
            return;
        }
        let e = GatewayError::new(
            ErrorKind::Upstream,
            format!("upstream stream failed: {message}"),
        );
        self.end_with(e, out);
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        if !self.ended() {
            self.events.client().keepalive(&mut self.phase, out);
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.events.usage()
    }

    fn completed(&self) -> bool {
        self.phase == Phase::Done
    }

    fn take_final_response(&mut self) -> Option<Value> {
        self.events.take_final_response()
    }
}
