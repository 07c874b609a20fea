//! Retries and timeouts: Istio's retry policy (`attempts`, `perTryTimeout`, `retryOn`, by default
//! two retries on connect failures and refused streams; requests here are HTTP, so the default's
//! gRPC conditions never apply), Envoy's jittered exponential backoff and its `maxRetries` circuit breaker, Linkerd's retry budget from a
//! ServiceProfile, and the route timeout that ends a request with 504 `UT` however many attempts are
//! still under way.

use super::event::Ev;
use super::trace::trace;
use super::{ClusterId, Mesh, RequestId};
use crate::engine::{MILLIS, SECONDS, SimTime, Stream};
use crate::manifest::{Retries, RetryOn, ServiceProfile};
use crate::telemetry::flags;

/// Linkerd's retry budget: retries may add `ratio` of the results not retried plus `min_per_sec`
/// per second, counted over the last one to two `ttl` windows. linkerd2-proxy deposits only a
/// result it does not retry (`http/retry.rs`, over Tower's `TpsBudget`), so a failing service
/// earns few retries.
#[derive(Clone, Debug)]
pub(super) struct RetryBudget {
    pub(super) ratio: f64,
    pub(super) min_per_sec: f64,
    pub(super) ttl: SimTime,
    pub(super) window_start: SimTime,
    pub(super) requests: [u64; 2],
    pub(super) retries: [u64; 2],
}

impl RetryBudget {
    pub(super) fn new(b: &crate::manifest::RetryBudget) -> Self {
        Self {
            ratio: b.retry_ratio.max(0.0),
            min_per_sec: f64::from(b.min_retries_per_second),
            ttl: b.ttl.max(1),
            window_start: 0,
            requests: [0; 2],
            retries: [0; 2],
        }
    }

    fn roll(&mut self, now: SimTime) {
        while now >= self.window_start + self.ttl {
            self.window_start += self.ttl;
            self.requests = [self.requests[1], 0];
            self.retries = [self.retries[1], 0];
            if now >= self.window_start + 2 * self.ttl {
                // Idle for long: skip ahead without looping once per window.
                self.window_start = now - (now - self.window_start) % self.ttl;
                self.requests = [0; 2];
                self.retries = [0; 2];
            }
        }
    }

    pub(super) fn deposit(&mut self, now: SimTime) {
        self.roll(now);
        self.requests[1] += 1;
    }

