//! IMAP dates (RFC 9051 §9 `date`, `date-time`): SEARCH dates and the
//! APPEND / INTERNALDATE date-time, converted to and from Unix seconds
//! without a clock or a time-zone database (the zone is in the text).

const MONTHS: [&[u8; 3]; 12] = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// A calendar date from a SEARCH key (`SINCE 1-Feb-2024`). RFC 9051
/// §6.4.4 compares dates "disregarding time and timezone"; the session
/// decides which time zone a message's date falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SearchDate {
    pub year: u16,
    /// 1–12.
    pub month: u8,
    /// 1–31, valid for the month.
    pub day: u8,
}

impl SearchDate {
    /// Validates the day against the month (leap years included).
    pub fn new(year: u16, month: u8, day: u8) -> Option<SearchDate> {
        (year >= 1 && (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)).then_some(SearchDate { year, month, day })
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(&self) -> i64 {
        days_from_civil(i64::from(self.year), self.month, self.day)
    }

    /// The date of a Unix time shifted by `offset_seconds` (e.g. a
    /// message's own zone, or UTC with 0).
    pub fn from_unix(secs: i64, offset_seconds: i32) -> SearchDate {
        let (y, m, d) = civil_from_days((secs.saturating_add(i64::from(offset_seconds))).div_euclid(86_400));
        SearchDate { year: y.clamp(1, 9999) as u16, month: m, day: d }
    }
}

fn is_leap(year: u16) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil` (proleptic Gregorian).
fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| acc.checked_mul(10)?.checked_add(u32::from(b - b'0')))
}

fn month(s: &[u8]) -> Option<u8> {
    MONTHS.iter().position(|m| m.eq_ignore_ascii_case(s)).map(|i| i as u8 + 1)
}

/// `date-text`: `d-Mon-yyyy` or `dd-Mon-yyyy` (month name case-insensitive).
pub fn parse_date_text(s: &[u8]) -> Option<SearchDate> {
    let mut parts = s.split(|&b| b == b'-');
    let (Some(d), Some(m), Some(y), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    if !(1..=2).contains(&d.len()) || y.len() != 4 {
        return None;
    }
    SearchDate::new(u16::try_from(digits(y)?).ok()?, month(m)?, u8::try_from(digits(d)?).ok()?)
}

/// The inside of a `date-time` (without the quotes):
/// `dd-Mon-yyyy hh:mm:ss +zzzz`, the day possibly space-padded
/// (`" 1-Feb-2024 ..."`). Returns Unix seconds (UTC).
pub fn parse_date_time(s: &[u8]) -> Option<i64> {
    if s.len() != 26 || s[11] != b' ' || s[20] != b' ' || s[14] != b':' || s[17] != b':' {
        return None;
    }
    let day = if s[0] == b' ' { &s[1..2] } else { &s[0..2] };
    if s[2] != b'-' || s[6] != b'-' {
        return None;
    }
    let date = SearchDate::new(u16::try_from(digits(&s[7..11])?).ok()?, month(&s[3..6])?, u8::try_from(digits(day)?).ok()?)?;
    let (h, mi, sec) = (digits(&s[12..14])?, digits(&s[15..17])?, digits(&s[18..20])?);
    // 60: a leap second.
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let sign = match s[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (zh, zm) = (digits(&s[22..24])?, digits(&s[24..26])?);
    if zm > 59 {
        return None;
    }
    let offset = sign * i64::from(zh * 3600 + zm * 60);
    Some(date.days_since_epoch() * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset)
}

/// Appends a quoted `date-time` for INTERNALDATE in UTC:
/// `"17-Jul-1996 02:44:25 +0000"`. Years are clamped to 0001–9999.
pub fn write_date_time(out: &mut Vec<u8>, unix: i64) {
    let secs = unix.clamp(-62_135_596_800, 253_402_300_799);
    let date = SearchDate::from_unix(secs, 0);
    let t = secs.rem_euclid(86_400);
    let s = format!(
        "\"{:02}-{}-{:04} {:02}:{:02}:{:02} +0000\"",
        date.day,
        std::str::from_utf8(MONTHS[usize::from(date.month - 1)]).unwrap_or("Jan"),
        date.year,
        t / 3600,
        t / 60 % 60,
        t % 60
    );
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date_text(b"1-Feb-1994"), Some(SearchDate { year: 1994, month: 2, day: 1 }));
        assert_eq!(parse_date_text(b"29-feb-2024"), SearchDate::new(2024, 2, 29));
        for bad in [&b"29-Feb-2023"[..], b"31-Apr-2024", b"0-Jan-2024", b"1-Foo-2024", b"001-Jan-2024", b"1-Jan-24", b"1-Jan-2024-", b"a-Jan-2024", b""] {
            assert_eq!(parse_date_text(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(SearchDate::new(1970, 1, 2).unwrap().days_since_epoch(), 1);
        assert_eq!(SearchDate::new(1969, 12, 31).unwrap().days_since_epoch(), -1);
        assert_eq!(SearchDate::from_unix(951_782_400, 0), SearchDate::new(2000, 2, 29).unwrap());
        assert_eq!(SearchDate::from_unix(-1, 0), SearchDate::new(1969, 12, 31).unwrap());
    }

    #[test]
    fn date_times() {
        assert_eq!(parse_date_time(b"17-Jul-1996 02:44:25 -0700"), Some(837_596_665));
        assert_eq!(parse_date_time(b" 1-Jan-1970 00:00:00 +0000"), Some(0));
        assert_eq!(parse_date_time(b"01-Jan-1970 01:00:00 +0100"), Some(0));
        for bad in [&b"1-Jan-1970 00:00:00 +0000"[..], b"01-Jan-1970 24:00:00 +0000", b"01-Jan-1970 00:00:00 0000", b"01-Jan-1970 00:00:00 +0060", b"01-Jan-1970T00:00:00 +0000"] {
            assert_eq!(parse_date_time(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let mut out = Vec::new();
        write_date_time(&mut out, 837_596_665);
        assert_eq!(out, b"\"17-Jul-1996 09:44:25 +0000\"");
        for t in [0, -1, 1_700_000_000, 4_102_444_800, -62_135_596_800] {
            let mut out = Vec::new();
            write_date_time(&mut out, t);
            assert_eq!(parse_date_time(&out[1..out.len() - 1]), Some(t));
        }
    }
}
