//! `last_used_at` of keys, written in batches: authentication notes the time in memory
//! (one relaxed atomic store per key and second, see [`KeyIndex::check`]); this service
//! writes the keys used since their stored time, at most once a minute per key and never
//! on the request path, and once more when the process stops.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::KeyIndex;
use crate::store::StoreSlot;

/// How often used keys are written, and the least change worth a write.
pub const INTERVAL: Duration = Duration::from_secs(60);

pub struct LastUsedWriter {
    pub index: Arc<KeyIndex>,
    pub slot: Arc<StoreSlot>,
}

/// Writes every key used at least `gap` seconds after its stored time. Returns how many.
pub async fn flush(index: &KeyIndex, slot: &StoreSlot, gap: u64) -> usize {
    let Some(store) = slot.get() else { return 0 };
    let mut n = 0;
    for k in index.stale_last_used(gap) {
        match store.put_key(&k).await {
            Ok(()) => {
                index.upsert(k);
                n += 1;
            }
            Err(e) => {
                log::warn!("cannot write last_used_at of {}: {e}", k.id);
                break;
            }
        }
    }
    n
}

#[async_trait]
impl BackgroundService for LastUsedWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {
                    flush(&self.index, &self.slot, INTERVAL.as_secs()).await;
                }
                _ = shutdown.changed() => {
                    flush(&self.index, &self.slot, 1).await;
                    return;
                }
            }
        }
    }
}
