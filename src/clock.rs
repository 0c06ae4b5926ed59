//! Wall-clock time as the gateway records it: seconds (budget windows, key expiry) and
//! milliseconds (usage records, leases) since the Unix epoch. A clock before the epoch reads
//! as 0 rather than failing.

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
