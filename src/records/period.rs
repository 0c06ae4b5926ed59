//! Budget periods: calendar-aligned (UTC day, ISO week starting Monday, month) or rolling
//! (a fixed duration from an anchor). Resets are lazy: the window a timestamp falls in is
//! computed on demand, so no timer or cron is needed and a restart changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const DAY: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Never resets.
    Lifetime,
    Daily,
    Weekly,
    Monthly,
    /// A fixed duration in seconds.
    Seconds(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Alignment {
    /// Windows start at UTC midnight / Monday / the 1st (durations: multiples from the epoch).
    #[default]
    Calendar,
    /// Windows start at the anchor (creation time of the budget) and repeat every period.
    Rolling,
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31). Howard Hinnant's civil algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u64;
    let mp = if m > 2 { m - 3 } else { m + 9 } as u64;
    let doy = (153 * mp + 2) / 5 + d as u64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i64 - 719_468
}

/// The window `[start, end)` (Unix seconds) that contains `now`; `end` is None for lifetime.
pub fn window(period: Period, alignment: Alignment, anchor: u64, now: u64) -> (u64, Option<u64>) {
    let step = |len: u64, origin: u64| -> (u64, Option<u64>) {
        let len = len.max(1);
        if now < origin {
            return (origin, Some(origin + len));
        }
        let start = origin + (now - origin) / len * len;
        (start, Some(start + len))
    };
    match (period, alignment) {
        (Period::Lifetime, _) => (anchor.min(now), None),
        (Period::Daily, Alignment::Calendar) => step(DAY, 0),
        (Period::Daily, Alignment::Rolling) => step(DAY, anchor),
        // 1970-01-05 was a Monday.
        (Period::Weekly, Alignment::Calendar) => step(7 * DAY, 4 * DAY),
        (Period::Weekly, Alignment::Rolling) => step(7 * DAY, anchor),
        (Period::Seconds(s), Alignment::Calendar) => step(s, 0),
        (Period::Seconds(s), Alignment::Rolling) => step(s, anchor),
        (Period::Monthly, Alignment::Calendar) => {
            let (y, m, _) = civil_from_days((now / DAY) as i64);
            let start = days_from_civil(y, m, 1) as u64 * DAY;
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (start, Some(days_from_civil(ny, nm, 1) as u64 * DAY))
        }
        (Period::Monthly, Alignment::Rolling) => monthly_rolling(anchor, now),
    }
}

