//! Certificate lifetimes on the command line: `1y`, `30d`, `12h`, `90s`, or combinations (`1d12h`).
//! A year is 365 days.

use time::Duration;

/// [`crate::injection::duration::parse_duration`], as the `time` crate's Duration the certificate code uses.
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let span = crate::injection::duration::parse_duration(text)?;
    Duration::try_from(span).map_err(|_| format!("{text:?}: too long"))
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
