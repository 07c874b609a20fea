//! Traffic routers: the mesh objects that split traffic between primary and canary.
//!
//! One [`Router`] per mesh, chosen from the Canary's provider: Istio (`VirtualService` and two
//! `DestinationRule`s), SMI (`TrafficSplit`, what Linkerd reads) and the Gateway API
//! (`HTTPRoute`). Each mesh module has pure builders that return the exact object for a set of
//! [`Routes`]; the router writes them with server-side apply under the field manager `fledge`,
//! so fields that other managers own on the same object (labels, annotations, `exportTo`, a
//! user's DestinationRule subsets) survive every write.
//!
//! # Expected flow
//! 1. [`Router::reconcile`] when the Canary is initialised and on every reconcile: creates the
//!    objects if absent with all traffic on the primary, and otherwise brings the parts the
//!    controller owns up to date while keeping the weights it finds.
//! 2. [`Router::set_routes`] for every routing decision of the rollout core.
//! 3. [`Router::get_routes`] reads the live split back, so that a hand edit between steps is seen.
//! 4. [`Router::finalize`] when the Canary is deleted: all traffic back to the primary.
//!
//! # Ownership
//! An object the router creates carries an owner reference to its Canary, so that Kubernetes
//! removes it with the Canary. An object that existed before (a user's own VirtualService named
//! like the service) gets no owner reference: it stays when the Canary goes.

pub mod gateway_api;
pub mod istio;
pub mod smi;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::spec::Canary;

/// The field manager of every write, as shown in `managedFields`.
pub const FIELD_MANAGER: &str = "fledge";

/// A traffic split between primary and canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routes {
    /// Percentage of traffic served by the primary.
    pub primary: u8,
    /// Percentage of traffic served by the canary.
    pub canary: u8,
    /// Percentage of the primary's traffic copied to the canary (responses discarded).
    pub mirror: Option<u8>,
    /// A/B: requests matching the Canary's `analysis.match` take the weighted route, the
    /// others go to the primary.
    pub matched: bool,
}

impl Routes {
    /// Everything to the primary, nothing mirrored or matched.
    pub const PRIMARY_ONLY: Routes = Routes {
        primary: 100,
        canary: 0,
        mirror: None,
        matched: false,
    };
}

impl std::fmt::Display for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "primary {}%, canary {}%", self.primary, self.canary)?;
        if let Some(m) = self.mirror {
            write!(f, ", mirror {m}%")?;
        }
        if self.matched {
            f.write_str(", A/B match rules on")?;
        }
        Ok(())
    }
}

/// What went wrong while routing, naming the object involved.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The provider names no mesh Fledge can route with.
    #[error(
        "unknown traffic provider `{0}`; expected istio, linkerd, smi, smi:v1alpha1, smi:v1alpha2, smi:v1alpha3, gatewayapi, gatewayapi:v1 or gatewayapi:v1beta1"
    )]
    UnknownProvider(String),
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
    /// The Canary asks for something the object cannot express.
    #[error("{field}: {reason}")]
    InvalidSpec { field: String, reason: String },
    /// The mesh cannot do what was asked (mirroring or A/B with SMI).
    #[error("{provider} does not support {feature}")]
    Unsupported {
        provider: &'static str,
        feature: &'static str,
    },
}

/// The router for one Canary's provider. Enum dispatch: the set of meshes is closed.
#[derive(Clone)]
pub enum Router {
    // Boxed: it holds two object clients, the others one.
    Istio(Box<istio::Istio>),
    Smi(smi::Smi),
    GatewayApi(gateway_api::GatewayApi),
}

impl Router {
    /// The router for a provider string as written in `spec.provider` (or the controller-wide
    /// default): `istio`; `linkerd`, `smi`, `smi:v1alpha1|2|3` (Linkerd reads SMI
    /// TrafficSplits); `gatewayapi`, `gatewayapi:v1`, `gatewayapi:v1beta1`.
    pub fn for_provider(provider: &str, client: kube::Client) -> Result<Router, RouterError> {
        let router = match provider {
            "istio" => Router::Istio(Box::new(istio::Istio::new(client))),
            "linkerd" | "smi" | "smi:v1alpha2" => {
                Router::Smi(smi::Smi::new(client, smi::SmiVersion::V1Alpha2))
            }
            "smi:v1alpha1" => Router::Smi(smi::Smi::new(client, smi::SmiVersion::V1Alpha1)),
            "smi:v1alpha3" => Router::Smi(smi::Smi::new(client, smi::SmiVersion::V1Alpha3)),
            "gatewayapi" | "gatewayapi:v1" => Router::GatewayApi(gateway_api::GatewayApi::new(
                client,
                gateway_api::GatewayVersion::V1,
            )),
            "gatewayapi:v1beta1" => Router::GatewayApi(gateway_api::GatewayApi::new(
                client,
                gateway_api::GatewayVersion::V1Beta1,
            )),
            other => return Err(RouterError::UnknownProvider(other.to_string())),
        };
        Ok(router)
    }

    /// Creates the routing objects if absent (all traffic to the primary) and updates the
    /// parts the controller owns, keeping the current weights. Idempotent.
    pub async fn reconcile(&self, canary: &Canary) -> Result<(), RouterError> {
        match self {
            Router::Istio(r) => r.reconcile(canary).await,
            Router::Smi(r) => r.reconcile(canary).await,
            Router::GatewayApi(r) => r.reconcile(canary).await,
        }
    }

