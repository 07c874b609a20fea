//! The `Canary` and `MetricTemplate` custom resources.
//!
//! Field names, types and defaults follow Flagger's `flagger.app/v1beta1` API so that a manifest
//! written for Flagger parses as it is; only the group differs (`fledge.dev/v1alpha1`). The raw
//! types here mirror what a user writes; [`validate`] turns them into a [`RolloutSpec`], the typed
//! and normalised form the rollout core runs on.

mod alert_provider;
mod duration;
mod load;
mod validate;

pub use alert_provider::{AlertProvider, AlertProviderSpec, CanaryAlert, SecretName};
pub use duration::{
    Duration, DurationError, GATEWAY_DURATION, ISTIO_DURATION, is_gateway_duration,
    is_istio_duration, parse_nanos,
};
pub use load::{LoadError, LoadedManifests, load_manifests};
pub use validate::{
    AlertSeverity, DurationRule, FLAGGER_ONLY_METRIC_PROVIDERS, FieldError, HookGate, Judge,
    Margin, MetricCheck, MetricKind, RolloutSpec, Strategy, TRAFFIC_POLICY_DURATIONS,
    ValidationErrors, WebhookRef, analysis_interval, metric_template, unroutable_by,
    unused_autoscaler, validate, warnings,
};

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of Fledge's resources.
pub const GROUP: &str = "fledge.dev";
/// Flagger's API group: manifests in it are accepted as they are.
pub const FLAGGER_GROUP: &str = "flagger.app";

/// A progressive rollout of a workload behind a service mesh.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "Canary",
    namespaced,
    status = "CanaryStatus",
    shortname = "canary",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"FailedChecks","type":"integer","jsonPath":".status.failedChecks"}"#,
    printcolumn = r#"{"name":"LastTransitionTime","type":"string","jsonPath":".status.lastTransitionTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// Traffic provider: `istio`, `linkerd`, `smi:v1alpha1|v1alpha2|v1alpha3`, `gatewayapi:v1`.
    /// Empty means the controller-wide default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The Prometheus of this Canary's metrics (Flagger's per-Canary `-metrics-server`), e.g.
    /// `http://prometheus.monitoring:9090`: its built-in metrics, inline queries and templates
    /// without an address read it. Empty means the controller's `--prometheus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,
    /// The workload under rollout; it becomes the canary and is cloned into `<name>-primary`.
    pub target_ref: LocalObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerReference>,
    /// Flagger's NGINX and Skipper providers' Ingress; kept, but Fledge routes through none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub ingress_ref: Option<serde_json::Value>,
    /// Flagger's APISIX provider's route; kept, but Fledge routes through none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub route_ref: Option<serde_json::Value>,
    /// Flagger's Gloo provider's upstream; kept, but Fledge routes through none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub upstream_ref: Option<serde_json::Value>,
    pub service: CanaryService,
    #[serde(default)]
    pub analysis: CanaryAnalysis,
    /// Seconds a rollout may make no progress (workloads not ready) before it is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i64>,
    /// Promote without analysis.
    #[serde(default)]
    pub skip_analysis: bool,
    /// Pause the rollout where it is.
    #[serde(default)]
    pub suspend: bool,
    /// On deletion, route to and restore the original workload.
    #[serde(default)]
    pub revert_on_deletion: bool,
}

impl CanarySpec {
    /// The autoscaler Fledge copies for the primary and pauses while the canary is scaled
    /// down: `autoscalerRef`, but none for a DaemonSet target, which has no replicas to scale
    /// (Kubernetes gives a DaemonSet no `scale` subresource, so neither an HPA nor KEDA can act
    /// on it). Flagger copies the reference for the primary all the same, a copy that never
    /// scales anything; Fledge leaves it unused and [`warnings`] says so.
    pub fn scaled_by(&self) -> Option<&AutoscalerReference> {
        self.autoscaler_ref
            .as_ref()
            .filter(|_| self.target_ref.kind != "DaemonSet")
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: String,
    pub name: String,
}

/// The target's autoscaler: a `HorizontalPodAutoscaler` (the default) or a KEDA
/// `ScaledObject`, copied to `<name>-primary` for the primary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: String,
    pub name: String,
    /// ScaledObject only: the primary's query of each trigger, by the trigger's `name`;
    /// without it, the target's name in each `query` is replaced with the primary's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub primary_scaler_queries: BTreeMap<String, String>,
    /// The primary's replica bounds (its HPA's or ScaledObject's), in place of the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalerReplicas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
}

