//! tollgate: an LLM gateway on Cloudflare Pingora. README.md has the tour;
//! docs/architecture.md the module map and a request's path through it; each module's own
//! doc comment says what it owns and why it is built the way it is.

pub mod access;
pub mod admin;
pub mod alerts;
pub mod auth;
pub mod balance;
pub mod cli;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod drain;
pub mod endpoint;
pub mod error;
pub mod gateway;
pub mod guardrails;
pub mod ids;
pub mod ledger;
pub mod local;
pub mod mcp;
pub mod meter;
pub mod metrics;
pub mod otel;
pub mod outbound;
pub mod providers;
pub mod records;
pub mod responses;
pub mod route;
pub mod server;
pub mod services;
pub mod state;
pub mod store;
pub mod tools;
pub mod traces;
pub mod translate;
pub mod ui;
