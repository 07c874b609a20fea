//! What the tests of the analysis and of the rollout share: metric fixtures, and the loop of a
//! simulated rollout's steps and looks.

use rand::RngExt;
use rand_pcg::Pcg64Mcg;

use crate::spec::{Duration, MetricCheck, MetricKind};

/// A metric of `kind` read over a minute, with no threshold range, margin or quantile.
pub(crate) fn metric(name: &str, kind: MetricKind) -> MetricCheck {
    MetricCheck {
        name: name.into(),
        kind,
        window: Duration::from_secs(60),
        min: None,
        max: None,
        margin: None,
        quantile: None,
    }
}

/// The two compared built-in metrics under these names, and a custom query named `custom`,
/// which is checked against its threshold in every mode.
pub(crate) fn compared_and_custom(rate: &str, latency: &str) -> Vec<MetricCheck> {
    vec![
        metric(rate, MetricKind::RequestSuccessRate),
        metric(latency, MetricKind::RequestDuration),
        metric(
            "custom",
            MetricKind::Query {
                query: "up".into(),
                variables: Default::default(),
                interval: None,
            },
        ),
    ]
}

/// Flagger's pacing in the simulated rollouts: the canary at 10% to 50% of the traffic.
pub(crate) const WEIGHTS: [u64; 5] = [10, 20, 30, 40, 50];

/// Each step's canary and primary requests a look when `total` requests a look are split by
/// the canary's `weights` (percent).
pub(crate) fn weighted(total: u64, weights: &[u64]) -> Vec<(u64, u64)> {
    weights
        .iter()
        .map(|w| (total * w / 100, total - total * w / 100))
        .collect()
}

/// One look of a simulated rollout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Look {
    /// The first look of its step: the evidence begins a step, the cumulative counts restart.
    pub(crate) step_begins: bool,
    /// Canary and primary requests this look adds.
    pub(crate) canary: u64,
    pub(crate) primary: u64,
}

/// Runs `look` at each of `looks` looks of each step (its requests a look given by `steps`),
/// until it returns `Some`, which ends the rollout and is returned.
pub(crate) fn each_look<T>(
    steps: &[(u64, u64)],
    looks: usize,
    mut look: impl FnMut(Look) -> Option<T>,
) -> Option<T> {
    steps.iter().find_map(|&(canary, primary)| {
        (0..looks).find_map(|i| {
            look(Look {
                step_begins: i == 0,
                canary,
                primary,
            })
        })
    })
}

/// Events among `n` trials of probability `p` each: exact, by geometric gaps between events
/// (cheap at the small rates simulated here: failures, slow requests).
pub(crate) fn binomial(rng: &mut Pcg64Mcg, n: u64, p: f64) -> u64 {
    let log_q = (1.0 - p).ln();
    let (mut events, mut at) = (0, 0u64);
    loop {
        let u = 1.0 - rng.random::<f64>();
        at += (u.ln() / log_q).floor() as u64 + 1;
        if at > n {
            return events;
        }
        events += 1;
    }
}
