//! The event loop: every event the mesh schedules on the virtual clock, and the dispatch that hands
//! each to its concern. Events for attempts and requests carry the generation tag the slot had when
//! they were scheduled, so an event for a slot that was freed and reused meanwhile is ignored, the
//! way Envoy cancels a timer when its stream ends.

use super::{AttemptId, CertId, ClientId, ClusterId, Mesh, PodId, RequestId};
use crate::engine::{Laned, SimTime};
use crate::telemetry::flags;

/// An event on the virtual clock. `tag` is the generation of the attempt's or request's slot
/// when the event was scheduled; `epoch` the pod's life (it grows on every crash and restart).
#[derive(Clone, Copy, Debug)]
pub(super) enum Ev {
    /// The client's next request arrives (and schedules the one after).
    Arrival { client: ClientId },
    /// The attempt reaches its pod through both sidecars.
    AtPod { attempt: AttemptId, tag: u32 },
    /// The attempt reaches its pod's sidecar, whose worker threads are modelled (sidecar.rs).
    AtSidecar { attempt: AttemptId, tag: u32 },
    /// A worker thread of the pod's sidecar is free again.
    ProxyFree { pod: PodId, epoch: u32 },
    /// The pod has served the attempt.
    Done { attempt: AttemptId, tag: u32 },
    /// The attempt's response is back at the client's proxy.
    Response { attempt: AttemptId, tag: u32 },
    /// The attempt fails locally with these response flags (connect failure, reset, ...).
    Fail {
        attempt: AttemptId,
        tag: u32,
        flags: u16,
    },
    /// A connection's setup (TCP, TLS) is over, ready or failed; `tag` names it within its host.
    ConnSetUp {
        cluster: ClusterId,
        host: u32,
        tag: u32,
    },
    /// The route's per-try timeout of the attempt expires.
    PerTry { attempt: AttemptId, tag: u32 },
    /// Envoy's stream idle timeout ends an attempt a black-holed pod never answers.
    StreamIdle { attempt: AttemptId, tag: u32 },
    /// The route's timeout of the request expires.
    RouteTimeout { request: RequestId, tag: u32 },
    /// The calling application's own timeout of the call expires.
    CallTimeout { request: RequestId, tag: u32 },
    /// The request's retry backoff is over.
    Retry { request: RequestId, tag: u32 },
    /// The request's injected delay is over.
    FaultDelay { request: RequestId, tag: u32 },
    /// Outlier detection's periodic sweep of a cluster.
    OdTick { cluster: ClusterId },
    /// Telemetry takes its periodic snapshot (as Prometheus scrapes).
    Scrape,
    /// A scheduled [`Action`](super::Action), by its index in the mesh's list.
    Action { index: u32 },
    /// The pod joins its clients' endpoint sets.
    EndpointIn { pod: PodId, epoch: u32 },
    /// The pod leaves its clients' endpoint sets.
    EndpointOut { pod: PodId, epoch: u32 },
    /// A crashed pod starts again.
    Restart { pod: PodId, epoch: u32 },
    /// The workload's agent renews its certificate.
    CertRotate { cert: CertId },
    /// A route configuration (a generation of its service's) reaches the client's proxy.
    Push { client: ClientId, generation: u32 },
}

/// Kinds whose events are usually scheduled in time order, so the queue can keep each kind in a
/// FIFO lane: those with one fixed delay (the per-try and route timeouts of a rule, the network
/// and sidecar crossings, the stream idle timeout, the scrape and outlier-detection intervals) and
/// a client's next arrival (one pending per client). Another rule's timeout, a connection still
/// being set up or a second client breaks the order; the queue then files that event in its heap.
impl Laned for Ev {
    const LANES: usize = 8;

    #[inline]
    fn lane(&self) -> Option<usize> {
        match self {
            Ev::PerTry { .. } => Some(0),
            Ev::Response { .. } => Some(1),
            Ev::AtPod { .. } => Some(2),
            Ev::RouteTimeout { .. } => Some(3),
            Ev::StreamIdle { .. } => Some(4),
            Ev::Arrival { .. } => Some(5),
            Ev::Scrape => Some(6),
            Ev::OdTick { .. } => Some(7),
            _ => None,
        }
    }
}

