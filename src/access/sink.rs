//! Where access lines are written: a bounded queue and one writer thread, so a request only
//! ever pushes a line into memory. A full queue drops the line and counts it
//! (`tollgate_access_log_dropped_total`); the request never waits for the disk or a slow
//! stderr reader. A file target is reopened on SIGUSR1 (see `AccessLogService`), so that
//! logrotate can rename it and tell tollgate to start a new one.

use async_trait::async_trait;
use once_cell::sync::OnceCell;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use super::settings::{AccessLog, Format, Target};
use crate::metrics;

struct Sink {
    format: Format,
    target: Target,
    tx: SyncSender<Vec<u8>>,
    /// Taken by the writer thread when it starts (after Pingora has daemonized).
    rx: Mutex<Option<Receiver<Vec<u8>>>>,
    /// Lines accepted and not yet written out.
    pending: AtomicUsize,
    reopen: AtomicBool,
}

static SINK: OnceCell<Sink> = OnceCell::new();

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Sets the access log up (once per process). A file that cannot be opened is an error now,
/// at start, rather than lines lost later.
pub fn install(settings: &AccessLog) -> std::io::Result<()> {
    let mut target = settings.target.clone();
    if let Target::File(p) = &mut target {
        // Absolute: a daemonized process may change its working directory.
        if p.is_relative() {
            *p = std::env::current_dir()?.join(&*p);
        }
        open(p)?;
    }
    let (tx, rx) = sync_channel(settings.queue_lines);
    let _ = SINK.set(Sink {
        format: settings.format,
        target,
        tx,
        rx: Mutex::new(Some(rx)),
        pending: AtomicUsize::new(0),
        reopen: AtomicBool::new(false),
    });
    Ok(())
}

/// The format lines are wanted in, or None when the access log is off (nothing is built).
pub fn format() -> Option<Format> {
    SINK.get().map(|s| s.format)
}

/// Queues one line (with its newline); never blocks.
pub fn send(line: Vec<u8>) {
    let Some(s) = SINK.get() else { return };
    s.pending.fetch_add(1, Ordering::AcqRel);
    match s.tx.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            s.pending.fetch_sub(1, Ordering::AcqRel);
            metrics::ACCESS_LOG_DROPPED
                .with_label_values(&["queue_full"])
                .inc();
        }
    }
}

/// Asks the writer to reopen its file before the next line.
pub fn reopen() {
    if let Some(s) = SINK.get() {
        s.reopen.store(true, Ordering::Release);
    }
}

/// Waits (at most `within`) until every queued line is written: the process is about to end.
pub fn flush(within: Duration) {
    let Some(s) = SINK.get() else { return };
    let deadline = Instant::now() + within;
    while s.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

enum Out {
    Stderr,
    File(BufWriter<File>),
}

impl Out {
    fn open(target: &Target) -> Out {
        match target {
            Target::Stderr => Out::Stderr,
            Target::File(p) => match open(p) {
                Ok(f) => Out::File(BufWriter::with_capacity(64 * 1024, f)),
                Err(e) => {
                    log::error!("cannot open the access log {}: {e}", p.display());
                    Out::Stderr
                }
            },
        }
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            // One write per line under stderr's lock: never interleaved with other logs.
            Out::Stderr => std::io::stderr().lock().write_all(line),
            Out::File(f) => f.write_all(line),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Stderr => Ok(()),
            Out::File(f) => f.flush(),
        }
    }
}

fn write_loop(s: &'static Sink, rx: Receiver<Vec<u8>>) {
    let mut out = Out::open(&s.target);
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if s.reopen.swap(false, Ordering::AcqRel) {
            let _ = out.flush();
            out = Out::open(&s.target);
        }
        let mut taken = 0;
        let mut failed = 0;
        // Everything queued now goes out in one flush.
        for line in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            taken += 1;
            if out.write(&line).is_err() {
                failed += 1;
            }
        }
        if out.flush().is_err() {
            failed = taken;
        }
        if failed > 0 {
            metrics::ACCESS_LOG_DROPPED
                .with_label_values(&["write_error"])
                .inc_by(failed as u64);
        }
        s.pending.fetch_sub(taken, Ordering::AcqRel);
    }
}

/// Starts the writer thread and reopens a file target on SIGUSR1. The handler is installed
/// whatever the target, so that a SIGUSR1 sent by logrotate never ends the process.
pub struct AccessLogService;

#[async_trait]
impl BackgroundService for AccessLogService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Some(s) = SINK.get() {
            if let Some(rx) = s.rx.lock().take() {
                let spawned = std::thread::Builder::new()
                    .name("access-log".into())
                    .spawn(move || write_loop(s, rx));
                if let Err(e) = spawned {
                    log::error!("cannot start the access log writer: {e}");
                }
            }
        }
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            log::error!("cannot listen for SIGUSR1: the access log is not reopened on it");
            return;
        };
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    log::info!("SIGUSR1: reopening the access log");
                    reopen();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that has fallen behind (here: not started) never makes `send` wait: lines
    /// beyond the queue are dropped and counted.
    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        install(&AccessLog {
            format: Format::Json,
            target: Target::Stderr,
            queue_lines: 2,
        })
        .unwrap();
        let dropped = || {
            metrics::ACCESS_LOG_DROPPED
                .with_label_values(&["queue_full"])
                .get()
        };
        let before = dropped();
        for _ in 0..5 {
            send(b"{}\n".to_vec());
        }
        assert_eq!(dropped() - before, 3);
        assert_eq!(SINK.get().unwrap().pending.load(Ordering::Acquire), 2);
    }
}
