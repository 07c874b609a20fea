//! Control-plane propagation: a route change reaches each client proxy after its own push delay,
//! as istiod pushes a new configuration to every Envoy over xDS and each applies it when it
//! arrives, so during a weight change some clients still route by the old weights. While the
//! control plane is down nothing is pushed: proxies keep the configuration they have, and the
//! changes made meanwhile go out when it is back.
//!
//! Off by default (no delay, no outage): a change is in effect for every proxy at once, and no
//! event or random draw is added, so a run is the same as without this module.
//!
//! Sidecars and ingress gateways alike get their routes this way. Simplifications: only routes
//! propagate this way (VirtualService, HTTPRoute, TrafficSplit); DestinationRule,
//! PeerAuthentication, ServiceProfile, AuthorizationPolicy and RequestAuthentication changes and
//! endpoint updates keep their own timing; a push carries the newest configuration at the time it is sent (istiod's
//! debounce of changes made at one instant), and a proxy never goes back to an older one.
//! Configuration applied at time 0 is in place when the run starts.

use super::dist::{LogNormalMemo, ServiceTime};
use super::event::Ev;
use super::{ClientId, Mesh, RuleId, ServiceId, invalid};
use crate::engine::{EventQueue, SimTime, Stream};
use crate::mesh::MeshError;

/// How configuration reaches the proxies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Propagation {
    /// From a change to a proxy applying it, drawn per proxy and change; none: at once.
    pub push_delay: Option<ServiceTime>,
    /// Spans `[from, to)` in which the control plane is down.
    pub outages: Vec<(SimTime, SimTime)>,
}

impl Propagation {
    /// Whether changes reach every proxy at once (nothing to model).
    pub(crate) fn is_atomic(&self) -> bool {
        self.outages.is_empty() && matches!(self.push_delay, None | Some(ServiceTime::Constant(0)))
    }

    fn validate(&self) -> Result<(), MeshError> {
        if let Some(d) = &self.push_delay {
            d.validate().map_err(|r| invalid("push delay", r))?;
        }
        for &(from, to) in &self.outages {
            if from >= to {
                return Err(invalid("control-plane outage", "must end after it starts"));
            }
        }
        Ok(())
    }

    /// When a change made at `at` is pushed: at once, or when the outage covering `at` ends.
    fn sent_at(&self, mut at: SimTime) -> SimTime {
        // Outages may touch or overlap: follow them until `at` is outside every one.
        while let Some(&(_, to)) = self.outages.iter().find(|(f, t)| (*f..*t).contains(&at)) {
            at = to;
        }
        at
    }
}

/// One configuration of a service's routes, as pushed.
struct Generation {
    made_at: SimTime,
    epoch: u32,
    rules: Vec<RuleId>,
}

/// The propagation state of a mesh whose changes are not atomic.
pub(super) struct Pushes {
    cfg: Propagation,
    rng: Stream,
    memo: LogNormalMemo,
    /// Per route source (each service, then each gateway client), its route configurations
    /// in the order they were made.
    history: Vec<Vec<Generation>>,
    /// Per client, the route source its proxy applies: its service's routes, or for a gateway's
    /// proxy those bound to its gateway.
    source: Vec<u32>,
    /// Per client, the generation (index into its service's history) its proxy applies.
    applied: Vec<u32>,
}

impl Mesh {
    /// Turns on non-atomic propagation (after the initial routes are installed).
    pub(super) fn init_propagation(&mut self, cfg: &Propagation) -> Result<(), MeshError> {
        cfg.validate()?;
        if cfg.is_atomic() {
            return Ok(());
        }
        let mut history: Vec<Vec<Generation>> = self
            .services
            .iter()
            .map(|s| {
                vec![Generation {
                    made_at: 0,
                    epoch: s.epoch,
                    rules: s.rules.clone(),
                }]
            })
            .collect();
        let mut source = Vec::with_capacity(self.clients.len());
        for cl in &self.clients {
            match &cl.ingress {
                Some(i) => {
                    source.push(history.len() as u32);
                    history.push(vec![Generation {
                        made_at: 0,
                        epoch: i.epoch,
                        rules: i.rules.clone(),
                    }]);
                }
                None => source.push(cl.service.0),
            }
        }
        self.pushes = Some(Box::new(Pushes {
            cfg: cfg.clone(),
            rng: Stream::new(self.seed, "control-plane"),
            memo: LogNormalMemo::default(),
            history,
            source,
            applied: vec![0; self.clients.len()],
        }));
        Ok(())
    }

    /// The route epoch client `c`'s proxy has applied.
    #[inline]
    pub(super) fn route_epoch(&self, c: ClientId) -> u32 {
        match &self.pushes {
            None => match &self.clients[c].ingress {
                None => self.services[self.clients[c].service].epoch,
                Some(i) => i.epoch,
            },
            Some(p) => p.applied_generation(c).epoch,
        }
    }

