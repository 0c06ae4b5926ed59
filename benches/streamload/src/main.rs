//! The load client of benches/load (wrk cannot time single SSE frames). Raw HTTP/1.1 over
//! tokio's `TcpStream`, one thread (pin it with taskset), no TLS.
//!
//! `streamload paced --addr HOST:PORT --path P --body FILE [-H 'k: v']... --streams N
//!  [--interval-ms 20] [--connect-concurrency 256] [--timeout-s 120]`
//!   opens N connections, then sends N streaming requests at once (one per connection) and
//!   timestamps every SSE frame (an event ends at a blank line) as it is read. Prints one JSON
//!   line: time to first frame (request written → first frame) p50/p99, per-frame lateness
//!   (gap to the previous frame minus the interval; `data: [DONE]` is not timed) p50/p99/max, stalls (frames more than
//!   100 ms late), frame counts and errors (connect failures, non-200, streams cut short).
//!   STREAMLOAD_TRACE=1 prints every frame of the first stream (gap, first bytes) to stderr.
//!
//! `streamload requests --addr HOST:PORT --path P --body FILE [-H 'k: v']... --requests M
//!  [--concurrency C]`
//!   sends M requests over C keep-alive connections, reads every response to its end
//!   (content-length or chunked) and prints one JSON line: ok, errors, seconds, RPS.

use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STALL_US: i64 = 100_000;

struct Args {
    mode: String,
    addr: String,
    path: String,
    body: Vec<u8>,
    headers: Vec<String>,
    streams: usize,
    interval_ms: u64,
    connect_concurrency: usize,
    timeout_s: u64,
    requests: usize,
    concurrency: usize,
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_default();
    if mode != "paced" && mode != "requests" {
        eprintln!("usage: streamload paced|requests --addr HOST:PORT --path P --body FILE [-H 'k: v']... (see the source)");
        std::process::exit(2);
    }
    let mut a = Args {
        mode,
        addr: String::new(),
        path: "/".into(),
        body: Vec::new(),
        headers: Vec::new(),
        streams: 100,
        interval_ms: 20,
        connect_concurrency: 256,
        timeout_s: 120,
        requests: 200,
        concurrency: 1,
    };
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--addr" => a.addr = v(),
            "--path" => a.path = v(),
            "--body" => a.body = std::fs::read(v()).expect("read --body file"),
            "-H" | "--header" => a.headers.push(v()),
            "--streams" => a.streams = v().parse().expect("--streams N"),
            "--interval-ms" => a.interval_ms = v().parse().expect("--interval-ms N"),
            "--connect-concurrency" => a.connect_concurrency = v().parse().expect("number"),
            "--timeout-s" => a.timeout_s = v().parse().expect("number"),
            "--requests" => a.requests = v().parse().expect("--requests M"),
            "--concurrency" => a.concurrency = v().parse().expect("--concurrency C"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!a.addr.is_empty(), "--addr is required");
    a
}

fn request_bytes(a: &Args) -> Vec<u8> {
    let mut r = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        a.path,
        a.addr,
        a.body.len()
    );
    for h in &a.headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    let mut out = r.into_bytes();
    out.extend_from_slice(&a.body);
    out
}

/// Incremental HTTP/1.1 response reader: head, then a content-length or chunked body. Calls
/// `on_body` with each piece of decoded body and the time of the read that brought it.
struct Response {
    buf: Vec<u8>,
    status: u16,
    head_done: bool,
    chunked: bool,
    remaining: usize, // content-length left, or bytes left in the current chunk
    in_chunk: bool,
    done: bool,
    close: bool,
}

impl Response {
    fn new() -> Self {
        Response {
            buf: Vec::with_capacity(8192),
            status: 0,
            head_done: false,
            chunked: false,
            remaining: 0,
            in_chunk: false,
            done: false,
            close: false,
        }
    }

