//! The controller's actions carried out on the mesh, as the cluster shell would: scaling and
//! promotion change the versions, and routing decisions become the provider's objects, held as
//! the API server holds them (`objects`) and applied to the mesh as they resolve.

use fledge_controller::rollout::{Action, Phase};
use fledge_controller::routes::Routes;

use super::objects::{Store, Writer};
use super::{Harness, NEW_REVISION, ROUTES_NOT_UNDERSTOOD};
use crate::engine::MILLIS;
use crate::manifest::{self, Manifest, Manifests};
use crate::mesh::{self, MeshError};
use crate::result::AppliedObject;

impl Harness<'_> {
    pub(super) fn carry_out(&mut self, action: &Action) {
        let result = match action {
            // The router creates its objects, all traffic on the primary, as the primary starts.
            Action::InitializePrimary => self.apply_routes(Routes::PRIMARY_ONLY),
            Action::RunHooks { .. } | Action::Event { .. } => Ok(()),
            Action::ScaleCanary { up } => {
                self.scale_canary(if *up { self.scenario.canary().pods } else { 0 })
            }
            Action::SetRoutes {
                primary,
                canary,
                mirror,
                matched,
            } => self.apply_routes(Routes {
                primary: *primary,
                canary: *canary,
                mirror: *mirror,
                matched: *matched,
            }),
            Action::PromotePrimary => self.promote_primary(),
            Action::Finalize { .. } => self.apply_routes(Routes::PRIMARY_ONLY),
        };
        let what = match action {
            Action::InitializePrimary | Action::SetRoutes { .. } | Action::Finalize { .. } => {
                "routes"
            }
            Action::ScaleCanary { .. } => "scale",
            Action::PromotePrimary => "promote",
            Action::RunHooks { .. } | Action::Event { .. } => "",
        };
        if !what.is_empty() {
            let done = match (what, self.routes) {
                ("routes", Some(routes)) => format!("routes written: {routes}"),
                ("scale", _) => format!("canary scaled to {} pods", self.canary_desired),
                _ => "primary takes the canary's template".to_string(),
            };
            self.trace_action(what, &done, result.as_ref().err());
        }
        if let Err(e) = result {
            self.warnings
                .push(format!("{action:?} could not be carried out: {e}"));
        }
    }

    /// A `action` trace line: a change the harness makes to the mesh (`what`: routes, scale,
    /// promote, timeline), what it did, and why it was refused if it was.
    pub(super) fn trace_action(&mut self, what: &str, done: &str, refused: Option<&MeshError>) {
        let now = self.mesh.now();
        if let Some(t) = self.mesh.tracer()
            && t.wants("action", &["what", "text"])
        {
            let text = match refused {
                Some(e) => format!("{done} (refused: {e})"),
                None => done.to_string(),
            };
            t.emit(
                now,
                "action",
                &[("what", &what), ("text", &format_args!("{text:?}"))],
            );
        }
    }

    /// Routes as the cluster's router would: the provider's objects for `routes`, built by the
    /// controller's own builders and loaded through the manifest loader.
    pub(super) fn apply_routes(&mut self, routes: Routes) -> Result<(), MeshError> {
        self.routes = Some(routes);
        // As the cluster does, the routes carry the session cookies of the state just decided.
        let canary =
            fledge_controller::routes::with_cookies(self.rollout_canary(), &self.state.cookies);
        let objects = match self.provider.objects(&canary, &routes) {
            Ok(objects) => objects,
            Err(e) => return Err(routing_error(format!("the router refuses {routes}: {e}"))),
        };
        let text = objects
            .iter()
            .map(|o| serde_json::to_string(o).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n");
        let loaded = manifest::parse(&text)
            .map_err(|e| routing_error(format!("the router's objects do not load: {e}")))?;
        self.apply_controller_objects(loaded)?;
        self.applied_routes.push(AppliedObject {
            at_ms: self.mesh.now() / MILLIS,
            routes,
            objects,
            mesh_routes: self.mesh.route_table(self.target().service),
        });
        Ok(())
    }

    /// Applies routing objects the controller wrote, as its router applies them: the default
    /// route of the VirtualService it replaces lends its faults, timeout and retries.
    pub(super) fn apply_controller_objects(
        &mut self,
        mut loaded: Manifests,
    ) -> Result<(), MeshError> {
        for item in &mut loaded.items {
            if let Some((Manifest::VirtualService(current), writer)) = self.objects.get(item)
                && let Manifest::VirtualService(vs) = item
            {
                let dropped = lend_default_route(vs, current);
                // The controller's own earlier copy carries the Canary's timeout and retries:
                // only a scenario's VirtualService has its own to lose.
                if writer == Writer::Scenario {
                    self.warn(Writer::Scenario, dropped);
                }
            }
        }
        let warnings = std::mem::take(&mut loaded.warnings);
        self.warn(Writer::Controller, warnings);
        self.apply_objects(&loaded, Writer::Controller)?;
        if self.mesh.service_policy_bypassed(self.target().service) {
            self.warn(
                Writer::Scenario,
                vec![format!(
                    "a DestinationRule on `{}` sets a trafficPolicy the controller's routes bypass: they name the primary and canary by their own hosts, which take only their own DestinationRules; put the policy in the Canary's service.trafficPolicy",
                    self.scenario.service
                )],
            );
        }
        Ok(())
    }

    /// Scales the target to `pods`; scaled up, it runs the revision the scenario deployed.
    /// A refused scale (too many pods) changes nothing.
    pub(super) fn scale_canary(&mut self, pods: u32) -> Result<(), MeshError> {
        let before = self.mesh.behaviour(self.target().canary).cloned();
        self.scale_canary_to(pods).inspect_err(|_| {
            if let Some(behaviour) = before {
                // Setting back what the version had cannot be refused.
                let _ = self.mesh.apply(mesh::Action::SetBehaviour {
                    version: self.target().canary,
                    behaviour,
                });
            }
        })?;
        self.canary_desired = pods;
        Ok(())
    }

    fn scale_canary_to(&mut self, pods: u32) -> Result<(), MeshError> {
        if pods > 0 {
            let behaviour = if self.revision == NEW_REVISION {
                self.scenario.canary().behaviour.clone()
            } else {
                self.scenario.primary().behaviour.clone()
            };
            self.mesh.apply(mesh::Action::SetBehaviour {
                version: self.target().canary,
                behaviour,
            })?;
        }
        self.mesh.apply(mesh::Action::Scale {
            version: self.target().canary,
            pods,
        })
    }

    /// Copies the target's template (its behaviour) to the primary.
    pub(super) fn promote_primary(&mut self) -> Result<(), MeshError> {
        let behaviour = self
            .mesh
            .behaviour(self.target().canary)
            .cloned()
            .unwrap_or_default();
        self.mesh.apply(mesh::Action::SetBehaviour {
            version: self.target().primary,
            behaviour,
        })
    }

    /// Applies objects as the API server takes them from `writer`, then what is in effect to
    /// the mesh: objects of other kinds directly, routing objects as the store resolves them
    /// (by kind, namespace and name; the older of two claims on a host wins) over the data
    /// plane's default routes.
    pub(super) fn apply_objects(&mut self, m: &Manifests, writer: Writer) -> Result<(), MeshError> {
        let mut direct = Manifests::default();
        for item in &m.items {
            if Store::keeps(item) {
                self.objects.apply(item.clone(), writer);
            } else {
                direct.items.push(item.clone());
            }
        }
        let warnings = self.mesh.apply_manifests(&direct)?;
        self.warn(writer, warnings);
        let (effective, conflicts) = self.objects.effective();
        self.warn(Writer::Scenario, conflicts);
        // What the store holds now is all that routes: a replaced object's rules, timeouts,
        // retries and faults go with it.
        self.mesh.reset_routes();
        for e in effective {
            let one = Manifests {
                items: vec![e.manifest],
                warnings: Vec::new(),
            };
            let warnings = self.mesh.apply_manifests(&one)?;
            self.warn(e.writer, warnings);
        }
        Ok(())
    }

    /// Records warnings once each; those about the controller's objects say so.
    pub(super) fn warn(&mut self, writer: Writer, warnings: Vec<String>) {
        for w in warnings {
            let w = match writer {
                Writer::Controller => format!("{ROUTES_NOT_UNDERSTOOD}{w}"),
                Writer::Scenario => w,
            };
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
    }

    /// Load testers send while a rollout progresses, from its first step on (Flagger runs them
    /// from rollout hooks, which start with the analysis).
    pub(super) fn switch_load_testers(&mut self) {
        let on = self.state.phase == Phase::Progressing && self.state.pre_rollout_done;
        for i in 0..self.load_testers.len() {
            let (client, rps, was) = self.load_testers[i];
            if was != on {
                self.load_testers[i].2 = on;
                let rps = if on { rps } else { 0.0 };
                if let Err(e) = self.mesh.apply(mesh::Action::SetRate { client, rps }) {
                    self.warnings.push(format!("load tester not switched: {e}"));
                }
            }
        }
    }
}

fn routing_error(reason: String) -> MeshError {
    MeshError::InvalidConfig {
        what: "routes".into(),
        reason,
    }
}

/// The default route (the last without a match) of the VirtualService the controller's
/// replaces, the one of the same namespace and name, lends its fault injection to the
/// controller's routes that set none: the way a scenario injects faults under the controller's
/// routing (on a cluster the controller's apply replaces `spec.http`, fault and all). Its
/// timeout and retries are not lent: the Canary sets those, so they are dropped with a
/// warning naming where they go. A VirtualService of another name is another object.
fn lend_default_route(
    controller: &mut manifest::VirtualService,
    current: &manifest::VirtualService,
) -> Vec<String> {
    let Some(default) = current
        .http
        .iter()
        .rev()
        .find(|r| r.matches.is_empty() && !r.matches_none)
    else {
        return Vec::new();
    };
    for r in &mut controller.http {
        if r.fault.is_none() {
            r.fault = default.fault.clone();
        }
    }
    let dropped = [
        (default.timeout.is_some(), "timeout", "service.timeout"),
        (default.retries.is_some(), "retries", "service.retries"),
    ];
    dropped
        .iter()
        .filter(|(set, _, _)| *set)
        .map(|(_, what, field)| {
            format!(
                "VirtualService {}: the controller's routes replace its {what}, as on a cluster; set the Canary's {field} instead",
                current.name
            )
        })
        .collect()
}
