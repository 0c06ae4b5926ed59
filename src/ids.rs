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
    }
}
