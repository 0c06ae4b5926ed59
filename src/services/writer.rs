//! The usage writer: drains the ledger's queue every few milliseconds and makes each batch
//! durable, in the store when this process holds it, else in a spool file that the holder
//! ingests (during an upgrade hand-over, or if the store fails). Records carry their own ids,
//! and the store skips ids it already has, so a spool replayed twice counts once.
//!
//! Durability promise: a request's usage and spend are on disk within one cycle
//! (`INTERVAL`, plus the time of one fsync) of the request's end.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::ledger::Ledger;
use crate::records::Settled;
use crate::store::{Store, StoreSlot};

pub const INTERVAL: Duration = Duration::from_millis(20);

/// How often an idle writer with nothing spooled wakes without being notified.
const IDLE_POLL: Duration = Duration::from_secs(1);

pub struct UsageWriter {
    pub ledger: Arc<Ledger>,
    pub slot: Arc<StoreSlot>,
    pub spool_dir: PathBuf,
}

fn spool_name() -> String {
    format!(
        "{}-{}.jsonl",
        std::process::id(),
        crate::clock::now_millis()
    )
}

/// Appends a batch to this process's spool file and fsyncs it.
fn spool_append(
    dir: &Path,
    file: &mut Option<(PathBuf, std::fs::File)>,
    batch: &[Settled],
) -> std::io::Result<()> {
    if file.is_none() {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(spool_name());
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        *file = Some((path, f));
    }
    let (_, f) = file.as_mut().unwrap();
    let mut buf = Vec::with_capacity(batch.len() * 512);
    for s in batch {
        serde_json::to_writer(&mut buf, s).map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)?;
    f.sync_data()
}

fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Reads every spool file (a torn last line is skipped) and applies it to the store.
/// Records that were new are added to the in-memory spend of `ledger` unless they are this
/// process's own (already counted at settlement). Files of dead processes are removed once
/// applied; files of live ones (an old process finishing its grace period) are re-read later.
pub async fn ingest_spools(
    dir: &Path,
    store: &dyn Store,
    ledger: &Ledger,
) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut applied = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let alive = pid_alive(pid);
        let batch = read_spool(&path)?;
        let fresh = store
            .append_usage(batch)
            .await
            .map_err(std::io::Error::other)?;
        for s in &fresh {
            for c in &s.charges {
                ledger.seed_spend(c.scope, &c.id, c.window_start, c.amount);
            }
        }
        applied += fresh.len();
        if !alive {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(applied)
}

/// Reads a spool file whole (a torn last line is skipped).
fn read_spool(path: &Path) -> std::io::Result<Vec<Settled>> {
    let file = std::fs::File::open(path)?;
    Ok(std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

impl UsageWriter {
    /// Writes `batch`; whether every record this process has is in the store afterwards.
    async fn write(
        &self,
        batch: Vec<Settled>,
        spool: &mut Option<(PathBuf, std::fs::File)>,
    ) -> bool {
        if batch.is_empty() && spool.is_none() {
            return true; // nothing to write, nothing to move: the store is not even asked
        }
        // This process spooled while it had no store: move its own spool in first (its spend
        // is already counted in memory, so nothing is seeded).
        // A store known to be unreachable (a database outage) is not tried for every batch:
        // records go to the spool until the sync service sees it answer again.
        let store = self.slot.get().filter(|s| s.healthy());
        if let (Some(store), Some((path, _))) = (store.clone(), spool.as_ref()) {
            let path = path.clone();
            match read_spool(&path) {
                Ok(own) => match store.append_usage(own.clone()).await {
                    Ok(_) => {
                        let _ = std::fs::remove_file(&path);
                        *spool = None;
                        // Its spend is in the store now (leases of a shared store).
                        self.ledger.confirm(&own);
                    }
                    Err(e) => log::error!("cannot move the spool into the store: {e}"),
                },
                Err(e) => log::error!("cannot read own spool {}: {e}", path.display()),
            }
        }
        if batch.is_empty() {
            return spool.is_none();
        }
        let n = batch.len();
        if let Some(store) = store {
            match store.append_usage(batch.clone()).await {
                Ok(_) => {
                    // New or already stored, every record of the batch is in the store.
                    self.ledger.confirm(&batch);
                    crate::metrics::USAGE_WRITES
                        .with_label_values(&["store"])
                        .inc_by(n as u64);
                    return spool.is_none();
                }
                Err(e) => {
                    log::error!("usage write to the store failed ({e}); spooling {n} records")
                }
            }
        }
        let dir = self.spool_dir.clone();
        let mut file = spool.take();
        let res = tokio::task::spawn_blocking(move || {
            let r = spool_append(&dir, &mut file, &batch);
            (r, file, batch)
        })
        .await;
        match res {
            Ok((Ok(()), file, _)) => {
                *spool = file;
                crate::metrics::USAGE_WRITES
                    .with_label_values(&["spool"])
                    .inc_by(n as u64);
            }
            Ok((Err(e), file, batch)) => {
                *spool = file;
                log::error!("cannot spool {n} usage records: {e}; keeping them queued");
                for s in batch {
                    self.ledger.queue.push(s);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => log::error!("spool task failed: {e}"),
        }
        false
    }

    /// `tollgate_store_up` and `tollgate_usage_write_lag_seconds`, from the writer's view.
    fn report(&self, oldest_unstored_ms: Option<u64>) {
        let up = self.slot.get().is_some_and(|s| s.healthy());
        crate::metrics::STORE_UP.set(i64::from(up));
        let lag_ms = oldest_unstored_ms.map_or(0, |t| crate::clock::now_millis().saturating_sub(t));
        crate::metrics::USAGE_WRITE_LAG.set(lag_ms as f64 / 1000.0);
    }
}

#[async_trait]
impl BackgroundService for UsageWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut spool = None;
        let mut stopping = false;
        // The end time of the oldest record taken from the queue and not yet in the store.
        let mut oldest_unstored: Option<u64> = None;
        loop {
            self.report(oldest_unstored);
            // A push wakes the writer (a push while it writes leaves a permit, so none is
            // missed). Only an own spool waiting to move into the store needs polling; idle,
            // the writer otherwise wakes once a second, as a safety net.
            let idle_wait = if spool.is_some() { INTERVAL } else { IDLE_POLL };
            tokio::select! {
                _ = self.ledger.queue.notify.notified() => {}
                _ = tokio::time::sleep(idle_wait) => {}
                _ = shutdown.changed(), if !stopping => stopping = true,
            }
            if self.ledger.queue.is_empty() && spool.is_none() {
                continue; // woken with nothing to do
            }
            // Group commit: let a burst accumulate for one interval, then write it at once.
            tokio::time::sleep(INTERVAL).await;
            let mut batch = self.ledger.queue.take();
            if let Some(t) = batch.items.iter().map(|s| s.record.ts_ms).min() {
                oldest_unstored = Some(oldest_unstored.map_or(t, |o| o.min(t)));
            }
            if self
                .write(std::mem::take(&mut batch.items), &mut spool)
                .await
            {
                oldest_unstored = None;
            }
            drop(batch);
            // After shutdown starts, in-flight requests still settle during the grace
            // period; this loop keeps writing them (to the spool once the store is gone)
            // until the runtime itself stops.
        }
    }
}
