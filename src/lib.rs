//! tollgate: an LLM gateway on Cloudflare Pingora. See README.md for the tour and
//! DEVELOPERS notes in each module for the design decisions.

pub mod access;
pub mod admin;
pub mod auth;
pub mod balance;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod drain;
pub mod endpoint;
pub mod error;
pub mod gateway;
pub mod ledger;
pub mod local;
pub mod meter;
pub mod metrics;
pub mod providers;
pub mod route;
pub mod server;
pub mod state;
pub mod store;
pub mod translate;
