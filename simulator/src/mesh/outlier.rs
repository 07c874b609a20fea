//! Envoy outlier detection (as Istio configures it) and Linkerd failure accrual, as small state
//! machines per upstream cluster. They follow Envoy's outlier-detection architecture page and
//! `source/common/upstream/outlier_detection_impl.cc` (consecutive 5xx and gateway errors, the
//! sweep interval, ejection time growing with each ejection up to the maximum, and
//! `maxEjectionPercent` over the hosts in EDS), Istio's translation of a DestinationRule's
//! `outlierDetection` into that config, and linkerd2-proxy's consecutive-failure accrual.

use super::trace::trace;
use super::{ClusterId, Mesh};
use crate::engine::{SECONDS, SimTime, Stream};
use crate::manifest::OutlierDetectionSpec;

/// Which `maxEjectionPercent` rule to apply (Envoy changed it across versions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EjectionRule {
    /// Current Envoy: eject only if `100*(ejected+1)/hosts <= max` (PR #27624/#27909).
    #[default]
    Current,
    /// Current rule, plus one host may always be ejected (`always_eject_one_host`, Envoy 1.31).
    AlwaysEjectOneHost,
    /// Before PR #27624: eject if `100*ejected/hosts < max`, checked before ejecting.
    Legacy,
}

/// Success-rate detector settings (Istio leaves it unenforced).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SuccessRateDetector {
    /// `success_rate_minimum_hosts` (5).
    pub(crate) minimum_hosts: u32,
    /// `success_rate_request_volume` (100).
    pub(crate) request_volume: u32,
    /// `success_rate_stdev_factor` / 1000 (1.9).
    pub(crate) stdev_factor: f64,
    /// `enforcing_success_rate` percentage.
    pub(crate) enforcing: u32,
}

impl Default for SuccessRateDetector {
    fn default() -> Self {
        Self {
            minimum_hosts: 5,
            request_volume: 100,
            stdev_factor: 1.9,
            enforcing: 100,
        }
    }
}

/// Failure-percentage detector settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FailurePercentageDetector {
    /// `failure_percentage_threshold` (85).
    pub(crate) threshold: u32,
    /// `failure_percentage_minimum_hosts` (5).
    pub(crate) minimum_hosts: u32,
    /// `failure_percentage_request_volume` (50).
    pub(crate) request_volume: u32,
    /// `enforcing_failure_percentage` percentage.
    pub(crate) enforcing: u32,
}

impl Default for FailurePercentageDetector {
    fn default() -> Self {
        Self {
            threshold: 85,
            minimum_hosts: 5,
            request_volume: 50,
            enforcing: 100,
        }
    }
}

/// Resolved outlier-detection settings.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    /// `consecutive_5xx`; 0 disables.
    pub consecutive_5xx: u32,
    /// `consecutive_gateway_failure` (enforced); 0 disables.
    pub consecutive_gateway: u32,
    /// Interval between ticks.
    pub(crate) interval: SimTime,
    /// Base ejection time.
    pub(crate) base_ejection_time: SimTime,
    /// Cap of the ejection time.
    pub(crate) max_ejection_time: SimTime,
    /// `max_ejection_percent`.
    pub(crate) max_ejection_percent: u32,
    /// Panic threshold in percent (Istio: 0, panic off).
    pub min_health_percent: u32,
    /// Optional success-rate detector.
    pub success_rate: Option<SuccessRateDetector>,
    /// Optional failure-percentage detector.
    pub failure_percentage: Option<FailurePercentageDetector>,
    /// Which max-ejection-percent rule.
    pub(crate) rule: EjectionRule,
    /// `split_external_local_origin_errors`: the `consecutive_local_origin_failure` threshold
    /// (enforced), local-origin errors then kept out of the 5xx and gateway counts.
    pub(crate) consecutive_local_origin: Option<u32>,
}

