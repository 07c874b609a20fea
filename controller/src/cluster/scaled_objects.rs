//! KEDA `ScaledObject` autoscalers (`autoscalerRef.kind: ScaledObject`), as Flagger handles
//! them (its pkg/canary/scaled_object_reconciler.go):
//!
//! - the primary gets `<scaledobject>-primary`, scaling `<target>-primary`: the target's
//!   ScaledObject with each trigger's `query` rewritten for the primary (from
//!   `primaryScalerQueries` by trigger name, or by replacing the target's name, and its
//!   `-canary` form, with the primary's), its HPA's name suffixed, and the replica bounds of
//!   `primaryScalerReplicas` when given; kept in step when the target's changes;
//! - while the canary is scaled to zero the target's ScaledObject is paused at zero replicas
//!   (KEDA's `autoscaling.keda.sh/paused-replicas`), since KEDA would otherwise scale it up
//!   again; the pause is lifted when the canary is scaled up for a rollout.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::{Error, FIELD_MANAGER, Result, flagger, workloads};
use crate::spec::Canary;

/// KEDA's annotation that holds a ScaledObject's target at a number of replicas.
pub const PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";
/// Annotations and labels of Flux, which must not reach the copy (Flux would prune it).
const TOOLKIT_MARKER: &str = "toolkit.fluxcd.io";

/// The kind of `autoscalerRef` this module handles.
pub const KIND: &str = "ScaledObject";

/// KEDA's ScaledObjects, as a dynamic resource.
pub fn resource() -> ApiResource {
    ApiResource {
        group: "keda.sh".into(),
        version: "v1alpha1".into(),
        api_version: "keda.sh/v1alpha1".into(),
        kind: KIND.into(),
        plural: "scaledobjects".into(),
    }
}

/// `query` with the target's name, and its `-canary` form, replaced by the primary's (the
/// `-canary` form first, so that it does not become `<target>-primary-canary`).
fn primary_query(query: &str, target: &str) -> String {
    let primary = workloads::primary_name(target);
    query
        .split(&format!("{target}-canary"))
        .map(|part| part.replace(target, &primary))
        .collect::<Vec<_>>()
        .join(&primary)
}

/// The triggers of the primary's ScaledObject: each `metadata.query` rewritten for the primary.
fn primary_triggers(canary: &Canary, triggers: &Value) -> Value {
    let Some(r) = &canary.spec.autoscaler_ref else {
        return triggers.clone();
    };
    let target = &canary.spec.target_ref.name;
    let mut triggers = triggers.clone();
    for trigger in triggers.as_array_mut().into_iter().flatten() {
        let name = trigger["name"].as_str().unwrap_or_default().to_string();
        let Some(metadata) = trigger.get_mut("metadata").and_then(Value::as_object_mut) else {
            continue;
        };
        if r.primary_scaler_queries.is_empty() {
            if let Some(query) = metadata.get("query").and_then(Value::as_str) {
                let rewritten = primary_query(query, target);
                metadata.insert("query".into(), json!(rewritten));
            }
        } else if let Some(query) = r.primary_scaler_queries.get(&name) {
            metadata.insert("query".into(), json!(query));
        }
    }
    triggers
}

fn copied(meta: Option<&BTreeMap<String, String>>) -> Map<String, Value> {
    meta.into_iter()
        .flatten()
        .filter(|(k, _)| !k.contains(TOOLKIT_MARKER) && k.as_str() != PAUSED_REPLICAS)
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect()
}

