//! Pure, I/O-free transcoding between the Anthropic Messages (A) and OpenAI Chat
//! Completions (C) formats: requests, non-streamed responses, errors, and streams as explicit
//! state machines fed by the incremental SSE parser. Nothing here does I/O or blocks; the
//! gateway calls these from its filters. (Reference: shared/reference/wire-formats.md.)

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

pub mod a2c;
pub mod c2a;
pub mod shared;
