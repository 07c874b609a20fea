//! Service-time distributions: how long an application takes to answer one request at a pod,
//! once a worker has taken it (queueing for a worker is the pod's, in `pod.rs`). Not a mesh
//! behaviour: the sidecars (Envoy's or Linkerd's) only see its effect as upstream latency,
//! which their histograms (Istio's `istio_request_duration_milliseconds`, Linkerd's
//! `response_latency_ms`) and their balancers (least-request, peak-EWMA) react to.

use crate::engine::{SimTime, Stream};

/// A service-time distribution for one request at a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceTime {
    /// Always the same.
    Constant(SimTime),
    /// Exponential with this mean.
    Exponential {
        /// Mean.
        mean: SimTime,
    },
    /// Log-normal fitted to a median and a 99th percentile.
    LogNormal {
        /// Median.
        p50: SimTime,
        /// 99th percentile (must be at least the median).
        p99: SimTime,
    },
    /// A mixture: each component is drawn with probability weight / sum of weights.
    Mixture(Vec<(f64, ServiceTime)>),
}

/// z-score of the 99th percentile of the standard normal.
const Z99: f64 = 2.326_347_874_040_841;

/// The log-normal's parameters (mu, sigma) for the (p50, p99) seen last: two logarithms a draw
/// spared. Computed by the same expressions, so a draw is the same with or without it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LogNormalMemo {
    of: Option<(SimTime, SimTime)>,
    mu: f64,
    sigma: f64,
}

impl LogNormalMemo {
    fn params(&mut self, p50: SimTime, p99: SimTime) -> (f64, f64) {
        if self.of != Some((p50, p99)) {
            let mu = (p50.max(1) as f64).ln();
            let sigma = ((p99.max(p50) as f64).ln() - mu).max(0.0) / Z99;
            *self = Self {
                of: Some((p50, p99)),
                mu,
                sigma,
            };
        }
        (self.mu, self.sigma)
    }
}

impl ServiceTime {
    /// Draws one service time.
    #[cfg(test)]
    pub(crate) fn sample(&self, rng: &mut Stream) -> SimTime {
        self.sample_with(rng, &mut LogNormalMemo::default())
    }

    /// Draws one service time, with the log-normal's parameters kept in `memo`.
    pub(crate) fn sample_with(&self, rng: &mut Stream, memo: &mut LogNormalMemo) -> SimTime {
        match self {
            ServiceTime::Constant(t) => *t,
            ServiceTime::Exponential { mean } => rng.exp(*mean as f64) as SimTime,
            ServiceTime::LogNormal { p50, p99 } => {
                let (mu, sigma) = memo.params(*p50, *p99);
                (mu + sigma * rng.std_normal()).exp() as SimTime
            }
            ServiceTime::Mixture(parts) => {
                let total: f64 = parts.iter().map(|p| p.0.max(0.0)).sum();
                let mut x = rng.uniform() * total;
                for (w, d) in parts {
                    let w = w.max(0.0);
                    if x < w {
                        return d.sample_with(rng, memo);
                    }
                    x -= w;
                }
                parts.last().map_or(0, |p| p.1.sample_with(rng, memo))
            }
        }
    }

    /// Checks parameters; returns what is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            ServiceTime::LogNormal { p50, p99 } if p99 < p50 => {
                Err("log-normal p99 is below p50".into())
            }
            ServiceTime::Mixture(parts) if parts.is_empty() => {
                Err("mixture without components".into())
            }
            ServiceTime::Mixture(parts) => {
                if parts.iter().any(|p| !(p.0.is_finite() && p.0 >= 0.0))
                    || parts.iter().all(|p| p.0 <= 0.0)
                {
                    return Err("mixture weights must be non-negative and not all zero".into());
                }
                parts.iter().try_for_each(|p| p.1.validate())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MILLIS;

    /// The memo spares the logarithms of p50 and p99, never changes a draw, and follows a
    /// changed distribution (a promotion swaps the service time).
    #[test]
    fn a_kept_memo_draws_what_fresh_parameters_draw() {
        let a = ServiceTime::LogNormal {
            p50: 10 * MILLIS,
            p99: 100 * MILLIS,
        };
        let b = ServiceTime::LogNormal {
            p50: 3 * MILLIS,
            p99: 7 * MILLIS,
        };
        let (mut kept_rng, mut fresh_rng) = (Stream::new(5, "t"), Stream::new(5, "t"));
        let mut memo = LogNormalMemo::default();
        for d in [&a, &a, &b, &b, &a] {
            assert_eq!(
                d.sample_with(&mut kept_rng, &mut memo),
                d.sample(&mut fresh_rng)
            );
        }
    }

    #[test]
    fn log_normal_hits_its_median_and_p99() {
        let d = ServiceTime::LogNormal {
            p50: 10 * MILLIS,
            p99: 100 * MILLIS,
        };
        let mut rng = Stream::new(3, "t");
        let mut v: Vec<SimTime> = (0..200_000).map(|_| d.sample(&mut rng)).collect();
        v.sort_unstable();
        let p50 = v[100_000] as f64 / MILLIS as f64;
        let p99 = v[198_000] as f64 / MILLIS as f64;
        assert!((p50 - 10.0).abs() < 0.3, "p50 {p50}");
        assert!((p99 - 100.0).abs() < 5.0, "p99 {p99}");
    }
}
