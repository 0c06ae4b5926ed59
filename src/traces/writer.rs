//! The trace writer: stores queued traces in batches and prunes them past the retention.
//! Traces are best effort: a batch the store refuses (or that finds no store) is dropped and
//! counted, never retried ahead of newer ones.
//!
//! It sleeps until a trace is queued (no polling timer: an idle gateway pays nothing for it)
//! and prunes on a timer of its own, once an hour.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics;
use crate::store::StoreSlot;

/// Group commit: a burst accumulates this long before it is written (one store write per
/// batch, whatever its size).
const INTERVAL: Duration = Duration::from_millis(200);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct TraceWriter {
    pub slot: Arc<StoreSlot>,
}

#[async_trait]
impl BackgroundService for TraceWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(q) = super::queue() else { return };
        let retention_ms = q.settings.retention_days * 86_400_000;
        // The first tick is at once: traces left from an earlier run are pruned at start
        // (when the store is there by then; else at the next tick).
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = q.notify.notified() => {}
                _ = prune.tick(), if retention_ms > 0 => {
                    self.prune(retention_ms).await;
                    continue;
                }
                _ = shutdown.changed(), if !stopping => stopping = true,
            }
            // While the server drains, what finishes is written at once.
            if !stopping {
                tokio::time::sleep(INTERVAL).await;
            }
            self.write(q).await;
        }
    }
}

impl TraceWriter {
    async fn prune(&self, retention_ms: u64) {
        let Some(store) = self.slot.get().filter(|s| s.healthy()) else {
            return;
        };
        let cutoff = crate::clock::now_millis().saturating_sub(retention_ms);
        match store.prune_traces(cutoff).await {
            Ok(n) if n > 0 => log::info!("pruned {n} traces past the retention"),
            Ok(_) => {}
            Err(e) => log::warn!("cannot prune traces: {e}"),
        }
    }

    async fn write(&self, q: &super::TraceQueue) {
        let batch = q.take();
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        // Redaction happens here, off the request path, before anything is stored.
        let batch = batch
            .into_iter()
            .map(|p| super::finish(p, &q.settings))
            .collect();
        let store = self.slot.get().filter(|s| s.healthy());
        let written = match store {
            Some(s) => s.put_traces(batch).await.map_err(|e| e.to_string()),
            None => Err("no store".into()),
        };
        match written {
            Ok(()) => metrics::TRACES_WRITTEN.inc_by(n),
            Err(e) => {
                log::warn!("dropping {n} traces: {e}");
                metrics::TRACES_DROPPED
                    .with_label_values(&["write_error"])
                    .inc_by(n);
            }
        }
    }
}
