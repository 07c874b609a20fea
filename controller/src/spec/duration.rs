//! The one duration grammar of Fledge: Go's, as `time.ParseDuration` reads it for Flagger's
//! Canary (`30s`, `1m`, `1h30m`, `500ms`, `1.5m`) and as Istio's API reads its protobuf
//! Durations (`1.5s`, `100ms`) and Linkerd's and Kubernetes' duration fields. The Canary spec
//! and the simulator's manifest and scenario readers all parse with [`parse_nanos`].
//!
//! Deliberately narrower than Go: no sign (no field here takes a negative span) and no bare `0`
//! (every number carries its unit, `0s`). A Canary's durations are whole milliseconds, its
//! precision (Istio refuses finer ones on the fields it sets); manifests keep nanoseconds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A non-negative span of time in whole milliseconds.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Duration(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error(
        "`{0}` is not a duration: expected numbers each followed by a unit (h, m, s, ms, us, ns), e.g. `30s`, `1m`, `1h30m`, `1.5s`"
    )]
    Malformed(String),
    #[error("`{0}` is too long")]
    Overflow(String),
    #[error("`{0}` is finer than a millisecond, the precision of a Canary's durations")]
    SubMillisecond(String),
}

/// Parses a duration in Go's grammar without a sign: one or more decimal numbers (`1`, `1.5`,
/// `.5`), each followed by a unit (`h`, `m`, `s`, `ms`, `us`, `µs`, `μs`, `ns`), into whole
/// nanoseconds, as `time.ParseDuration` reads it: a fraction is truncated to the nanosecond, the
/// total must fit Go's int64 of nanoseconds (about 2,562,047 hours), and no whitespace is allowed.
pub fn parse_nanos(text: &str) -> Result<u64, DurationError> {
    let s = text;
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_string());
    let overflow = || DurationError::Overflow(text.to_string());
    let mut rest = s;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let whole = &rest[..whole_len];
        rest = &rest[whole_len..];
        let fraction = match rest.strip_prefix('.') {
            Some(after) => {
                let len = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                rest = &after[len..];
                &after[..len]
            }
            None => "",
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(malformed());
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let per_unit: u64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(malformed()),
        };
        rest = &rest[unit_len..];
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| overflow())?
        };
        // Digits past the 18th change the span by less than a nanosecond per hour.
        let fraction = &fraction[..fraction.len().min(18)];
        let part_ns = if fraction.is_empty() {
            0
        } else {
            let scale = 10u128.pow(fraction.len() as u32);
            let digits: u128 = fraction.parse().map_err(|_| malformed())?;
            u64::try_from(digits * u128::from(per_unit) / scale).map_err(|_| overflow())?
        };
        total = whole
            .checked_mul(per_unit)
            .and_then(|v| v.checked_add(part_ns))
            .and_then(|v| total.checked_add(v))
            .filter(|&v| v <= i64::MAX as u64)
            .ok_or_else(overflow)?;
    }
    Ok(total)
}

/// What Istio's validation asks of the Durations it checks (`ValidateDuration`, and the
/// `duration(self) >= duration('1ms')` rule of its CRDs), in words.
pub const ISTIO_DURATION: &str = "a duration of at least 1ms in whole milliseconds";

/// Whether Istio's validation accepts a Duration of `nanos`: at least 1ms, in whole
/// milliseconds (`ValidateDuration`); an outlier-detection interval of 0 would never tick.
pub fn is_istio_duration(nanos: u64) -> bool {
    nanos >= NANOS_PER_MILLI && nanos.is_multiple_of(NANOS_PER_MILLI)
}

const NANOS_PER_MILLI: u64 = 1_000_000;

/// What the Gateway API asks of its Durations, in words.
pub const GATEWAY_DURATION: &str =
    "a Gateway API duration such as `10s` or `1m30s` (GEP-2257: `^([0-9]{1,5}(h|m|s|ms)){1,4}$`)";

