//! Durations on the command line and in annotations: `500ms`, `1s`, `2m`, `12h`, `30d`, `1y` (365
//! days), or a combination such as `1m30s` or `1d12h`.

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration: write e.g. 500ms, 1s, 2m or 30d".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?}: expected a number, e.g. 500ms, 1s, 2m or 30d"));
        }
        let number: u64 = rest[..digits].parse().map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let millis_per: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "y" => 365 * 86_400_000,
            "" => return Err(format!("{text:?}: missing unit (ms, s, m, h, d or y)")),
            unit => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h, d or y)")),
        };
        let part = number.checked_mul(millis_per).ok_or_else(|| format!("{text:?}: too long"))?;
        total =
            total.checked_add(Duration::from_millis(part)).ok_or_else(|| format!("{text:?}: too long"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration that must not be zero (a poll interval, a timeout).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be longer than 0".into()),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 1h "), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("1y"), Ok(Duration::from_secs(365 * 86_400)));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in ["", "5", "s", "1.5s", "10 s", "3w", "-1s", "99999999999999999999s", "9999999999999999y"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
