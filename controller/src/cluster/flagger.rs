//! Flagger's own Canaries (`flagger.app/v1beta1`), reconciled in place under
//! `--flagger-canaries`: the same rollout as a `fledge.dev` Canary's, with three differences.
//!
//! - Flagger's CRD has a closed status schema (unknown fields are pruned), so what Fledge records
//!   beyond Flagger's fields (the rollout state, the primary's template and size, its last
//!   message) lives in the annotation [`STATE_ANNOTATION`]; `status` gets only Flagger's fields
//!   ([`MIRRORED`]). The annotation is written first: it is the record a restarted controller
//!   resumes from, and the status is a function of it.
//! - The objects Flagger created (the primary, the Services, the routing objects) are owned by
//!   the same Canary object, so they keep their controlling owner reference: one to
//!   `flagger.app/v1beta1`, never to `fledge.dev` ([`owner_reference`]).
//! - `status.lastAppliedSpec` and `lastPromotedSpec` are Flagger's hashes of Go structures, which
//!   Fledge cannot reproduce: they are left as found, so that Flagger, started again, sees no new
//!   revision. The `lastAppliedSpec` seen when the state was recorded is kept in the annotation:
//!   when Flagger has run a rollout since (it changed), the record is stale and the Canary is
//!   taken over afresh. So is the primary's [`FLAGGER_ID`] seen then: Flagger gives the primary's
//!   pod template a new one at every promotion, and Fledge never writes one.
//!
//! A Canary read from Flagger's API is carried through the reconciler as a [`Canary`] marked
//! with [`SERVED_AS`] (in memory only, never written), so that everything that names the Canary
//! (owner references, Events, its own API) names Flagger's.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::warn;

use crate::spec::{Canary, CanaryStatus, MetricTemplate, MetricTemplateSpec};

pub const GROUP: &str = "flagger.app";
pub const VERSION: &str = "v1beta1";
pub const API_VERSION: &str = "flagger.app/v1beta1";

/// Flagger's finalizer, which it adds with `revertOnDeletion`.
pub const FINALIZER: &str = "finalizer.flagger.app";

/// Fledge's record of a Flagger Canary it reconciles (JSON, see [`Record`]).
pub const STATE_ANNOTATION: &str = "fledge.dev/state";

/// The pod template annotation Flagger gives the primary at every promotion: a random id, new
/// each time, so that the primary's pods restart (its `makeAnnotations`).
pub const FLAGGER_ID: &str = "flagger-id";

/// The field manager Flagger's writes are recorded under: it writes by update, so the API
/// server names the manager after its binary.
pub const FIELD_MANAGER: &str = "flagger";

/// In memory only: the API version a [`Canary`] was read as, when not `fledge.dev`'s. It is set
/// by [`to_canary`] and removed from Canaries read from Fledge's own API ([`unmarked`]), so a
/// user cannot set it.
pub(crate) const SERVED_AS: &str = "fledge.dev/served-as";

/// The status fields of Flagger's schema that Fledge writes; the rest of `status`
/// (`lastAppliedSpec`, `lastPromotedSpec`, `trackedConfigs`) is left as found.
pub const MIRRORED: &[&str] = &[
    "phase",
    "canaryWeight",
    "failedChecks",
    "iterations",
    "lastTransitionTime",
    "conditions",
    "sessionAffinityCookie",
    "previousSessionAffinityCookie",
    "primarySessionAffinityCookie",
];

/// Flagger's Canaries, as a dynamic resource.
pub fn canary_resource() -> ApiResource {
    resource("Canary", "canaries")
}