    /// Routes traffic as `routes` says.
    pub async fn set_routes(&self, canary: &Canary, routes: &Routes) -> Result<(), RouterError> {
        match self {
            Router::Istio(r) => r.set_routes(canary, routes).await,
            Router::Smi(r) => r.set_routes(canary, routes).await,
            Router::GatewayApi(r) => r.set_routes(canary, routes).await,
        }
    }

    /// The split as the live object has it, so hand edits are seen.
    pub async fn get_routes(&self, canary: &Canary) -> Result<Routes, RouterError> {
        match self {
            Router::Istio(r) => r.get_routes(canary).await,
            Router::Smi(r) => r.get_routes(canary).await,
            Router::GatewayApi(r) => r.get_routes(canary).await,
        }
    }

    /// All traffic back to the primary; objects stay (the user's) or go with the Canary
    /// through their owner reference (ours).
    pub async fn finalize(&self, canary: &Canary) -> Result<(), RouterError> {
        match self {
            Router::Istio(r) => r.finalize(canary).await,
            Router::Smi(r) => r.finalize(canary).await,
            Router::GatewayApi(r) => r.finalize(canary).await,
        }
    }
}

/// The three Services of a Canary, named as Flagger names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceNames {
    /// `service.name`, or the target's name.
    pub apex: String,
    /// `<apex>-primary`.
    pub primary: String,
    /// `<apex>-canary`.
    pub canary: String,
}

/// The Services a Canary routes between.
pub fn service_names(canary: &Canary) -> ServiceNames {
    let apex = canary
        .spec
        .service
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| canary.spec.target_ref.name.clone());
    ServiceNames {
        primary: format!("{apex}-primary"),
        canary: format!("{apex}-canary"),
        apex,
    }
}

/// `metadata` for a generated object: name, the Canary's namespace, and the labels and
/// annotations of `service.apex`.
fn object_metadata(canary: &Canary, name: &str) -> Value {
    let mut meta = json!({ "name": name });
    if let Some(ns) = canary.metadata.namespace.as_deref() {
        meta["namespace"] = json!(ns);
    }
    if let Some(apex) = &canary.spec.service.apex {
        if !apex.labels.is_empty() {
            meta["labels"] = json!(apex.labels);
        }
        if !apex.annotations.is_empty() {
            meta["annotations"] = json!(apex.annotations);
        }
    }
    meta
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
    fn new(client: kube::Client, group: &str, version: &str, kind: &'static str) -> Self {
        let resource = ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: format!("{group}/{version}"),
            kind: kind.to_string(),
            plural: format!("{}s", kind.to_ascii_lowercase()),
        };
        Objects {
            client,
            resource,
            kind,
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
        mut desired: Value,
    ) -> Result<(), RouterError> {
        let namespace = namespace(canary)?;
        let name = desired["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(owner) = owner_reference(canary)
            && existing.is_none_or(|o| o.owner_references().iter().any(|r| r.uid == owner.uid))
        {
            desired["metadata"]["ownerReferences"] = json!([owner]);
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api(&namespace)
            .patch(&name, &params, &Patch::Apply(&desired))
            .await
            .map(drop)
            .map_err(|source| RouterError::Api {
                verb: "applying",
                kind: self.kind,
                namespace,
                name,
                source: Box::new(source),
            })
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

fn owner_reference(canary: &Canary) -> Option<OwnerReference> {
    canary.controller_owner_ref(&())
}

/// Turns two relative weights into percentages that add up to 100.
fn percentages(primary: f64, canary: f64) -> Option<(u8, u8)> {
    let total = primary + canary;
    if !(primary >= 0.0 && canary >= 0.0 && total > 0.0 && total.is_finite()) {
        return None;
    }
    let canary_pct = (100.0 * canary / total).round().clamp(0.0, 100.0) as u8;
    Some((100 - canary_pct, canary_pct))
}

/// Refuses a split that does not add up, before anything is written.
fn check_weights(routes: &Routes) -> Result<(), RouterError> {
    let bad = |reason: String| {
        Err(RouterError::InvalidSpec {
            field: "routes".into(),
            reason,
        })
    };
    if u16::from(routes.primary) + u16::from(routes.canary) != 100 {
        return bad(format!(
            "weights {} (primary) and {} (canary) must add up to 100",
            routes.primary, routes.canary
        ));
    }
    if routes.mirror.is_some_and(|m| m > 100) {
        return bad(format!(
            "mirror percentage {} is above 100",
            routes.mirror.unwrap_or_default()
        ));
    }
    Ok(())
}

/// A non-negative integer weight; anything else is a hand edit the router cannot read.
fn integer_weight(value: &Value) -> Option<u64> {
    value.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_weights_become_percentages_that_add_up_to_one_hundred() {
        assert_eq!(percentages(900.0, 100.0), Some((90, 10)));
        assert_eq!(percentages(1.0, 2.0), Some((33, 67)));
        assert_eq!(percentages(0.0, 0.0), None);
        assert_eq!(percentages(-1.0, 2.0), None);
        assert_eq!(percentages(f64::NAN, 2.0), None);
    }

    #[test]
    fn unknown_providers_are_refused_by_name() {
        let e = RouterError::UnknownProvider("nginx".into()).to_string();
        assert!(e.contains("`nginx`"), "{e}");
    }
}