    /// Consumes what it can from `buf`; Err on a malformed response.
    fn advance(&mut self, on_body: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        if !self.head_done {
            let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            self.status = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line {status_line:?}"))?;
            let mut len = None;
            for l in lines {
                if let Some((k, v)) = l.split_once(':') {
                    match k.trim() {
                        "content-length" => len = v.trim().parse::<usize>().ok(),
                        "transfer-encoding" if v.contains("chunked") => self.chunked = true,
                        "connection" if v.contains("close") => self.close = true,
                        _ => {}
                    }
                }
            }
            self.buf.drain(..end + 4);
            self.head_done = true;
            if !self.chunked {
                self.remaining = len.unwrap_or(0);
                if len.is_none() {
                    self.close = true; // read to EOF would be needed; treat as an error-ish close
                }
            }
        }
        if !self.chunked {
            let n = self.remaining.min(self.buf.len());
            if n > 0 {
                on_body(&self.buf[..n]);
                self.buf.drain(..n);
                self.remaining -= n;
            }
            if self.remaining == 0 {
                self.done = true;
            }
            return Ok(());
        }
        let mut pos = 0;
        loop {
            if self.in_chunk {
                let n = self.remaining.min(self.buf.len() - pos);
                if n > 0 {
                    on_body(&self.buf[pos..pos + n]);
                    pos += n;
                    self.remaining -= n;
                }
                if self.remaining > 0 {
                    break;
                }
                // the chunk's trailing CRLF
                if self.buf.len() - pos < 2 {
                    break;
                }
                pos += 2;
                self.in_chunk = false;
            }
            let Some(eol) = find(&self.buf[pos..], b"\r\n") else {
                break;
            };
            let line = std::str::from_utf8(&self.buf[pos..pos + eol]).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                // last chunk: expect the final CRLF (no trailers from our peers)
                if self.buf.len() - pos - eol - 2 < 2 {
                    break;
                }
                pos += eol + 4;
                self.done = true;
                break;
            }
            pos += eol + 2;
            self.remaining = size;
            self.in_chunk = true;
        }
        self.buf.drain(..pos);
        Ok(())
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[derive(Default)]
struct StreamResult {
    error: Option<String>,
    ttft_us: Option<i64>,
    late_us: Vec<i64>,
    frames: usize,
}

async fn paced_stream(
    mut sock: TcpStream,
    req: Rc<Vec<u8>>,
    mut start: tokio::sync::watch::Receiver<bool>,
    interval_us: i64,
    timeout: Duration,
    trace: bool,
) -> StreamResult {
    let _ = start.wait_for(|go| *go).await;
    let mut out = StreamResult::default();
    let sent = Instant::now();
    if let Err(e) = sock.write_all(&req).await {
        out.error = Some(format!("write: {e}"));
        return out;
    }
    let mut resp = Response::new();
    let mut sse: Vec<u8> = Vec::with_capacity(4096);
    let mut last: Option<Instant> = None;
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = sent + timeout;
    while !resp.done {
        let n = match tokio::time::timeout_at(deadline.into(), sock.read(&mut chunk)).await {
            Err(_) => {
                out.error = Some("timeout".into());
                return out;
            }
            Ok(Err(e)) => {
                out.error = Some(format!("read: {e}"));
                return out;
            }
            Ok(Ok(0)) => {
                out.error = Some("closed before the end of the response".into());
                return out;
            }
            Ok(Ok(n)) => n,
        };
        let now = Instant::now();
        resp.buf.extend_from_slice(&chunk[..n]);
        if let Err(e) = resp.advance(&mut |b| sse.extend_from_slice(b)) {
            out.error = Some(e);
            return out;
        }
        // Every complete SSE event in what has been decoded so far gets this read's time.
        loop {
            let e1 = find(&sse, b"\n\n").map(|i| i + 2);
            let e2 = find(&sse, b"\r\n\r\n").map(|i| i + 4);
            let end = match (e1, e2) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(x) => x,
                    None => break,
                },
            };
            if trace {
                let gap = last.map(|p| (now - p).as_micros() as i64).unwrap_or(-1);
                let text = String::from_utf8_lossy(&sse[..end.min(90)]).replace('\n', " ");
                eprintln!("frame {:3} gap {:7} us  {text}", out.frames, gap);
            }
            // The terminal `data: [DONE]` is not timed: a gateway that asked for usage and
            // strips the usage chunk the client did not ask for sends it one interval later.
            let done = sse[..end].starts_with(b"data: [DONE]");
            sse.drain(..end);
            out.frames += 1;
            match last {
                None => out.ttft_us = Some((now - sent).as_micros() as i64),
                Some(_) if done => {}
                Some(prev) => out
                    .late_us
                    .push((now - prev).as_micros() as i64 - interval_us),
            }
            last = Some(now);
        }
    }
    if resp.status != 200 {
        out.error = Some(format!("status {}", resp.status));
    } else if out.frames < 2 {
        out.error = Some(format!("only {} frames", out.frames));
    }
    out
}

