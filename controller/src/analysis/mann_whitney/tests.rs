//! Tests of the Mann-Whitney latency comparison: hand-worked cases, bad input, and U and its
//! tie-corrected variance against brute force over generated histograms.

use super::*;
use proptest::prelude::*;

const INF: f64 = f64::INFINITY;

fn histogram(bounds: &[f64], per_bucket: &[f64]) -> Histogram {
    let mut running = 0.0;
    let cumulative = per_bucket
        .iter()
        .map(|c| {
            running += c;
            running
        })
        .collect();
    Histogram {
        bounds: bounds.to_vec(),
        cumulative,
    }
}

fn buckets(bounds: &[f64], per_bucket: &[f64]) -> Buckets {
    Buckets::from_histogram(&histogram(bounds, per_bucket)).unwrap()
}

/// U by comparing every expanded pair: bucket index stands for the value.
fn brute_force_u(canary: &[u32], primary: &[u32]) -> f64 {
    let expand = |counts: &[u32]| -> Vec<usize> {
        counts
            .iter()
            .enumerate()
            .flat_map(|(i, &c)| std::iter::repeat_n(i, c as usize))
            .collect()
    };
    let (xs, ys) = (expand(canary), expand(primary));
    let mut u = 0.0;
    for x in &xs {
        for y in &ys {
            u += if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            };
        }
    }
    u
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

#[test]
fn hand_worked_three_against_three_with_ties() {
    // le:        10   20  +Inf
    // canary:     0    2    1      n1 = 3
    // primary:    2    1    0      n2 = 3
    // U = 0*(0 + 2/2) + 2*(2 + 1/2) + 1*(3 + 0/2) = 5 + 3 = 8       (of n1 n2 = 9 pairs)
    // mean = 9/2 = 4.5; bucket totals t = 2, 3, 1:
    // sum(t^3 - t) = 6 + 24 + 0 = 30; N = 6, N(N-1) = 30
    // var = 9/12 * (7 - 30/30) = 0.75 * 6 = 4.5, sd = 2.1213
    // z = (8 - 4.5 - 0.5) / 2.1213 = 1.4142; one-sided p = 1 - Phi(1.4142) = 0.0786
    // CLES = 8/9 = 0.8889
    let t = u_test(
        &buckets(&[10.0, 20.0, INF], &[0.0, 2.0, 1.0]),
        &buckets(&[10.0, 20.0, INF], &[2.0, 1.0, 0.0]),
    )
    .unwrap();
    assert_eq!(t.u, 8.0);
    assert_eq!(t.u, brute_force_u(&[0, 2, 1], &[2, 1, 0]));
    assert_eq!(t.mean, 4.5);
    assert!(close(t.sd, 4.5f64.sqrt(), 1e-12));
    assert!(close(t.z, 2.0f64.sqrt(), 1e-12));
    assert!(
        close(t.p_canary_higher, 0.0786, 1e-4),
        "{}",
        t.p_canary_higher
    );
    assert!(close(t.p_two_sided, 0.1573, 1e-4), "{}", t.p_two_sided);
    assert!(close(t.cles, 8.0 / 9.0, 1e-12));
}

#[test]
fn hand_worked_complete_separation_is_high() {
    // le:       1    2    4    8  +Inf
    // canary:   0    0    0   10    0     all between 4 and 8 ms
    // primary:  0   10    0    0    0     all between 1 and 2 ms
    // U = 10 * (10 + 0) = 100 = n1 n2, mean 50, CLES 1
    // ties: 2 * (10^3 - 10) = 1980; N = 20, N(N-1) = 380
    // var = 100/12 * (21 - 1980/380) = 8.3333 * 15.7895 = 131.58, sd = 11.471
    // z = (100 - 50 - 0.5) / 11.471 = 4.3153, two-sided p = 1.6e-5
    // p50: canary 4 + 4 * (5/10) = 6, primary 1 + 1 * (5/10) = 1.5, ratio 4
    let bounds = [1.0, 2.0, 4.0, 8.0, INF];
    let canary = histogram(&bounds, &[0.0, 0.0, 0.0, 10.0, 0.0]);
    let primary = histogram(&bounds, &[0.0, 10.0, 0.0, 0.0, 0.0]);
    let config = LatencyConfig {
        min_count: 10.0,
        ..LatencyConfig::default()
    };
    let j = judge_latency(&config, &canary, &primary);
    let t = j.test.unwrap();
    assert_eq!((t.u, t.mean, t.cles), (100.0, 50.0, 1.0));
    assert!(close(
        t.sd,
        (100.0 / 12.0 * (21.0 - 1980.0 / 380.0f64)).sqrt(),
        1e-12
    ));
    assert!(close(t.z, 4.3153, 1e-4), "{}", t.z);
    assert!(close(t.p_two_sided, 1.6e-5, 0.1e-5), "{}", t.p_two_sided);
    assert_eq!(
        (j.canary_p50, j.primary_p50, j.effect),
        (Some(6.0), Some(1.5), Some(4.0))
    );
    assert_eq!(j.classification, Classification::High);
    assert!(
        j.reason
            .starts_with("canary slower than primary: Mann-Whitney U 100 of 100 pairs, z 4.32"),
        "{}",
        j.reason
    );
}

