//! Traffic routers: apply the mesh objects that split traffic between primary and canary.
//!
//! The objects themselves are built by the pure [`crate::routes`] (the simulator loads the same
//! ones); a [`Router`] only applies them with server-side apply under the field manager
//! `fledge`, so fields that other managers own on the same object (labels, annotations,
//! `exportTo`, a user's DestinationRule subsets) survive every write, and reads them back.
//!
//! # Expected flow
//! 1. [`Router::reconcile`] when the Canary is initialised and on every reconcile: creates the
//!    objects if absent with all traffic on the primary, and otherwise brings the parts the
//!    controller owns up to date while keeping the weights it finds.
//! 2. [`Router::set_routes`] for every routing decision of the rollout core.
//! 3. [`Router::get_routes`] reads the live split back, so that a hand edit between steps is seen.
//! 4. [`Router::finalize`] when the Canary is deleted: a user's object gets its own spec back,
//!    ours is deleted when it is a mesh route on the apex Service (SMI, GAMMA HTTPRoute) and
//!    otherwise sends all traffic to the apex Service.
//!
//! # Ownership
//! An object the router creates carries an owner reference to its Canary, so that Kubernetes
//! removes it with the Canary. An object that existed before (a user's own VirtualService named
//! like the service) gets no owner reference: it stays when the Canary goes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

pub use crate::routes::Routes;
use crate::routes::{Provider, RouteError, RoutingKind, gateway_api, istio, service_names};
use crate::spec::Canary;

/// The field manager of every write, as shown in `managedFields`.
pub const FIELD_MANAGER: &str = "fledge";