/// Flagger's MetricTemplates, read for the `templateRef`s of its Canaries.
pub fn metric_template_resource() -> ApiResource {
    resource("MetricTemplate", "metrictemplates")
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: API_VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Whether this Canary was read from Flagger's API.
pub fn is_flagger(canary: &Canary) -> bool {
    canary.annotations().get(SERVED_AS).map(String::as_str) == Some(API_VERSION)
}

/// A Canary read from Fledge's own API without the in-memory mark (a user may have set it).
pub fn unmarked(canary: &Canary) -> Option<Canary> {
    if !canary.annotations().contains_key(SERVED_AS) {
        return None;
    }
    let mut c = canary.clone();
    c.annotations_mut().remove(SERVED_AS);
    Some(c)
}

/// The controlling owner reference of the objects a Canary's rollout creates: to the Canary
/// object it was read as. For a Flagger Canary it names the object Flagger's own reference
/// names, so an object Flagger created needs no second controller (the API server refuses two).
/// Without `blockOwnerDeletion`, as for Fledge's own Canaries: setting it needs `update` on
/// the owner's finalizers where the OwnerReferencesPermissionEnforcement admission plugin runs;
/// on Flagger's objects Flagger's value stays (another field manager's).
pub fn owner_reference(canary: &Canary) -> Option<OwnerReference> {
    if !is_flagger(canary) {
        return canary.controller_owner_ref(&());
    }
    Some(OwnerReference {
        api_version: API_VERSION.into(),
        kind: "Canary".into(),
        name: canary.metadata.name.clone()?,
        uid: canary.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// The reference Events about the Canary are about.
pub fn object_ref(canary: &Canary) -> ObjectReference {
    let mut r = canary.object_ref(&());
    if is_flagger(canary) {
        r.api_version = Some(API_VERSION.into());
    }
    r
}

/// The MetricTemplate a Canary's `templateRef` names, from the Canary's own group (Flagger's
/// Canaries name Flagger's templates); `None` when it does not exist. One that does not read
/// as a template is an error naming why.
pub(crate) async fn metric_template(
    client: Client,
    canary: &Canary,
    namespace: &str,
    name: &str,
) -> Result<Option<MetricTemplateSpec>, kube::Error> {
    if !is_flagger(canary) {
        let api: Api<MetricTemplate> = Api::namespaced(client, namespace);
        return Ok(api.get_opt(name).await?.map(|t| t.spec));
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, namespace, &metric_template_resource());
    match api.get_opt(name).await? {
        None => Ok(None),
        Some(t) => serde_json::from_value(t.data["spec"].clone())
            .map(Some)
            .map_err(kube::Error::SerdeError),
    }
}

/// What [`STATE_ANNOTATION`] holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Flagger's `status.lastAppliedSpec` when this was recorded (absent if it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flagger_last_applied_spec: Option<String>,
    /// The primary's [`FLAGGER_ID`] when this was recorded (absent if it had none, and in
    /// records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_flagger_id: Option<String>,
    /// Fledge's status but for the [`MIRRORED`] fields, which are in `status`.
    #[serde(default)]
    pub status: Map<String, Value>,
}

/// The record on a Flagger Canary that is still current: absent, not readable (logged) or
/// stale (Flagger has run a rollout since) all give `None`, and the Canary is taken over as
/// found.
pub fn current_record(object: &DynamicObject) -> Option<Record> {
    let raw = object.annotations().get(STATE_ANNOTATION)?;
    let record: Record = match serde_json::from_str(raw) {
        Ok(r) => r,
        Err(e) => {
            warn!(canary = %object.name_any(), error = %e,
                  "annotation {STATE_ANNOTATION} is not Fledge's record; taking over as found");
            return None;
        }
    };
    let seen = flagger_last_applied_spec(object);
    if record.flagger_last_applied_spec != seen {
        warn!(canary = %object.name_any(), recorded = ?record.flagger_last_applied_spec, ?seen,
              "Flagger has run a rollout since Fledge's record; taking over as found");
        return None;
    }
    Some(record)
}

/// Flagger's own `status.lastAppliedSpec`.
pub fn flagger_last_applied_spec(object: &DynamicObject) -> Option<String> {
    object.data["status"]["lastAppliedSpec"]
        .as_str()
        .map(String::from)
}

/// The record in a Canary's annotation, if it reads as one (current or not).
pub fn recorded(canary: &Canary) -> Option<Record> {
    let raw = canary.annotations().get(STATE_ANNOTATION)?;
    serde_json::from_str(raw).ok()
}

/// The [`FLAGGER_ID`] of a primary's pod template.
pub fn primary_flagger_id(primary: &Deployment) -> Option<String> {
    primary
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(FLAGGER_ID)
        .cloned()
}

/// Whether Flagger has promoted since `record` was made: the primary carries a [`FLAGGER_ID`]
/// other than the one recorded. Fledge's own promotions leave none (Fledge, the fields' only
/// owner since the take-over, drops it), so the id seen at take-over stays until Flagger,
/// running again, writes a new one.
pub fn promoted_since(record: &Record, primary: &Deployment) -> bool {
    primary_flagger_id(primary).is_some_and(|id| Some(&id) != record.primary_flagger_id.as_ref())
}

/// The Canary without Fledge's part of its status: as a Canary with no record (or a stale one)
/// reads, so that taking it over afresh writes a new record.
pub fn without_record(canary: &Canary) -> Canary {
    let mut c = canary.clone();
    let status = serde_json::to_value(&c.status).unwrap_or(Value::Null);
    let (flaggers, _) = split(&status);
    c.status = if flaggers.is_empty() {
        None
    } else {
        serde_json::from_value(Value::Object(flaggers)).ok()
    };
    c
}

/// Whether Fledge was the last to set a Flagger Canary's `status.phase`: the `managedFields`
/// entry that owns it is Fledge's (its status writes are under [`super::FIELD_MANAGER`],
/// Flagger's under [`FIELD_MANAGER`]; an update takes over the fields it changes). Tells a
/// rollout of Fledge's whose record is gone from one of Flagger's.
pub fn phase_set_by_fledge(canary: &Canary) -> bool {
    canary
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|e| {
            e.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:status"]["f:phase"].is_object())
        })
        .is_some_and(|e| e.manager.as_deref() == Some(super::FIELD_MANAGER))
}

/// Whether a `managedFields` entry is Flagger's write to the object itself (not to a
/// subresource, such as the status the Deployment controller writes).
pub fn is_flaggers(entry: &ManagedFieldsEntry) -> bool {
    entry.manager.as_deref() == Some(FIELD_MANAGER) && entry.subresource.is_none()
}

/// Why a Flagger Canary cannot be read as a Canary.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("spec: {0}")]
    Spec(serde_json::Error),
    #[error("status: {0}")]
    Status(serde_json::Error),
}

/// A Flagger Canary as the reconciler's [`Canary`]: its spec as is, its status made of
/// Flagger's fields and, when the record is current, Fledge's own.
pub fn to_canary(object: &DynamicObject) -> Result<Canary, ReadError> {
    let spec = serde_json::from_value(object.data["spec"].clone()).map_err(ReadError::Spec)?;
    let mut status = current_record(object).map(|r| r.status).unwrap_or_default();
    // Only Fledge's own fields come from the record: a stale Flagger field there is ignored.
    status.retain(|k, _| !MIRRORED.contains(&k.as_str()));
    if let Some(Value::Object(found)) = object.data.get("status") {
        for key in MIRRORED {
            if let Some(v) = found.get(*key) {
                status.insert((*key).to_string(), v.clone());
            }
        }
    }
    let status: Option<CanaryStatus> = if status.is_empty() {
        None
    } else {
        Some(serde_json::from_value(Value::Object(status)).map_err(ReadError::Status)?)
    };
    let mut metadata = object.metadata.clone();
    metadata
        .annotations
        .get_or_insert_default()
        .insert(SERVED_AS.into(), API_VERSION.into());
    Ok(Canary {
        metadata,
        spec,
        status,
    })
}

/// A status as its two parts on a Flagger Canary: Flagger's fields, and Fledge's own.
pub fn split(status: &Value) -> (Map<String, Value>, Map<String, Value>) {
    let mut flagger = Map::new();
    let mut own = Map::new();
    for (k, v) in status.as_object().into_iter().flatten() {
        if MIRRORED.contains(&k.as_str()) {
            flagger.insert(k.clone(), v.clone());
        } else {
            own.insert(k.clone(), v.clone());
        }
    }
    (flagger, own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flagger_canary(annotations: Value, status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "f-uid",
                         "annotations": annotations},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": "podinfo"},
                     "service": {"port": 9898}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_flagger_canary_owns_its_objects_as_flagger_does() {
        let c = to_canary(&flagger_canary(json!({}), json!({"phase": "Succeeded"}))).unwrap();
        assert!(is_flagger(&c));
        let r = owner_reference(&c).unwrap();
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str(), r.uid.as_str()),
            (API_VERSION, "Canary", "f-uid")
        );
        assert_eq!(r.controller, Some(true));
        assert_eq!(object_ref(&c).api_version.as_deref(), Some(API_VERSION));
        // The mark set on a fledge.dev Canary by hand is not trusted.
        let clean = unmarked(&c).unwrap();
        assert!(!is_flagger(&clean));
        assert_eq!(
            owner_reference(&clean).unwrap().api_version,
            "fledge.dev/v1alpha1"
        );
    }

    #[test]
    fn a_record_is_used_only_while_flagger_has_not_rolled_out_since() {
        let record = json!({"flaggerLastAppliedSpec": "hash-1",
                            "status": {"state": {"phase": "Succeeded"}, "phase": "Failed"}})
        .to_string();
        let status = json!({"phase": "Succeeded", "lastAppliedSpec": "hash-1"});
        let c = to_canary(&flagger_canary(
            json!({ STATE_ANNOTATION: record }),
            status.clone(),
        ))
        .unwrap();
        let s = c.status.unwrap();
        assert!(s.state.is_some());
        // Flagger's fields come from the status, never from the record.
        assert_eq!(s.phase, "Succeeded");
        let mut moved = status;
        moved["lastAppliedSpec"] = json!("hash-2");
        let c = to_canary(&flagger_canary(json!({ STATE_ANNOTATION: record }), moved)).unwrap();
        assert_eq!(c.status.unwrap().state, None);
        let garbage = flagger_canary(json!({ STATE_ANNOTATION: "{" }), json!({}));
        assert_eq!(to_canary(&garbage).unwrap().status, None);
    }
}
