//! A cluster as Flagger leaves it between two rollouts of podinfo on Istio: its Canary
//! (`flagger.app/v1beta1`, status as Flagger writes it), the target scaled to zero, the
//! primary, the three Services and the VirtualService and DestinationRules Flagger created,
//! each with Flagger's controlling owner reference. And the shape of Flagger's status schema,
//! to check what Fledge writes there.

use super::*;

pub const FLAGGER_CANARY: &str = "/apis/flagger.app/v1beta1/namespaces/test/canaries/podinfo";
pub const FLAGGER_UID: &str = "f-uid-1";
/// Flagger's hash of the target it last rolled out (an FNV hash of Go structures).
pub const FLAGGER_HASH: &str = "5f6c8b9d7";
pub const VIRTUAL_SERVICE: &str =
    "/apis/networking.istio.io/v1beta1/namespaces/test/virtualservices/podinfo";
pub const DESTINATION_RULES: &str =
    "/apis/networking.istio.io/v1beta1/namespaces/test/destinationrules";

/// The objects Flagger created, by path.
pub fn flagger_objects() -> Vec<String> {
    let mut paths = vec![PRIMARY.to_string(), VIRTUAL_SERVICE.to_string()];
    for name in ["podinfo", "podinfo-primary", "podinfo-canary"] {
        paths.push(format!("{SERVICES}/{name}"));
    }
    for name in ["podinfo-primary", "podinfo-canary"] {
        paths.push(format!("{DESTINATION_RULES}/{name}"));
    }
    paths
}

/// Flagger's controlling owner reference to its Canary, in `api_version`, of `uid`.
pub fn flagger_owner(api_version: &str, uid: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": "Canary", "name": "podinfo", "uid": uid,
            "controller": true, "blockOwnerDeletion": true}])
}

/// `metadata.managedFields` as the API server records Flagger's writes (updates, under the
/// manager named after its binary) beside the Deployment controller's status writes.
pub fn flaggers_fields(api_version: &str) -> Value {
    json!([
        {"manager": "flagger", "operation": "Update", "apiVersion": api_version,
         "time": "2023-11-14T20:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}},
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": api_version,
         "time": "2023-11-14T20:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}},
         "subresource": "status"}
    ])
}

/// Flagger's Canary at `phase` (weight and iterations as Flagger leaves them in that phase).
pub fn flagger_canary(phase: &str, canary_weight: i64) -> Value {
    let promoted = match phase {
        "Initialized" | "Succeeded" => "True",
        "Failed" => "False",
        _ => "Unknown",
    };
    let mut c = canary(json!({}));
    c["apiVersion"] = json!("flagger.app/v1beta1");
    c["metadata"] = json!({"name": "podinfo", "namespace": NS, "uid": FLAGGER_UID});
    c["status"] = json!({
        "phase": phase,
        "canaryWeight": canary_weight,
        "failedChecks": 0,
        "iterations": 0,
        "lastAppliedSpec": FLAGGER_HASH,
        "lastPromotedSpec": FLAGGER_HASH,
        "lastTransitionTime": "2023-11-14T20:00:00Z",
        "trackedConfigs": {},
        "conditions": [{
            "type": "Promoted", "status": promoted, "reason": phase,
            "lastUpdateTime": "2023-11-14T20:00:00Z",
            "lastTransitionTime": "2023-11-14T20:00:00Z",
            "message": "Canary analysis completed successfully, promotion finished."
        }]
    });
    c
}

/// A cluster as Flagger leaves it with its Canary at `phase`, the target and the primary both
/// running `podinfo:1`, owned as `owner` says; all traffic on the primary.
pub fn flagger_cluster(phase: &str, canary_weight: i64, owner: Value) -> FakeCluster {
    let c = FakeCluster::new();
    c.put(FLAGGER_CANARY, flagger_canary(phase, canary_weight));
    let mut target = deployment("podinfo:1");
    target["metadata"]["uid"] = json!("t-uid");
    target["spec"]["replicas"] = json!(0);
    c.put(TARGET, target);
    let mut primary = deployment("podinfo:1");
    primary["metadata"] = json!({
        "name": "podinfo-primary", "namespace": NS, "uid": "uid-podinfo-primary",
        "labels": {"app": "podinfo-primary"}, "ownerReferences": owner,
        "managedFields": flaggers_fields("apps/v1"),
    });
    primary["spec"]["selector"] = json!({"matchLabels": {"app": "podinfo-primary"}});
    primary["spec"]["template"]["metadata"] = json!({
        "labels": {"app": "podinfo-primary"},
        "annotations": {"flagger-id": "4f1c2a9e-7d3b-4c5e-9a8f-0b1c2d3e4f5a"}
    });
    c.put(PRIMARY, primary);
    for (name, selector) in [
        ("podinfo", "podinfo-primary"),
        ("podinfo-primary", "podinfo-primary"),
        ("podinfo-canary", "podinfo"),
    ] {
        c.put(
            &format!("{SERVICES}/{name}"),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                             "labels": {"app": name}, "ownerReferences": owner,
                             "managedFields": flaggers_fields("v1")},
                "spec": {"type": "ClusterIP", "selector": {"app": selector},
                         "ports": [{"name": "http", "port": 9898, "protocol": "TCP",
                                    "targetPort": 9898}]}
            }),
        );
    }
    c.put(
        VIRTUAL_SERVICE,
        json!({
            "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "podinfo", "namespace": NS, "uid": "uid-vs",
                         "ownerReferences": owner},
            "spec": {"hosts": ["podinfo"], "http": [{"route": [
                {"destination": {"host": "podinfo-primary"}, "weight": 100},
                {"destination": {"host": "podinfo-canary"}, "weight": 0}]}]}
        }),
    );
    for name in ["podinfo-primary", "podinfo-canary"] {
        c.put(
            &format!("{DESTINATION_RULES}/{name}"),
            json!({
                "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                "metadata": {"name": name, "namespace": NS, "uid": format!("uid-dr-{name}"),
                             "ownerReferences": owner},
                "spec": {"host": name}
            }),
        );
    }
    c.edit_routes(Routes::PRIMARY_ONLY);
    c.settle();
    c
}

