//! The scenario file as written: strict serde types, snake_case keys.

use std::collections::BTreeMap;

use serde::de::{Error as _, Unexpected};
use serde::{Deserialize, Deserializer};

use crate::manifest::yaml::{Outline, check_depth};
use crate::result::Outcome;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub seed: Option<u64>,
    pub duration: String,
    /// `istio` (default) or `linkerd`.
    pub mesh: Option<String>,
    pub namespace: Option<String>,
    pub service: Service,
    pub traffic: Vec<Traffic>,
    /// Mesh manifests as multi-document YAML.
    pub manifests: Option<String>,
    /// Mesh manifest files, relative to the scenario.
    #[serde(default)]
    pub manifest_files: Vec<String>,
    /// The Canary manifest: a YAML mapping, or a string holding one.
    pub canary: Option<serde_norway::Value>,
    pub canary_file: Option<String>,
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    #[serde(default)]
    pub webhooks: BTreeMap<String, HookAnswer>,
    pub expect: Option<Expect>,
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// Workload certificates (Istio's SDS settings).
    pub certificates: Option<Certificates>,
    /// Istio control-plane settings that change the data plane's defaults.
    pub istio: Option<IstioSettings>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct IstioSettings {
    /// `MAJOR.MINOR`, e.g. `1.23`; the newest behaviour when absent.
    pub version: Option<String>,
    /// istiod's `EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY` (Istio 1.24 to 1.26; default true).
    pub exclude_unsafe_503_from_default_retry: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Certificates {
    /// `SECRET_TTL` (24h).
    pub ttl: Option<String>,
    /// `SECRET_GRACE_PERIOD_RATIO` (0.5): rotate after this fraction of the lifetime.
    #[serde(default, deserialize_with = "finite_or_none")]
    pub grace_ratio: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Service {
    pub name: String,
    pub primary: Version,
    #[serde(default)]
    pub canary: Version,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Version {
    pub pods: Option<u32>,
    pub workers: Option<u32>,
    pub latency: Option<Latency>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub error_rate: Option<f64>,
    pub error_code: Option<u16>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Latency {
    pub mean: Option<String>,
    pub constant: Option<String>,
    pub p50: Option<String>,
    pub p99: Option<String>,
    pub mixture: Option<Vec<MixturePart>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct MixturePart {
    #[serde(deserialize_with = "finite")]
    pub weight: f64,
    #[serde(flatten)]
    pub latency: Latency,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Traffic {
    pub client: String,
    pub namespace: Option<String>,
    #[serde(deserialize_with = "finite")]
    pub rate: f64,
    /// `poisson` (default) or `constant`.
    pub arrivals: Option<String>,
    pub ramp: Option<Ramp>,
    pub diurnal: Option<Diurnal>,
    pub bursts: Option<Bursts>,
    #[serde(default)]
    pub headers: Vec<HeaderProfile>,
    pub sidecar: Option<bool>,
    /// `service` (default) or `canary`: a load tester sending to the canary's own Service.
    pub target: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Ramp {
    pub from: Option<String>,
    #[serde(deserialize_with = "finite")]
    pub to: f64,
    pub over: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Diurnal {
    #[serde(deserialize_with = "finite")]
    pub amplitude: f64,
    pub period: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Bursts {
    pub every: String,
    pub length: String,
    #[serde(deserialize_with = "finite")]
    pub factor: f64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderProfile {
    #[serde(deserialize_with = "finite")]
    pub weight: f64,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct TimelineEntry {
    pub at: Option<String>,
    pub when_weight: Option<i64>,
    pub deploy: Option<serde_norway::Value>,
    pub delete: Option<serde_norway::Value>,
    pub error_rate: Option<ErrorRate>,
    pub latency: Option<LatencyChange>,
    pub pod_error_rate: Option<PodErrorRate>,
    pub crash: Option<Crash>,
    pub black_hole: Option<BlackHole>,
    pub rate: Option<RateChange>,
    pub cert_rotation: Option<CertRotation>,
    /// Mesh manifests applied at this point, as multi-document YAML.
    pub apply_manifests: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct ErrorRate {
    pub version: String,
    #[serde(deserialize_with = "finite")]
    pub rate: f64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct LatencyChange {
    pub version: String,
    #[serde(flatten)]
    pub latency: Latency,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct PodErrorRate {
    pub version: String,
    pub pod: u32,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub rate: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Crash {
    pub version: String,
    pub pod: Option<u32>,
    pub pods: Option<Vec<u32>>,
    pub restart_after: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct BlackHole {
    pub version: String,
    pub pod: u32,
    pub on: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RateChange {
    pub client: String,
    #[serde(deserialize_with = "finite")]
    pub rps: f64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct CertRotation {
    pub version: String,
    pub enabled: bool,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub(super) enum HookAnswer {
    Word(String),
    Gate { open_at: String },
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Expect {
    pub outcome: Option<Outcome>,
    pub decided_within: Option<String>,
    pub max_canary_weight_before_rollback: Option<i64>,
    pub max_failed_requests: Option<u64>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub min_success_rate: Option<f64>,
    pub no_false_rollback: Option<bool>,
    pub rolled_back_by: Option<String>,
    pub rolled_back_for_no_data: Option<String>,
    pub message_contains: Option<String>,
    /// Bounds on the mesh's counters (proxy counters summed over clients and versions,
    /// certificate rotations), by name.
    #[serde(default)]
    pub counters: BTreeMap<String, Bounds>,
    /// Per-client success rates, by client name.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientExpect>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Bounds {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientExpect {
    #[serde(default, deserialize_with = "finite_or_none")]
    pub min_success_rate: Option<f64>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub max_success_rate: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Variant {
    pub name: String,
    pub judge: String,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub alpha: Option<f64>,
    pub min_requests: Option<i64>,
    pub expect: Expect,
}

/// A number: YAML's `.nan` and `.inf` are refused as the type errors they are (no JSON number
/// holds them, and no range check would name them well).
fn finite<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(D::Error::invalid_value(
            Unexpected::Float(v),
            &"a finite number",
        ))
    }
}

fn finite_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Option::<f64>::deserialize(d)?
        .map(|v| finite(serde::de::value::F64Deserializer::<D::Error>::new(v)))
        .transpose()
}

/// Parses the text; on failure returns (field path, line, message).
pub(super) fn parse(text: &str) -> Result<Scenario, (String, Option<usize>, String)> {
    if let Err(deep) = check_depth(text) {
        return Err(("(document)".into(), Some(deep.line), deep.to_string()));
    }
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        let mut message = inner.to_string();
        // The location is reported separately.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // So is the field: drop the parser's own `path: ` prefix.
        if let Some((prefix, rest)) = message.split_once(": ")
            && !prefix.contains(' ')
            && path.starts_with(prefix)
        {
            message = rest.to_string();
        }
        // A syntax error leaves the parser in an unnamed place (`?`): name where it was.
        let path = path.trim_end_matches('?').trim_end_matches('.');
        let path = if path.is_empty() || path == "." {
            "(document)".to_string()
        } else {
            path.to_string()
        };
        let duplicate =
            message.starts_with("duplicate field `") || message.starts_with("duplicate entry");
        let line = if duplicate {
            // The parser points at the mapping; the second key is the one to remove.
            Outline::of(text).duplicate(0).map(|(_, l)| l).or(line)
        } else if message.contains("more than one document") {
            text.lines()
                .enumerate()
                .skip(1)
                .find(|(_, l)| l.trim_end() == "---" || l.starts_with("--- "))
                .map(|(i, _)| i + 1)
                .or(line)
        } else {
            line
        };
        (path, line, message)
    })
}