#[test]
fn hand_worked_identical_histograms_pass_with_u_at_its_mean() {
    // le:       100  200  +Inf
    // both:       3    5    2        n1 = n2 = 10
    // U = 3*(0 + 3/2) + 5*(3 + 5/2) + 2*(8 + 2/2) = 4.5 + 27.5 + 18 = 50 = 10*10/2
    // |U - mean| = 0 < 0.5, so z = 0; each one-sided p is Phi(0.5/sd) > 1/2, two-sided p = 1
    // p99: rank 9.9 > 8 (cumulative below +Inf), so it is the +Inf bucket: 200, Prometheus' answer.
    let bounds = [100.0, 200.0, INF];
    let h = histogram(&bounds, &[3.0, 5.0, 2.0]);
    let config = LatencyConfig {
        min_count: 10.0,
        ..LatencyConfig::default()
    };
    let j = judge_latency(&config, &h, &h);
    let t = j.test.unwrap();
    assert_eq!((t.u, t.mean, t.z, t.cles), (50.0, 50.0, 0.0, 0.5));
    assert_eq!(t.p_two_sided, 1.0);
    assert_eq!((j.canary_p99, j.effect), (Some(200.0), Some(1.0)));
    assert_eq!(j.classification, Classification::Pass);
}

#[test]
fn hand_worked_quantiles_match_histogram_quantile() {
    // Prometheus' own test histogram: le 0.1, 0.2, 1, +Inf with cumulative 50, 70, 110, 120.
    // p50: rank 60 falls in (0.1, 0.2] holding 20, 10 past its start: 0.1 + 0.1 * 10/20 = 0.15
    // p90: rank 108 falls in (0.2, 1] holding 40, 38 past: 0.2 + 0.8 * 38/40 = 0.96
    // p95: rank 114 > 110, the +Inf bucket: the highest finite bound, 1
    // p10: rank 12 in the first bucket, starting at 0: 0.1 * 12/50 = 0.024
    let b = Buckets::from_cumulative(&[0.1, 0.2, 1.0, INF], &[50.0, 70.0, 110.0, 120.0]).unwrap();
    assert!(close(b.quantile(0.5).unwrap(), 0.15, 1e-12));
    assert!(close(b.quantile(0.9).unwrap(), 0.96, 1e-12));
    assert_eq!(b.quantile(0.95), Some(1.0));
    assert!(close(b.quantile(0.1).unwrap(), 0.024, 1e-12));
    assert_eq!(b.quantile(1.5), None);
    assert_eq!(b.quantile(f64::NAN), None);
    // A first bound at or below zero is its own answer, as in Prometheus.
    let negative =
        Buckets::from_cumulative(&[-0.2, -0.1, 0.3, INF], &[10.0, 20.0, 20.0, 30.0]).unwrap();
    assert_eq!(negative.quantile(0.2), Some(-0.2));
}

#[test]
fn buckets_arrive_in_any_order_and_become_per_bucket_counts() {
    let b = Buckets::from_cumulative(&[INF, 0.2, 0.1], &[120.0, 70.0, 50.0]).unwrap();
    assert_eq!(b.bounds(), &[0.1, 0.2, INF]);
    assert_eq!(b.counts(), &[50.0, 20.0, 50.0]);
    assert_eq!(b.total(), 120.0);
}

#[test]
fn malformed_histograms_are_errors_not_panics() {
    let cases: [(&[f64], &[f64]); 8] = [
        (&[1.0, INF], &[1.0]),
        (&[INF], &[5.0]),
        (&[], &[]),
        (&[1.0, 2.0], &[1.0, 2.0]),
        (&[f64::NAN, INF], &[1.0, 2.0]),
        (&[1.0, 1.0, INF], &[1.0, 1.0, 2.0]),
        (&[1.0, INF], &[-1.0, 2.0]),
        (&[1.0, 2.0, INF], &[5.0, 3.0, 6.0]),
    ];
    for (bounds, cumulative) in cases {
        assert!(
            Buckets::from_cumulative(bounds, cumulative).is_err(),
            "{bounds:?} {cumulative:?}"
        );
    }
}

#[test]
fn floating_point_noise_in_cumulative_counts_is_clamped() {
    let b = Buckets::from_cumulative(&[1.0, 2.0, INF], &[100.0, 99.99999999, 150.0]).unwrap();
    assert_eq!(b.counts(), &[100.0, 0.0, 50.0]);
}