impl Mesh {
    /// Runs every event up to and including time `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: SimTime) {
        while let Some(ev) = self.q.pop_until(t) {
            self.handle(ev);
        }
        self.q.advance_to(t);
    }

    /// [`Mesh::run_until`] for at most `budget` events: true once `t` is reached, false when
    /// the budget ran out first (call again to go on). Lets a caller look up between slices.
    pub(crate) fn run_until_within(&mut self, t: SimTime, budget: u64) -> bool {
        for _ in 0..budget {
            match self.q.pop_until(t) {
                Some(ev) => self.handle(ev),
                None => {
                    self.q.advance_to(t);
                    return true;
                }
            }
        }
        false
    }

    fn handle(&mut self, ev: Ev) {
        let attempt_is = |m: &Mesh, a: AttemptId, tag: u32| m.atts[a].tag == tag;
        let live_request =
            |m: &Mesh, r: RequestId, tag: u32| m.reqs[r].tag == tag && m.reqs[r].live;
        match ev {
            Ev::Arrival { client } => self.on_arrival(client),
            Ev::AtPod { attempt, tag } if attempt_is(self, attempt, tag) => self.on_at_pod(attempt),
            Ev::AtSidecar { attempt, tag } if attempt_is(self, attempt, tag) => {
                self.on_at_sidecar(attempt)
            }
            Ev::ProxyFree { pod, epoch } => self.on_proxy_free(pod, epoch),
            Ev::Done { attempt, tag } if attempt_is(self, attempt, tag) => self.on_done(attempt),
            Ev::Response { attempt, tag } if attempt_is(self, attempt, tag) => {
                self.on_response(attempt)
            }
            Ev::Fail {
                attempt,
                tag,
                flags,
            } if attempt_is(self, attempt, tag) => self.on_fail(attempt, flags),
            Ev::ConnSetUp { cluster, host, tag } => self.on_conn_set_up(cluster, host, tag),
            Ev::PerTry { attempt, tag }
                if attempt_is(self, attempt, tag) && !self.atts[attempt].cancelled =>
            {
                self.telemetry_proxy(attempt).timeouts += 1;
                self.cancel_attempt(attempt, 504, flags::UT);
            }
            Ev::StreamIdle { attempt, tag }
                if attempt_is(self, attempt, tag) && !self.atts[attempt].cancelled =>
            {
                self.cancel_attempt(attempt, 504, flags::UT);
            }
            Ev::RouteTimeout { request, tag } if live_request(self, request, tag) => {
                self.on_route_timeout(request)
            }
            Ev::CallTimeout { request, tag } if live_request(self, request, tag) => {
                self.on_call_timeout(request)
            }
            Ev::Retry { request, tag } if live_request(self, request, tag) => {
                self.start_attempt(request)
            }
            Ev::FaultDelay { request, tag } if live_request(self, request, tag) => {
                self.forward(request)
            }
            Ev::OdTick { cluster } => self.on_od_tick(cluster),
            Ev::Scrape => {
                let now = self.now();
                self.telemetry.scrape(now);
                self.q
                    .schedule_in(self.telemetry.scrape_interval(), Ev::Scrape);
            }
            Ev::Action { index } => {
                if let Some(a) = self.actions[index as usize].take() {
                    self.do_action(a);
                }
            }
            Ev::EndpointIn { pod, epoch } => self.on_endpoint_in(pod, epoch),
            Ev::EndpointOut { pod, epoch } => self.on_endpoint_out(pod, epoch),
            Ev::Restart { pod, epoch } => self.on_restart(pod, epoch),
            Ev::CertRotate { cert } => self.on_cert_rotate(cert),
            Ev::Push { client, generation } => self.on_push(client, generation),
            // A stale event: its attempt or request has ended (and its slot may be reused).
            Ev::AtPod { .. }
            | Ev::AtSidecar { .. }
            | Ev::Done { .. }
            | Ev::Response { .. }
            | Ev::Fail { .. }
            | Ev::PerTry { .. }
            | Ev::StreamIdle { .. }
            | Ev::RouteTimeout { .. }
            | Ev::CallTimeout { .. }
            | Ev::Retry { .. }
            | Ev::FaultDelay { .. } => {}
        }
    }
}
