//! The strategy's steps and the ends of a rollout: the first routing, each canary weight or
//! blue/green and A/B iteration, the confirm-promotion gate, promotion and the return of traffic
//! to the primary, rollback, and the finalisation of a deleted Canary.

use super::schedule::step_due;
use super::tick::Tick;
use super::{Action, Phase, Severity};
use crate::spec::{HookGate, Strategy};

impl Tick<'_> {
    /// Weight 0: pre-rollout hooks, then the strategy's first routing.
    pub(super) fn first_step(&mut self) {
        if let Err(why) = self.hooks_pass(HookGate::PreRollout) {
            return self.failed_check(why);
        }
        self.s.pre_rollout_done = true;
        match self.spec.strategy.clone() {
            Strategy::Canary {
                mirror: Some(percent),
                ..
            } => {
                self.set_routes(0, Some(percent), false);
                self.event(
                    Severity::Normal,
                    format!(
                        "Starting canary analysis for {} with {percent}% of traffic mirrored",
                        self.target()
                    ),
                );
            }
            Strategy::Canary { mirror: None, .. } => self.canary_step(),
            Strategy::BlueGreen { iterations, mirror } => {
                self.set_routes(0, mirror, false);
                let mirrored = mirror
                    .map(|p| format!(", {p}% of traffic mirrored"))
                    .unwrap_or_default();
                self.event(
                    Severity::Normal,
                    format!(
                        "Starting blue/green analysis of {}: {iterations} iterations{mirrored}",
                        self.target()
                    ),
                );
            }
            Strategy::AbTesting { iterations, .. } => {
                self.set_routes(0, None, true);
                self.event(Severity::Normal, format!("Starting A/B testing of {}: matching requests go to the canary for {iterations} iterations", self.target()));
            }
        }
    }

    /// Raise the canary's weight to the next step (ending any mirroring), or promote at the top.
    pub(super) fn canary_step(&mut self) {
        let spec = self.spec;
        let steps: &[u8] = match &spec.strategy {
            Strategy::Canary { steps, .. } => steps,
            _ => &[],
        };
        let current = self.s.canary_weight;
        let Some(next) = steps.iter().copied().find(|&w| w > current) else {
            return self.await_promotion();
        };
        if let Err(why) = self.gate(HookGate::ConfirmTrafficIncrease) {
            self.s.message = why;
            return;
        }
        self.set_routes(next, None, false);
        self.event(
            Severity::Normal,
            format!("Advance {} canary weight {next}%", self.target()),
        );
    }

    pub(super) fn blue_green_step(&mut self, iterations: u32, mirror: Option<u8>) {
        if self.s.iterations < iterations {
            self.s.iterations += 1;
            self.new_step();
            // Like Flagger: mirrored during the whole blue/green test (its scheduler's "mirror
            // requests during the entire B/G canary test").
            if mirror != self.s.mirror {
                self.set_routes(0, mirror, false);
            }
            let n = self.s.iterations;
            return self.event(
                Severity::Normal,
                format!("Advance {} iteration {n}/{iterations}", self.target()),
            );
        }
        if self.s.canary_weight < 100 {
            // Like Flagger: one more analysed interval with all traffic on the canary.
            self.set_routes(100, None, false);
            return self.event(
                Severity::Normal,
                format!("Routing all traffic to canary {}", self.target()),
            );
        }
        self.await_promotion();
    }

    pub(super) fn ab_step(&mut self, iterations: u32) {
        if self.s.iterations < iterations {
            self.s.iterations += 1;
            self.new_step();
            let n = self.s.iterations;
            return self.event(
                Severity::Normal,
                format!("Advance {} iteration {n}/{iterations}", self.target()),
            );
        }
        self.await_promotion();
    }

    pub(super) fn await_promotion(&mut self) {
        match self.gate(HookGate::ConfirmPromotion) {
            Ok(()) => self.promote(),
            Err(why) => {
                if self.s.phase != Phase::WaitingPromotion {
                    self.set_phase(Phase::WaitingPromotion);
                    self.event(
                        Severity::Normal,
                        format!("Analysis of {} passed; {why}", self.target()),
                    );
                } else {
                    self.s.message = why;
                }
            }
        }
    }

    pub(super) fn promote(&mut self) {
        self.actions.push(Action::PromotePrimary);
        self.set_phase(Phase::Promoting);
        self.s.stalled_since = None;
        self.s.last_step = Some(self.now);
        self.event(
            Severity::Normal,
            format!("Copying {0} template to {0}-primary", self.target()),
        );
    }

    /// Wait for the primary's rollout, then move traffic back to it.
    pub(super) fn promoting(&mut self) {
        let primary = self.obs.primary;
        if !primary.meets(self.spec.primary_ready_threshold) {
            return self.stalled(format!(
                "{}-primary rollout not finished: {primary}",
                self.target()
            ));
        }
        self.s.stalled_since = None;
        let step = self.spec.step_weight_promotion.unwrap_or(100);
        if step < self.s.canary_weight {
            // Progressive promotion: one step back to the primary per interval.
            if !step_due(&self.s, self.spec, self.now) {
                return;
            }
            self.s.last_step = Some(self.now);
        }
        let canary = self.s.canary_weight.saturating_sub(step);
        self.set_routes(canary, None, false);
        if canary == 0 {
            self.set_phase(Phase::Finalising);
            self.event(
                Severity::Normal,
                format!("Routing all traffic to {}-primary", self.target()),
            );
        } else {
            self.event(
                Severity::Normal,
                format!(
                    "Promoting {}: primary weight {}%",
                    self.target(),
                    100 - canary
                ),
            );
        }
    }

    /// Scale the canary down once the routes back to the primary are in force, as Flagger
    /// reads its routes before every phase's work: until then the gateway may still send the
    /// canary the last step's share. No deadline: the primary already runs the promoted
    /// revision, so there is nothing to roll back to.
    pub(super) fn finalising(&mut self) {
        if let Some(problem) = self.routes_held() {
            self.s.message = format!("waiting: {problem}");
            return;
        }
        self.actions.push(Action::ScaleCanary { up: false });
        self.actions.push(Action::RunHooks {
            gate: HookGate::PostRollout,
        });
        self.s.promoted_revision = self.s.revision.clone();
        self.set_phase(Phase::Succeeded);
        self.event(
            Severity::Normal,
            format!("Promotion completed! Scaling down {}", self.target()),
        );
    }

    pub(super) fn rollback(&mut self, why: String) {
        self.set_routes(0, None, false);
        self.actions.push(Action::ScaleCanary { up: false });
        self.actions.push(Action::RunHooks {
            gate: HookGate::PostRollout,
        });
        self.set_phase(Phase::Failed);
        self.s.stalled_since = None;
        self.event(
            Severity::Warning,
            format!("Rolling back {}: {why}", self.target()),
        );
    }

    /// Whether the routes are in force (see [`super::Observation::routes_not_accepted`]); if
    /// not, the rollout holds, an Event saying why when the hold begins, and rolls back once
    /// the progress deadline has passed.
    pub(super) fn routes_accepted(&mut self) -> bool {
        let Some(problem) = self.routes_held() else {
            return true;
        };
        self.stalled(problem);
        false
    }

    /// Why the routes are not in force yet, with an Event when the hold begins.
    pub(super) fn routes_held(&mut self) -> Option<String> {
        let why = self.obs.routes_not_accepted.as_ref()?;
        let problem = format!("routes not in force: {why}");
        if self.s.message != format!("waiting: {problem}") {
            self.event(
                Severity::Normal,
                format!("Holding {}: {problem}", self.target()),
            );
        }
        Some(problem)
    }

    /// Session affinity's cookies follow the canary's traffic, as Flagger keeps them: a rollout
    /// giving the canary traffic chooses its cookie (once: restarts and later steps keep it);
    /// traffic back on the primary makes it the previous one, which the routes expire. The
    /// primary's cookie is chosen once and kept. A cookie recorded under another name than the
    /// spec's (`cookieName` or `primaryCookieName` renamed, or a Flagger status taken over) is
    /// chosen again under the new name: Flagger would keep the old name until the status is
    /// cleared, which for the primary's cookie is never.
    pub(super) fn keep_session_cookies(&mut self, canary_weight: u8) {
        let Some(affinity) = &self.spec.session_affinity else {
            return;
        };
        if canary_weight == 0 {
            if let Some(ended) = self.s.cookies.canary.take() {
                self.s.cookies.previous = Some(ended);
            }
            return;
        }
        if !named(&self.s.cookies.canary, &affinity.cookie_name) {
            let value = self.cookie_value(&affinity.cookie_name);
            self.s.cookies.canary = Some(format!("{}={value}", affinity.cookie_name));
        }
        let primary = &affinity.primary_cookie_name;
        if !primary.is_empty() && !named(&self.s.cookies.primary, primary) {
            let value = self.cookie_value(primary);
            self.s.cookies.primary = Some(format!("{primary}={value}"));
        }
    }

    /// Ten letters, as Flagger's cookie values, from the revision, the time, the target and the
    /// cookie's name: new for each rollout, and the same for the same inputs, so the core stays
    /// a function of them (the simulator repeats its runs; a cluster's clock makes them differ).
    /// Not a secret: the canary hands it to anyone it answers.
    fn cookie_value(&self, name: &str) -> String {
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        // FNV-1a over the inputs, then SplitMix64 for the letters: stable across builds.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let revision = self.s.revision.as_deref().unwrap_or_default();
        let inputs = [
            revision.as_bytes(),
            &self.now.to_le_bytes(),
            self.target().as_bytes(),
            name.as_bytes(),
        ];
        for byte in inputs.iter().flat_map(|part| part.iter().chain(&[0xff])) {
            h = (h ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        (0..10)
            .map(|_| {
                h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = h;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                char::from(LETTERS[(z % LETTERS.len() as u64) as usize])
            })
            .collect()
    }

    pub(super) fn terminate(&mut self) {
        match self.s.phase {
            Phase::Terminated => {}
            // The shell has carried out the finalisation asked for on the previous tick.
            Phase::Terminating => self.set_phase(Phase::Terminated),
            _ => {
                self.s.canary_weight = 0;
                self.s.mirror = None;
                self.s.matched = false;
                self.actions.push(Action::Finalize {
                    revert: self.spec.revert_on_deletion,
                });
                self.set_phase(Phase::Terminating);
                let restored = if self.spec.revert_on_deletion {
                    " and the original workload restored"
                } else {
                    ""
                };
                self.event(
                    Severity::Normal,
                    format!(
                        "Canary deleted: routing restored to {}-primary{restored}",
                        self.target()
                    ),
                );
            }
        }
    }
}

/// Whether `cookie` (`name=value`) is recorded under `name`.
fn named(cookie: &Option<String>, name: &str) -> bool {
    cookie
        .as_deref()
        .and_then(|c| c.split_once('='))
        .is_some_and(|(n, _)| n == name)
}