#[test]
fn bad_inputs_are_no_data_with_the_reason() {
    let good = histogram(&[1.0, 2.0, INF], &[30.0, 30.0, 0.0]);
    let config = LatencyConfig::default();
    let cases = [
        (
            histogram(&[1.0, 2.0, INF], &[0.0, 0.0, 0.0]),
            "no observations on the canary side",
        ),
        (Histogram::default(), "canary histogram: no buckets"),
        (
            histogram(&[0.001, 0.002, INF], &[30.0, 30.0, 0.0]),
            "different bucket bounds",
        ),
        (
            histogram(&[1.0, 2.0, INF], &[f64::NAN, 1.0, 1.0]),
            "is not a finite count",
        ),
        (
            histogram(&[1.0, 2.0, INF], &[5.0, 5.0, 0.0]),
            "not enough observations to judge latency: canary 10",
        ),
    ];
    for (canary, expected) in cases {
        let j = judge_latency(&config, &canary, &good);
        assert_eq!(j.classification, Classification::NoData);
        assert!(
            j.reason.contains(expected),
            "{} does not contain {expected}",
            j.reason
        );
    }
    let beyond = histogram(&[1.0, 2.0, INF], &[0.0, 0.0, 60.0]);
    let j = judge_latency(&config, &beyond, &beyond);
    assert_eq!(j.classification, Classification::NoData);
    assert!(
        j.reason.contains("above the largest finite bucket bound 2"),
        "{}",
        j.reason
    );
    let j = judge_latency(&config, &good, &Histogram::default());
    assert!(
        j.reason.contains("primary histogram: no buckets"),
        "{}",
        j.reason
    );
    let bad_config = LatencyConfig {
        confidence_level: 1.0,
        ..config
    };
    assert_eq!(
        judge_latency(&bad_config, &good, &good).classification,
        Classification::NoData
    );
}

#[test]
fn a_faster_canary_is_low_only_when_decreases_matter() {
    let bounds = [10.0, 20.0, 40.0, INF];
    let canary = histogram(&bounds, &[80.0, 20.0, 0.0, 0.0]);
    let primary = histogram(&bounds, &[10.0, 30.0, 60.0, 0.0]);
    let increase = judge_latency(&LatencyConfig::default(), &canary, &primary);
    assert_eq!(increase.classification, Classification::Pass);
    assert!(
        increase
            .reason
            .starts_with("canary faster than primary (not a regression)"),
        "{}",
        increase.reason
    );
    let either = LatencyConfig {
        direction: Direction::Either,
        ..LatencyConfig::default()
    };
    assert_eq!(
        judge_latency(&either, &canary, &primary).classification,
        Classification::Low
    );
}

#[test]
fn a_significant_shift_smaller_than_the_allowed_increase_passes() {
    // Thousands of observations make a small shift significant; the effect size gate (p50
    // ratio at least 1.1) keeps it from failing the canary.
    let bounds = [10.0, 20.0, 30.0, INF];
    let canary = histogram(&bounds, &[4800.0, 5200.0, 0.0, 0.0]);
    let primary = histogram(&bounds, &[5200.0, 4800.0, 0.0, 0.0]);
    let j = judge_latency(&LatencyConfig::default(), &canary, &primary);
    assert!(j.test.unwrap().p_two_sided < 0.02);
    assert!(j.effect.unwrap() < 1.1);
    assert_eq!(j.classification, Classification::Pass);
    let cles = LatencyConfig {
        effect: EffectMeasure::Cles,
        allowed_increase: 0.5,
        ..LatencyConfig::default()
    };
    assert_eq!(
        judge_latency(&cles, &canary, &primary).classification,
        Classification::High
    );
}

#[test]
fn absurdly_large_counts_are_no_data_not_nan() {
    let good = histogram(&[1.0, 2.0, INF], &[30.0, 30.0, 0.0]);
    let huge = histogram(&[1.0, 2.0, INF], &[1e200, 1e200, 0.0]);
    let j = judge_latency(&LatencyConfig::default(), &huge, &good);
    assert_eq!(j.classification, Classification::NoData);
    assert!(
        j.reason
            .contains("observations in all; expected at most 2^53"),
        "{}",
        j.reason
    );
}

#[test]
fn all_observations_in_one_bucket_cannot_differ() {
    let bounds = [10.0, INF];
    let h = histogram(&bounds, &[50.0, 0.0]);
    let t = u_test(
        &Buckets::from_histogram(&h).unwrap(),
        &Buckets::from_histogram(&h).unwrap(),
    )
    .unwrap();
    assert_eq!((t.sd, t.z, t.p_two_sided), (0.0, 0.0, 1.0));
}

