//! Request traces in sled, many to a value (as usage segments, `segment`): one sled insert
//! costs some ten thousand instructions, so a trace per insert (and one more for its request
//! id) made traces cost a sixth of a request. A writer batch now goes into one or a few
//! *blocks*, and the request-id lookup into one index entry per batch.
//!
//! A block's key is `first ts_ms (8 bytes, big-endian) ++ 0x01 ++ first request id`, so keys
//! stay time-ordered next to the older one-trace rows (`ts_ms ++ request id`, a JSON object).
//! Its value: `0x02 | last ts_ms (u64 BE) | n (u32 BE) | n × (ts_ms (u64 BE) | id length
//! (u16 BE) | id | record length (u32 BE)) | the n records`, sorted by time. A record starts
//! with its format byte: [`MSGPACK`] (MessagePack with named fields, so records written
//! before a field was added still read), or `{` for JSON.
//!
//! Lookup by request id: ids the gateway minted carry their time (`ids::request_id_ms`), and
//! each batch writes one *id entry* per minute of those times: `0x01 | minute (u64 BE) |
//! the batch's first block key` → `max ts_ms (u64 BE) | n × (ts_ms | id length | id)`.
//! A caller's own `x-request-id` has no time in it: it gets a row of its own in the index,
//! `id \0 ts_ms` (the older layout), so only requests that bring an id pay for it.

use crate::records::Trace;

/// The traces of one block lie within this many milliseconds of its first.
pub const SPAN_MS: u64 = 1000;
/// A block closes past this many traces or bytes of records (sled writes a page over 128 KiB
/// as a separate blob; a bigger single trace gets a block of its own).
pub const MAX_TRACES: usize = 256;
pub const MAX_BYTES: usize = 64 * 1024;
const TAG: u8 = 0x02;
const KEY_TAG: u8 = 0x01;
/// The format byte of a MessagePack record.
pub const MSGPACK: u8 = 0x01;
/// The first byte of an id entry's key in the index (request ids are printable ASCII).
pub const ID_ENTRY: u8 = 0x01;
/// Id entries group ids by the minute they were minted.
pub const ID_BUCKET_MS: u64 = 60_000;

pub fn key(ts_ms: u64, first_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + first_id.len());
    k.extend_from_slice(&ts_ms.to_be_bytes());
    k.push(KEY_TAG);
    k.extend_from_slice(first_id.as_bytes());
    k
}

pub fn is_block_key(k: &[u8]) -> bool {
    k.get(8) == Some(&KEY_TAG)
}

/// Encodes one trace: the format byte, then MessagePack with named fields.
pub fn encode_record(t: &Trace) -> Result<Vec<u8>, String> {
    let mut v = vec![MSGPACK];
    rmp_serde::encode::write_named(&mut v, t).map_err(|e| e.to_string())?;
    Ok(v)
}

/// Decodes one trace, MessagePack or (older) JSON.
pub fn decode_record(b: &[u8]) -> Result<Trace, String> {
    match b.first() {
        Some(&MSGPACK) => rmp_serde::from_slice(&b[1..]).map_err(|e| e.to_string()),
        Some(b'{') => serde_json::from_slice(b).map_err(|e| e.to_string()),
        _ => Err("unknown trace record format".into()),
    }
}

/// Splits traces sorted by time (with their encoded sizes) into blocks.
pub fn plan(ts: &[u64], sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for i in 0..=ts.len() {
        let close = i == ts.len()
            || i - start == MAX_TRACES
            || ts[i] - ts[start] > SPAN_MS
            || (bytes > 0 && bytes + sizes[i] > MAX_BYTES);
        if close {
            if start < i {
                out.push(start..i);
            }
            start = i;
            bytes = 0;
        }
        if i < ts.len() {
            bytes += sizes[i];
        }
    }
    out
}

/// One trace of a block, its record still encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    pub ts_ms: u64,
    pub request_id: &'a [u8],
    pub record: &'a [u8],
}

/// Encodes a block of items sorted by time.
pub fn encode(items: &[Item<'_>]) -> Vec<u8> {
    let head: usize = items.iter().map(|i| 14 + i.request_id.len()).sum();
    let body: usize = items.iter().map(|i| i.record.len()).sum();
    let mut v = Vec::with_capacity(13 + head + body);
    v.push(TAG);
    let last = items.iter().map(|i| i.ts_ms).max().unwrap_or(0);
    v.extend_from_slice(&last.to_be_bytes());
    v.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for i in items {
        let id = &i.request_id[..i.request_id.len().min(u16::MAX as usize)];
        v.extend_from_slice(&i.ts_ms.to_be_bytes());
        v.extend_from_slice(&(id.len() as u16).to_be_bytes());
        v.extend_from_slice(id);
        v.extend_from_slice(&(i.record.len() as u32).to_be_bytes());
    }
    for i in items {
        v.extend_from_slice(i.record);
    }
    v
}

/// A decoded entry of the traces tree: a block, or an older one-trace row.
pub struct Entry<'a> {
    pub last_ts: u64,
    pub items: Vec<Item<'a>>,
}

