//! The few statistics `compare` reports: a proportion with its 95% Wilson score interval, and
//! quantiles by nearest rank.

/// A proportion and its 95% interval, as fractions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rate {
    pub(crate) rate: f64,
    pub(crate) interval: [f64; 2],
}

/// `k` of `n`, with the Wilson score interval at 95%: unlike the normal approximation it stays
/// inside [0, 1] and is not empty at 0 or n, which is where rollback rates live.
pub(crate) fn wilson(k: u64, n: u64) -> Rate {
    if n == 0 {
        return Rate {
            rate: 0.0,
            interval: [0.0, 1.0],
        };
    }
    const Z: f64 = 1.959_963_984_540_054;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2n = Z * Z / n;
    let centre = (p + z2n / 2.0) / (1.0 + z2n);
    let half = Z / (1.0 + z2n) * (p * (1.0 - p) / n + z2n / (4.0 * n)).sqrt();
    // At 0 and n the bound is exactly 0 (or 1), which rounding may miss by an ulp or so.
    Rate {
        rate: p,
        interval: [
            if k == 0.0 {
                0.0
            } else {
                (centre - half).max(0.0)
            },
            if k == n {
                1.0
            } else {
                (centre + half).min(1.0)
            },
        ],
    }
}

/// The `q`-quantile of sorted values, by nearest rank (the value at `round((n - 1) q)`, as
/// `sweep` computes it); none for no values.
pub(crate) fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[(last as f64 * q).round() as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_the_textbook_values() {
        // Wilson (1927) at 95%: 0 of 10 is [0, 0.2775]; 5 of 10 is [0.2366, 0.7634].
        let none = wilson(0, 10);
        assert_eq!(none.rate, 0.0);
        assert!(none.interval[0] == 0.0 && (none.interval[1] - 0.2775).abs() < 1e-4);
        let half = wilson(5, 10);
        assert!((half.interval[0] - 0.2366).abs() < 1e-4, "{half:?}");
        assert!((half.interval[1] - 0.7634).abs() < 1e-4, "{half:?}");
        assert_eq!(wilson(0, 0).interval, [0.0, 1.0]);
        for n in 1..=50 {
            assert_eq!(wilson(0, n).interval[0], 0.0, "0 of {n}");
            assert_eq!(wilson(n, n).interval[1], 1.0, "{n} of {n}");
        }
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(quantile(&v, 0.5), Some(11));
        assert_eq!(quantile(&v, 0.95), Some(19));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
