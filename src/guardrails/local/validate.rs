//! The checks a regex cannot make: checksums (Luhn, IBAN mod-97), card number prefixes,
//! phone number shapes and the JWT header. Each takes the text of one candidate match and
//! says yes or no, so that ordinary numbers (versions, dates, timestamps, ids) are not flagged.

use base64::Engine;

/// Luhn checksum over ASCII digits (other bytes must have been removed).
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Whether `digits` (13–19 of them) start like a card of a real scheme with that length:
/// Visa, Mastercard, American Express, Discover, UnionPay, JCB, Diners. Rules out most long
/// numbers in code (millisecond timestamps start with 1, ids with anything).
pub fn card_prefix_fits(digits: &[u8]) -> bool {
    let n = digits.len();
    let prefix = |k: usize| -> u32 {
        digits[..k]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    match digits[0] {
        b'4' => matches!(n, 13 | 16 | 19),
        b'5' => n == 16 && (51..=55).contains(&prefix(2)),
        b'2' => n == 16 && (2221..=2720).contains(&prefix(4)),
        b'3' => match prefix(2) {
            34 | 37 => n == 15,
            35 => (16..=19).contains(&n) && (3528..=3589).contains(&prefix(4)),
            36 | 38 | 39 => (14..=19).contains(&n),
            30 => (14..=19).contains(&n) && (300..=305).contains(&prefix(3)),
            _ => false,
        },
        b'6' => {
            (16..=19).contains(&n)
                && (prefix(4) == 6011
                    || prefix(2) == 65
                    || prefix(2) == 62
                    || (644..=649).contains(&prefix(3)))
        }
        _ => false,
    }
}

/// A card number as written: 13–19 digits, either in one run or in groups separated by one
/// kind of single separator (space or dash) in the usual layouts (4-4-4-4[-1..4], Amex 4-6-5,
/// Diners 4-6-4), with a scheme prefix and a valid Luhn digit.
pub fn is_card(text: &str) -> bool {
    let bytes = text.as_bytes();
    if !bytes[0].is_ascii_digit() {
        return false;
    }
    let seps: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_digit())
        .collect();
    if seps.iter().any(|&s| s != seps[0]) || seps.first().is_some_and(|&s| s != b' ' && s != b'-') {
        return false;
    }
    let groups: Vec<usize> = if seps.is_empty() {
        vec![bytes.len()]
    } else {
        text.split(char::from(seps[0])).map(str::len).collect()
    };
    let layout_ok = match groups.as_slice() {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [first @ .., last] => first.iter().all(|&g| g == 4) && (1..=4).contains(last),
        [] => false,
    };
    let digits: Vec<u8> = bytes.iter().copied().filter(u8::is_ascii_digit).collect();
    layout_ok && (13..=19).contains(&digits.len()) && card_prefix_fits(&digits) && luhn(&digits)
}

/// IBAN: two letters, two check digits, 11–30 letters or digits (spaces between groups of
/// four allowed, already part of `text`), and the ISO 13616 mod-97 check equal to 1.
pub fn is_iban(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|&b| b != b' ').collect();
    if !(15..=34).contains(&compact.len())
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    // Move the first four characters to the end, letters become 10..35, remainder mod 97.
    let mut rem = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        match b {
            b'0'..=b'9' => rem = (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + u32::from(b - b'A' + 10)) % 97,
            _ => return false,
        }
    }
    rem == 1
}

/// A phone number as people write it, and not an ordinary number:
/// - international: `+` or `00`, a country code not starting with 0, 8–15 digits in all;
/// - North American: 3-3-4 digits (area code and exchange starting with 2–9), optionally after
///   `1`, with parentheses, spaces, dashes or dots;
/// - national with a trunk `0` (UK, France, Germany, ...): 9–12 digits in 2–5 groups of at
///   least two, separated by spaces or dashes.
///
/// A single run of digits without `+` is never a phone number (ids, timestamps); dots are only
/// accepted in the North American shape (so versions and IP addresses are not phones).
pub fn is_phone(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits: Vec<u8> = bytes.iter().copied().filter(u8::is_ascii_digit).collect();
    let groups: Vec<&str> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    if bytes.windows(2).any(|w| w == b"--" || w == b"..") {
        return false;
    }
    let has_dot = bytes.contains(&b'.');
    if bytes[0] == b'+' || (text.starts_with("00") && groups.len() > 1) {
        let national = if bytes[0] == b'+' {
            &digits[..]
        } else {
            &digits[2..]
        };
        return !has_dot
            && (8..=15).contains(&national.len())
            && national[0] != b'0'
            && (groups.len() > 1 || bytes[0] == b'+');
    }
    if is_north_american(&groups, bytes) {
        return true;
    }
    !has_dot
        && !bytes.contains(&b'(')
        && digits[0] == b'0'
        && digits.get(1).is_some_and(|&d| d != b'0')
        && (9..=12).contains(&digits.len())
        && (2..=5).contains(&groups.len())
        && groups.iter().all(|g| g.len() >= 2)
}