/// The Services Fledge generates and the routing it manages (Flagger's `service` block).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryService {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i32,
    /// A port number or name on the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    #[serde(default)]
    pub port_discovery: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_objects")]
    pub gateway_refs: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apex: Option<ObjectMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<ObjectMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<ObjectMetadata>,
    /// Istio header operations, copied into the generated routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub headers: Option<serde_json::Value>,
    /// Istio traffic policy for the generated DestinationRules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub traffic_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub retries: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Gateway API only: the HTTPRoute's `timeouts.backendRequest`, the time a gateway waits for
    /// one request to a backend (a retry is another request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_timeout: Option<String>,
    /// Generate headless Services (`clusterIP: None`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headless: bool,
    /// The `appProtocol` of the generated Services' port (e.g. `http`, `grpc`), which meshes
    /// read to choose the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Istio and Gateway API: Istio `HTTPMatchRequest`s every generated route matches (e.g. a
    /// URI prefix on a shared gateway); an A/B match and the session affinity cookie are
    /// merged into each, as Flagger merges them.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "free_form_objects")]
    pub match_: Vec<serde_json::Value>,
    /// Istio and Gateway API: the URL rewrite of every generated route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Istio: the CORS policy of every generated route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub cors_policy: Option<serde_json::Value>,
    /// Istio: generate a delegate VirtualService (no hosts, no gateways), for a root
    /// VirtualService to delegate to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delegation: bool,
    /// Gateway API: `HTTPRequestMirrorFilter`s (each a `backendRef`, and a `percent` or
    /// `fraction`) added to every generated rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "free_form_objects")]
    pub mirror: Vec<serde_json::Value>,
    /// The generated Services' `trafficDistribution` (e.g. `PreferClose`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    /// Label and annotation keys of the generated Services that Fledge neither sets nor changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged_metadata: Option<UnmanagedMetadata>,
}

/// `service.rewrite` (Flagger's `HTTPRewrite`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HttpRewrite {
    /// The new path, or the new prefix in place of the matched one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The new `Host`/authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Gateway API only: `ReplacePrefixMatch`, or (the default) `ReplaceFullPath`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// Metadata keys left to others (Flagger's `unmanagedMetadata`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct UnmanagedMetadata {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

// Written by hand: the derived `anyOf` is not structural. The extension alone is the form
// Kubernetes' own types use; the API server then accepts exactly an integer or a string.
impl JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true
        })
    }
}

/// Labels and annotations added to a generated object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ObjectMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How the rollout advances and what it checks (Flagger's `analysis` block, plus `judge`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysis {
    /// Time between analysis ticks, e.g. `1m` (default `1m`; below `10s` is raised to `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Failed checks before rollback (default 1; values below 1 become 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_weights: Vec<i64>,
    /// Traffic moved back to the primary per interval while promoting (default: all at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight_promotion: Option<i64>,
    /// Blue/green (or A/B with `match`): the number of analysis iterations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i64>,
    /// A/B testing: Istio `HTTPMatchRequest`s routed to the canary.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "free_form_objects")]
    pub match_: Vec<serde_json::Value>,
    /// Mirror traffic to the canary for the first step.
    #[serde(default)]
    pub mirror: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ready_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ready_threshold: Option<i64>,
    /// Cookie-based session affinity, as Flagger 1.41+ does it on Istio and the Gateway API: a
    /// user the canary answered once keeps reaching it while the rollout lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// `threshold` (Flagger's, the default) or `statistical` (canary judged against primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
    /// Settings of the statistical judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistical: Option<StatisticalSettings>,
    /// Statistical judge, canary weights (Fledge only): a step ends at the first look at which
    /// every comparison shows the canary no worse than primary, once it has lasted this long,
    /// instead of waiting for `interval` (default `30s`, at most `interval`; ignored by the
    /// threshold judge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_step_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<CanaryMetric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<CanaryWebhook>,
    /// Who is alerted of the rollout's decisions, as Flagger alerts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<CanaryAlert>,
}