    pub(super) fn withdraw(&mut self, now: SimTime) -> bool {
        self.roll(now);
        let reqs = (self.requests[0] + self.requests[1]) as f64;
        let allowed = self.min_per_sec * self.ttl as f64 / SECONDS as f64 + self.ratio * reqs;
        if ((self.retries[0] + self.retries[1]) as f64) < allowed {
            self.retries[1] += 1;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct RetryPolicy {
    pub(super) attempts: u32,
    pub(super) per_try_timeout: Option<SimTime>,
    pub(super) on: RetryOn,
    /// The backoff's base interval in whole milliseconds (Envoy's default 25 ms).
    pub(super) backoff_base_ms: u32,
    /// A retry avoids the hosts already tried (Envoy's `previous_hosts` predicate, which Istio
    /// sets unless `retryIgnorePreviousHosts: false`).
    pub(super) avoid_tried: bool,
}

/// Envoy's default retry backoff base (router filter docs, `x-envoy-retry-on`).
pub(super) const DEFAULT_BACKOFF_BASE_MS: u32 = 25;

impl RetryPolicy {
    pub(super) fn none() -> Self {
        Self {
            attempts: 0,
            per_try_timeout: None,
            on: RetryOn::default(),
            backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
            avoid_tried: true,
        }
    }
    /// A VirtualService's `retries`, as Istio's `ConvertPolicy` turns it into Envoy's policy:
    /// started from the default (`retryOn` included), `backoff` as the base interval when
    /// `backoff` (Istio 1.26 and later, istio/istio#55639).
    pub(super) fn istio(rt: &Retries, retry_503: bool, backoff: bool) -> Self {
        Self {
            attempts: rt.attempts,
            per_try_timeout: rt.per_try_timeout,
            on: rt
                .retry_on
                .clone()
                .unwrap_or_else(|| RetryOn::istio_default(retry_503)),
            backoff_base_ms: rt
                .backoff
                .filter(|_| backoff)
                .map_or(DEFAULT_BACKOFF_BASE_MS, |b| {
                    u32::try_from(b / MILLIS).unwrap_or(u32::MAX)
                }),
            // "User has specified RetryIgnorePreviousHosts, so honor it" (ConvertPolicy).
            avoid_tried: rt.ignore_previous_hosts.unwrap_or(true),
        }
    }
    pub(super) fn istio_default(retry_503: bool) -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            on: RetryOn::istio_default(retry_503),
            backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
            avoid_tried: true,
        }
    }
}

impl Mesh {
    /// After an attempt of `req` through cluster `ci` ended with `code` and flags `f`: retries
    /// when the policy, the `maxRetries` circuit breaker and the retry budget allow it,
    /// otherwise completes the request (flag `URX` when the attempts ran out, `UO` when the
    /// `maxRetries` circuit breaker refused the retry).
    pub(super) fn retry_or_complete(&mut self, req: RequestId, ci: ClusterId, code: u16, f: u16) {
        let now = self.now();
        let (client, version) = (self.clusters[ci].client, self.clusters[ci].version);
        let r = self.reqs[req];
        let rule = &self.rules[r.rule];
        // A client without a sidecar has no proxy to retry for it.
        let retriable = self.clients[client].sidecar && is_retriable(&rule.retry.on, code, f);
        if !retriable && let Some(b) = self.clients[client].budget.as_mut() {
            b.deposit(now);
        }
        if retriable && r.retries_done < rule.retry.attempts {
            let cl = &mut self.clusters[ci];
            if cl.retries_active >= retry_limit(&cl.policy, cl.active_requests + cl.pending) {
                // The retry circuit breaker overflowed: Envoy's router flags this UO, not URX
                // (envoy `source/common/router/router.cc`, `RetryStatus::NoOverflow`).
                self.telemetry.proxy_mut(client.0, version.0).retry_overflow += 1;
                self.complete(req, code, f | flags::UO);
                return;
            }
            if let Some(b) = self.clients[client].budget.as_mut()
                && !b.withdraw(now)
            {
                self.telemetry.proxy_mut(client.0, version.0).retry_overflow += 1;
                self.complete(req, code, f);
                return;
            }
            let cl = &mut self.clusters[ci];
            cl.retries_active += 1;
            cl.peak_retries = cl.peak_retries.max(cl.retries_active);
            let n = r.retries_done + 1;
            let rr = &mut self.reqs[req];
            rr.retries_done = n;
            rr.holds_retry = true;
            let base = rule.retry.backoff_base_ms;
            let backoff = retry_backoff(n, base, &mut self.clients[client].retry);
            trace!(self, "retry", "req" => r.number, "try" => n + 1,
                "ms" => crate::trace::ms(backoff));
            self.telemetry.proxy_mut(client.0, version.0).retries += 1;
            self.q.schedule_in(
                backoff,
                Ev::Retry {
                    request: req,
                    tag: r.tag,
                },
            );
            return;
        }
        let extra = if retriable && rule.retry.attempts > 0 {
            flags::URX
        } else {
            0
        };
        self.complete(req, code, f | extra);
    }

    pub(super) fn release_retry_hold(&mut self, req: RequestId) {
        // The retry slot is held from scheduling the retry until the retried attempt ends.
        let r = &mut self.reqs[req];
        if r.holds_retry
            && r.attempt.is_none()
            && let Some(ci) = r.cluster
        {
            r.holds_retry = false;
            self.clusters[ci].retries_active -= 1;
        }
    }

