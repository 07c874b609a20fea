//! Adopting the objects Flagger created for a Canary taken over: the primary, the Services, the
//! autoscaler's and the configs' `-primary` copies, the routing objects.
//!
//! Two things make them Fledge's without recreating any of them:
//!
//! - **The controlling owner reference.** An object whose controller is a Flagger Canary of this
//!   name but not this very object (another API version, or a Canary deleted and applied again)
//!   gets it replaced in place; the API server refuses two controllers.
//! - **The fields.** Flagger writes its copies by update, so its field manager owns every field
//!   of them, and Fledge writes them by server-side apply, which removes a field Fledge stops
//!   applying only if no other manager owns it. Left so, a field dropped from the target since
//!   Flagger's last promotion (a pod annotation, a config key) would stay on the copy for good.
//!   So Fledge applies the copy as it is found (sharing every field) and then drops Flagger's
//!   `managedFields` entry: Fledge is the only owner, as Flagger was, and its next write
//!   replaces the copy whole. The routing objects are left with Flagger's entry: Fledge's routers
//!   apply only part of them.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::super::config_copies::{ConfigKind, ConfigRef};
use super::super::workloads::TargetKind;
use super::super::{Error, FIELD_MANAGER, Result, flagger, scaled_objects, workloads};
use super::tick::Tick;
use crate::router::api_resource;
use crate::routes::service_names;

/// Metadata the API server or another controller keeps, never applied as found.
const NOT_APPLIED: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "finalizers",
];
/// Annotations written by others than Flagger (the Deployment controller, kubectl).
const OTHERS_ANNOTATIONS: &[&str] = &[
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// An object to adopt, and whether Fledge takes its fields over (see the module's doc).
struct Adoptee {
    resource: ApiResource,
    name: String,
    fields: bool,
}

impl Tick<'_> {
    /// Adopts the objects Flagger created for the Canary (see the module's doc): an object with
    /// another controller or none (a user's) is left as it is. Returns what got its controller
    /// reference replaced.
    pub(super) async fn adopt(
        &self,
        target: &str,
        configs: &BTreeSet<ConfigRef>,
    ) -> Result<Vec<String>> {
        let Some(ours) = flagger::owner_reference(self.canary) else {
            return Ok(Vec::new());
        };
        let mut objects = Vec::new();
        let mut copy = |resource: ApiResource, name: String| {
            objects.push(Adoptee {
                resource,
                name,
                fields: true,
            });
        };
        let primary = match self.workloads.kind() {
            TargetKind::Deployment => ApiResource::erase::<Deployment>(&()),
            TargetKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
        };
        copy(primary, workloads::primary_name(target));
        let names = service_names(self.canary);
        for name in [&names.apex, &names.primary, &names.canary] {
            copy(ApiResource::erase::<Service>(&()), name.clone());
        }
        if let Some(r) = self.canary.spec.scaled_by() {
            let resource = if r.kind == scaled_objects::KIND {
                scaled_objects::resource()
            } else {
                ApiResource::erase::<HorizontalPodAutoscaler>(&())
            };
            copy(resource, workloads::primary_name(&r.name));
        }
        for r in configs {
            let resource = match r.kind {
                ConfigKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
                ConfigKind::Secret => ApiResource::erase::<Secret>(&()),
            };
            copy(resource, workloads::primary_name(&r.name));
        }
        let provider = self.provider()?;
        let mut routing = vec![(api_resource(provider.routing_kind()), names.apex.clone())];
        for companion in provider.companion_objects(self.canary) {
            let kind = companion["kind"].as_str().unwrap_or_default();
            let api_version = companion["apiVersion"].as_str().unwrap_or_default();
            let Some((group, version)) = api_version.split_once('/') else {
                continue;
            };
            let resource = ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: api_version.into(),
                kind: kind.into(),
                plural: format!("{}s", kind.to_ascii_lowercase()),
            };
            let name = companion["metadata"]["name"].as_str().unwrap_or_default();
            routing.push((resource, name.to_string()));
        }
        objects.extend(routing.into_iter().map(|(resource, name)| Adoptee {
            resource,
            name,
            fields: false,
        }));
        let mut adopted = Vec::new();
        for object in objects {
            if self.adopt_one(&object, &ours).await? {
                adopted.push(format!("{} {}", object.resource.kind, object.name));
            }
        }
        Ok(adopted)
    }

    /// Adopts one object; whether its controller reference was replaced.
    async fn adopt_one(&self, object: &Adoptee, ours: &OwnerReference) -> Result<bool> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), &self.namespace, &object.resource);
        let (name, named) = (
            object.name.as_str(),
            format!("{} {}", object.resource.kind, object.name),
        );
        let write = |source| Error::Write {
            kind: "object to adopt",
            name: named.clone(),
            source,
        };
        let found = api.get_opt(name).await.map_err(|source| Error::Read {
            kind: "object to adopt",
            name: named.clone(),
            source,
        })?;
        let Some(mut found) = found else {
            return Ok(false);
        };
        let owners = found.owner_references();
        let controlled = owners
            .iter()
            .any(|o| o.controller == Some(true) && o.uid == ours.uid);
        let replaced = adopted_owners(owners, ours);
        if !controlled && replaced.is_none() {
            return Ok(false);
        }
        if let Some(owners) = &replaced {
            let body = json!({"metadata": {
                "ownerReferences": owners,
                "resourceVersion": found.resource_version(),
            }});
            found = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map_err(write)?;
        }
        let flaggers = found.managed_fields().iter().any(flagger::is_flaggers);
        if object.fields && flaggers {
            // Every field shared first, then Flagger's entry dropped: Fledge is left owning
            // what Flagger owned (a field no manager owns would stay as it is for good).
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let body = as_found(&object.resource, &found);
            let applied = api
                .patch(name, &params, &Patch::Apply(&body))
                .await
                .map_err(write)?;
            let kept: Vec<&ManagedFieldsEntry> = applied
                .managed_fields()
                .iter()
                .filter(|e| !flagger::is_flaggers(e))
                .collect();
            if kept.is_empty() {
                // The API server ignores an empty list: nothing to drop Flagger's entry for.
                warn!(object = %named, "no managedFields entry of Fledge's after applying");
            } else {
                let body = json!({"metadata": {
                    "managedFields": kept,
                    "resourceVersion": applied.resource_version(),
                }});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                    .map_err(write)?;
                info!(object = %named, "Flagger's fields taken over");
            }
        }
        Ok(replaced.is_some())
    }
}