impl OutlierConfig {
    /// Istio's translation of a DestinationRule `outlierDetection` (defaults where absent).
    pub fn from_istio(spec: &OutlierDetectionSpec, rule: EjectionRule) -> Self {
        let base = spec.base_ejection_time.unwrap_or(30 * SECONDS);
        Self {
            consecutive_5xx: spec.consecutive_5xx_errors.unwrap_or(5),
            consecutive_gateway: spec.consecutive_gateway_errors.unwrap_or(0),
            interval: spec.interval.unwrap_or(10 * SECONDS).max(1),
            base_ejection_time: base,
            max_ejection_time: (300 * SECONDS).max(base),
            max_ejection_percent: spec.max_ejection_percent.filter(|p| *p > 0).unwrap_or(10),
            min_health_percent: spec.min_health_percent.unwrap_or(0),
            success_rate: None,
            failure_percentage: None,
            rule,
            // Istio sets the threshold only when above 0; Envoy's default is 5, enforced 100%.
            consecutive_local_origin: spec.split_external_local_origin_errors.then(|| {
                spec.consecutive_local_origin_failures
                    .filter(|n| *n > 0)
                    .unwrap_or(5)
            }),
        }
    }
}

/// Per-host outlier state.
#[derive(Clone, Debug, Default)]
pub struct HostOutlier {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local_origin: u32,
    /// Whether the host is ejected.
    pub(crate) ejected: bool,
    backoff: u32,
    last_ejection: SimTime,
    last_unejection: Option<SimTime>,
    cur_total: u32,
    cur_ok: u32,
    prev_total: u32,
    prev_ok: u32,
    /// Enforced ejections so far.
    pub times_ejected: u32,
    active: bool,
}

/// What a call changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutlierChange {
    /// Ejections enforced.
    pub ejected: u32,
    /// Ejections refused by max-ejection-percent.
    pub overflow: u32,
    /// Ejections detected (enforced or not).
    pub detected: u32,
    /// Hosts returned to service.
    pub unejected: u32,
}

impl OutlierChange {
    /// Whether the set of usable hosts changed.
    pub(crate) fn membership_changed(&self) -> bool {
        self.ejected > 0 || self.unejected > 0
    }
}

/// Outlier detection for one cluster.
#[derive(Clone, Debug)]
pub struct OutlierDetector {
    /// Settings.
    pub(crate) cfg: OutlierConfig,
    hosts: Vec<HostOutlier>,
    ejected: u32,
    /// Ejections (host, for how long) and un-ejections (host, None) since the mesh last read
    /// them for its trace ([`OutlierDetector::take_changes`]).
    changes: Vec<(u32, Option<SimTime>)>,
}

impl OutlierDetector {
    /// A detector for `hosts` hosts.
    pub fn new(cfg: OutlierConfig, hosts: usize) -> Self {
        Self {
            cfg,
            hosts: vec![
                HostOutlier {
                    active: true,
                    ..Default::default()
                };
                hosts
            ],
            ejected: 0,
            changes: Vec::new(),
        }
    }

    /// Adds a host (scale-up); returns its index.
    pub(crate) fn add_host(&mut self) -> usize {
        self.hosts.push(HostOutlier {
            active: true,
            ..Default::default()
        });
        self.hosts.len() - 1
    }

    /// Takes a host out of the cluster (scale-down); an ejected host stops counting.
    pub(crate) fn remove_host(&mut self, h: usize) {
        if let Some(x) = self.hosts.get_mut(h) {
            if x.ejected {
                x.ejected = false;
                self.ejected -= 1;
            }
            x.active = false;
        }
    }

    /// Follows EDS: a host that leaves the endpoint set (a crashed or deleted pod) stops counting
    /// and frees its ejection slot; one that joins (again) starts with a fresh record, as Envoy
    /// drops a removed host's monitor and makes a new one for an added host.
    pub fn set_in_eds(&mut self, h: usize, in_eds: bool) {
        match self.hosts.get(h).map(|x| x.active) {
            Some(true) if !in_eds => self.remove_host(h),
            Some(false) if in_eds => {
                self.hosts[h] = HostOutlier {
                    active: true,
                    ..Default::default()
                };
            }
            _ => {}
        }
    }

