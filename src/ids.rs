//! Public ids (keys, requests, usage records, budgets) and the lower-case hex they are
//! written in, which key hashes and usage cursors use too.

use rand::RngCore;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const H: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
}

/// Decodes lower- or upper-case hex of any even length.
pub fn unhex_any(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A fresh public id (keys, request and usage ids). Ids are not secrets: a thread-local CSPRNG
/// seeded once from the OS is enough, and saves a getrandom syscall per request.
pub fn generate_id(prefix: &str) -> String {
    let mut buf = [0u8; 9];
    rand::thread_rng().fill_bytes(&mut buf);
    let mut id = String::with_capacity(prefix.len() + 2 * buf.len());
    id.push_str(prefix);
    push_hex(&mut id, &buf);
    id
}

/// A fresh request id: `req_`, the time in milliseconds (12 hex digits), 16 random hex
/// digits. The time lets a trace be found by its id without an index row per request
/// (`store::trace_block`).
pub fn request_id() -> String {
    let mut buf = [0u8; 14];
    buf[..6].copy_from_slice(&crate::clock::now_millis().to_be_bytes()[2..]);
    rand::thread_rng().fill_bytes(&mut buf[6..]);
    let mut id = String::with_capacity(4 + 2 * buf.len());
    id.push_str("req_");
    push_hex(&mut id, &buf);
    id
}

/// The time in a request id minted by [`request_id`] (None for any other id, such as a
/// caller's own `x-request-id`).
pub fn request_id_ms(id: &str) -> Option<u64> {
    let hex = id.strip_prefix("req_").filter(|h| h.len() == 28)?;
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(&hex[..12], 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_ids_differ() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex_any("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex_any("abc"), None);
        let id = generate_id("use_");
        assert!(id.starts_with("use_") && id.len() == 4 + 18);
        assert_ne!(generate_id("use_"), id);
        let (before, r) = (crate::clock::now_millis(), request_id());
        let ms = request_id_ms(&r).unwrap();
        assert!(ms >= before && ms <= crate::clock::now_millis(), "{r}");
        assert_ne!(request_id(), r);
        assert_eq!(request_id_ms("req_0123"), None);
        assert_eq!(
            request_id_ms(&r.to_uppercase().replace("REQ_", "req_")),
            None
        );
        assert_eq!(request_id_ms(&generate_id("req_")), None);
    }
}
