//! Go-style durations as Flagger writes them: `30s`, `1m`, `1h30m`, `500ms`.

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
        "`{0}` is not a duration: expected a number followed by a unit (ms, s, m, h), e.g. `30s`, `1m`, `1h30m`"
    )]
    Malformed(String),
    #[error("`{0}` is too long")]
    Overflow(String),
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
        let s = text.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let malformed = || DurationError::Malformed(text.to_string());
        let overflow = || DurationError::Overflow(text.to_string());
        let mut rest = s;
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(malformed());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| overflow())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let per_unit = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(malformed()),
            };
            rest = &rest[unit_len..];
            total = n
                .checked_mul(per_unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(overflow)?;
        }
        Ok(Duration(total))
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
        for bad in ["5 minutes", "10", "m", "1.5m", "-1s", "1d", "s1"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} should not parse");
        }
        assert_eq!("".parse::<Duration>(), Err(DurationError::Empty));
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
    fn displays_the_shortest_form_that_parses_back() {
        for ms in [0, 1, 999, 1_000, 90_000, 5_400_000, 3_723_004] {
            let d = Duration(ms);
            assert_eq!(d.to_string().parse(), Ok(d));
        }
        assert_eq!(Duration(90_000).to_string(), "1m30s");
    }
}