impl<'a> Entry<'a> {
    /// Decodes the entry under `key` (None: a damaged block).
    pub fn decode(key: &'a [u8], value: &'a [u8]) -> Option<Entry<'a>> {
        if value.first() != Some(&TAG) || !is_block_key(key) {
            let ts_ms = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
            return Some(Entry {
                last_ts: ts_ms,
                items: vec![Item {
                    ts_ms,
                    request_id: key.get(8..)?,
                    record: value,
                }],
            });
        }
        let last_ts = u64::from_be_bytes(value.get(1..9)?.try_into().ok()?);
        let n = u32::from_be_bytes(value.get(9..13)?.try_into().ok()?) as usize;
        let mut at = 13;
        let mut heads = Vec::with_capacity(n.min(MAX_TRACES * 4));
        for _ in 0..n {
            let ts_ms = u64::from_be_bytes(value.get(at..at + 8)?.try_into().ok()?);
            let len = u16::from_be_bytes(value.get(at + 8..at + 10)?.try_into().ok()?) as usize;
            let id = value.get(at + 10..at + 10 + len)?;
            at += 10 + len;
            let rlen = u32::from_be_bytes(value.get(at..at + 4)?.try_into().ok()?) as usize;
            at += 4;
            heads.push((ts_ms, id, rlen));
        }
        let mut items = Vec::with_capacity(n);
        for (ts_ms, request_id, rlen) in heads {
            items.push(Item {
                ts_ms,
                request_id,
                record: value.get(at..at + rlen)?,
            });
            at += rlen;
        }
        Some(Entry { last_ts, items })
    }
}

/// The key of an id entry: its minute and a unique tail (the batch's first block key).
pub fn id_entry_key(minute: u64, tail: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + tail.len());
    k.push(ID_ENTRY);
    k.extend_from_slice(&minute.to_be_bytes());
    k.extend_from_slice(tail);
    k
}

/// The prefix of the id entries of one minute.
pub fn id_entry_prefix(minute: u64) -> Vec<u8> {
    id_entry_key(minute, &[])
}

/// Encodes an id entry: the ids (with their trace times) of one minute in one batch.
pub fn encode_ids(ids: &[(u64, &str)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + ids.iter().map(|(_, i)| 10 + i.len()).sum::<usize>());
    let max = ids.iter().map(|(t, _)| *t).max().unwrap_or(0);
    v.extend_from_slice(&max.to_be_bytes());
    for (ts, id) in ids {
        let id = &id.as_bytes()[..id.len().min(u16::MAX as usize)];
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&(id.len() as u16).to_be_bytes());
        v.extend_from_slice(id);
    }
    v
}

/// An id entry's latest trace time.
pub fn ids_max_ts(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

/// The trace times of `id` in an id entry.
pub fn ids_times(v: &[u8], id: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    // Most entries do not hold the id: a byte search skips them.
    if memchr::memmem::find(v, id).is_none() {
        return out;
    }
    let mut at = 8;
    while let (Some(ts), Some(len)) = (v.get(at..at + 8), v.get(at + 8..at + 10)) {
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let Some(this) = v.get(at + 10..at + 10 + len) else {
            break;
        };
        if this == id {
            out.push(u64::from_be_bytes(ts.try_into().expect("8 bytes")));
        }
        at += 10 + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_splits_by_span_count_and_bytes() {
        assert!(plan(&[], &[]).is_empty());
        assert_eq!(plan(&[0, 500, 1000, 1001], &[1; 4]), vec![0..3, 3..4]);
        let many = vec![7; MAX_TRACES + 1];
        assert_eq!(
            plan(&many, &vec![1; MAX_TRACES + 1]),
            vec![0..MAX_TRACES, MAX_TRACES..MAX_TRACES + 1]
        );
        // A record bigger than a block gets a block of its own.
        assert_eq!(
            plan(&[1, 2, 3], &[10, MAX_BYTES + 1, 10]),
            vec![0..1, 1..2, 2..3]
        );
    }

    #[test]
    fn blocks_and_rows_decode_alike() {
        let items = [
            Item {
                ts_ms: 10,
                request_id: b"a",
                record: b"\x01r1",
            },
            Item {
                ts_ms: 30,
                request_id: b"bb",
                record: b"{}",
            },
        ];
        let v = encode(&items);
        let k = key(10, "a");
        let e = Entry::decode(&k, &v).unwrap();
        assert_eq!((e.last_ts, e.items.as_slice()), (30, &items[..]));
        // an older one-trace row
        let mut row = 10u64.to_be_bytes().to_vec();
        row.extend_from_slice(b"a");
        let e = Entry::decode(&row, b"{\"x\":1}").unwrap();
        assert_eq!(
            (e.last_ts, e.items.len(), e.items[0].request_id),
            (10, 1, &b"a"[..])
        );
        // a cut block is refused, not misread
        assert!(Entry::decode(&k, &v[..v.len() - 1]).is_none());
    }

    #[test]
    fn id_entries_find_their_ids() {
        let v = encode_ids(&[(5, "req_a"), (9, "req_b"), (7, "req_a")]);
        assert_eq!(ids_max_ts(&v), Some(9));
        assert_eq!(ids_times(&v, b"req_a"), vec![5, 7]);
        assert!(ids_times(&v, b"req_c").is_empty());
        assert!(ids_times(&v, b"req_").is_empty());
    }
}