/// The primary's ScaledObject, built from the target's (`target_so`), as applied.
pub fn primary_scaled_object(canary: &Canary, target_so: &DynamicObject) -> Value {
    let spec = &target_so.data["spec"];
    let name = workloads::primary_name(target_so.metadata.name.as_deref().unwrap_or_default());
    let mut scale_target = Map::new();
    scale_target.insert(
        "name".into(),
        json!(workloads::primary_name(&canary.spec.target_ref.name)),
    );
    for key in ["kind", "apiVersion", "envSourceContainerName"] {
        if let Some(v) = spec["scaleTargetRef"].get(key) {
            scale_target.insert(key.into(), v.clone());
        }
    }
    let mut out = Map::new();
    out.insert("scaleTargetRef".into(), Value::Object(scale_target));
    for key in [
        "pollingInterval",
        "cooldownPeriod",
        "minReplicaCount",
        "maxReplicaCount",
        "advanced",
        "fallback",
        "idleReplicaCount",
    ] {
        if let Some(v) = spec.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    // The HPA KEDA makes for the primary must not take the target's HPA's name.
    if let Some(hpa) = out
        .get_mut("advanced")
        .and_then(|a| a.get_mut("horizontalPodAutoscalerConfig"))
        .and_then(Value::as_object_mut)
        && let Some(n) = hpa
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
    {
        let suffixed = workloads::primary_name(n);
        hpa.insert("name".into(), json!(suffixed));
    }
    out.insert(
        "triggers".into(),
        primary_triggers(canary, &spec["triggers"]),
    );
    if let Some(bounds) = canary
        .spec
        .autoscaler_ref
        .as_ref()
        .and_then(|r| r.primary_scaler_replicas.as_ref())
    {
        if let Some(min) = bounds.min_replicas {
            out.insert("minReplicaCount".into(), json!(min));
        }
        if let Some(max) = bounds.max_replicas {
            out.insert("maxReplicaCount".into(), json!(max));
        }
    }
    let owner = flagger::owner_reference(canary).map(|o| vec![o]);
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": canary.metadata.namespace,
            "labels": copied(target_so.metadata.labels.as_ref()),
            "annotations": copied(target_so.metadata.annotations.as_ref()),
            "ownerReferences": owner,
        },
        "spec": out,
    })
}

/// The ScaledObjects of one namespace.
pub struct ScaledObjects {
    api: Api<DynamicObject>,
}

fn read(name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_string();
    move |source| Error::Read {
        kind: KIND,
        name,
        source,
    }
}

fn write(name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_string();
    move |source| Error::Write {
        kind: KIND,
        name,
        source,
    }
}

