//! Stopping: SIGTERM and Ctrl-C stop accepting, let the requests in flight finish, and exit
//! as soon as the last one has ended and its usage is written (at once when idle). At the
//! end of `grace_period_seconds` the streams still open are cut: each client gets its native
//! error event and the request is settled. SIGQUIT (graceful upgrade) hands the listening
//! sockets over first, then drains the same way.
//!
//! Pingora 0.9 itself sleeps the whole grace period after SIGTERM, busy or not, and treats
//! SIGINT as an immediate stop that drops requests in flight. So tollgate maps both signals
//! to Pingora's graceful stop (which closes the listeners and tells the services) and runs
//! this drain as a service; Pingora's own grace period only backs it up.
//!
//! Connections accepted in the last instant before the listeners close are served too.
//! Pingora's cleanup ends every connection parked waiting for a request, including one
//! accepted a moment earlier whose first bytes are still on the wire: its client would get a
//! reset for a request it had sent. [`Connections`] counts the open client connections and
//! holds that cleanup (briefly, bounded by [`ARRIVAL_GRACE`]) until each fresh connection's
//! first bytes are in; the process exits only once every connection has closed.

use async_trait::async_trait;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gateway::limits::InFlight;
use crate::ledger::Ledger;

/// The process-wide stop state.
pub static DRAIN: Lazy<Drain> = Lazy::new(Drain::default);

#[derive(Default)]
pub struct Drain {
    /// Upstream connections of the requests in flight (by a ticket number): cut at the
    /// deadline, so that each request ends through its own error path.
    upstreams: Mutex<HashMap<u64, i32>>,
    next_ticket: AtomicU64,
    /// Set once the deadline has passed (or a second signal came): errors say so.
    cutting: AtomicBool,
    /// A second SIGTERM or Ctrl-C: do not wait for the deadline.
    hurry: AtomicBool,
    /// Services that must finish before the process exits (the store's release).
    closers: AtomicUsize,
    /// Client connections open.
    connections: AtomicUsize,
    /// Client connections accepted whose first bytes have not arrived yet.
    arriving: AtomicUsize,
    /// Set when the listeners have closed and the arrivals have had their grace: connections
    /// still silent are closed.
    arrivals_closed: tokio::sync::Notify,
    arrivals_closed_flag: AtomicBool,
}

/// How long, after the listeners close, a connection accepted just before may take to send
/// its first bytes. Clients send their request right after connecting; this only bounds a
/// client that connected and stayed silent.
pub const ARRIVAL_GRACE: Duration = Duration::from_secs(2);