/// What went wrong while routing, naming the object involved.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The Canary has no namespace (it was not read from the cluster).
    #[error("Canary {0} has no namespace")]
    NoNamespace(String),
    /// The API server refused or failed a request.
    #[error("{verb} {kind} {namespace}/{name} failed: {source}")]
    Api {
        verb: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The routing object does not exist.
    #[error("{kind} {namespace}/{name} does not exist")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// The routing object exists but does not route to primary and canary as expected,
    /// typically after a hand edit.
    #[error("{kind} {namespace}/{name} cannot be read as a primary/canary split: {reason}")]
    Malformed {
        kind: &'static str,
        namespace: String,
        name: String,
        reason: String,
    },
    /// The API server did not keep the split as applied (a CRD that prunes a field).
    #[error("{kind} {namespace}/{name} was not stored as applied: {reason}")]
    NotKept {
        kind: &'static str,
        namespace: String,
        name: String,
        reason: String,
    },
    /// The split cannot be written as the provider's object.
    #[error(transparent)]
    Build(#[from] RouteError),
}

/// Applies one provider's routing objects for a Canary and reads them back.
#[derive(Clone)]
pub struct Router {
    provider: Provider,
    /// The object that carries the split (VirtualService, TrafficSplit, HTTPRoute).
    routing: Objects,
    /// Istio's DestinationRules beside it.
    destination_rules: Option<Objects>,
}

impl Router {
    pub fn new(provider: Provider, client: kube::Client) -> Router {
        let destination_rules = (provider == Provider::Istio).then(|| {
            let kind = RoutingKind {
                group: istio::GROUP,
                version: istio::VERSION,
                kind: "DestinationRule",
            };
            Objects::new(client.clone(), kind)
        });
        Router {
            provider,
            routing: Objects::new(client, provider.routing_kind()),
            destination_rules,
        }
    }

    /// Creates the routing objects if absent (all traffic to the primary) and updates the
    /// parts the controller owns, keeping the current weights. Idempotent.
    pub async fn reconcile(&self, canary: &Canary) -> Result<(), RouterError> {
        let ns = namespace(canary)?;
        if let Some(rules) = &self.destination_rules {
            for desired in self.provider.companion_objects(canary) {
                let name = desired["metadata"]["name"].as_str().unwrap_or_default();
                let existing = rules.get(&ns, name).await?;
                rules.apply(canary, existing.as_ref(), desired).await?;
            }
        }
        let existing = self.routing.get(&ns, &service_names(canary).apex).await?;
        // Keep a rollout's current split: reconcile runs at every tick, not only at the start.
        let routes = existing
            .as_ref()
            .and_then(|o| self.provider.read_routes(canary, &o.data["spec"]).ok())
            .filter(|r| !r.matched || !canary.spec.analysis.match_.is_empty())
            .unwrap_or(Routes::PRIMARY_ONLY);
        self.write_routes(canary, existing.as_ref(), &routes).await
    }

    /// Routes traffic as `routes` says.
    pub async fn set_routes(&self, canary: &Canary, routes: &Routes) -> Result<(), RouterError> {
        let ns = namespace(canary)?;
        let existing = self.routing.get(&ns, &service_names(canary).apex).await?;
        self.write_routes(canary, existing.as_ref(), routes).await
    }

    /// Applies the routing object for `routes` and checks what the API server kept of it.
    async fn write_routes(
        &self,
        canary: &Canary,
        existing: Option<&DynamicObject>,
        routes: &Routes,
    ) -> Result<(), RouterError> {
        let desired = self.provider.routing_object(canary, routes)?;
        let check = |stored: &DynamicObject| {
            self.provider
                .check_stored(canary, routes, &stored.data["spec"])
                .map_err(|reason| RouterError::NotKept {
                    kind: self.routing.kind,
                    namespace: stored.namespace().unwrap_or_default(),
                    name: stored.name_any(),
                    reason,
                })
        };
        // A server-side dry run first: what an older CRD would prune (a mirror percent) is
        // refused before anything, such as a 100% mirror, is stored.
        let answer = self
            .routing
            .apply_with(canary, existing, desired.clone(), true)
            .await?;
        check(&answer)?;
        let stored = self.routing.apply(canary, existing, desired).await?;
        check(&stored)
    }

    /// The split as the live object has it, so hand edits are seen.
    pub async fn get_routes(&self, canary: &Canary) -> Result<Routes, RouterError> {
        let ns = namespace(canary)?;
        let object = self
            .routing
            .get_existing(&ns, &service_names(canary).apex)
            .await?;
        self.provider
            .read_routes(canary, &object.data["spec"])
            .map_err(|why| self.routing.malformed(&object, why))
    }

    /// Why the routing object is not in force yet: an HTTPRoute whose parents have not all
    /// accepted its current generation ([`gateway_api::not_accepted`]); `None` for the other
    /// providers, whose objects carry no such status.
    pub async fn not_accepted(&self, canary: &Canary) -> Result<Option<String>, RouterError> {
        if !matches!(self.provider, Provider::GatewayApi(_)) {
            return Ok(None);
        }
        let ns = namespace(canary)?;
        let object = self
            .routing
            .get_existing(&ns, &service_names(canary).apex)
            .await?;
        let value = serde_json::to_value(&object).unwrap_or_default();
        Ok(gateway_api::not_accepted(&value))
    }

    /// The Canary goes: an object the user wrote gets the spec it had before the Canary back
    /// (recorded in [`ORIGINAL_SPEC`] at take-over, as Flagger does). Ours, when it is a mesh
    /// route on the apex Service (SMI, GAMMA), is deleted; otherwise it routes all traffic to
    /// the apex Service and goes with the Canary through its owner reference.
    pub async fn finalize(&self, canary: &Canary) -> Result<(), RouterError> {
        let ns = namespace(canary)?;
        if let Some(rules) = &self.destination_rules {
            for desired in self.provider.companion_objects(canary) {
                let name = desired["metadata"]["name"].as_str().unwrap_or_default();
                if let Some(existing) = rules.get(&ns, name).await? {
                    rules.restore(&existing).await?;
                }
            }
        }
        let Some(existing) = self.routing.get(&ns, &service_names(canary).apex).await? else {
            return Ok(());
        };
        if self.routing.restore(&existing).await? {
            return Ok(());
        }
        if self.routes_the_mesh_itself(canary) {
            // A mesh route on the apex Service that only sent traffic back to it would be a
            // no-op at best: SMI does not define a TrafficSplit whose backend is its own root,
            // and a GAMMA HTTPRoute attached to a Service makes the mesh reject requests that
            // match none of its rules and keeps the Canary's timeouts and filters. Without it
            // the apex Service routes as plain Kubernetes, as before the Canary; the shell
            // calls this once the apex selects the workload that serves.
            return self.routing.delete(&existing).await;
        }
        // Ours sends everything to the apex Service, which selects whatever serves after the
        // Canary (the primary, or the target it was given back to): the primary may be deleted
        // before the garbage collector takes this object, and must then carry no traffic.
        let mut desired = self
            .provider
            .routing_object(canary, &Routes::PRIMARY_ONLY)?;
        let names = service_names(canary);
        retarget(&mut desired["spec"], &names.primary, &names.apex);
        self.routing
            .apply(canary, Some(&existing), desired)
            .await
            .map(drop)
    }
}

impl Router {
    /// Whether the routing object is attached to the apex Service itself (SMI, GAMMA) rather
    /// than to an ingress (Istio's hosts and gateways, Gateway API `gatewayRefs`), where it is
    /// what makes the ingress forward at all and must stay until the Canary's owner reference
    /// takes it.
    fn routes_the_mesh_itself(&self, canary: &Canary) -> bool {
        match self.provider {
            Provider::Istio => false,
            Provider::Smi(_) => true,
            Provider::GatewayApi(_) => canary
                .spec
                .service
                .gateway_refs
                .as_ref()
                .is_none_or(|refs| refs.is_empty()),
        }
    }
}

/// Every string `from` in `value` (the routing object's destinations) becomes `to`.
fn retarget(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Array(items) => items.iter_mut().for_each(|v| retarget(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| retarget(v, from, to)),
        _ => {}
    }
}

/// Annotation on an object the user wrote before the Canary took it over: its spec as it was,
/// given back when the Canary goes.
pub(crate) const ORIGINAL_SPEC: &str = "fledge.dev/original-spec";

/// The merge patch that turns `current` into `wanted`: keys of `current` that `wanted` lacks
/// are removed (a merge patch alone merges maps).
fn replacing(current: &Value, wanted: &Value) -> Value {
    match (current, wanted) {
        (Value::Object(c), Value::Object(w)) => {
            let mut patch = serde_json::Map::new();
            for key in c.keys().filter(|k| !w.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            for (key, value) in w {
                patch.insert(
                    key.clone(),
                    replacing(c.get(key).unwrap_or(&Value::Null), value),
                );
            }
            Value::Object(patch)
        }
        _ => wanted.clone(),
    }
}

fn namespace(canary: &Canary) -> Result<String, RouterError> {
    canary
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| RouterError::NoNamespace(canary.name_any()))
}

/// Reads and writes one kind of routing object with server-side apply.
#[derive(Clone)]
struct Objects {
    client: kube::Client,
    resource: ApiResource,
    kind: &'static str,
}

impl Objects {
    fn new(client: kube::Client, kind: RoutingKind) -> Self {
        Objects {
            client,
            resource: api_resource(kind),
            kind: kind.kind,
        }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.resource)
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<DynamicObject>, RouterError> {
        self.api(namespace)
            .get_opt(name)
            .await
            .map_err(|source| RouterError::Api {
                verb: "reading",
                kind: self.kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
                source: Box::new(source),
            })
    }

    async fn get_existing(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<DynamicObject, RouterError> {
        self.get(namespace, name)
            .await?
            .ok_or_else(|| RouterError::NotFound {
                kind: self.kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
    }

    /// Applies `desired` (the whole part of the object the controller owns). The owner
    /// reference to the Canary is part of it when the object is new or already ours; leaving
    /// it out of an apply would make the API server drop it.
    async fn apply(
        &self,
        canary: &Canary,
        existing: Option<&DynamicObject>,
        desired: Value,
    ) -> Result<DynamicObject, RouterError> {
        self.apply_with(canary, existing, desired, false).await
    }

    /// A server-side apply; with `dry_run` the API server answers what it would store and
    /// stores nothing.
    async fn apply_with(
        &self,
        canary: &Canary,
        existing: Option<&DynamicObject>,
        mut desired: Value,
        dry_run: bool,
    ) -> Result<DynamicObject, RouterError> {
        let namespace = namespace(canary)?;
        let name = desired["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let owner = owner_reference(canary);
        let ours = |o: &DynamicObject| {
            let uid = owner.as_ref().map(|r| r.uid.as_str());
            o.owner_references()
                .iter()
                .any(|r| Some(r.uid.as_str()) == uid)
        };
        match existing {
            Some(o) if !ours(o) => {
                // The user's: what it was is recorded once, and kept in every apply (an apply
                // that leaves out a field it set before removes it).
                let recorded = o
                    .annotations()
                    .get(ORIGINAL_SPEC)
                    .cloned()
                    .unwrap_or_else(|| o.data["spec"].to_string());
                desired["metadata"]["annotations"][ORIGINAL_SPEC] = json!(recorded);
            }
            _ => {
                if let Some(owner) = owner {
                    desired["metadata"]["ownerReferences"] = json!([owner]);
                }
            }
        }
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        if dry_run {
            params = params.dry_run();
        }
        self.api(&namespace)
            .patch(&name, &params, &Patch::Apply(&desired))
            .await
            .map_err(|source| RouterError::Api {
                verb: "applying",
                kind: self.kind,
                namespace,
                name,
                source: Box::new(source),
            })
    }

    /// Gives a user's object the spec recorded in [`ORIGINAL_SPEC`] back and drops the record.
    /// Returns whether there was one.
    async fn restore(&self, object: &DynamicObject) -> Result<bool, RouterError> {
        let Some(recorded) = object.annotations().get(ORIGINAL_SPEC) else {
            return Ok(false);
        };
        let original: Value = serde_json::from_str(recorded)
            .map_err(|e| self.malformed(object, format!("{ORIGINAL_SPEC} is not JSON: {e}")))?;
        let body = json!({
            "metadata": {"annotations": {ORIGINAL_SPEC: null}},
            "spec": replacing(&object.data["spec"], &original),
        });
        let namespace = object.namespace().unwrap_or_default();
        let name = object.name_any();
        self.api(&namespace)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map_err(|source| RouterError::Api {
                verb: "restoring",
                kind: self.kind,
                namespace,
                name,
                source: Box::new(source),
            })?;
        Ok(true)
    }

    async fn delete(&self, object: &DynamicObject) -> Result<(), RouterError> {
        let namespace = object.namespace().unwrap_or_default();
        let name = object.name_any();
        match self
            .api(&namespace)
            .delete(&name, &Default::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(RouterError::Api {
                verb: "deleting",
                kind: self.kind,
                namespace,
                name,
                source: Box::new(source),
            }),
        }
    }

    fn malformed(&self, object: &DynamicObject, reason: impl Into<String>) -> RouterError {
        RouterError::Malformed {
            kind: self.kind,
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
            reason: reason.into(),
        }
    }
}

/// To the Canary object it was read as: Flagger's Canaries own their objects as Flagger does.
fn owner_reference(canary: &Canary) -> Option<OwnerReference> {
    crate::cluster::flagger::owner_reference(canary)
}

/// The dynamic API resource of a routing object's kind.
pub fn api_resource(kind: RoutingKind) -> ApiResource {
    let RoutingKind {
        group,
        version,
        kind,
    } = kind;
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: format!("{}s", kind.to_ascii_lowercase()),
    }
}
