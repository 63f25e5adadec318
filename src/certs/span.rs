//! Certificate lifetimes on the command line: `1y`, `30d`, `12h`, `90s`, or combinations (`1d12h`).
//! A year is 365 days.

use time::Duration;

pub fn parse_span(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration: write e.g. 1y, 30d or 12h".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?}: expected a number, e.g. 1y, 30d or 12h"));
        }
        let number: i64 = rest[..digits].parse().map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds_per = match &rest[..unit_len] {
            "y" => 365 * 86_400,
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            "" => return Err(format!("{text:?}: missing unit (y, d, h, m or s)")),
            unit => return Err(format!("{text:?}: unknown unit {unit:?} (y, d, h, m or s)")),
        };
        let part = number.checked_mul(seconds_per).ok_or_else(|| format!("{text:?}: too long"))?;
        total = total.checked_add(Duration::seconds(part)).ok_or_else(|| format!("{text:?}: too long"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_years_days_and_the_rest() {
        assert_eq!(parse_span("1y"), Ok(Duration::days(365)));
        assert_eq!(parse_span("30d"), Ok(Duration::days(30)));
        assert_eq!(parse_span("1d12h"), Ok(Duration::hours(36)));
        assert_eq!(parse_span("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_span(" 90m "), Ok(Duration::minutes(90)));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in ["", "1", "d", "1.5d", "1 d", "1w", "-1d", "99999999999999999999y", "9999999999999999y"] {
            assert!(parse_span(bad).is_err(), "{bad:?} accepted");
        }
    }
}