#[test]
fn the_always_valid_level_spends_the_error_over_looks() {
    let total: f64 = (1..=100_000)
        .map(|k| 1.0 - always_valid_level(0.98, k))
        .sum();
    assert!(total < 0.02 && total > 0.0199, "{total}");
    assert!(close(
        always_valid_level(0.98, 1),
        1.0 - 0.02 * 6.0 / std::f64::consts::PI.powi(2),
        1e-15
    ));
    assert_eq!(always_valid_level(0.98, 0), always_valid_level(0.98, 1));
}

/// Exact permutation distribution of U for tiny pooled samples: its mean and variance.
fn permutation_moments(canary: &[u32], primary: &[u32]) -> (f64, f64) {
    let pooled: Vec<usize> = canary
        .iter()
        .zip(primary)
        .enumerate()
        .flat_map(|(i, (&a, &b))| std::iter::repeat_n(i, (a + b) as usize))
        .collect();
    let n1: usize = canary.iter().map(|&c| c as usize).sum();
    let n = pooled.len();
    let (mut sum, mut sum_sq, mut ways) = (0.0, 0.0, 0.0);
    for mask in 0u32..(1 << n) {
        if mask.count_ones() as usize != n1 {
            continue;
        }
        let mut u = 0.0;
        for i in (0..n).filter(|i| mask & (1 << i) != 0) {
            for j in (0..n).filter(|j| mask & (1 << j) == 0) {
                u += if pooled[i] > pooled[j] {
                    1.0
                } else if pooled[i] == pooled[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
        sum += u;
        sum_sq += u * u;
        ways += 1.0;
    }
    let mean = sum / ways;
    (mean, sum_sq / ways - mean * mean)
}

fn two_histograms(max: u32) -> impl Strategy<Value = (Vec<u32>, Vec<u32>)> {
    (2usize..8).prop_flat_map(move |k| {
        (
            prop::collection::vec(0..max, k),
            prop::collection::vec(0..max, k),
        )
    })
}

fn as_buckets(counts: &[u32]) -> Buckets {
    let mut bounds: Vec<f64> = (1..counts.len()).map(|i| i as f64 * 5.0).collect();
    bounds.push(INF);
    let per_bucket: Vec<f64> = counts.iter().map(|&c| f64::from(c)).collect();
    buckets(&bounds, &per_bucket)
}

proptest! {
    #[test]
    fn u_from_buckets_equals_u_from_expanded_samples((canary, primary) in two_histograms(12)) {
        prop_assume!(canary.iter().sum::<u32>() > 0 && primary.iter().sum::<u32>() > 0);
        let t = u_test(&as_buckets(&canary), &as_buckets(&primary)).unwrap();
        prop_assert_eq!(t.u, brute_force_u(&canary, &primary));
        let swapped = u_test(&as_buckets(&primary), &as_buckets(&canary)).unwrap();
        prop_assert_eq!(t.u + swapped.u, t.n_canary * t.n_primary);
        prop_assert!((t.cles - t.u / (t.n_canary * t.n_primary)).abs() < 1e-12);
        prop_assert!(t.p_two_sided >= 0.0 && t.p_two_sided <= 1.0);
    }

    #[test]
    fn the_tie_corrected_variance_is_the_exact_permutation_variance((canary, primary) in two_histograms(3)) {
        let (n1, n2) = (canary.iter().sum::<u32>(), primary.iter().sum::<u32>());
        prop_assume!(n1 > 0 && n2 > 0 && n1 + n2 <= 12);
        let t = u_test(&as_buckets(&canary), &as_buckets(&primary)).unwrap();
        let (mean, variance) = permutation_moments(&canary, &primary);
        prop_assert!((t.mean - mean).abs() < 1e-9);
        prop_assert!((t.sd * t.sd - variance).abs() < 1e-9, "{} vs {}", t.sd * t.sd, variance);
    }

    #[test]
    fn any_input_is_judged_without_panic_and_bad_input_is_no_data(
        bounds in prop::collection::vec(prop_oneof![Just(INF), Just(f64::NAN), -10.0..100.0f64], 0..6),
        canary in prop::collection::vec(
            prop_oneof![Just(f64::NAN), Just(-1.0), 0.0..1e6f64, 1e100..1e300f64],
            0..6,
        ),
        primary in prop::collection::vec(0.0..1e6f64, 0..6),
    ) {
        let c = Histogram { bounds: bounds.clone(), cumulative: canary };
        let p = Histogram { bounds, cumulative: primary };
        let j = judge_latency(&LatencyConfig::default(), &c, &p);
        if Buckets::from_histogram(&c).is_err() || Buckets::from_histogram(&p).is_err() {
            prop_assert_eq!(j.classification, Classification::NoData);
        }
        if let Some(t) = j.test {
            prop_assert!(!t.u.is_nan() && !t.z.is_nan() && !t.p_two_sided.is_nan());
            prop_assert!(!t.cles.is_nan());
        }
    }
}