    /// Whether host `h` is ejected.
    #[inline]
    pub fn is_ejected(&self, h: usize) -> bool {
        self.hosts[h].ejected
    }

    /// Number of ejected hosts.
    pub fn ejected_count(&self) -> u32 {
        self.ejected
    }

    /// The ejections (host, duration) and un-ejections (host, None) since the last call.
    pub(crate) fn take_changes(&mut self) -> Vec<(u32, Option<SimTime>)> {
        std::mem::take(&mut self.changes)
    }

    /// State of host `h`.
    pub fn host(&self, h: usize) -> &HostOutlier {
        &self.hosts[h]
    }

    fn active_hosts(&self) -> u32 {
        self.hosts.iter().filter(|h| h.active).count() as u32
    }

    /// Records the end of an attempt at host `h`: `local_failure` when no response came back
    /// (a connect failure, a reset, a timeout: Envoy's local-origin errors). Without the split
    /// those count as their code (503, 504); with it (envoy `outlier_detection_impl.cc`,
    /// `putResultWithLocalExternalSplit`) they count only towards the consecutive local-origin
    /// failures, and any response resets that count before its code is counted.
    pub fn on_result(
        &mut self,
        h: usize,
        code: u16,
        local_failure: bool,
        now: SimTime,
    ) -> OutlierChange {
        let Some(threshold) = self.cfg.consecutive_local_origin else {
            return self.on_response(h, code, now);
        };
        if !local_failure {
            self.hosts[h].consecutive_local_origin = 0;
            return self.on_response(h, code, now);
        }
        let mut change = OutlierChange::default();
        let host = &mut self.hosts[h];
        host.consecutive_local_origin += 1;
        if host.consecutive_local_origin == threshold {
            host.consecutive_local_origin = 0;
            self.eject(h, now, 100, &mut change, None);
        }
        change
    }

    /// Records a response (or a local-origin failure mapped to 503/504) from host `h`.
    pub fn on_response(&mut self, h: usize, code: u16, now: SimTime) -> OutlierChange {
        let mut change = OutlierChange::default();
        let host = &mut self.hosts[h];
        host.cur_total += 1;
        if code >= 500 {
            if (502..=504).contains(&code) {
                host.consecutive_gateway += 1;
            } else {
                host.consecutive_gateway = 0;
            }
            host.consecutive_5xx += 1;
            let gw = self.cfg.consecutive_gateway > 0
                && host.consecutive_gateway == self.cfg.consecutive_gateway;
            let fx =
                self.cfg.consecutive_5xx > 0 && host.consecutive_5xx == self.cfg.consecutive_5xx;
            if gw {
                self.hosts[h].consecutive_gateway = 0;
                self.eject(h, now, 100, &mut change, None);
            }
            if fx {
                self.hosts[h].consecutive_5xx = 0;
                self.eject(h, now, 100, &mut change, None);
            }
        } else {
            host.cur_ok += 1;
            host.consecutive_5xx = 0;
            host.consecutive_gateway = 0;
        }
        change
    }

    fn eject(
        &mut self,
        h: usize,
        now: SimTime,
        enforcing: u32,
        change: &mut OutlierChange,
        rng: Option<&mut Stream>,
    ) {
        if self.hosts[h].ejected || !self.hosts[h].active {
            return;
        }
        // Envoy compares the percentage as a real number: in integers, without rounding, that is
        // `100 * ejected <= max * hosts`, over the hosts in EDS.
        let n = u64::from(self.active_hosts().max(1));
        let max = u64::from(self.cfg.max_ejection_percent);
        let e = u64::from(self.ejected);
        let allowed = match self.cfg.rule {
            EjectionRule::Current => 100 * (e + 1) <= max * n,
            EjectionRule::AlwaysEjectOneHost => 100 * (e + 1) <= max * n || e == 0,
            EjectionRule::Legacy => 100 * e < max * n,
        };
        if !allowed {
            change.overflow += 1;
            return;
        }
        change.detected += 1;
        let enforced = enforcing >= 100 || rng.is_some_and(|r| r.below(100) < enforcing);
        if !enforced {
            return;
        }
        let cfg = &self.cfg;
        let host = &mut self.hosts[h];
        host.ejected = true;
        host.times_ejected += 1;
        if u64::from(host.backoff).saturating_mul(cfg.base_ejection_time)
            < cfg.max_ejection_time.saturating_add(cfg.base_ejection_time)
        {
            host.backoff += 1;
        }
        host.last_ejection = now;
        let dur = cfg
            .base_ejection_time
            .saturating_mul(u64::from(host.backoff))
            .min(cfg.max_ejection_time);
        self.changes.push((h as u32, Some(dur)));
        self.ejected += 1;
        change.ejected += 1;
    }

