//! MCP: tollgate as a client of remote MCP servers, on the official Rust SDK (`rmcp`); no
//! protocol code of our own.
//!
//! - `client`: a server's description ([`ServerSpec`]: URL, secret headers, allowed tools,
//!   transport, timeouts), connecting ([`connect`], SSRF-checked through `outbound`), and a
//!   [`Session`]: the tools it offers (only the allowed ones), calls with progress, closing.
//! - `sse`: the older HTTP+SSE transport (a GET event stream, messages POSTed to the endpoint
//!   it names) as an rmcp `Transport`: it moves the SDK's messages and nothing else.

pub mod client;
mod sse;

pub use client::{
    connect, CallToolResult, Headers, McpError, Progress, ServerSpec, Session, Tool, TransportKind,
};
