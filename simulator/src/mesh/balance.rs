//! Load balancing over a cluster's hosts, as Envoy does it: the healthy candidates are the
//! endpoints in the load-balancing set minus the hosts outlier detection has ejected, with Envoy's
//! panic mode (balance over all hosts when too few are healthy); `ROUND_ROBIN`, `RANDOM`,
//! `LEAST_REQUEST` (power of two choices on active requests) and Linkerd's peak-EWMA (two choices on
//! latency times load); and a retry avoids hosts already tried, re-picking up to five times as Envoy's
//! `previous_hosts` predicate does.

use super::cluster::Host;
use super::{ClusterId, Mesh, VersionId};
use crate::engine::{SECONDS, SimTime};
use crate::manifest::LbPolicy;

impl Host {
    /// Linkerd's peak-EWMA: a slower response raises the estimate at once, faster ones pull it
    /// down with a 10 s decay.
    pub(super) fn observe_latency(&mut self, rtt: f64, now: SimTime) {
        if rtt > self.ewma {
            self.ewma = rtt;
        } else {
            let w = (-(now.saturating_sub(self.ewma_at) as f64) / (10.0 * SECONDS as f64)).exp();
            self.ewma = self.ewma * w + rtt * (1.0 - w);
        }
        self.ewma_at = now;
    }
}

impl Mesh {
    /// What the balancer learns from a response of host `h` of cluster `ci`: its latency
    /// (peak-EWMA), and its success or failure (Linkerd's failure accrual, Envoy's outlier
    /// detection, which may eject it).
    pub(super) fn record_response(&mut self, ci: ClusterId, h: u32, sent: SimTime, code: u16) {
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
            Some(od) => od.on_response(h as usize, code, now),
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

    pub(super) fn endpoints_changed(&mut self, v: VersionId) {
        for ci in self.cluster_ids() {
            if self.clusters[ci].version == v {
                self.rebuild_candidates(ci);
            }
        }
    }

    pub(super) fn rebuild_candidates(&mut self, ci: ClusterId) {
        let cl = &mut self.clusters[ci];
        let ver = &self.versions[cl.version];
        cl.in_lb.clear();
        cl.candidates.clear();
        for (h, &p) in ver.pods.iter().enumerate() {
            let pod = &self.pods[p];
            if pod.in_lb && !pod.removed {
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
            LbPolicy::PeakEwma => {
                let a = list[rng.below(n) as usize];
                let b = list[rng.below(n) as usize];
                let cost = |h: u32| {
                    let x = &hosts[h as usize];
                    x.ewma * f64::from(x.active + 1)
                };
                if cost(b) < cost(a) { b } else { a }
            }
        };
        let mut choice = pick();
        // Envoy's previous_hosts predicate re-picks up to 5 times to avoid a host already tried.
        for _ in 1..5 {
            if ntried == 0 || n == 1 || !tried[..usize::from(ntried.min(4))].contains(&choice) {
                break;
            }
            choice = pick();
        }
        Some(choice)
    }
}