fn is_north_american(groups: &[&str], bytes: &[u8]) -> bool {
    let groups = match groups {
        ["1", rest @ ..] => rest,
        all => all,
    };
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [3, 3, 4] {
        return false;
    }
    let starts_ok = |g: &str| (b'2'..=b'9').contains(&g.as_bytes()[0]);
    // The separators between the three groups must be one of the usual styles.
    let text = std::str::from_utf8(bytes).unwrap_or("");
    let body = text.trim_start_matches("1 ").trim_start_matches("1-");
    let body = body.strip_prefix('1').unwrap_or(body);
    let a = groups[0];
    let b = groups[1];
    let c = groups[2];
    let styles = [
        format!("{a}-{b}-{c}"),
        format!("{a}.{b}.{c}"),
        format!("{a} {b} {c}"),
        format!("({a}) {b}-{c}"),
        format!("({a}){b}-{c}"),
        format!("({a}) {b} {c}"),
    ];
    starts_ok(a) && starts_ok(b) && styles.iter().any(|s| s == body)
}

/// A JWT: the header is base64url JSON with an `alg` member (`text` is the whole token).
pub fn is_jwt(text: &str) -> bool {
    let Some(header) = text.split('.').next() else {
        return false;
    };
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Ok(decoded) = engine.decode(header.trim_end_matches('=')) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&decoded)
        .ok()
        .is_some_and(|v| v.get("alg").is_some_and(serde_json::Value::is_string))
}

/// Random-looking key material contains a digit; names such as `sk-learn-compatible-models`
/// do not.
pub fn looks_random(body: &str) -> bool {
    body.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_valid_and_rejects_off_by_one() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"79927398710"));
    }

    #[test]
    fn cards_need_layout_prefix_and_checksum() {
        for good in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555 5555 5555 4444",
            "3782 822463 10005",
            "378282246310005",
            "6011 1111 1111 1117",
            "2223003122003222",
            "3530111333300000",
            "4222222222222",
        ] {
            assert!(is_card(good), "{good}");
        }
        for bad in [
            "4111 1111 1111 1112",     // Luhn
            "4111-1111 1111-1111",     // mixed separators
            "41 11 11 11 11 11 11 11", // layout
            "1700000000000",           // a millisecond timestamp (no scheme starts with 1)
            "9111111111111111",        // no scheme
            "5955555555554444",        // 59 is not Mastercard
            "3782822463100050",        // Amex is 15 digits
        ] {
            assert!(!is_card(bad), "{bad}");
        }
    }

    #[test]
    fn ibans_need_mod97() {
        for good in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "FR1420041010050500013M02606",
            "NO9386011117947",
        ] {
            assert!(is_iban(good), "{good}");
        }
        for bad in [
            "DE89370400440532013001",
            "GB82WEST12345698765433",
            "DE8937040044",
            "de89370400440532013000",
        ] {
            assert!(!is_iban(bad), "{bad}");
        }
    }

    #[test]
    fn phones_in_common_formats() {
        for good in [
            "+1 415 555 2671",
            "+14155552671",
            "+44 20 7946 0958",
            "+44 (0)20 7946 0958",
            "+33 1 23 45 67 89",
            "+49 30 1234567",
            "0049 30 1234567",
            "(415) 555-2671",
            "415-555-2671",
            "415.555.2671",
            "1-415-555-2671",
            "020 7946 0958",
            "07700 900123",
            "01 23 45 67 89",
            "030 1234567",
            "030-1234567",
        ] {
            assert!(is_phone(good), "{good}");
        }
        for bad in [
            "4155552671", // a bare run: ids, timestamps
            "1700000000",
            "2024-01-15 12",   // date and hour
            "10.0.19041.1",    // version
            "192.168.100.200", // IP address
            "1.2.3.4.5.6.7",
            "0 0 0 0 0 0 0 0 0", // matrix printout
            "123-456-7890",      // area code starting with 1
            "000 1234 5678",
            "+0 123 456 789",
            "12 34 56 78 90",
        ] {
            assert!(!is_phone(bad), "{bad}");
        }
    }

    #[test]
    fn jwt_header_must_be_json_with_alg() {
        assert!(is_jwt(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        ));
        // eyJ + base64 of `{"typ":"x"}`: JSON but no alg.
        assert!(!is_jwt("eyJ0eXAiOiJ4In0.eyJhIjoxfQ.c2ln"));
        assert!(!is_jwt("eyJnotbase64!!.a.b"));
    }
}
