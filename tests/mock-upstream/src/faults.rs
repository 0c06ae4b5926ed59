//! Fault injection: the options (`x-mock-*` headers, or a default set through
//! `POST /__mock/fault`), how they are picked for a request, and the faults of a stream.

use crate::http::{write_chunk, Head};
use crate::Shared;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Fault and behaviour options: from `x-mock-*` headers, or a default set for all requests.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Fault {
    pub status: Option<u16>,
    pub retry_after: Option<u32>,
    pub delay_ms: Option<u64>,
    pub chunk_delay_ms: Option<u64>,
    pub pieces: Option<usize>,
    pub usage: Option<(u64, u64)>,
    pub fault: Option<String>,
    /// The answer's text (`x-mock-text`), streamed four characters an event.
    pub text: Option<String>,
    /// Apply to the next N requests only.
    pub times: Option<u32>,
    /// Apply (and count `times`) only on streamed requests: a client's retry without
    /// streaming, or its side requests, pass untouched.
    #[serde(default)]
    pub only_streams: bool,
}

pub(crate) fn header_fault(h: &Head) -> Option<Fault> {
    let num = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok());
    let f = Fault {
        status: num("x-mock-status").map(|v| v as u16),
        retry_after: num("x-mock-retry-after").map(|v| v as u32),
        delay_ms: num("x-mock-delay-ms"),
        chunk_delay_ms: num("x-mock-chunk-delay-ms"),
        pieces: num("x-mock-pieces").map(|v| v as usize),
        usage: h.get("x-mock-usage").and_then(|v| {
            let (a, b) = v.split_once(',')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        }),
        fault: h.get("x-mock-fault").map(String::from),
        text: h.get("x-mock-text").map(String::from),
        times: None,
        only_streams: false,
    };
    let any = f.status.is_some()
        || f.delay_ms.is_some()
        || f.chunk_delay_ms.is_some()
        || f.pieces.is_some()
        || f.usage.is_some()
        || f.fault.is_some()
        || f.text.is_some();
    any.then_some(f)
}

pub(crate) fn take_default(shared: &Shared, streamed: bool) -> Fault {
    let mut d = shared.default_fault.lock().unwrap();
    let Some(f) = d.clone() else {
        return Fault::default();
    };
    if f.only_streams && !streamed {
        return Fault::default();
    }
    if let Some(t) = f.times {
        if t <= 1 {
            *d = None;
        } else if let Some(x) = d.as_mut() {
            x.times = Some(t - 1);
        }
    }
    f
}

/// Writes a streamed body's events (the head is sent) with the stream faults of `f`: a reset
/// or truncation half-way, a stall or garbage after the first event, the provider's error
/// event (`error_event(i)`) at event `error_at`, or a byte-by-byte drip. `split` writes each
/// event in three TCP writes. Returns (status, keep-alive).
pub(crate) async fn write_stream(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    events: &[String],
    f: &Fault,
    split: bool,
    error_at: usize,
    error_event: impl Fn(usize) -> String,
) -> std::io::Result<(u16, bool)> {
    let delay = f.chunk_delay_ms.unwrap_or(0);
    let half = events.len() / 2;
    for (i, ev) in events.iter().enumerate() {
        if i > 0 && delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        match f.fault.as_deref() {
            Some("reset-mid-stream") if i == half => {
                let sock = wr.as_ref();
                let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
                return Ok((200, false));
            }
            Some("truncate") if i == half => {
                wr.write_all(b"0\r\n\r\n").await?;
                return Ok((200, true));
            }
            Some("stall") if i == 1 => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Some("garbage-sse") if i == 1 => {
                write_chunk(wr, b"data: {this is not json\n\n", false).await?
            }
            Some("event-error") if i == error_at => {
                write_chunk(wr, error_event(i).as_bytes(), false).await?;
                wr.write_all(b"0\r\n\r\n").await?;
                return Ok((200, true));
            }
            _ => {}
        }
        if f.fault.as_deref() == Some("slow-drip") {
            for b in ev.as_bytes() {
                write_chunk(wr, &[*b], false).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } else {
            write_chunk(wr, ev.as_bytes(), split).await?;
        }
    }
    wr.write_all(b"0\r\n\r\n").await?;
    wr.flush().await?;
    Ok((200, true))
}