impl ScaledObjects {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        ScaledObjects {
            api: Api::namespaced_with(client, namespace, &resource()),
        }
    }

    pub async fn get(&self, name: &str) -> Result<Option<DynamicObject>> {
        self.api.get_opt(name).await.map_err(read(name))
    }

    /// Keeps `<scaledobject>-primary` in step with the target's ScaledObject; writes only a
    /// difference. A missing target ScaledObject is left to KEDA's user (nothing to copy).
    pub async fn sync(&self, canary: &Canary, target_so: &str) -> Result<()> {
        let Some(target) = self.get(target_so).await? else {
            return Ok(());
        };
        let desired = primary_scaled_object(canary, &target);
        let name = workloads::primary_name(target_so);
        if let Some(current) = self.get(&name).await?
            && current.data["spec"] == desired["spec"]
        {
            return Ok(());
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api
            .patch(&name, &params, &Patch::Apply(&desired))
            .await
            .map(|_| ())
            .map_err(write(&name))
    }

    /// Pauses the target's ScaledObject at zero replicas (`paused`), or lifts the pause; a
    /// missing ScaledObject is fine, and nothing is written when it is already so.
    pub async fn pause(&self, name: &str, paused: bool) -> Result<()> {
        let Some(current) = self.get(name).await? else {
            return Ok(());
        };
        let found = current
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PAUSED_REPLICAS));
        let want = paused.then_some("0");
        if found.map(String::as_str) == want {
            return Ok(());
        }
        let body = json!({"metadata": {"annotations": {PAUSED_REPLICAS: want}}});
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map(|_| ())
            .map_err(write(name))
    }

    /// `minReplicaCount` of a ScaledObject, if it exists and has one.
    pub async fn min_replicas(&self, name: &str) -> Result<Option<i32>> {
        let found = self.get(name).await?;
        Ok(found
            .and_then(|so| so.data["spec"]["minReplicaCount"].as_i64())
            .and_then(|m| i32::try_from(m).ok()))
    }

    /// Deletes a ScaledObject; one already gone is fine.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(write(name)(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(autoscaler: Value) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "fledge.dev/v1alpha1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u-1"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 9898}, "autoscalerRef": autoscaler},
        }))
        .expect("a Canary")
    }

    fn target_so() -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "podinfo-so", "namespace": "test",
                         "labels": {"team": "a", "kustomize.toolkit.fluxcd.io/name": "apps"},
                         "annotations": {PAUSED_REPLICAS: "0", "note": "x"}},
            "spec": {
                "scaleTargetRef": {"name": "podinfo", "kind": "Deployment",
                                   "apiVersion": "apps/v1"},
                "pollingInterval": 10, "cooldownPeriod": 20,
                "minReplicaCount": 1, "maxReplicaCount": 4,
                "advanced": {"horizontalPodAutoscalerConfig": {"name": "podinfo-hpa"}},
                "triggers": [
                    {"type": "prometheus", "name": "requests", "metadata": {
                        "serverAddress": "http://prometheus:9090", "threshold": "5",
                        "query": "sum(rate(http_requests_total{app=\"podinfo-canary\"}[1m])) + sum(rate(x{deployment=\"podinfo\"}[1m]))"}},
                    {"type": "cpu", "metadata": {"value": "60"}}
                ]
            }
        }))
        .expect("a ScaledObject")
    }

    #[test]
    fn the_primarys_scaled_object_scales_the_primary_with_queries_rewritten_as_flagger_does() {
        let c = canary(json!({"kind": "ScaledObject", "name": "podinfo-so"}));
        let so = primary_scaled_object(&c, &target_so());
        assert_eq!(so["metadata"]["name"], "podinfo-so-primary");
        assert_eq!(so["metadata"]["labels"], json!({"team": "a"}));
        assert_eq!(so["metadata"]["annotations"], json!({"note": "x"}));
        assert_eq!(so["metadata"]["ownerReferences"][0]["uid"], "u-1");
        let spec = &so["spec"];
        assert_eq!(
            spec["scaleTargetRef"],
            json!({"name": "podinfo-primary", "kind": "Deployment", "apiVersion": "apps/v1"})
        );
        assert_eq!(
            (
                spec["pollingInterval"].clone(),
                spec["maxReplicaCount"].clone()
            ),
            (json!(10), json!(4))
        );
        assert_eq!(
            spec["advanced"]["horizontalPodAutoscalerConfig"]["name"],
            "podinfo-hpa-primary"
        );
        assert_eq!(
            spec["triggers"][0]["metadata"]["query"],
            "sum(rate(http_requests_total{app=\"podinfo-primary\"}[1m])) + sum(rate(x{deployment=\"podinfo-primary\"}[1m]))"
        );
        assert_eq!(
            spec["triggers"][1],
            json!({"type": "cpu", "metadata": {"value": "60"}})
        );
    }

    #[test]
    fn primary_scaler_queries_and_replicas_replace_the_targets_by_trigger_name() {
        let c = canary(json!({
            "kind": "ScaledObject", "name": "podinfo-so",
            "primaryScalerQueries": {"requests": "sum(rate(primary_requests[1m]))"},
            "primaryScalerReplicas": {"minReplicas": 2, "maxReplicas": 10},
        }));
        let so = primary_scaled_object(&c, &target_so());
        let spec = &so["spec"];
        assert_eq!(
            spec["triggers"][0]["metadata"]["query"],
            "sum(rate(primary_requests[1m]))"
        );
        assert_eq!(
            (
                spec["minReplicaCount"].clone(),
                spec["maxReplicaCount"].clone()
            ),
            (json!(2), json!(10))
        );
    }
}
