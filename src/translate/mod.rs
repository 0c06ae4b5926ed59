//! Pure, I/O-free transcoding: the incremental SSE parser here; request, response and stream
//! transcoders between the Anthropic and OpenAI formats build on it.

pub mod sse;
