//! Datetime parsing for the Azure traces: `YYYY-MM-DD HH:MM:SS[.fffffff][+HH:MM|Z]`.
//!
//! Hand-written rather than `chrono::NaiveDateTime::parse_from_str` because it runs once per row
//! of 40-million-row files, and because one parser must accept both the 2023 layout (7
//! fractional digits, no zone) and the 2024 one (zone suffix, fraction absent on whole seconds).

use chrono::NaiveDate;

fn digits(b: &[u8], at: usize, n: usize) -> Result<u32, String> {
    let part = b.get(at..at + n).ok_or("too short")?;
    let mut v = 0u32;
    for &c in part {
        if !c.is_ascii_digit() {
            return Err(format!("expected a digit at character {}", at + 1));
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Ok(v)
}

fn expect(b: &[u8], at: usize, what: &[u8]) -> Result<(), String> {
    match b.get(at) {
        Some(c) if what.contains(c) => Ok(()),
        _ => Err(format!(
            "expected '{}' at character {}",
            what[0] as char,
            at + 1
        )),
    }
}

/// Parses a datetime into UNIX ns. A datetime without a zone is read as UTC (the Azure 2023
/// trace's naive clock); only differences between rows matter to a workload.
pub fn parse_datetime_ns(s: &str) -> Result<i64, String> {
    let b = s.trim().as_bytes();
    let year = digits(b, 0, 4)?;
    expect(b, 4, b"-")?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b"-")?;
    let day = digits(b, 8, 2)?;
    expect(b, 10, b" T")?;
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b":")?;
    let min = digits(b, 14, 2)?;
    expect(b, 16, b":")?;
    let sec = digits(b, 17, 2)?;
    let mut i = 19;
    let mut frac_ns: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                frac_ns = frac_ns * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return Err("a '.' with no fractional digits".into());
        }
        for _ in n..9 {
            frac_ns *= 10;
        }
    }
    let mut offset_s: i64 = 0;
    match b.get(i) {
        None => {}
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => {}
        Some(&sign @ (b'+' | b'-')) => {
            let rest = &b[i + 1..];
            let (h, m) = match rest.len() {
                2 => (digits(rest, 0, 2)?, 0),
                4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                _ => return Err(format!("bad zone offset at character {}", i + 1)),
            };
            offset_s = i64::from(h) * 3600 + i64::from(m) * 60;
            if sign == b'-' {
                offset_s = -offset_s;
            }
        }
        Some(_) => return Err(format!("unexpected text at character {}", i + 1)),
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)
        .ok_or_else(|| format!("no such date {year:04}-{month:02}-{day:02}"))?;
    let dt = date
        .and_hms_opt(hour, min, sec)
        .ok_or_else(|| format!("no such time {hour:02}:{min:02}:{sec:02}"))?;
    let secs = dt.and_utc().timestamp() - offset_s;
    secs.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(frac_ns))
        .ok_or_else(|| "datetime out of range".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_layouts() {
        let a = parse_datetime_ns("2023-11-16 18:17:03.9799600").unwrap();
        let b = parse_datetime_ns("2023-11-16 18:17:04").unwrap();
        assert_eq!(b - a, 20_040_000);
        let z = parse_datetime_ns("2024-05-10 00:00:00.009930+00:00").unwrap();
        let w = parse_datetime_ns("2024-05-10 00:00:01+00:00").unwrap();
        assert_eq!(w - z, 990_070_000);
        assert_eq!(parse_datetime_ns("2024-05-10T02:00:01+02:00").unwrap(), w);
        assert_eq!(parse_datetime_ns("2024-05-10 00:00:01Z").unwrap(), w);
        assert_eq!(parse_datetime_ns("1970-01-01 00:00:00").unwrap(), 0);
    }

    #[test]
    fn bad_datetimes() {
        for s in [
            "",
            "2023-11-16",
            "2023-13-16 18:17:03",
            "2023-11-16 25:17:03",
            "2023/11/16 18:17:03",
            "2023-11-16 18:17:03.",
            "2023-11-16 18:17:03.12x",
            "2023-11-16 18:17:03+1",
            "yesterday",
        ] {
            assert!(parse_datetime_ns(s).is_err(), "{s:?} parsed");
        }
    }
}