/// Decrements a counter when dropped.
struct Counted(&'static AtomicUsize);

impl Counted {
    fn new(c: &'static AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::AcqRel);
        Counted(c)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One upstream connection in use; dropping it forgets the connection.
pub struct UpstreamTicket(u64);

impl Drop for UpstreamTicket {
    fn drop(&mut self) {
        DRAIN.upstreams.lock().remove(&self.0);
    }
}

impl std::fmt::Debug for UpstreamTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamTicket({})", self.0)
    }
}

/// A service's promise to finish its closing work; the process exits only after every
/// closer has been dropped (bounded by the shutdown timeout).
pub struct Closer(());

impl Drop for Closer {
    fn drop(&mut self) {
        DRAIN.closers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drain {
    /// Remembers the socket of an upstream connection in use (cut if still open at the
    /// deadline).
    pub fn track(&self, fd: i32) -> UpstreamTicket {
        let t = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.upstreams.lock().insert(t, fd);
        UpstreamTicket(t)
    }

    /// The stop deadline has passed: the requests still running are being ended.
    pub fn cutting(&self) -> bool {
        self.cutting.load(Ordering::Acquire)
    }

    /// Client connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Resolves once the arrivals' grace is over.
    async fn arrivals_closed(&self) {
        let notified = self.arrivals_closed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.arrivals_closed_flag.load(Ordering::Acquire) {
            notified.await;
        }
    }

    fn close_arrivals(&self) {
        self.arrivals_closed_flag.store(true, Ordering::Release);
        self.arrivals_closed.notify_waiters();
    }

    pub fn closer(&self) -> Closer {
        self.closers.fetch_add(1, Ordering::AcqRel);
        Closer(())
    }

    /// Shuts down every tracked upstream socket: the provider sees the connection close
    /// (and stops generating), and each request's read fails, which ends its client's
    /// stream with a native error event and settles it.
    fn cut_all(&self) -> usize {
        self.cutting.store(true, Ordering::Release);
        let fds: Vec<i32> = self.upstreams.lock().values().copied().collect();
        for fd in &fds {
            // Tickets are dropped when a response ends, before its connection is pooled;
            // only an error's close can precede its ticket's drop by an instant, and a
            // number recycled in that instant would lose a socket that is ending anyway.
            let _ = nix::sys::socket::shutdown(*fd, nix::sys::socket::Shutdown::Both);
        }
        fds.len()
    }
}

/// The proxy app, with its client connections counted for the drain (see the module doc).
pub struct Connections<A> {
    pub inner: Arc<A>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Connections<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = Counted::new(&DRAIN.connections);
        {
            let _arriving = Counted::new(&DRAIN.arriving);
            // A plain TCP stream's peek reads the first byte into the stream's own buffer
            // (no extra system call); a stream that cannot peek answers at once.
            let mut first = [0u8; 1];
            tokio::select! {
                peeked = stream.try_peek(&mut first) => {
                    if peeked.is_err() {
                        return None; // closed before a byte was sent
                    }
                }
                _ = DRAIN.arrivals_closed() => return None,
            }
        }
        self.inner.process_new(stream, shutdown).await
    }

    /// Called once the listeners have closed: the connections accepted just before get
    /// their first bytes in, then Pingora ends the ones parked between requests.
    async fn cleanup(&self) {
        let until = Instant::now() + ARRIVAL_GRACE;
        while DRAIN.arriving.load(Ordering::Acquire) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        DRAIN.close_arrivals();
        self.inner.cleanup().await
    }
}

/// The message a request cut at the deadline ends with.
pub const CUT_MESSAGE: &str = "tollgate is shutting down; retry the request";

/// What a failed upstream read is reported as: the cut, when it was one.
pub fn failure_message(what: &str) -> &str {
    if DRAIN.cutting() {
        CUT_MESSAGE
    } else {
        what
    }
}

/// Signals: SIGTERM and SIGINT stop gracefully (drained by [`DrainService`]), SIGQUIT
/// upgrades. A second SIGTERM or SIGINT during the drain cuts what is left at once.
pub struct StopSignals;

#[async_trait]
impl ShutdownSignalWatch for StopSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let first = tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::GracefulTerminate,
        };
        // Pingora's server runtime keeps running through the drain: watch for a second signal.
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            log::warn!("second stop signal: ending the requests still in flight now");
            DRAIN.hurry.store(true, Ordering::Release);
        });
        first
    }
}

/// Waits for Pingora's shutdown broadcast, then drains and ends the process.
pub struct DrainService {
    pub inflight: Arc<InFlight>,
    pub ledger: Arc<Ledger>,
    /// How long requests in flight may run on after the stop signal.
    pub grace: Duration,
    /// How long cut requests and the closing services get after the deadline.
    pub close_timeout: Duration,
}

impl DrainService {
    /// No request in flight and no client connection open (a connection accepted just
    /// before the listeners closed may still be delivering its request).
    fn idle(&self) -> bool {
        self.inflight.current() == 0 && DRAIN.connections() == 0
    }

    fn written(&self) -> bool {
        DRAIN.closers.load(Ordering::Acquire) == 0 && self.ledger.queue.settled()
    }

    async fn wait_until(&self, deadline: Instant, done: impl Fn() -> bool) -> bool {
        while !done() {
            if Instant::now() >= deadline || DRAIN.hurry.load(Ordering::Acquire) {
                return done();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

#[async_trait]
impl BackgroundService for DrainService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let start = Instant::now();
        let busy = self.inflight.current();
        if busy > 0 {
            log::info!(
                "stopping: {busy} requests in flight, waiting up to {}s for them",
                self.grace.as_secs()
            );
        }
        let finished = self.wait_until(start + self.grace, || self.idle()).await;
        if !finished {
            let n = DRAIN.cut_all();
            log::warn!(
                "stop deadline: ending {} requests still in flight ({n} upstream connections cut)",
                self.inflight.current()
            );
            let until = Instant::now() + self.close_timeout;
            DRAIN.hurry.store(false, Ordering::Release);
            if !self.wait_until(until, || self.idle()).await {
                log::warn!(
                    "{} requests did not end after their upstreams were cut",
                    self.inflight.current()
                );
            }
        }
        // Usage written (to the store, or the spool once the store is released) and the
        // store closed: then nothing is lost by exiting.
        DRAIN.hurry.store(false, Ordering::Release);
        let until = Instant::now() + self.close_timeout;
        if !self.wait_until(until, || self.written()).await {
            log::warn!("exiting before the usage queue and the store were closed");
        }
        log::info!("stopped after {} ms", start.elapsed().as_millis());
        // Spans still queued go out (bounded: a collector that is down costs the close
        // timeout at most).
        crate::otel::shutdown(self.close_timeout);
        crate::access::sink::flush(Duration::from_secs(1));
        log::logger().flush();
        std::process::exit(0);
    }
}
