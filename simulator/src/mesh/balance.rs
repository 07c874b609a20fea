//! Load balancing over a cluster's hosts, as Envoy does it: the healthy candidates are the
//! endpoints in the load-balancing set minus the hosts outlier detection has ejected, with Envoy's
//! panic mode (balance over all hosts when too few are healthy); `ROUND_ROBIN`, `RANDOM`,
//! `LEAST_REQUEST` (power of two choices on active requests) and Linkerd's peak-EWMA (two distinct
//! choices on decayed latency times load); and a retry avoids hosts already tried, re-picking up
//! to five times (six picks) as Envoy does under Istio's `previous_hosts` predicate.

use super::cluster::Host;
use super::{ClusterId, Mesh, PodId, VersionId};
use crate::engine::{MILLIS, SECONDS, SimTime};
use crate::manifest::LbPolicy;

/// Linkerd's peak-EWMA settings for a profile's balancer: decay 10 s, default RTT 30 ms
/// (linkerd2-proxy `linkerd/app/outbound/src/http/logical/profile.rs`, `DEFAULT_EWMA`).
const EWMA_DECAY: f64 = 10.0 * SECONDS as f64;
const DEFAULT_RTT: f64 = 30.0 * MILLIS as f64;

// Linkerd's default balancer wraps each endpoint in Tower's `PeakEwma` (linkerd2-proxy
// `linkerd/proxy/balance/src/lib.rs`, `NewPeakEwma`; tower `src/load/peak_ewma.rs`); the
// `linkerd/ewma` crate serves only the penalty estimator. Tower decays the stored estimate each
// time the balancer reads it, so a sample is compared with, and averaged from, the estimate as
// of the last read; here it is the estimate decayed to the sample's time, which differs only when
// the host was not read just before it answered.
impl Host {
    /// A new estimator, as Tower's `PeakEwma::new` makes one when the endpoint is discovered:
    /// the default RTT as of `now`.
    pub(super) fn join_balancer(&mut self, now: SimTime) {
        self.ewma = DEFAULT_RTT;
        self.ewma_at = now;
    }

    /// Peak-EWMA: a response slower than the estimate decayed to now replaces it; a faster one
    /// is averaged in with a 10 s decay.
    pub(super) fn observe_latency(&mut self, rtt: f64, now: SimTime) {
        if self.ewma_at_time(now) < rtt {
            self.ewma = rtt;
        } else if now > self.ewma_at {
            let w = (-((now - self.ewma_at) as f64) / EWMA_DECAY).exp();
            self.ewma = self.ewma * w + rtt * (1.0 - w);
        } else {
            // A sample at the estimate's own time is dropped, as `add` does.
            return;
        }
        self.ewma_at = now;
    }

    /// The estimate decayed towards zero for the time since it was last updated, as the
    /// balancer reads it when it picks: a host that has not answered for a while looks cheaper
    /// and is tried again.
    pub(super) fn ewma_at_time(&self, now: SimTime) -> f64 {
        if now <= self.ewma_at {
            return self.ewma;
        }
        self.ewma * (-((now - self.ewma_at) as f64) / EWMA_DECAY).exp()
    }
}