impl FakeCluster {
    /// One reconcile of the stored Flagger Canary with `ctx`.
    pub async fn reconcile_flagger(
        &self,
        ctx: &Arc<Context>,
    ) -> Result<kube::runtime::controller::Action, fledge_controller::cluster::Error> {
        let object = serde_json::from_value(self.get(FLAGGER_CANARY).expect("stored"))
            .expect("a dynamic object");
        fledge_controller::cluster::reconcile_flagger(Arc::new(object), ctx.clone()).await
    }

    /// The Flagger Canary's status.
    pub fn flagger_status(&self) -> Value {
        self.get(FLAGGER_CANARY).unwrap()["status"].clone()
    }
}

/// The shape of `status` in Flagger's Canary CRD (`flagger.app/v1beta1`): its properties with
/// their types, the phases it allows and what each condition requires. Written from the CRD's
/// schema; a field it does not list is pruned by the API server.
pub fn flagger_status_schema() -> Value {
    let string = json!({"type": "string"});
    let time = json!({"type": "string", "format": "date-time"});
    let number = json!({"type": "number"});
    json!({
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": [
                "", "Initializing", "Initialized", "Waiting", "Progressing", "WaitingPromotion",
                "Promoting", "Finalising", "Succeeded", "Failed", "Terminating", "Terminated"]},
            "failedChecks": number,
            "canaryWeight": number,
            "iterations": number,
            "trackedConfigs": {"type": "object", "additionalProperties": string},
            "lastAppliedSpec": string,
            "lastPromotedSpec": string,
            "lastTransitionTime": time,
            "sessionAffinityCookie": string,
            "primarySessionAffinityCookie": string,
            "previousSessionAffinityCookie": string,
            "conditions": {"type": "array", "items": {
                "type": "object",
                "required": ["type", "status", "reason"],
                "properties": {
                    "lastTransitionTime": time, "lastUpdateTime": time, "message": string,
                    "reason": string, "status": string, "type": string
                }
            }}
        }
    })
}

/// What of `value` the API server would refuse (a wrong type, a phase not in the enum, a
/// condition without a required field, a time that is not RFC 3339) or prune (a field the
/// schema does not have), by path. `null` in a merge patch deletes a field and is allowed.
pub fn schema_violations(schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    if value.is_null() {
        return out;
    }
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("number") => value.is_number(),
        _ => true,
    };
    if !type_ok {
        out.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return out;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {}", schema["enum"]));
    }
    if schema["format"] == "date-time"
        && chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap_or("")).is_err()
    {
        out.push(format!("{at}: {value} is not a date-time"));
    }
    if let Some(object) = value.as_object() {
        for required in schema["required"].as_array().into_iter().flatten() {
            let key = required.as_str().unwrap_or("");
            if object.get(key).is_none_or(Value::is_null) {
                out.push(format!("{at}: required {key} is missing"));
            }
        }
        for (k, v) in object {
            let path = format!("{at}.{k}");
            if let Some(p) = schema["properties"].get(k) {
                out.extend(schema_violations(p, v, &path));
            } else if let Some(p) = schema.get("additionalProperties") {
                out.extend(schema_violations(p, v, &path));
            } else {
                out.push(format!("{path}: not in the schema (pruned)"));
            }
        }
    }
    if let Some(items) = value.as_array() {
        for (i, v) in items.iter().enumerate() {
            out.extend(schema_violations(
                &schema["items"],
                v,
                &format!("{at}[{i}]"),
            ));
        }
    }
    out
}
