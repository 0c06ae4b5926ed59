//! The background services that move state between memory (the key index and the ledger)
//! and the store: [`keeper::StoreKeeper`] owns the store for this process and loads it,
//! [`writer::UsageWriter`] makes settled usage durable, [`sync::SharedSync`] follows a shared
//! store, [`responses::ResponseWriter`] writes stored Responses, [`last_used::LastUsedWriter`]
//! writes keys' `last_used_at` in batches, and [`snapshot`] keeps the key snapshot file. The store itself ([`crate::store`])
//! only persists.
//!
//! ## Hand-over between processes (graceful upgrade)
//! sled holds an exclusive file lock, so during `systemctl reload` the new process cannot open
//! the store while the old one has it. The design:
//! - whoever holds the store keeps `keys.snapshot.json` (key hashes, never secrets) current,
//!   written atomically on every key change;
//! - a starting process loads that snapshot before it accepts a connection, so it
//!   authenticates from its first request;
//! - the [`keeper::StoreKeeper`] background service polls for the sled lock and, once it has
//!   it, loads the authoritative state;
//! - the old process lets go of the store the moment it receives SIGQUIT (the upgrade
//!   signal), not when its grace period ends, so the gap is the new process's polling
//!   interval (200 ms);
//! - management writes that land on a process without the store get 503 with
//!   `retry-after: 1`; inference is never refused for it.

pub mod keeper;
pub mod last_used;
pub mod responses;
pub mod snapshot;
pub mod sync;
pub mod writer;
