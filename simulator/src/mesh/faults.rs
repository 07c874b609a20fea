//! Istio's HTTP fault injection (a VirtualService route's `fault`): a percentage of the requests
//! that take the route is aborted by the client's proxy with the given status (flag `FI`) before
//! any upstream attempt, and a percentage is held for a fixed delay (flag `DI`) before it is
//! forwarded. As in Envoy's fault filter the abort is decided first, and a delayed request is
//! then routed as usual. Faults of pods themselves (crashes, black holes, slow nodes) are the
//! harness's actions, modelled with the pods.

use super::event::Ev;
use super::trace::trace;
use super::{Mesh, RequestId, RuleId};
use crate::engine::{SimTime, Stream};
use crate::manifest::FaultInjection;
use crate::telemetry::flags;

/// What a route's fault does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Injected {
    /// Answered at once with this status.
    Abort(u16),
    /// Forwarded after this delay.
    Delay(SimTime),
    /// Forwarded now.
    Nothing,
}

/// Draws the fault for one request: the abort's chance first, the delay's only when it did
/// not abort, each only when configured (so the stream is drawn the same way on every run).
pub(super) fn inject(fault: &FaultInjection, rng: &mut Stream) -> Injected {
    if let Some((status, pct)) = fault.abort
        && rng.chance(pct / 100.0)
    {
        return Injected::Abort(status);
    }
    if let Some((delay, pct)) = fault.delay
        && rng.chance(pct / 100.0)
    {
        return Injected::Delay(delay);
    }
    Injected::Nothing
}

impl Mesh {
    /// Applies the fault of the request's rule, if any. Returns true when the request was
    /// aborted or delayed (so it is not forwarded now).
    pub(super) fn inject_fault(&mut self, req: RequestId, rule: RuleId) -> bool {
        let Some(fault) = &self.rules[rule].fault else {
            return false;
        };
        match inject(fault, &mut self.fault_rng) {
            Injected::Abort(status) => {
                trace!(self, "fault-abort", "req" => self.req_no(req),
                    "client" => self.client_name(self.reqs[req].client), "code" => status);
                self.complete(req, status, flags::FI);
                true
            }
            Injected::Delay(delay) => {
                trace!(self, "fault-delay", "req" => self.req_no(req),
                    "client" => self.client_name(self.reqs[req].client),
                    "ms" => crate::trace::ms(delay));
                let r = &mut self.reqs[req];
                r.flags |= flags::DI;
                let g = r.tag;
                self.q.schedule_in(
                    delay,
                    Ev::FaultDelay {
                        request: req,
                        tag: g,
                    },
                );
                true
            }
            Injected::Nothing => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MILLIS;

    #[test]
    fn a_certain_abort_wins_over_a_certain_delay() {
        let fault = FaultInjection {
            delay: Some((100 * MILLIS, 100.0)),
            abort: Some((503, 100.0)),
        };
        let mut rng = Stream::new(1, "faults");
        assert_eq!(inject(&fault, &mut rng), Injected::Abort(503));
        let delay_only = FaultInjection {
            abort: None,
            ..fault
        };
        assert_eq!(inject(&delay_only, &mut rng), Injected::Delay(100 * MILLIS));
    }

    #[test]
    fn a_route_without_fault_draws_nothing_from_the_stream() {
        let mut rng = Stream::new(1, "faults");
        let mut fresh = Stream::new(1, "faults");
        assert_eq!(
            inject(&FaultInjection::default(), &mut rng),
            Injected::Nothing
        );
        assert_eq!(rng.uniform().to_bits(), fresh.uniform().to_bits());
    }
}