    /// The route rules client `c`'s proxy walks.
    pub(super) fn client_rules(&self, c: ClientId) -> &[RuleId] {
        match &self.pushes {
            None => match &self.clients[c].ingress {
                None => &self.services[self.clients[c].service].rules,
                Some(i) => &i.rules,
            },
            Some(p) => &p.applied_generation(c).rules,
        }
    }

    /// Service `s`'s routes changed: push them to its clients' proxies.
    pub(super) fn routes_changed(&mut self, s: ServiceId) {
        let now = self.now();
        let Some(p) = self.pushes.as_deref_mut() else {
            return;
        };
        let svc = &self.services[s];
        let generation = p.made(s.0, now, svc.epoch, &svc.rules);
        for (ci, cl) in self.clients.iter().enumerate() {
            // A proxy routes only by its own service's routes; a client calling one version's
            // Service, or without a sidecar, walks none of them.
            if p.source[ci] != s.0 || cl.direct.is_some() || cl.kube_proxy.is_some() {
                continue;
            }
            p.push(&mut self.q, ClientId(ci as u32), generation, now);
        }
    }

    /// The routes bound to gateway client `c`'s gateway changed: push them to its proxy.
    pub(super) fn gateway_routes_changed(&mut self, c: ClientId) {
        let now = self.now();
        let cl = &mut self.clients[c];
        // The client's cached rule per header profile is stale now.
        cl.cache_epoch = None;
        let (Some(p), Some(i)) = (self.pushes.as_deref_mut(), cl.ingress.as_ref()) else {
            return;
        };
        let generation = p.made(p.source[c.0 as usize], now, i.epoch, &i.rules);
        p.push(&mut self.q, c, generation, now);
    }

    /// A push reaches client `c`'s proxy: it applies the newest configuration there was when
    /// the push was sent, unless it already has a newer one.
    pub(super) fn on_push(&mut self, c: ClientId, generation: u32) {
        let Some(p) = self.pushes.as_deref_mut() else {
            return;
        };
        let history = &p.history[p.source[c.0 as usize] as usize];
        let sent = p.cfg.sent_at(history[generation as usize].made_at);
        let newest = history[generation as usize..]
            .iter()
            .rposition(|g| g.made_at <= sent)
            .map_or(generation, |i| generation + i as u32);
        let applied = &mut p.applied[c.0 as usize];
        if newest > *applied {
            *applied = newest;
        }
    }
}

impl Pushes {
    fn applied_generation(&self, c: ClientId) -> &Generation {
        let c = c.0 as usize;
        &self.history[self.source[c] as usize][self.applied[c] as usize]
    }

    /// Records a new configuration of route source `source`; returns its generation.
    fn made(&mut self, source: u32, now: SimTime, epoch: u32, rules: &[RuleId]) -> u32 {
        let history = &mut self.history[source as usize];
        history.push(Generation {
            made_at: now,
            epoch,
            rules: rules.to_vec(),
        });
        (history.len() - 1) as u32
    }

    /// Sends `generation` to client `c`'s proxy, arriving after its push delay (at once when
    /// the run starts).
    fn push(&mut self, q: &mut EventQueue<Ev>, c: ClientId, generation: u32, now: SimTime) {
        if now == 0 {
            self.applied[c.0 as usize] = generation;
            return;
        }
        let delay = match &self.cfg.push_delay {
            Some(d) => d.sample_with(&mut self.rng, &mut self.memo),
            None => 0,
        };
        q.schedule_at(
            self.cfg.sent_at(now).saturating_add(delay),
            Ev::Push {
                client: c,
                generation,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SECONDS;

    #[test]
    fn a_change_during_an_outage_is_sent_when_the_control_plane_is_back() {
        let p = Propagation {
            push_delay: None,
            outages: vec![(10 * SECONDS, 20 * SECONDS), (20 * SECONDS, 30 * SECONDS)],
        };
        assert_eq!(p.sent_at(5 * SECONDS), 5 * SECONDS);
        assert_eq!(p.sent_at(10 * SECONDS), 30 * SECONDS);
        assert_eq!(p.sent_at(25 * SECONDS), 30 * SECONDS);
        assert_eq!(p.sent_at(30 * SECONDS), 30 * SECONDS);
    }

    #[test]
    fn no_delay_and_no_outage_is_atomic() {
        assert!(Propagation::default().is_atomic());
        let zero = Propagation {
            push_delay: Some(ServiceTime::Constant(0)),
            outages: Vec::new(),
        };
        assert!(zero.is_atomic());
        let outage = Propagation {
            push_delay: None,
            outages: vec![(1, 2)],
        };
        assert!(!outage.is_atomic());
    }
}