    /// The interval timer: un-eject hosts whose time is up, swap the success-rate buckets, run the
    /// success-rate and failure-percentage detectors, and decay the backoff of healthy hosts.
    pub fn tick(&mut self, now: SimTime, rng: &mut Stream) -> OutlierChange {
        let mut change = OutlierChange::default();
        for (h, host) in self.hosts.iter_mut().enumerate().filter(|(_, h)| h.active) {
            if host.ejected {
                let dur = (self
                    .cfg
                    .base_ejection_time
                    .saturating_mul(u64::from(host.backoff)))
                .min(self.cfg.max_ejection_time);
                if now.saturating_sub(host.last_ejection) >= dur {
                    host.ejected = false;
                    host.last_unejection = Some(now);
                    host.consecutive_5xx = 0;
                    host.consecutive_gateway = 0;
                    host.consecutive_local_origin = 0;
                    self.ejected -= 1;
                    self.changes.push((h as u32, None));
                    change.unejected += 1;
                }
            }
            host.prev_total = host.cur_total;
            host.prev_ok = host.cur_ok;
            host.cur_total = 0;
            host.cur_ok = 0;
        }
        if let Some(sr) = self.cfg.success_rate {
            let valid: Vec<usize> = (0..self.hosts.len())
                .filter(|&i| {
                    let h = &self.hosts[i];
                    h.active && !h.ejected && h.prev_total >= sr.request_volume
                })
                .collect();
            if valid.len() as u32 >= sr.minimum_hosts && !valid.is_empty() {
                let rates: Vec<f64> = valid
                    .iter()
                    .map(|&i| {
                        100.0 * f64::from(self.hosts[i].prev_ok)
                            / f64::from(self.hosts[i].prev_total)
                    })
                    .collect();
                let mean = rates.iter().sum::<f64>() / rates.len() as f64;
                let var =
                    rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64;
                let threshold = mean - sr.stdev_factor * var.sqrt();
                for (k, &i) in valid.iter().enumerate() {
                    if rates[k] < threshold {
                        self.eject(i, now, sr.enforcing, &mut change, Some(rng));
                    }
                }
            }
        }
        if let Some(fp) = self.cfg.failure_percentage {
            let valid: Vec<usize> = (0..self.hosts.len())
                .filter(|&i| {
                    let h = &self.hosts[i];
                    h.active && !h.ejected && h.prev_total >= fp.request_volume
                })
                .collect();
            if valid.len() as u32 >= fp.minimum_hosts {
                for i in valid {
                    let h = &self.hosts[i];
                    let failed =
                        100.0 * f64::from(h.prev_total - h.prev_ok) / f64::from(h.prev_total);
                    if failed >= f64::from(fp.threshold) {
                        self.eject(i, now, fp.enforcing, &mut change, Some(rng));
                    }
                }
            }
        }
        for host in self.hosts.iter_mut() {
            if !host.ejected
                && host.backoff > 0
                && host
                    .last_unejection
                    .is_some_and(|t| now.saturating_sub(t) >= self.cfg.interval)
            {
                host.backoff -= 1;
            }
        }
        change
    }
}