    pub(super) fn on_route_timeout(&mut self, req: RequestId) {
        let r = self.reqs[req];
        trace!(self, "route-timeout", "req" => r.number);
        if let Some(ci) = r.cluster {
            let cl = &self.clusters[ci];
            self.telemetry.proxy_mut(cl.client.0, cl.version.0).timeouts += 1;
        }
        if let Some(a) = r.attempt {
            // Abandon the attempt without retrying: the route deadline is over. Its pod was
            // chosen: the outputs name it (Envoy's %UPSTREAM_HOST%) and write its span.
            if self.outputs.is_some() {
                self.output_attempt(a, 504, flags::UT);
            }
            let at = self.atts[a];
            self.unqueue_pending(a);
            self.release_conn(a, true);
            let cl = &mut self.clusters[at.cluster];
            let change = match cl.od.as_mut() {
                Some(od) => od.on_result(at.host as usize, 504, true, self.q.now()),
                None => Default::default(),
            };
            if change.membership_changed() {
                let (c, v) = (cl.client, cl.version);
                let pc = self.telemetry.proxy_mut(c.0, v.0);
                pc.ejections_enforced += u64::from(change.ejected);
                self.rebuild_candidates(at.cluster);
            }
            self.abandon(a);
            self.reqs[req].attempt = None;
        }
        self.release_retry_hold(req);
        self.complete(req, 504, flags::UT);
    }

