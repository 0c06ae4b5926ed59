//! The trace writer: stores queued traces in batches and prunes them past the retention.
//! Traces are best effort: a batch the store refuses (or that finds no store) is dropped and
//! counted, never retried ahead of newer ones.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics;
use crate::store::StoreSlot;

/// Group commit: a burst accumulates this long before it is written.
const INTERVAL: Duration = Duration::from_millis(50);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct TraceWriter {
    pub slot: Arc<StoreSlot>,
}

#[async_trait]
impl BackgroundService for TraceWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(q) = super::queue() else { return };
        let retention_ms = q.settings.retention_days * 86_400_000;
        let mut last_prune: Option<Instant> = None;
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = q.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed(), if !stopping => stopping = true,
            }
            let store = self.slot.get().filter(|s| s.healthy());
            if let (Some(store), true) = (
                store.as_ref(),
                retention_ms > 0 && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY),
            ) {
                last_prune = Some(Instant::now());
                let cutoff = crate::clock::now_millis().saturating_sub(retention_ms);
                match store.prune_traces(cutoff).await {
                    Ok(n) if n > 0 => log::info!("pruned {n} traces past the retention"),
                    Ok(_) => {}
                    Err(e) => log::warn!("cannot prune traces: {e}"),
                }
            }
            tokio::time::sleep(INTERVAL).await;
            let batch = q.take();
            if batch.is_empty() {
                continue;
            }
            let n = batch.len() as u64;
            // Redaction happens here, off the request path, before anything is stored.
            let batch = batch
                .into_iter()
                .map(|p| super::finish(p, &q.settings))
                .collect();
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
}
