//! The life of a translated stream, written once for every transcoder (docs/translation.md,
//! "Stream lifecycle"): SSE parsing, the phase, when the client's stream ends normally, when
//! it ends in an error (truncation, a broken connection, an error from upstream), and when
//! keep-alives may be sent. A transcoder supplies only its event mapping ([`Events`]);
//! [`Lifecycle`] is generic over it, so each pair compiles to its own code with no dynamic
//! dispatch per event.

use bytes::BytesMut;

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

/// One transcoder's event mapping: upstream events in, client events out. The lifecycle
/// calls these only while the stream is neither done nor failed.
pub trait Events: Send + Sync + std::fmt::Debug {
    /// Writes the events that open the client's stream (called once, through [`open`]).
    fn start(&mut self, out: &mut BytesMut);
    /// Maps one upstream event. May open the client's stream ([`open`]); every other change
    /// of phase is asked for by the result, and an error ends the stream with that error.
    fn on_event(
        &mut self,
        ev: SseEvent,
        phase: &mut Phase,
        out: &mut BytesMut,
    ) -> Result<Next, GatewayError>;
    /// Writes the client's terminal events (a normal end).
    fn complete(&mut self, phase: &mut Phase, out: &mut BytesMut);
    /// Writes the error event that ends the client's stream.
    fn fail(&mut self, e: GatewayError, phase: &mut Phase, out: &mut BytesMut);
    /// Writes a keep-alive in the client's grammar.
    fn keepalive(&mut self, phase: &mut Phase, out: &mut BytesMut);
    /// Usage as the upstream reported it (canonical numbers), if it reported any.
    fn usage(&self) -> Option<Usage>;
}

/// Opens the client's stream if nothing was sent yet.
pub fn open<T: Events + ?Sized>(events: &mut T, phase: &mut Phase, out: &mut BytesMut) {
    if *phase == Phase::Init {
        *phase = Phase::Open;
        events.start(out);
    }
}

/// The error a client sees when the upstream's stream ended before the turn did.
pub fn truncated() -> GatewayError {
    GatewayError::new(ErrorKind::Upstream, "upstream stream ended before completion")
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
        match self.events.on_event(ev, &mut self.phase, out) {
            Ok(Next::Continue) => {}
            Ok(Next::Finishing) => self.phase = Phase::Finishing,
            Ok(Next::Complete) => self.complete(out),
            Ok(Next::Truncated) => self.end_with(truncated(), out),
            Err(e) => self.end_with(e, out),
        }
    }

    fn complete(&mut self, out: &mut BytesMut) {
        if !self.ended() {
            self.events.complete(&mut self.phase, out);
            self.phase = Phase::Done;
        }
    }

    fn end_with(&mut self, e: GatewayError, out: &mut BytesMut) {
        if !self.ended() {
            self.events.fail(e, &mut self.phase, out);
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
            self.events.keepalive(&mut self.phase, out);
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.events.usage()
    }

    fn completed(&self) -> bool {
        self.phase == Phase::Done
    }
}