/// Whether `text` is a Gateway API Duration (GEP-2257: `^([0-9]{1,5}(h|m|s|ms)){1,4}$`), the
/// schema of an HTTPRoute's timeouts: narrower than Go's, no fractions and no `us`/`ns`, at
/// most five digits a number and four parts. Every such text also parses with [`parse_nanos`].
pub fn is_gateway_duration(text: &str) -> bool {
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if !(1..=5).contains(&digits) {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        let Some(unit) = unit else {
            return false;
        };
        rest = &rest[unit.len()..];
        parts += 1;
    }
    (1..=4).contains(&parts)
}

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub const fn from_secs(s: u64) -> Self {
        Duration(s * 1000)
    }

    pub const fn millis(self) -> u64 {
        self.0
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let nanos = parse_nanos(text)?;
        if nanos % 1_000_000 != 0 {
            return Err(DurationError::SubMillisecond(text.to_string()));
        }
        Ok(Duration(nanos / 1_000_000))
    }
}

impl fmt::Display for Duration {
    /// The shortest Go-style form: `90000` ms prints as `1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!("30s".parse(), Ok(Duration(30_000)));
        assert_eq!("1m".parse(), Ok(Duration(60_000)));
        assert_eq!("1h30m".parse(), Ok(Duration(5_400_000)));
        assert_eq!("500ms".parse(), Ok(Duration(500)));
        assert_eq!("1m30s250ms".parse(), Ok(Duration(90_250)));
    }

    #[test]
    fn rejects_prose_and_missing_units() {
        for bad in [
            "5 minutes",
            "10",
            "0",
            "m",
            "-1s",
            "1d",
            "s1",
            ".s",
            "1..5s",
            "1.5.s",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} should not parse");
        }
        assert_eq!("".parse::<Duration>(), Err(DurationError::Empty));
    }

    #[test]
    fn reads_go_fractions_and_units_to_the_nanosecond() {
        assert_eq!(parse_nanos("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_nanos(".5ms"), Ok(500_000));
        assert_eq!(parse_nanos("1.ms"), Ok(1_000_000));
        assert_eq!(parse_nanos("1h2m"), Ok(3_720_000_000_000));
        assert_eq!(parse_nanos("100us"), Ok(100_000));
        assert_eq!(parse_nanos("100\u{b5}s"), Ok(100_000));
        assert_eq!(parse_nanos("100\u{3bc}s"), Ok(100_000));
        assert_eq!(parse_nanos("7ns"), Ok(7));
        assert_eq!(parse_nanos("0.1s"), Ok(100_000_000));
        // Truncated to the nanosecond, as Go truncates.
        assert_eq!(parse_nanos("1.0000000005s"), Ok(1_000_000_000));
        // Flagger reads `1.5m` as Go does; the Canary takes it.
        assert_eq!("1.5m".parse(), Ok(Duration(90_000)));
    }

    #[test]
    fn a_canary_refuses_durations_finer_than_a_millisecond() {
        assert_eq!(
            "1500us".parse::<Duration>(),
            Err(DurationError::SubMillisecond("1500us".into()))
        );
        assert_eq!("2000us".parse(), Ok(Duration(2)));
    }

    #[test]
    fn rejects_overflow_instead_of_wrapping() {
        assert!(matches!(
            "99999999999999999999h".parse::<Duration>(),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            "18446744073709551h".parse::<Duration>(),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn istio_durations_are_at_least_a_millisecond_in_whole_milliseconds() {
        assert!(is_istio_duration(1_000_000));
        assert!(is_istio_duration(parse_nanos("1.5s").unwrap()));
        for bad in ["0s", "999us", "1500us", "1ms1ns"] {
            assert!(!is_istio_duration(parse_nanos(bad).unwrap()), "{bad}");
        }
    }

    #[test]
    fn gateway_durations_follow_gep_2257() {
        for good in ["10s", "1m30s", "99999ms", "1h1m1s1ms", "0s"] {
            assert!(is_gateway_duration(good), "{good}");
            assert!(parse_nanos(good).is_ok(), "{good}");
        }
        for bad in [
            "1.5s",
            "100us",
            "10ns",
            "123456s",
            "1h1m1s1ms1ms",
            "",
            "s",
            "10",
        ] {
            assert!(!is_gateway_duration(bad), "{bad}");
        }
    }

    #[test]
    fn displays_the_shortest_form_that_parses_back() {
        for ms in [0, 1, 999, 1_000, 90_000, 5_400_000, 3_723_004] {
            let d = Duration(ms);
            assert_eq!(d.to_string().parse(), Ok(d));
        }
        assert_eq!(Duration(90_000).to_string(), "1m30s");
    }
}