fn pct(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

async fn paced(a: Args) {
    let req = Rc::new(request_bytes(&a));
    let (go, start) = tokio::sync::watch::channel(false);
    let sem = Rc::new(tokio::sync::Semaphore::new(a.connect_concurrency.max(1)));
    let t0 = Instant::now();
    // Phase 1: connect every stream (bounded connect concurrency, so the accept backlog of the
    // target is not what is measured).
    let mut conns = Vec::with_capacity(a.streams);
    for _ in 0..a.streams {
        let addr = a.addr.clone();
        let sem = sem.clone();
        conns.push(tokio::task::spawn_local(async move {
            let _p = sem.acquire().await.unwrap();
            let s = TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            Ok::<_, std::io::Error>(s)
        }));
    }
    let mut tasks = Vec::with_capacity(a.streams);
    // STREAMLOAD_TRACE=1: print every frame of the first stream (gap, first bytes) to stderr.
    let mut trace = std::env::var_os("STREAMLOAD_TRACE").is_some();
    let mut connect_errors = 0usize;
    let mut first_connect_error = None;
    for c in conns {
        match c.await.unwrap() {
            Ok(s) => tasks.push(tokio::task::spawn_local(paced_stream(
                s,
                req.clone(),
                start.clone(),
                a.interval_ms as i64 * 1000,
                Duration::from_secs(a.timeout_s),
                std::mem::take(&mut trace),
            ))),
            Err(e) => {
                connect_errors += 1;
                first_connect_error.get_or_insert(e.to_string());
            }
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    // Phase 2: every stream's request at once.
    go.send_replace(true);
    let t1 = Instant::now();
    let mut ttft = Vec::new();
    let mut late = Vec::new();
    let mut errors = connect_errors;
    let mut first_error = first_connect_error;
    let (mut fmin, mut fmax, mut frames) = (usize::MAX, 0usize, 0usize);
    for t in tasks {
        let r = t.await.unwrap();
        if let Some(e) = r.error {
            errors += 1;
            first_error.get_or_insert(e);
            continue;
        }
        ttft.extend(r.ttft_us);
        fmin = fmin.min(r.frames);
        fmax = fmax.max(r.frames);
        frames += r.frames;
        late.extend(r.late_us);
    }
    let wall = t1.elapsed().as_secs_f64();
    let stalls = late.iter().filter(|&&l| l > STALL_US).count();
    let max_late = late.iter().copied().max().unwrap_or(0);
    println!(
        "{{\"streams\":{},\"ok\":{},\"errors\":{},\"first_error\":{},\"connect_s\":{:.3},\"wall_s\":{:.3},\"ttft_p50_us\":{},\"ttft_p99_us\":{},\"late_p50_us\":{},\"late_p99_us\":{},\"late_max_us\":{},\"stalls\":{},\"frames\":{},\"frames_per_stream_min\":{},\"frames_per_stream_max\":{}}}",
        a.streams,
        ttft.len(),
        errors,
        first_error.map(|e| format!("{e:?}")).unwrap_or_else(|| "null".into()),
        connect_s,
        wall,
        pct(&mut ttft, 0.5),
        pct(&mut ttft, 0.99),
        pct(&mut late, 0.5),
        pct(&mut late, 0.99),
        max_late,
        stalls,
        frames,
        if fmin == usize::MAX { 0 } else { fmin },
        fmax,
    );
}

async fn requests_on_one_conn(
    a: Rc<Args>,
    req: Rc<Vec<u8>>,
    count: usize,
) -> (usize, usize, Option<String>) {
    let (mut ok, mut errors, mut first_error) = (0usize, 0usize, None);
    let mut sock: Option<TcpStream> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    for _ in 0..count {
        let r: Result<bool, String> = async {
            if sock.is_none() {
                let s = TcpStream::connect(&a.addr)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                sock = Some(s);
            }
            let s = sock.as_mut().unwrap();
            s.write_all(&req).await.map_err(|e| format!("write: {e}"))?;
            let mut resp = Response::new();
            while !resp.done {
                let n = tokio::time::timeout(Duration::from_secs(a.timeout_s), s.read(&mut chunk))
                    .await
                    .map_err(|_| "timeout".to_string())?
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("closed".into());
                }
                resp.buf.extend_from_slice(&chunk[..n]);
                resp.advance(&mut |_| {})?;
            }
            if resp.close {
                sock = None;
            }
            Ok(resp.status == 200)
        }
        .await;
        match r {
            Ok(true) => ok += 1,
            Ok(false) => {
                errors += 1;
                first_error.get_or_insert_with(|| "non-200 status".to_string());
            }
            Err(e) => {
                errors += 1;
                sock = None;
                first_error.get_or_insert(e);
            }
        }
    }
    (ok, errors, first_error)
}

async fn requests(a: Args) {
    let req = Rc::new(request_bytes(&a));
    let c = a.concurrency.max(1).min(a.requests.max(1));
    let a = Rc::new(a);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..c {
        let count = a.requests / c + usize::from(i < a.requests % c);
        tasks.push(tokio::task::spawn_local(requests_on_one_conn(
            a.clone(),
            req.clone(),
            count,
        )));
    }
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for t in tasks {
        let (o, e, f) = t.await.unwrap();
        ok += o;
        errors += e;
        if let Some(f) = f {
            first_error.get_or_insert(f);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "{{\"requests\":{},\"ok\":{},\"errors\":{},\"first_error\":{},\"wall_s\":{:.3},\"rps\":{:.1}}}",
        a.requests,
        ok,
        errors,
        first_error.map(|e| format!("{e:?}")).unwrap_or_else(|| "null".into()),
        wall,
        ok as f64 / wall
    );
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        if a.mode == "paced" {
            paced(a).await
        } else {
            requests(a).await
        }
    });
}
