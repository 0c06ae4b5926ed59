//! Money: USD amounts held as integer micro-dollars (never floats), and their decimal text.

/// USD amounts are held as micro-dollars.
pub type Micros = u64;

pub const MICROS_PER_USD: u64 = 1_000_000;

/// Parses a decimal USD amount ("3", "3.5", "0.075") into micro-dollars, exactly.
/// More than six decimals, signs, exponents and garbage are refused.
pub fn parse_usd(s: &str) -> Option<Micros> {
    let s = s.trim();
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 6 {
        return None;
    }
    let whole: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut f = frac.to_string();
    while f.len() < 6 {
        f.push('0');
    }
    whole
        .checked_mul(MICROS_PER_USD)?
        .checked_add(f.parse::<u64>().ok()?)
}

/// Formats micro-dollars as a USD decimal string ("3.000125").
pub fn format_usd(m: Micros) -> String {
    let s = format!("{}.{:06}", m / MICROS_PER_USD, m % MICROS_PER_USD);
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}00")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_parsing_is_exact() {
        assert_eq!(parse_usd("3"), Some(3_000_000));
        assert_eq!(parse_usd("0.075"), Some(75_000));
        assert_eq!(parse_usd("15.000000"), Some(15_000_000));
        assert_eq!(parse_usd(".5"), Some(500_000));
        assert_eq!(parse_usd("0.0000001"), None);
        assert_eq!(parse_usd("-1"), None);
        assert_eq!(parse_usd("1e3"), None);
        assert_eq!(format_usd(3_000_125), "3.000125");
        assert_eq!(format_usd(10_000_000), "10.00");
    }
}
