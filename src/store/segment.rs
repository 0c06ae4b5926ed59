//! Usage records in sled, many to a value. One sled insert costs some ten thousand
//! instructions and rewrites its leaf, so a row per request made the usage writer the
//! largest cost under load; a writer cycle's records now go into one *segment*.
//!
//! A segment's key is `first ts_ms (8 bytes, big-endian) ++ 0x01 ++ first id`, so keys stay
//! time-ordered next to the older one-record rows (`ts_ms ++ id`, a JSON object as value).
//! Its value: `0x01 | last ts_ms (u64 BE) | n (u32 BE) | n × (id length (u16 BE) | id) |
//! n JSON records, one per line`. The ids up front let the idempotency check skip the JSON.
//! A segment's records lie within [`SPAN_MS`] of its first, which bounds how far back a
//! lookup by time has to start.

use std::ops::Range;

use crate::records::UsageRecord;

/// The records of one segment lie within this many milliseconds of its first.
pub const SPAN_MS: u64 = 100;
/// At most this many records to a segment (some 25 KB of JSON): sled writes a page over
/// 128 KiB (a quarter of its 512 KiB log segment) as a separate blob file, and a leaf holds
/// several values.
pub const MAX_RECORDS: usize = 64;
const TAG: u8 = 0x01;

/// The key of a segment whose first record has this time and id.
pub fn key(ts_ms: u64, first_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + first_id.len());
    k.extend_from_slice(&ts_ms.to_be_bytes());
    k.push(TAG);
    k.extend_from_slice(first_id.as_bytes());
    k
}

/// The time part of any usage key (a segment's or a one-record row's).
pub fn key_ts(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(..8)?.try_into().ok()?))
}

/// The smallest key of entries at or after this time.
pub fn time_key(ts_ms: u64) -> Vec<u8> {
    ts_ms.to_be_bytes().to_vec()
}

/// Splits records sorted by time into segments: ranges of at most [`MAX_RECORDS`] whose
/// times lie within [`SPAN_MS`] of their first.
pub fn plan(ts: &[u64]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=ts.len() {
        if i == ts.len() || i - start == MAX_RECORDS || ts[i] - ts[start] > SPAN_MS {
            if start < i {
                out.push(start..i);
            }
            start = i;
        }
    }
    out
}

/// Encodes records (sorted by time) with their JSON encodings.
pub fn encode(records: &[(&UsageRecord, &[u8])]) -> Vec<u8> {
    let ids: usize = records.iter().map(|(r, _)| 2 + r.id.len()).sum();
    let json: usize = records.iter().map(|(_, j)| j.len() + 1).sum();
    let mut v = Vec::with_capacity(13 + ids + json);
    v.push(TAG);
    let last = records.iter().map(|(r, _)| r.ts_ms).max().unwrap_or(0);
    v.extend_from_slice(&last.to_be_bytes());
    v.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for (r, _) in records {
        let id = &r.id.as_bytes()[..r.id.len().min(u16::MAX as usize)];
        v.extend_from_slice(&(id.len() as u16).to_be_bytes());
        v.extend_from_slice(id);
    }
    for (n, (_, j)) in records.iter().enumerate() {
        if n > 0 {
            v.push(b'\n');
        }
        v.extend_from_slice(j);
    }
    v
}

/// A decoded usage entry: a segment, or an older one-record row.
pub struct Entry<'a> {
    /// The latest record time in the entry.
    pub last_ts: u64,
    ids: Vec<&'a [u8]>,
    body: &'a [u8],
}

impl<'a> Entry<'a> {
    /// Decodes the entry under `key` (None: neither a segment nor a row).
    pub fn decode(key: &'a [u8], value: &'a [u8]) -> Option<Entry<'a>> {
        if value.first() != Some(&TAG) {
            // A one-record row: its id is the key after the time.
            return Some(Entry {
                last_ts: key_ts(key)?,
                ids: vec![key.get(8..)?],
                body: value,
            });
        }
        let last_ts = u64::from_be_bytes(value.get(1..9)?.try_into().ok()?);
        let n = u32::from_be_bytes(value.get(9..13)?.try_into().ok()?) as usize;
        let mut at = 13;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let len = u16::from_be_bytes(value.get(at..at + 2)?.try_into().ok()?) as usize;
            ids.push(value.get(at + 2..at + 2 + len)?);
            at += 2 + len;
        }
        Some(Entry {
            last_ts,
            ids,
            body: value.get(at..)?,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn ids(&self) -> &[&'a [u8]] {
        &self.ids
    }

    /// The records' JSON, in order.
    pub fn records(&self) -> impl Iterator<Item = &'a [u8]> {
        self.body.split(|b| *b == b'\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, ts: u64) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            ts_ms: ts,
            ..Default::default()
        }
    }

    #[test]
    fn plan_splits_by_span_and_count() {
        assert_eq!(plan(&[]), Vec::<Range<usize>>::new());
        assert_eq!(plan(&[5]), vec![0..1]);
        assert_eq!(plan(&[0, 50, 100, 101, 150]), vec![0..3, 3..5]);
        let many = vec![7; MAX_RECORDS + 3];
        assert_eq!(
            plan(&many),
            vec![0..MAX_RECORDS, MAX_RECORDS..MAX_RECORDS + 3]
        );
    }

    #[test]
    fn segments_and_rows_decode_alike() {
        let (a, b) = (rec("a1", 10), rec("b2", 30));
        let (ja, jb) = (a.to_json(), b.to_json());
        let v = encode(&[(&a, &ja), (&b, &jb)]);
        let k = key(10, "a1");
        let e = Entry::decode(&k, &v).unwrap();
        assert_eq!(e.last_ts, 30);
        assert_eq!(e.ids(), &[b"a1".as_slice(), b"b2".as_slice()]);
        let back: Vec<UsageRecord> = e
            .records()
            .map(|j| serde_json::from_slice(j).unwrap())
            .collect();
        assert_eq!(back, vec![a.clone(), b]);
        assert_eq!(key_ts(&k), Some(10));
        // an older one-record row
        let mut row_key = 10u64.to_be_bytes().to_vec();
        row_key.extend_from_slice(b"a1");
        let e = Entry::decode(&row_key, &ja).unwrap();
        assert_eq!((e.last_ts, e.len()), (10, 1));
        assert_eq!(e.ids(), &[b"a1".as_slice()]);
        assert_eq!(e.records().collect::<Vec<_>>(), vec![ja.as_slice()]);
        // a truncated segment is refused, not misread
        assert!(Entry::decode(&k, &v[..14]).is_none());
    }
}
