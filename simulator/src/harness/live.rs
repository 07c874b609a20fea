//! The harness without its rollout core, for `fledge-sim serve`: the scenario's mesh, traffic
//! and timeline, with a controller outside the process writing the routing objects and asking
//! for scaling and promotion. The objects go through the same path as the harness' own routes
//! ([`Harness::apply_controller_objects`]), so the merge rule is the one `run` rehearses.

use fledge_controller::routes::Provider;
use serde_json::Value as Json;

use super::{Harness, HarnessError, Writer};
use crate::engine::SimTime;
use crate::manifest;
use crate::mesh::MeshError;
use crate::scenario::{Scenario, Trigger, Variant};
use crate::telemetry::Telemetry;

/// The workloads as a controller sees them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Workloads {
    /// The target's revision: `rev-1`, then `rev-2` once the timeline deploys.
    pub(crate) revision: String,
    pub(crate) canary: Replicas,
    pub(crate) primary: Replicas,
    /// The canary's weight in the last routing object the controller sent.
    pub(crate) canary_weight: u8,
}

/// Ready and desired pods of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Replicas {
    pub(crate) ready: u32,
    pub(crate) desired: u32,
}

/// Why routing objects were refused; the mesh keeps its routes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LiveApplyError {
    /// The text does not load (a YAML/JSON error or a field of the wrong type, named).
    #[error("{0}")]
    Invalid(String),
    /// The mesh could not take the objects.
    #[error("the mesh refused the objects: {0}")]
    Mesh(MeshError),
}

/// The live mesh of one scenario variant.
pub(crate) struct Live<'a> {
    h: Harness<'a>,
    /// The canary's weight as the controller's last routing object of its provider sets it.
    weight: u8,
}

impl<'a> Live<'a> {
    pub(crate) fn new(
        scenario: &'a Scenario,
        variant: &'a Variant,
        seed: u64,
    ) -> Result<Self, HarnessError> {
        if scenario.canary_resource.is_none() {
            return Err(HarnessError::NoCanary {
                file: scenario.file.display().to_string(),
            });
        }
        Ok(Live {
            h: Harness::new(scenario, variant, seed)?,
            weight: 0,
        })
    }

    /// The provider whose routing objects route the service.
    pub(crate) fn provider(&self) -> Provider {
        self.h.provider
    }

    /// Runs the mesh to `t`, firing the timeline's events at their times (weight triggers as
    /// soon as the controller's routes give the canary that weight).
    pub(crate) fn run_until(&mut self, t: SimTime) {
        loop {
            let next = self
                .h
                .pending
                .iter()
                .filter_map(|e| match e.when {
                    Trigger::At(at) => Some(at),
                    Trigger::Weight(_) => None,
                })
                .min()
                .filter(|at| *at <= t);
            let Some(at) = next else { break };
            self.h.run_mesh_until(at, u64::MAX, &mut |_| {});
            self.h.fire_pending_at(at, self.weight);
        }
        self.h.run_mesh_until(t, u64::MAX, &mut |_| {});
        let now = self.h.mesh.now();
        self.h.fire_pending_at(now, self.weight);
    }

    /// Applies routing objects (YAML or JSON, one or more documents) as the controller's
    /// router applies them. Returns the warnings they raised (objects or fields the mesh does
    /// not simulate). Refused input changes nothing.
    pub(crate) fn apply(&mut self, text: &str) -> Result<Vec<String>, LiveApplyError> {
        let loaded = manifest::parse(text).map_err(|e| LiveApplyError::Invalid(e.to_string()))?;
        let weight = self.weight_in(text)?;
        let before = self.h.objects.clone();
        let seen = self.h.warnings.len();
        let stored = loaded.items.iter().any(super::Store::keeps);
        if let Err(e) = self.h.apply_controller_objects(loaded) {
            // Back to the objects the mesh routed by before.
            self.h.objects = before;
            let _ = self
                .h
                .apply_objects(&manifest::Manifests::default(), Writer::Controller);
            self.h.warnings.truncate(seen);
            return Err(LiveApplyError::Mesh(e));
        }
        if stored && let Some(w) = weight {
            self.weight = w;
        }
        let now = self.h.mesh.now();
        self.h.fire_pending_at(now, self.weight);
        Ok(self.h.warnings[seen..].to_vec())
    }

    /// The canary's weight in the provider's routing object among `text`'s documents, read by
    /// the controller's own reader; an object it cannot read is refused with its reason.
    fn weight_in(&self, text: &str) -> Result<Option<u8>, LiveApplyError> {
        let provider = self.h.provider;
        let kind = provider.routing_kind();
        let mut weight = None;
        for doc in serde_norway::Deserializer::from_str(text) {
            use serde::Deserialize as _;
            // `manifest::parse` has read the text already: a document that fails here is empty.
            let Ok(doc) = Json::deserialize(doc) else {
                continue;
            };
            let service = fledge_controller::routes::service_names(self.h.rollout_canary());
            let routes_service = doc["metadata"]["name"].as_str() == Some(service.apex.as_str());
            if doc["kind"].as_str() != Some(kind.kind) || !routes_service {
                continue;
            }
            let routes = provider
                .read_routes(self.h.rollout_canary(), &doc["spec"])
                .map_err(|reason| {
                    LiveApplyError::Invalid(format!("{} {:?}: {reason}", kind.kind, service.apex))
                })?;
            weight = Some(routes.canary);
        }
        Ok(weight)
    }

    /// Scales the target (the canary's Deployment) to `pods`; scaled up, it runs the current
    /// revision. Pods are ready at once.
    pub(crate) fn scale_canary(&mut self, pods: u32) -> Result<(), MeshError> {
        self.h.scale_canary(pods)
    }

    /// Copies the target's template to the primary.
    pub(crate) fn promote(&mut self) -> Result<(), MeshError> {
        self.h.promote_primary()
    }

    pub(crate) fn workloads(&self) -> Workloads {
        Workloads {
            revision: self.h.revision.to_string(),
            canary: Replicas {
                ready: self.h.mesh.ready_pods(self.h.target().canary),
                desired: self.h.canary_desired,
            },
            primary: Replicas {
                ready: self.h.mesh.ready_pods(self.h.target().primary),
                desired: self.h.scenario.primary().pods,
            },
            canary_weight: self.weight,
        }
    }

    /// The request telemetry, live.
    pub(crate) fn telemetry(&self) -> &Telemetry {
        self.h.mesh.telemetry()
    }

    /// Warnings so far (the scenario's, and those of the objects applied).
    pub(crate) fn warnings(&self) -> &[String] {
        &self.h.warnings
    }
}