    /// The calling application gave up on the call `req`: its sidecar sees the downstream
    /// disconnect (code 0, `DC`) and resets the attempt in flight, which its pod may still
    /// work to the end; no retry follows and outlier detection hears nothing.
    pub(super) fn on_call_timeout(&mut self, req: RequestId) {
        let r = self.reqs[req];
        trace!(self, "call-timeout", "req" => r.number);
        if let Some(a) = r.attempt {
            if self.outputs.is_some() {
                self.output_attempt(a, 0, flags::DC);
            }
            self.unqueue_pending(a);
            self.release_conn(a, true);
            self.abandon(a);
            self.reqs[req].attempt = None;
        }
        self.release_retry_hold(req);
        // Still held by an injected delay, it reached no pod.
        self.complete_as(req, 0, flags::DC, r.ntried > 0 && r.cluster.is_some());
    }
}

/// Envoy's fully jittered exponential backoff as its code computes it (envoy
/// `source/common/common/backoff_strategy.cc`, `JitteredExponentialBackOffStrategy`): retry n
/// waits a whole number of milliseconds in [0, bound(n)), where bound(1) is the base (25 ms
/// unless Istio's `retries.backoff` sets it) and each retry doubles it while it is below half the
/// cap, ten times the base (the router's default `max_interval`), else takes the cap: 25, 50,
/// 100, 200, 250, 250... (not the (2^n - 1) * 25 ms the router docs give).
pub(super) fn retry_backoff(n: u32, base_ms: u32, rng: &mut Stream) -> SimTime {
    SimTime::from(rng.below(backoff_bound_ms(n, base_ms))) * MILLIS
}

fn backoff_bound_ms(n: u32, base_ms: u32) -> u32 {
    let base = base_ms.max(1);
    let cap = base.saturating_mul(10);
    let mut bound = base;
    for _ in 1..n.min(32) {
        bound = if bound < cap / 2 { bound * 2 } else { cap };
    }
    bound
}

/// Retries allowed in flight: `maxRetries`, or with a retry budget its percent of the active
/// and pending requests (the caller sums them), never below its minimum concurrency (envoy
/// `source/common/upstream/resource_manager_impl.h`, `RetryBudgetImpl::max`).
pub(super) fn retry_limit(policy: &super::cluster::ClusterPolicy, active: u32) -> u32 {
    match policy.retry_budget {
        Some((percent, min)) => ((percent / 100.0 * f64::from(active)) as u32).max(min),
        None => policy.max_retries,
    }
}

/// Retry conditions from ServiceProfile response classes (default: 5xx is a failure).
pub(super) fn failure_classes(ranges: &[(u16, u16)]) -> RetryOn {
    if ranges.is_empty() || ranges.iter().any(|&(lo, hi)| lo <= 500 && hi >= 599) {
        return RetryOn {
            five_xx: true,
            ..Default::default()
        };
    }
    let codes = ranges
        .iter()
        .flat_map(|&(lo, hi)| lo..=hi.min(599))
        .collect();
    RetryOn {
        retriable_status_codes: true,
        codes,
        ..Default::default()
    }
}

/// Whether Envoy's router retries an attempt that ended with `code` and flags `f` (its retry
/// state's reset and response checks): `connect-failure` only when no connection was made
/// (refused, connect timeout, TLS handshake failure: `UF`); a reset after the request went out
/// (`UC`) only under `reset`, `5xx` or `gateway-error`, and `reset` also covers connect failures,
/// as does `reset-before-request` (the request never went upstream: envoy `retry_state_impl.cc`,
/// `wouldRetryFromReset`). A local overflow (`UO`) is never retried.
pub(super) fn is_retriable(on: &RetryOn, code: u16, f: u16) -> bool {
    if f & flags::UO != 0 {
        return false;
    }
    let connect_failure = f & flags::UF != 0;
    let reset = f & flags::UC != 0;
    let timeout = f & flags::UT != 0;
    let no_response = connect_failure || reset;
    (on.five_xx && code >= 500)
        || (on.gateway_error && (502..=504).contains(&code))
        || ((on.connect_failure || on.reset_before_request) && connect_failure)
        || ((on.reset || on.five_xx || on.gateway_error) && no_response)
        || (on.retriable_status_codes && f == 0 && on.codes.contains(&code))
        // A per-try timeout counts as "no response": retried under 5xx, gateway-error and reset.
        || (timeout && (on.five_xx || on.gateway_error || on.reset))
}

impl Mesh {
    /// A Linkerd ServiceProfile: its route's timeout, and retries bounded by its retry budget
    /// when the route is retryable.
    pub(super) fn apply_service_profile(
        &mut self,
        sp: &ServiceProfile,
        warnings: &mut Vec<String>,
    ) {
        let short = sp.name.split('.').next().unwrap_or(&sp.name);
        let Some(s) = self.find_service(short, sp.namespace.as_deref()) else {
            warnings.push(format!(
                "ServiceProfile {}: service is not simulated",
                sp.name
            ));
            return;
        };
        // Requests carry no path or method, so the first route stands for all.
        if let Some(r) = sp.routes.first() {
            let budget = RetryBudget::new(sp.retry_budget.as_ref().unwrap_or(
                &crate::manifest::RetryBudget {
                    retry_ratio: 0.2,
                    min_retries_per_second: 10,
                    ttl: 10 * SECONDS,
                },
            ));
            for c in self.clients.iter_mut().filter(|c| c.service == s) {
                c.budget = r.is_retryable.then(|| budget.clone());
            }
            let svc = &mut self.services[s];
            // No timeout unless the route sets one: Linkerd dropped the 10 s default in 2.9
            // (linkerd/linkerd2#4958; the docs followed in linkerd/website#1733).
            svc.base.timeout = r.timeout;
            if r.is_retryable {
                // Linkerd bounds retries by the budget, not by a count.
                svc.base.retry = RetryPolicy {
                    attempts: u32::MAX,
                    per_try_timeout: None,
                    on: failure_classes(&r.failure_ranges),
                    backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
                    avoid_tried: true,
                };
            }
            let ids = svc.rules.clone();
            let (t, rp) = (svc.base.timeout, svc.base.retry.clone());
            for id in ids {
                self.rules[id].timeout = t;
                self.rules[id].retry = rp.clone();
            }
            self.services[s].epoch = self.services[s].epoch.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Envoy `source/common/common/backoff_strategy.cc`: the bound starts at the 25 ms base and
    /// doubles while below half the 250 ms cap; the wait is `random % bound` whole milliseconds.
    #[test]
    fn backoff_bounds_follow_envoys_jittered_strategy() {
        let cases = [
            (1, 25),
            (2, 50),
            (3, 100),
            (4, 200),
            (5, 250),
            (6, 250),
            (40, 250),
        ];
        let mut rng = Stream::new(1, "b");
        for (n, bound) in cases {
            assert_eq!(backoff_bound_ms(n, 25), bound, "retry {n}");
            let mut max = 0;
            for _ in 0..2000 {
                let w = retry_backoff(n, 25, &mut rng);
                assert_eq!(w % MILLIS, 0, "whole milliseconds");
                max = max.max(w);
            }
            assert_eq!(max, (SimTime::from(bound) - 1) * MILLIS, "retry {n}");
        }
    }

    /// Envoy's retry state (`source/common/router/retry_state_impl.cc`, `wouldRetryFromReset`,
    /// and the router filter's `x-envoy-retry-on` docs): a connection failure is retried under
    /// `connect-failure`, `reset`, `5xx` and `gateway-error`; a reset after the request was sent
    /// only under `reset`, `5xx` and `gateway-error`; an overflow never.
    #[test]
    fn resets_and_connect_failures_are_retried_under_envoys_conditions() {
        let on = |s: &str| RetryOn::parse(s, &mut |w| panic!("{w}"));
        // (retryOn, code, flags, retried)
        let cases: [(&str, u16, u16, bool); 19] = [
            ("reset-before-request", 503, flags::UF, true),
            ("reset-before-request", 503, flags::UC, false),
            ("reset-before-request", 503, 0, false),
            ("connect-failure", 503, flags::UF, true),
            ("connect-failure", 503, flags::UC, false),
            ("connect-failure", 503, flags::UO, false),
            ("reset", 503, flags::UC, true),
            ("reset", 503, flags::UF, true),
            ("reset", 503, 0, false),
            ("5xx", 503, flags::UC, true),
            ("5xx", 503, flags::UF, true),
            ("5xx", 503, flags::UO, false),
            ("gateway-error", 503, flags::UC, true),
            ("gateway-error", 503, flags::UF, true),
            ("gateway-error", 500, 0, false),
            ("refused-stream", 503, flags::UC, false),
            ("retriable-status-codes,503", 503, flags::UC, false),
            (
                "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                503,
                flags::UC,
                false,
            ),
            (
                "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                503,
                flags::UF,
                true,
            ),
        ];
        for (cond, code, f, want) in cases {
            assert_eq!(
                is_retriable(&on(cond), code, f),
                want,
                "retryOn `{cond}`, {code} flags {f:#b}"
            );
        }
    }

    /// Istio's default `retryOn` has status code 503 only up to 1.23 or with
    /// EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY=false (istio/istio
    /// `pilot/pkg/networking/core/route/retry/retry.go` before and after release note 50506);
    /// a connect failure is retried either way, an overflow never (Envoy
    /// `source/common/router/retry_state_impl.cc`: no retry on a local overflow).
    #[test]
    fn istio_default_retry_policy_retries_503_only_with_the_legacy_switch() {
        let cases = [
            // (retry_503, code, flags, retried)
            (false, 503, 0, false),
            (true, 503, 0, true),
            (false, 503, flags::UF, true),
            (true, 503, flags::UO, false),
            (true, 500, 0, false),
            (true, 502, 0, false),
        ];
        for (retry_503, code, f, want) in cases {
            let on = RetryOn::istio_default(retry_503);
            assert_eq!(
                is_retriable(&on, code, f),
                want,
                "retry_503={retry_503} code={code} flags={f:#x}"
            );
        }
    }
}