/// Rolling months keep the anchor's day of month and time of day, clamped to short months
/// (an anchor on the 31st renews on the 30th in April and on the 28th/29th in February).
fn monthly_rolling(anchor: u64, now: u64) -> (u64, Option<u64>) {
    let (ay, am, ad) = civil_from_days((anchor / DAY) as i64);
    let tod = anchor % DAY;
    let at = |k: i64| -> u64 {
        let total = ay * 12 + (am as i64 - 1) + k;
        let (y, m) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
        let last = days_in_month(y, m);
        (days_from_civil(y, m, ad.min(last)) as u64) * DAY + tod
    };
    if now < anchor {
        return (anchor, Some(at(1)));
    }
    let (ny, nm, _) = civil_from_days((now / DAY) as i64);
    let mut k = (ny - ay) * 12 + (nm as i64 - am as i64);
    while k > 0 && at(k) > now {
        k -= 1;
    }
    while at(k + 1) <= now {
        k += 1;
    }
    (at(k), Some(at(k + 1)))
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// RFC 3339 in UTC, for API answers.
pub fn rfc3339(t: u64) -> String {
    let (y, m, d) = civil_from_days((t / DAY) as i64);
    let s = t % DAY;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Parses `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), or Unix seconds.
pub fn parse_time(s: &str) -> Option<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || y < 1970 {
        return None;
    }
    let mut t = days_from_civil(y, m, d) as u64 * DAY;
    if b.len() > 10 {
        let rest = s[10..]
            .strip_prefix('T')
            .or_else(|| s[10..].strip_prefix(' '))?;
        let rest = rest.strip_suffix('Z').unwrap_or(rest);
        let mut it = rest.split(':');
        let h: u64 = it.next()?.parse().ok()?;
        let mi: u64 = it.next().unwrap_or("0").parse().ok()?;
        let se: u64 = it.next().unwrap_or("0").split('.').next()?.parse().ok()?;
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        t += h * 3600 + mi * 60 + se;
    }
    Some(t)
}

/// Parses a budget period: `daily`, `weekly`, `monthly`, `lifetime`/`none`, or a duration
/// such as `30d`, `12h`, `90m`, `3600s` or a number of seconds.
pub fn parse_period(v: &Value) -> Result<Period, String> {
    let s = match v {
        Value::String(s) => s.trim().to_ascii_lowercase(),
        Value::Number(n) => n
            .as_u64()
            .map(|n| format!("{n}s"))
            .ok_or("a period must be positive")?,
        _ => return Err("a period is a string such as 'monthly' or '30d'".into()),
    };
    let p = match s.as_str() {
        "daily" | "day" | "1d" => Period::Daily,
        "weekly" | "week" | "7d" => Period::Weekly,
        "monthly" | "month" => Period::Monthly,
        "lifetime" | "none" | "never" => Period::Lifetime,
        _ => {
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = num.parse().map_err(|_| {
                format!(
                    "'{s}' is not a period (daily, weekly, monthly, lifetime, or e.g. 30d, 12h)"
                )
            })?;
            let mult = match unit {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                "w" => 7 * 86_400,
                _ => {
                    return Err(format!(
                        "'{s}': unknown unit '{unit}' (use s, m, h, d or w)"
                    ))
                }
            };
            if n == 0 {
                return Err("a period must be longer than zero".into());
            }
            Period::Seconds(n * mult)
        }
    };
    Ok(p)
}

pub fn period_label(p: Period) -> String {
    match p {
        Period::Lifetime => "lifetime".into(),
        Period::Daily => "daily".into(),
        Period::Weekly => "weekly".into(),
        Period::Monthly => "monthly".into(),
        Period::Seconds(s) if s % 86_400 == 0 => format!("{}d", s / 86_400),
        Period::Seconds(s) if s % 3600 == 0 => format!("{}h", s / 3600),
        Period::Seconds(s) => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> u64 {
        parse_time(s).unwrap()
    }

    #[test]
    fn civil_round_trip() {
        for d in [-1000i64, 0, 59, 365, 11_016, 19_000, 20_513, 100_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(t("2024-02-29T23:59:59Z")), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn calendar_windows() {
        let now = t("2024-02-29T13:00:00Z");
        assert_eq!(
            window(Period::Daily, Alignment::Calendar, 0, now),
            (t("2024-02-29"), Some(t("2024-03-01")))
        );
        // 2024-02-29 is a Thursday; its ISO week starts Monday the 26th.
        assert_eq!(
            window(Period::Weekly, Alignment::Calendar, 0, now),
            (t("2024-02-26"), Some(t("2024-03-04")))
        );
        assert_eq!(
            window(Period::Monthly, Alignment::Calendar, 0, now),
            (t("2024-02-01"), Some(t("2024-03-01")))
        );
        let dec = t("2023-12-31T23:59:59Z");
        assert_eq!(
            window(Period::Monthly, Alignment::Calendar, 0, dec),
            (t("2023-12-01"), Some(t("2024-01-01")))
        );
        assert_eq!(
            window(Period::Lifetime, Alignment::Calendar, 5, now),
            (5, None)
        );
    }

    #[test]
    fn rolling_windows() {
        let anchor = t("2024-01-31T10:00:00Z");
        // February has no 31st: the renewal falls on the 29th (leap year), same time of day.
        assert_eq!(
            window(Period::Monthly, Alignment::Rolling, anchor, t("2024-02-15")),
            (anchor, Some(t("2024-02-29T10:00:00Z")))
        );
        assert_eq!(
            window(Period::Monthly, Alignment::Rolling, anchor, t("2024-03-01")),
            (t("2024-02-29T10:00:00Z"), Some(t("2024-03-31T10:00:00Z")))
        );
        assert_eq!(
            window(
                Period::Monthly,
                Alignment::Rolling,
                anchor,
                t("2025-02-28T10:00:00Z")
            ),
            (t("2025-02-28T10:00:00Z"), Some(t("2025-03-31T10:00:00Z")))
        );
        let a = t("2024-03-10T06:00:00Z");
        assert_eq!(
            window(
                Period::Daily,
                Alignment::Rolling,
                a,
                t("2024-03-11T05:00:00Z")
            ),
            (a, Some(a + DAY))
        );
        assert_eq!(
            window(Period::Seconds(3600), Alignment::Rolling, a, a + 7200 + 5),
            (a + 7200, Some(a + 10800))
        );
    }

    #[test]
    fn parses_times() {
        assert_eq!(parse_time("1970-01-02"), Some(DAY));
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-02-29"), None);
        assert_eq!(parse_time("2024-13-01"), None);
        assert_eq!(parse_time("nope"), None);
    }
}
