//! The event loop: every event the mesh schedules on the virtual clock, and the dispatch that hands
//! each to its concern. Events for attempts and requests carry the generation tag the slot had when
//! they were scheduled, so an event for a slot that was freed and reused meanwhile is ignored, the
//! way Envoy cancels a timer when its stream ends.

use super::Mesh;
use crate::engine::SimTime;
use crate::telemetry::flags;

#[derive(Clone, Copy, Debug)]
pub(super) enum Ev {
    Arrival(u32),
    AtPod(u32, u32),
    Done(u32, u32),
    Response(u32, u32),
    Fail(u32, u32, u16),
    PerTry(u32, u32),
    RouteTimeout(u32, u32),
    Retry(u32, u32),
    FaultDelay(u32, u32),
    StreamIdle(u32, u32),
    OdTick(u32),
    Scrape,
    Action(u32),
    EndpointIn(u32, u32),
    EndpointOut(u32, u32),
    Restart(u32, u32),
    CertRotate(u32),
}

impl Mesh {
    /// Runs every event up to and including time `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: SimTime) {
        while let Some(ev) = self.q.pop_until(t) {
            self.handle(ev);
        }
        self.q.advance_to(t);
    }

    pub(super) fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrival(c) => self.on_arrival(c),
            Ev::AtPod(a, g) => {
                if self.atts[a as usize].tag == g {
                    self.on_at_pod(a);
                }
            }
            Ev::Done(a, g) => {
                if self.atts[a as usize].tag == g {
                    self.on_done(a);
                }
            }
            Ev::Response(a, g) => {
                if self.atts[a as usize].tag == g {
                    self.on_response(a);
                }
            }
            Ev::Fail(a, g, f) => {
                if self.atts[a as usize].tag == g {
                    self.on_fail(a, f);
                }
            }
            Ev::PerTry(a, g) => {
                if self.atts[a as usize].tag == g && !self.atts[a as usize].cancelled {
                    self.telemetry_proxy(a).timeouts += 1;
                    self.cancel_attempt(a, 504, flags::UT);
                }
            }
            Ev::StreamIdle(a, g) => {
                if self.atts[a as usize].tag == g && !self.atts[a as usize].cancelled {
                    self.cancel_attempt(a, 504, flags::UT);
                }
            }
            Ev::RouteTimeout(r, g) => {
                if self.reqs[r as usize].tag == g && self.reqs[r as usize].live {
                    self.on_route_timeout(r);
                }
            }
            Ev::Retry(r, g) => {
                if self.reqs[r as usize].tag == g && self.reqs[r as usize].live {
                    self.start_attempt(r);
                }
            }
            Ev::FaultDelay(r, g) => {
                if self.reqs[r as usize].tag == g && self.reqs[r as usize].live {
                    self.forward(r);
                }
            }
            Ev::OdTick(ci) => self.on_od_tick(ci),
            Ev::Scrape => {
                let now = self.now();
                self.telemetry.scrape(now);
                self.q
                    .schedule_in(self.telemetry.scrape_interval(), Ev::Scrape);
            }
            Ev::Action(i) => {
                if let Some(a) = self.actions[i as usize].take() {
                    self.do_action(a);
                }
            }
            Ev::EndpointIn(p, e) => {
                let pod = &mut self.pods[p as usize];
                if pod.epoch == e && pod.alive && !pod.removed && !pod.in_lb {
                    pod.in_lb = true;
                    let v = pod.version;
                    self.endpoints_changed(v);
                }
            }
            Ev::EndpointOut(p, e) => {
                let pod = &mut self.pods[p as usize];
                if pod.epoch == e && pod.in_lb {
                    pod.in_lb = false;
                    let v = pod.version;
                    self.endpoints_changed(v);
                }
            }
            Ev::Restart(p, e) => {
                let pod = &mut self.pods[p as usize];
                if pod.epoch == e && !pod.alive {
                    pod.alive = true;
                    pod.epoch += 1;
                    let epoch = pod.epoch;
                    self.q
                        .schedule_in(self.net.endpoint_delay, Ev::EndpointIn(p, epoch));
                }
            }
            Ev::CertRotate(i) => {
                if self.certs[i as usize].rotating {
                    self.stats.cert_rotations += 1;
                    self.certs[i as usize].expires_at =
                        self.now().saturating_add(self.certs_cfg.ttl);
                    self.schedule_rotation(i);
                }
            }
        }
    }
}
