//! Kubernetes resource quantities (`100m`, `0.5`, `32Mi`, `1e3`), read well enough to refuse a bad
//! one with a message of ours and to compare two: the API server would refuse the pod too, but
//! only after our webhook, with a message that does not name the annotation to fix.

/// A quantity's value in nano-units (`1m` is 1,000,000; `1Ki` is 1,024,000,000,000), rounded up as
/// the API server rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nanos(pub u128);

const HELP: &str = "a Kubernetes quantity such as 100m, 0.5, 64Mi or 1Gi";

/// Parses a non-negative quantity in the API's syntax: a decimal number, then a binary suffix
/// (`Ki` … `Ei`), a decimal one (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`) or an exponent (`e3`).
pub fn parse(text: &str) -> Result<Nanos, String> {
    let bad = |why: &str| format!("{text:?} is not {HELP}: {why}");
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    let number_end = unsigned.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    if text.starts_with('-') {
        return Err(bad("it is negative"));
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(bad("it does not start with a number"));
    }
    if fraction.contains('.') || number.matches('.').count() > 1 {
        return Err(bad("two decimal points"));
    }
    // The value is digits × 10^(exponent − fraction digits) × 2^binary, counted in nano-units.
    let (exponent, binary): (i32, u32) = match suffix {
        "" => (0, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().map_err(|_| bad(&format!("unknown suffix {s:?}")))?;
            if !(-30..=30).contains(&e) {
                return Err(bad("exponent out of range"));
            }
            (e, 0)
        }
        s => {
            return Err(bad(&format!(
                "unknown suffix {s:?} (use Ki, Mi, Gi, Ti, Pi, Ei or n, u, m, k, M, G, T, P, E)"
            )));
        }
    };
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(bad("too many digits"));
    }
    let mantissa: u128 =
        if digits.is_empty() { 0 } else { digits.parse().map_err(|_| bad("not a number"))? };
    let too_large = || bad("too large");
    let scaled = mantissa.checked_mul(1u128 << binary).ok_or_else(too_large)?;
    let shift = exponent + 9 - fraction.len() as i32;
    let value = if shift >= 0 {
        scaled.checked_mul(10u128.checked_pow(shift as u32).ok_or_else(too_large)?).ok_or_else(too_large)?
    } else {
        match 10u128.checked_pow(shift.unsigned_abs()) {
            Some(divisor) => scaled.div_ceil(divisor),
            None => u128::from(scaled > 0),
        }
    };
    Ok(Nanos(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(text: &str) -> u128 {
        parse(text).unwrap().0
    }

    #[test]
    fn reads_every_form_the_api_writes() {
        assert_eq!(nanos("1"), 1_000_000_000);
        assert_eq!(nanos("100m"), 100_000_000);
        assert_eq!(nanos("0.1"), nanos("100m"));
        assert_eq!(nanos(".5"), nanos("500m"));
        assert_eq!(nanos("1000m"), nanos("1"));
        assert_eq!(nanos("1e3"), nanos("1k"));
        assert_eq!(nanos("1E-3"), nanos("1m"));
        assert_eq!(nanos("32Mi"), 32 * 1024 * 1024 * 1_000_000_000);
        assert_eq!(nanos("1Gi"), nanos("1024Mi"));
        assert_eq!(nanos("1G"), nanos("1000M"));
        assert_eq!(nanos("0"), 0);
        assert_eq!(nanos("+2"), nanos("2"));
        assert_eq!(nanos("1Ei"), (1u128 << 60) * 1_000_000_000);
        // Below a nano-unit rounds up, as the API server does.
        assert_eq!(nanos("0.5n"), 1);
    }

    #[test]
    fn compares_across_units() {
        assert!(parse("100m").unwrap() < parse("0.2").unwrap());
        assert!(parse("1Gi").unwrap() > parse("1G").unwrap());
        assert!(parse("64Mi").unwrap() == parse("65536Ki").unwrap());
    }

    #[test]
    fn refuses_what_the_api_refuses_with_the_reason() {
        for (text, why) in [
            ("", "does not start with a number"),
            ("m", "does not start with a number"),
            ("-1", "negative"),
            ("1.2.3", "two decimal points"),
            ("100 m", "unknown suffix"),
            ("1mi", "unknown suffix"),
            ("1MB", "unknown suffix"),
            ("1e99", "exponent out of range"),
            ("99999999999999999999999999999999Ei", "too many digits"),
            ("999999999999999999999999Ei", "too large"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(why) && err.contains("quantity such as"), "{text:?}: {err}");
        }
    }
}