/// The object as found, to be applied by Fledge: its content and the metadata it was written
/// with, not what the API server, another controller, a Service's allocation or the status
/// holds.
fn as_found(resource: &ApiResource, object: &DynamicObject) -> Value {
    let mut metadata = serde_json::to_value(&object.metadata).unwrap_or(Value::Null);
    if let Some(m) = metadata.as_object_mut() {
        m.retain(|k, _| !NOT_APPLIED.contains(&k.as_str()));
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.retain(|k, _| !OTHERS_ANNOTATIONS.contains(&k.as_str()));
        }
    }
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(resource.api_version));
    out.insert("kind".into(), json!(resource.kind));
    out.insert("metadata".into(), metadata);
    for (k, v) in object.data.as_object().into_iter().flatten() {
        if k != "status" && k != "apiVersion" && k != "kind" && k != "metadata" {
            out.insert(k.clone(), v.clone());
        }
    }
    if resource.kind == "Service"
        && let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut)
    {
        // Allocated by the API server, which keeps them when an apply leaves them out.
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    Value::Object(out)
}

/// The owner references an object gets when adopted, `None` when it is not to be adopted: it
/// is controlled by `ours` already, by something other than a Flagger Canary of the same name,
/// or by nothing.
pub(super) fn adopted_owners(
    owners: &[OwnerReference],
    ours: &OwnerReference,
) -> Option<Vec<OwnerReference>> {
    let controller = owners.iter().find(|o| o.controller == Some(true))?;
    let same = |o: &OwnerReference| {
        o.api_version == ours.api_version
            && o.kind == ours.kind
            && o.name == ours.name
            && o.uid == ours.uid
    };
    let flaggers = controller.kind == "Canary"
        && controller.name == ours.name
        && controller
            .api_version
            .starts_with(&format!("{}/", flagger::GROUP));
    if same(controller) || !flaggers {
        return None;
    }
    let mut out: Vec<OwnerReference> = owners
        .iter()
        .filter(|o| o.controller != Some(true) && o.uid != ours.uid)
        .cloned()
        .collect();
    out.push(ours.clone());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(api_version: &str, uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: "Canary".into(),
            name: "podinfo".into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn only_a_flagger_canary_of_the_same_name_is_replaced_as_controller() {
        let ours = owner(flagger::API_VERSION, "u1", true);
        assert_eq!(adopted_owners(std::slice::from_ref(&ours), &ours), None);
        assert_eq!(adopted_owners(&[], &ours), None);
        let old = owner("flagger.app/v1alpha3", "u0", true);
        let other = OwnerReference {
            kind: "Rollout".into(),
            ..owner("argoproj.io/v1alpha1", "u9", false)
        };
        assert_eq!(
            adopted_owners(&[old, other.clone()], &ours),
            Some(vec![other.clone(), ours.clone()])
        );
        let foreign = OwnerReference {
            controller: Some(true),
            ..other
        };
        assert_eq!(adopted_owners(&[foreign], &ours), None);
    }

    #[test]
    fn an_object_is_applied_as_found_without_what_others_keep() {
        let found: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u", "resourceVersion": "7",
                         "generation": 2, "creationTimestamp": "2023-11-14T20:00:00Z",
                         "finalizers": ["other"],
                         "managedFields": [{"manager": "flagger", "operation": "Update"}],
                         "annotations": {"a": "1", "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]},
            "status": {"loadBalancer": {}}
        }))
        .unwrap();
        let resource = ApiResource::erase::<Service>(&());
        assert_eq!(
            as_found(&resource, &found),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "podinfo", "namespace": "test", "annotations": {"a": "1"}},
                   "spec": {"ports": [{"port": 80}]}})
        );
    }
}