/// `analysis.sessionAffinity` (Flagger's fields and defaults): the canary's answers set the
/// cookie `cookieName` (a value new each rollout), and requests carrying it go to the canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// The canary's cookie.
    #[serde(default)]
    pub cookie_name: String,
    /// With it, the primary's answers during a rollout set this cookie (for one `interval`) and
    /// requests carrying it stay on the primary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub primary_cookie_name: String,
    /// Seconds the canary's cookie lasts (0 or absent: 86400, a day).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_age: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http_only: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partitioned: bool,
    /// `Strict`, `Lax` or `None`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub same_site: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Settings of the statistical judge (Fledge only).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatisticalSettings {
    /// Probability of rolling back a canary that is no worse than primary (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Requests the canary must serve in a step before it is judged (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    pub name: String,
    /// The query window, e.g. `1m` (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Legacy single bound: minimum for `request-success-rate`, maximum otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<CrossNamespaceReference>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_variables: BTreeMap<String, String>,
    /// Statistical judge: the smallest regression worth catching. For error rates an absolute
    /// margin in percentage points, or relative when written as `20%` of the primary's rate;
    /// for latency a relative effect size (`20%` means 1.2x slower).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<String>,
    /// Statistical judge, `request-duration`: the latency quantile compared, strictly between
    /// 0 and 1 (default 0.99, the p99 that Flagger's `request-duration` reads; 0.5 compares
    /// medians).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CrossNamespaceReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    pub name: String,
    /// One of Flagger's hook types; default `rollout`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute_alert: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Retries after a failed call (hooks whose call has no side effect only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// What the controller records about a rollout; the rollout state lives in `state` so that a
/// restarted controller resumes exactly where it stopped.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub canary_weight: i64,
    #[serde(default)]
    pub failed_checks: i64,
    #[serde(default)]
    pub iterations: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CanaryCondition>,
    /// The rollout core's full state, as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub state: Option<serde_json::Value>,
    /// The target's pod template as last given to the primary (created or promoted), so that a
    /// primary deleted during a rollout is recreated from it, never from the unanalysed target.
    /// A pod template is a few KB: well within what a status can hold (the whole object is
    /// limited to about 1.5 MiB by etcd). Absent in statuses written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub primary_template: Option<k8s_openapi::api::core::v1::PodTemplateSpec>,
    /// The primary's `spec.replicas` as last seen, so that a deleted primary, which serves all
    /// traffic, is recreated at its size rather than the canary's. Absent before the primary was
    /// first seen, and in statuses written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_replicas: Option<i32>,
    /// Session affinity: the cookie (`name=value`) the canary sets during this rollout, the one
    /// of the last rollout (expired by the routes once traffic is back on the primary) and the
    /// primary's, as Flagger records them. The route builders read them from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session_affinity_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_session_affinity_cookie: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

// A v1 CRD must be structural: every node typed. Fields Fledge passes through to a mesh object
// (Istio's headers, retries, matches...) are objects whose content the API server must keep as
// written, not prune.
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn free_form_objects(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": free_form_object(generator)
    })
}

/// A reusable metric query (Flagger's `MetricTemplate`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "MetricTemplate",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateSpec {
    pub provider: MetricProvider,
    pub query: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    /// Only `prometheus` is supported.
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP headers sent with every query, each name with its values (Go's `http.Header`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// The Secret (in the template's namespace) with the credentials sent with every query:
    /// key `token` (a bearer token) or keys `username` and `password` (basic authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    /// The region of a cloud provider's metrics (CloudWatch); kept, not used by Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Accept any TLS certificate from the template's Prometheus (a self-signed one).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A Secret in the referring object's namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretReference {
    #[serde(default)]
    pub name: String,
}