/// Two distinct indices below `n` (n >= 2) in random order, as linkerd2-proxy's p2c
/// (`linkerd/pool/p2c/src/lib.rs`, `gen_pair`) draws them.
pub(super) fn distinct_pair(rng: &mut crate::engine::Stream, n: u32) -> (u32, u32) {
    let a = rng.below(n);
    let mut b = rng.below(n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

impl Mesh {
    /// What the balancer learns from a response of host `h` of cluster `ci`: its latency
    /// (peak-EWMA), and its success or failure (Linkerd's failure accrual, Envoy's outlier
    /// detection, which may eject it); `local_failure` when no response came back.
    pub(super) fn record_response(
        &mut self,
        ci: ClusterId,
        h: u32,
        sent: SimTime,
        code: u16,
        local_failure: bool,
    ) {
        let now = self.now();
        let (client, version) = (self.clusters[ci].client, self.clusters[ci].version);
        let cl = &mut self.clusters[ci];
        if cl.policy.lb == LbPolicy::PeakEwma {
            cl.hosts[h as usize].observe_latency(now.saturating_sub(sent) as f64, now);
        }
        if let Some(acc) = cl.accrual {
            let rng = &mut cl.lb_rng;
            cl.hosts[h as usize]
                .accrual
                .on_result(code >= 500, now, &acc, rng);
        }
        let change = match cl.od.as_mut() {
            Some(od) => od.on_result(h as usize, code, local_failure, now),
            None => Default::default(),
        };
        if change != Default::default() {
            let c = self.telemetry.proxy_mut(client.0, version.0);
            c.ejections_enforced += u64::from(change.ejected);
            c.ejections_overflow += u64::from(change.overflow);
            c.ejections_detected += u64::from(change.detected);
            if change.membership_changed() {
                self.rebuild_candidates(ci);
            }
        }
    }

    /// Pod `p`'s endpoint is (back) in discovery: Linkerd's balancer builds a fresh estimator for
    /// it, holding the default RTT from now.
    pub(super) fn endpoint_joined(&mut self, p: PodId) {
        let now = self.now();
        let v = self.pods[p].version;
        for ci in self.cluster_ids() {
            if !self.cluster_holds(ci, v) {
                continue;
            }
            let cl = &mut self.clusters[ci];
            if let Some(h) = cl.pods.iter().position(|&x| x == p) {
                cl.hosts[h].join_balancer(now);
            }
        }
    }

    pub(super) fn endpoints_changed(&mut self, v: VersionId) {
        for ci in self.cluster_ids() {
            if self.cluster_holds(ci, v) {
                self.rebuild_candidates(ci);
            }
        }
    }

    pub(super) fn rebuild_candidates(&mut self, ci: ClusterId) {
        self.trace_outlier(ci);
        let cl = &mut self.clusters[ci];
        cl.in_lb.clear();
        cl.candidates.clear();
        for (h, &p) in cl.pods.iter().enumerate() {
            let pod = &self.pods[p];
            let in_eds = pod.in_lb && !pod.removed;
            if let Some(od) = cl.od.as_mut() {
                od.set_in_eds(h, in_eds);
            }
            if in_eds {
                cl.in_lb.push(h as u32);
                if !cl.od.as_ref().is_some_and(|o| o.is_ejected(h)) {
                    cl.candidates.push(h as u32);
                }
            }
        }
    }

    pub(super) fn pick_host(&mut self, ci: ClusterId, tried: &[u32; 4], ntried: u8) -> Option<u32> {
        let now = self.now();
        let cl = &mut self.clusters[ci];
        // Panic mode (Envoy) balances over all hosts when too few are healthy; Istio sets the
        // threshold to 0 whenever outlier detection is configured.
        let min_health = cl.od.as_ref().map_or(50, |o| o.cfg.min_health_percent);
        let panic =
            (cl.candidates.len() as u64) * 100 < u64::from(min_health) * cl.in_lb.len() as u64;
        let mut list: &Vec<u32> = if panic { &cl.in_lb } else { &cl.candidates };
        if cl.accrual.is_some() {
            cl.scratch.clear();
            for &h in list {
                if cl.hosts[h as usize].accrual.available(now) {
                    cl.scratch.push(h);
                }
            }
            list = &cl.scratch;
        }
        let n = list.len() as u32;
        if n == 0 {
            return None;
        }
        let hosts = &cl.hosts;
        let (rr, rng) = (&mut cl.rr, &mut cl.lb_rng);
        let mut pick = || match cl.policy.lb {
            LbPolicy::RoundRobin => {
                *rr = rr.wrapping_add(1);
                list[(*rr % n) as usize]
            }
            LbPolicy::Random => list[rng.below(n) as usize],
            LbPolicy::LeastRequest => {
                let a = list[rng.below(n) as usize];
                let b = list[rng.below(n) as usize];
                if hosts[b as usize].active < hosts[a as usize].active {
                    b
                } else {
                    a
                }
            }
            LbPolicy::PeakEwma if n == 1 => list[0],
            LbPolicy::PeakEwma => {
                let (i, j) = distinct_pair(rng, n);
                let (a, b) = (list[i as usize], list[j as usize]);
                // Cost is the decayed latency times the requests in flight plus one; ties go
                // to the first draw.
                let cost = |h: u32| {
                    let x = &hosts[h as usize];
                    x.ewma_at_time(now) * f64::from(x.active + 1)
                };
                if cost(a) <= cost(b) { a } else { b }
            }
        };
        let mut choice = pick();
        // Envoy's balancer picks up to hostSelectionRetryCount() + 1 times while the
        // previous_hosts predicate rejects the pick (Istio: host_selection_retry_max_attempts 5),
        // then keeps the last one: 5 re-picks.
        for _ in 0..5 {
            if ntried == 0 || n == 1 || !tried[..usize::from(ntried.min(4))].contains(&choice) {
                break;
            }
            choice = pick();
        }
        Some(choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{MILLIS, Stream};
    use crate::mesh::cluster::new_host;

    /// linkerd2-proxy `linkerd/pool/p2c/src/lib.rs` (`gen_pair`): the two candidates are
    /// always distinct endpoints, each index equally likely.
    #[test]
    fn linkerd_two_choices_are_distinct_endpoints() {
        let mut rng = Stream::new(3, "p2c");
        for n in [2u32, 3, 5, 17] {
            let mut seen = vec![0u32; n as usize];
            for _ in 0..40_000 {
                let (a, b) = distinct_pair(&mut rng, n);
                assert!(a < n && b < n && a != b, "n={n}: ({a}, {b})");
                seen[a as usize] += 1;
                seen[b as usize] += 1;
            }
            // Each index is in a pair with probability 2/n; allow about four standard errors.
            let expect = 80_000.0 / f64::from(n);
            for (i, &k) in seen.iter().enumerate() {
                assert!(
                    (f64::from(k) - expect).abs() < 0.07 * expect,
                    "n={n} index {i}: {k}"
                );
            }
        }
    }

    /// Tower's `PeakEwma` (tower `src/load/peak_ewma.rs`, `RttEstimate`), which linkerd2-proxy's
    /// balancer uses: the balancer reads the estimate decayed to the pick time, and a faster
    /// sample is averaged in with the 10 s decay while a slower one replaces it.
    #[test]
    fn linkerd_latency_estimate_decays_to_the_pick_time() {
        let ms = MILLIS as f64;
        let s = SECONDS;
        let cases = [
            // (estimate, updated at, read at, expected)
            (100.0 * ms, 0, 0, 100.0 * ms),
            (100.0 * ms, 0, 10 * s, 100.0 * ms * (-1.0f64).exp()),
            (100.0 * ms, 5 * s, 25 * s, 100.0 * ms * (-2.0f64).exp()),
            (100.0 * ms, 7 * s, 3 * s, 100.0 * ms),
        ];
        for (ewma, at, now, want) in cases {
            let mut h = new_host(0);
            h.ewma = ewma;
            h.ewma_at = at;
            let got = h.ewma_at_time(now);
            assert!(
                (got - want).abs() < 1e-6 * want,
                "{at} -> {now}: {got} vs {want}"
            );
        }
        // A 50 ms sample 30 s after a 200 ms peak is a new peak: the peak has decayed to 10 ms.
        let mut h = new_host(0);
        h.ewma = 200.0 * ms;
        h.observe_latency(50.0 * ms, 30 * s);
        assert_eq!((h.ewma, h.ewma_at), (50.0 * ms, 30 * s));
        // A faster sample is averaged in with the 10 s decay.
        let mut h = new_host(0);
        h.ewma = 100.0 * ms;
        h.observe_latency(0.0, 10 * s);
        assert!((h.ewma - 100.0 * ms * (-1.0f64).exp()).abs() < 1e-3);
    }

    /// A Linkerd mesh of one version with `pods` pods and almost no traffic, run to `until`.
    fn quiet_linkerd_mesh(pods: u32, until: SimTime) -> Mesh {
        use crate::mesh::VersionConfig;
        use crate::mesh::{Behaviour, ClientConfig, DataPlane, MeshConfig, ServiceConfig};
        let cfg = MeshConfig {
            seed: 1,
            data_plane: DataPlane::Linkerd,
            services: vec![ServiceConfig::new(
                "podinfo",
                vec![VersionConfig::new("primary", pods, Behaviour::default())],
            )],
            clients: vec![ClientConfig::new("client", "podinfo", 0.01)],
            ..Default::default()
        };
        let mut mesh = Mesh::new(cfg).expect("mesh builds");
        mesh.run_until(until);
        mesh
    }

    /// The balancer's pick itself, not only `distinct_pair`: with two endpoints, linkerd2-proxy's
    /// p2c compares the loads of both on every pick (`p2c_ready_index` over `gen_pair`), so the
    /// cheaper one always wins; two independent draws would pick the dearer one a quarter of the
    /// time. And it reads each cost decayed to the pick time (Tower's `PeakEwma::load`), so an
    /// old peak loses to a fresh smaller estimate.
    #[test]
    fn linkerd_pick_compares_two_distinct_endpoints_at_their_decayed_cost() {
        let ms = MILLIS as f64;
        let now = 30 * SECONDS;
        let cases = [
            // ((estimate, updated at) of hosts 0 and 1, the host every pick takes)
            ([(1.0 * ms, now), (100.0 * ms, now)], 0),
            ([(100.0 * ms, now), (1.0 * ms, now)], 1),
            // 100 ms three decay times old reads 100 * e^-3, about 5 ms: cheaper than 20 ms.
            ([(100.0 * ms, 0), (20.0 * ms, now)], 0),
            ([(20.0 * ms, now), (100.0 * ms, 0)], 1),
        ];
        for (estimates, want) in cases {
            let mut mesh = quiet_linkerd_mesh(2, now);
            let ids: Vec<ClusterId> = mesh.cluster_ids().collect();
            for ci in ids {
                for (h, &(ewma, at)) in estimates.iter().enumerate() {
                    let host = &mut mesh.clusters[ci].hosts[h];
                    (host.ewma, host.ewma_at, host.active) = (ewma, at, 0);
                }
                for _ in 0..200 {
                    let got = mesh.pick_host(ci, &[0; 4], 0);
                    assert_eq!(got, Some(want), "{estimates:?} on cluster {}", ci.0);
                }
            }
        }
    }

    /// Review 17, finding 3. Linkerd's balancer wraps each endpoint in a peak-EWMA estimator
    /// made when the endpoint is discovered, holding the default RTT (30 ms) as of that moment
    /// (linkerd2-proxy `linkerd/proxy/balance/src/lib.rs`, `NewPeakEwma::new_service`, over
    /// Tower's `PeakEwma::new`): a pod added by a scale-up, and a pod whose endpoint left
    /// discovery when it crashed and came back when it restarted. Were such an estimate dated
    /// from time 0, read decayed to the pick time it would have all but vanished (30 ms * e^-6
    /// after 60 s): the pod would look free and win every pair until it answered.
    #[test]
    fn a_linkerd_endpoint_starts_at_the_default_rtt_when_it_joins() {
        use crate::mesh::Action;
        let cases = [
            // (what happens at 60 s, the pod whose endpoint joins again)
            (
                Action::Scale {
                    version: VersionId(0),
                    pods: 3,
                },
                2,
            ),
            (
                Action::CrashPod {
                    version: VersionId(0),
                    pod: 0,
                    restart_after: Some(SECONDS),
                },
                0,
            ),
        ];
        for (action, pod) in cases {
            // Too few requests for the pod to answer one before it is read.
            let mut mesh = quiet_linkerd_mesh(2, 60 * SECONDS);
            mesh.apply(action.clone()).unwrap();
            mesh.run_until(65 * SECONDS);
            let now = mesh.now();
            let p = mesh.versions[VersionId(0)].pods[pod];
            let mut seen = 0;
            for cl in &mesh.clusters {
                let Some(h) = cl.pods.iter().position(|&x| x == p) else {
                    continue;
                };
                let est = cl.hosts[h].ewma_at_time(now);
                // Joined within the last 5 s: at least the default decayed for 10 s.
                assert!(
                    est >= DEFAULT_RTT * (-1.0f64).exp(),
                    "{action:?}: the endpoint's estimate {est} ns"
                );
                seen += 1;
            }
            assert_eq!(
                seen, 2,
                "{action:?}: its subset's and the whole service's cluster"
            );
        }
    }
}