/// Linkerd consecutive-failure accrual settings (annotation defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AccrualConfig {
    /// `max-failures` (7).
    pub(crate) max_failures: u32,
    /// `min-penalty` (1 s).
    pub(crate) min_penalty: SimTime,
    /// `max-penalty` (1 min).
    pub(crate) max_penalty: SimTime,
    /// `jitter-ratio` (0.5).
    pub(crate) jitter_ratio: f64,
}

impl Mesh {
    /// Writes outlier detection's ejections (with their duration) and un-ejections in cluster
    /// `ci` to the trace, and forgets them either way. Called wherever the balancer's hosts are
    /// rebuilt, which every ejection and un-ejection causes.
    pub(super) fn trace_outlier(&mut self, ci: ClusterId) {
        let Some(od) = self.clusters[ci].od.as_mut() else {
            return;
        };
        let changes = od.take_changes();
        let client = self.clusters[ci].client;
        for (h, ejected_for) in changes {
            let pod = self.clusters[ci].pods[h as usize];
            match ejected_for {
                Some(d) => trace!(self, "eject", "client" => self.client_name(client),
                    "pod" => self.pod_name(pod), "ms" => crate::trace::ms(d)),
                None => trace!(self, "uneject", "client" => self.client_name(client),
                    "pod" => self.pod_name(pod)),
            }
        }
    }
}

impl Default for AccrualConfig {
    fn default() -> Self {
        Self {
            max_failures: 7,
            min_penalty: SECONDS,
            max_penalty: 60 * SECONDS,
            jitter_ratio: 0.5,
        }
    }
}

/// Failure-accrual state of one endpoint: closed -> open -> probation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accrual {
    /// Serving; counts consecutive failures.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Unavailable until `until`.
    Open {
        /// End of the penalty.
        until: SimTime,
        /// Penalties served in a row (drives the backoff).
        penalties: u32,
    },
    /// One probe request may pass.
    Probation {
        /// Whether the probe is in flight.
        probing: bool,
        /// Penalties served in a row.
        penalties: u32,
    },
}

impl Default for Accrual {
    fn default() -> Self {
        Accrual::Closed { failures: 0 }
    }
}

impl Accrual {
    /// Whether a request may be sent now (moves an expired penalty into probation).
    pub fn available(&mut self, now: SimTime) -> bool {
        match *self {
            Accrual::Closed { .. } => true,
            Accrual::Open { until, penalties } if now >= until => {
                *self = Accrual::Probation {
                    probing: false,
                    penalties,
                };
                true
            }
            Accrual::Open { .. } => false,
            Accrual::Probation { probing, .. } => !probing,
        }
    }

    /// Marks a dispatched request (the probe in probation).
    pub fn on_dispatch(&mut self) {
        if let Accrual::Probation { probing, .. } = self {
            *probing = true;
        }
    }

    /// Records a result; returns true when the endpoint became unavailable.
    pub fn on_result(
        &mut self,
        failure: bool,
        now: SimTime,
        cfg: &AccrualConfig,
        rng: &mut Stream,
    ) -> bool {
        let penalty = |n: u32, rng: &mut Stream| {
            let base = cfg
                .min_penalty
                .saturating_mul(1u64 << n.min(30))
                .min(cfg.max_penalty);
            let jittered = base as f64 * (1.0 + cfg.jitter_ratio * rng.uniform());
            (jittered as SimTime).min(cfg.max_penalty)
        };
        match *self {
            Accrual::Closed { failures } if failure => {
                if failures + 1 >= cfg.max_failures {
                    *self = Accrual::Open {
                        until: now + penalty(0, rng),
                        penalties: 1,
                    };
                    return true;
                }
                *self = Accrual::Closed {
                    failures: failures + 1,
                };
            }
            Accrual::Closed { .. } => *self = Accrual::Closed { failures: 0 },
            Accrual::Probation { penalties, .. } if failure => {
                *self = Accrual::Open {
                    until: now + penalty(penalties, rng),
                    penalties: penalties + 1,
                };
                return true;
            }
            Accrual::Probation { .. } => *self = Accrual::Closed { failures: 0 },
            // A late answer for a request sent before the breaker opened changes nothing.
            Accrual::Open { .. } => {}
        }
        false
    }
}
