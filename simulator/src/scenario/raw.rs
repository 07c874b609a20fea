//! The scenario file as written: strict serde types, snake_case keys.

use std::collections::BTreeMap;

use serde::de::{Error as _, Unexpected};
use serde::{Deserialize, Deserializer};

use crate::manifest::yaml::{Outline, check_depth};
use crate::result::Outcome;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Scenario {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) seed: Option<u64>,
    pub(crate) duration: String,
    /// `istio` (default) or `linkerd`.
    pub(crate) mesh: Option<String>,
    pub(crate) namespace: Option<String>,
    /// One service with a primary and a canary: the short form of `services`.
    pub(crate) service: Option<Service>,
    /// Services with their versions by name.
    pub(crate) services: Option<Vec<ServiceEntry>>,
    pub(crate) traffic: Vec<Traffic>,
    /// Mesh manifests as multi-document YAML.
    pub(crate) manifests: Option<String>,
    /// Mesh manifest files, relative to the scenario.
    #[serde(default)]
    pub(crate) manifest_files: Vec<String>,
    /// The Canary manifest: a YAML mapping, or a string holding one.
    pub(crate) canary: Option<serde_norway::Value>,
    pub(crate) canary_file: Option<String>,
    #[serde(default)]
    pub(crate) timeline: Vec<TimelineEntry>,
    #[serde(default)]
    pub(crate) webhooks: BTreeMap<String, HookAnswer>,
    pub(crate) expect: Option<Expect>,
    #[serde(default)]
    pub(crate) variants: Vec<Variant>,
    /// Workload certificates (Istio's SDS settings).
    pub(crate) certificates: Option<Certificates>,
    /// Istio control-plane settings that change the data plane's defaults.
    pub(crate) istio: Option<IstioSettings>,
    /// Dependencies outside the mesh, each named by a ServiceEntry of the manifests.
    #[serde(default)]
    pub(crate) external: Vec<External>,
    /// How configuration reaches the proxies: push delay and outages.
    pub(crate) control_plane: Option<ControlPlane>,
    /// What every sidecar costs unless its version says otherwise (scenario/model.rs).
    pub(crate) proxy: Option<Proxy>,
}

/// A sidecar's cost: the mesh's default (`proxy`), or a version's (`versions.NAME.proxy`).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct Proxy {
    /// What one proxy adds to one request, there and back together.
    pub(crate) latency: Option<Latency>,
    pub(crate) cpu_per_request: Option<String>,
    /// Mesh-wide only: a TLS handshake's CPU, per side.
    pub(crate) cpu_per_handshake: Option<String>,
    /// Envoy's worker threads.
    pub(crate) concurrency: Option<u32>,
    /// The sidecar's CPU limit, as Kubernetes writes it: `500m`, `0.5` or `2`.
    #[serde(default, deserialize_with = "cpu_quantity")]
    pub(crate) cpu_limit: Option<String>,
}

/// A dependency outside the mesh (scenario/external.rs): its host and how it answers, with a
/// version's keys (those that do not apply to a host outside the mesh are refused there).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct External {
    pub(crate) host: String,
    #[serde(flatten)]
    pub(crate) answers: Version,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlPlane {
    /// From a route change to a proxy applying it, drawn per proxy (a latency distribution).
    pub(crate) push_delay: Option<Latency>,
    #[serde(default)]
    pub(crate) outages: Vec<Outage>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Outage {
    pub(crate) at: String,
    #[serde(rename = "for")]
    pub(crate) lasting: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct IstioSettings {
    /// `MAJOR.MINOR`, e.g. `1.23`; the newest behaviour when absent.
    pub(crate) version: Option<String>,
    /// istiod's `EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY` (Istio 1.24 to 1.26; default true).
    pub(crate) exclude_unsafe_503_from_default_retry: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Certificates {
    /// `SECRET_TTL` (24h).
    pub(crate) ttl: Option<String>,
    /// `SECRET_GRACE_PERIOD_RATIO` (0.5): rotate after this fraction of the lifetime.
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) grace_ratio: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Service {
    pub(crate) name: String,
    pub(crate) primary: Version,
    #[serde(default)]
    pub(crate) canary: Version,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceEntry {
    pub(crate) name: String,
    /// Versions by name, in the order written (a name written twice is an error).
    #[serde(deserialize_with = "ordered_map")]
    pub(crate) versions: Vec<(String, Version)>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct Version {
    pub(crate) pods: Option<u32>,
    pub(crate) workers: Option<u32>,
    pub(crate) latency: Option<Latency>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) error_rate: Option<f64>,
    pub(crate) error_code: Option<u16>,
    /// Whether the pods get a sidecar (false: as `sidecar.istio.io/inject: "false"`).
    #[serde(default, deserialize_with = "bool_if_written")]
    pub(crate) sidecar: Option<bool>,
    /// Pod labels, as a Deployment's pod template sets them.
    pub(crate) labels: Option<BTreeMap<String, String>>,
    /// The pods' service account (their mTLS identity).
    pub(crate) service_account: Option<String>,
    /// What each request calls, step by step.
    pub(crate) calls: Option<Vec<CallStep>>,
    /// What the pods' sidecar costs (the mesh's `proxy` unless set).
    pub(crate) proxy: Option<Proxy>,
}

/// A step of a version's calls: one call, or `parallel` calls made together.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct CallStep {
    pub(crate) service: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) probability: Option<f64>,
    #[serde(default, deserialize_with = "bool_if_written")]
    pub(crate) optional: Option<bool>,
    pub(crate) timeout: Option<String>,
    pub(crate) parallel: Option<Vec<CallTo>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct CallTo {
    pub(crate) service: String,
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) probability: Option<f64>,
    #[serde(default, deserialize_with = "bool_if_written")]
    pub(crate) optional: Option<bool>,
    pub(crate) timeout: Option<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct Latency {
    pub(crate) mean: Option<String>,
    pub(crate) constant: Option<String>,
    pub(crate) p50: Option<String>,
    pub(crate) p99: Option<String>,
    pub(crate) mixture: Option<Vec<MixturePart>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct MixturePart {
    #[serde(deserialize_with = "finite")]
    pub(crate) weight: f64,
    #[serde(flatten)]
    pub(crate) latency: Latency,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Traffic {
    pub(crate) client: String,
    pub(crate) namespace: Option<String>,
    #[serde(deserialize_with = "finite")]
    pub(crate) rate: f64,
    /// `poisson` (default) or `constant`.
    pub(crate) arrivals: Option<String>,
    pub(crate) ramp: Option<Ramp>,
    pub(crate) diurnal: Option<Diurnal>,
    pub(crate) bursts: Option<Bursts>,
    #[serde(default)]
    pub(crate) headers: Vec<HeaderProfile>,
    /// The requests' method and path: `GET` and `/` when absent.
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    #[serde(default, deserialize_with = "bool_if_written")]
    pub(crate) sidecar: Option<bool>,
    /// The service the client calls; the rollout's service when absent.
    pub(crate) service: Option<String>,
    /// `service` (default) or `canary`: a load tester sending to the canary's own Service.
    pub(crate) target: Option<String>,
    /// The Istio Gateway the requests enter through (scenario/ingress.rs).
    pub(crate) gateway: Option<String>,
    /// The workload's service account (its principal over mTLS); `default`, or for a
    /// gateway's proxy `<client>-service-account`, when absent.
    pub(crate) service_account: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Ramp {
    pub(crate) from: Option<String>,
    #[serde(deserialize_with = "finite")]
    pub(crate) to: f64,
    pub(crate) over: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Diurnal {
    #[serde(deserialize_with = "finite")]
    pub(crate) amplitude: f64,
    pub(crate) period: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Bursts {
    pub(crate) every: String,
    pub(crate) length: String,
    #[serde(deserialize_with = "finite")]
    pub(crate) factor: f64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderProfile {
    #[serde(deserialize_with = "finite")]
    pub(crate) weight: f64,
    #[serde(default)]
    pub(crate) set: BTreeMap<String, String>,
    /// The requests' method and path (the client's when absent).
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct TimelineEntry {
    pub(crate) at: Option<String>,
    pub(crate) when_weight: Option<i64>,
    pub(crate) deploy: Option<serde_norway::Value>,
    pub(crate) delete: Option<serde_norway::Value>,
    pub(crate) error_rate: Option<ErrorRate>,
    pub(crate) latency: Option<LatencyChange>,
    pub(crate) pod_error_rate: Option<PodErrorRate>,
    pub(crate) crash: Option<Crash>,
    pub(crate) black_hole: Option<BlackHole>,
    pub(crate) rate: Option<RateChange>,
    pub(crate) cert_rotation: Option<CertRotation>,
    pub(crate) scale: Option<Scale>,
    /// Mesh manifests applied at this point, as multi-document YAML.
    pub(crate) apply_manifests: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Scale {
    pub(crate) service: String,
    pub(crate) version: String,
    pub(crate) pods: u32,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct ErrorRate {
    /// A service of `services:` whose version `version` names; the rollout's when absent.
    pub(crate) service: Option<String>,
    pub(crate) version: String,
    #[serde(deserialize_with = "finite")]
    pub(crate) rate: f64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct LatencyChange {
    /// A service of `services:` whose version `version` names; the rollout's when absent.
    pub(crate) service: Option<String>,
    pub(crate) version: String,
    #[serde(flatten)]
    pub(crate) latency: Latency,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct PodErrorRate {
    /// A service of `services:` whose version `version` names; the rollout's when absent.
    pub(crate) service: Option<String>,
    pub(crate) version: String,
    pub(crate) pod: u32,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) rate: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Crash {
    /// A service of `services:` whose version `version` names; the rollout's when absent.
    pub(crate) service: Option<String>,
    pub(crate) version: String,
    pub(crate) pod: Option<u32>,
    pub(crate) pods: Option<Vec<u32>>,
    pub(crate) restart_after: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct BlackHole {
    /// A service of `services:` whose version `version` names; the rollout's when absent.
    pub(crate) service: Option<String>,
    pub(crate) version: String,
    pub(crate) pod: u32,
    pub(crate) on: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RateChange {
    pub(crate) client: String,
    #[serde(deserialize_with = "finite")]
    pub(crate) rps: f64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct CertRotation {
    /// A service of `services:` whose version `version` names; the rollout's when absent.
    pub(crate) service: Option<String>,
    pub(crate) version: String,
    pub(crate) enabled: bool,
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
    pub(crate) outcome: Option<Outcome>,
    pub(crate) decided_within: Option<String>,
    pub(crate) max_canary_weight_before_rollback: Option<i64>,
    pub(crate) max_failed_requests: Option<u64>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) min_success_rate: Option<f64>,
    pub(crate) no_false_rollback: Option<bool>,
    pub(crate) rolled_back_by: Option<String>,
    pub(crate) rolled_back_for_no_data: Option<String>,
    pub(crate) message_contains: Option<String>,
    /// Bounds on the mesh's counters (proxy counters summed over clients and versions,
    /// certificate rotations), by name.
    #[serde(default)]
    pub(crate) counters: BTreeMap<String, Bounds>,
    /// Per-client figures, by client name.
    #[serde(default)]
    pub(crate) clients: BTreeMap<String, FiguresExpect>,
    /// Per-service figures, and per version under `versions`, by name.
    #[serde(default)]
    pub(crate) services: BTreeMap<String, FiguresExpect>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Bounds {
    pub(crate) min: Option<u64>,
    pub(crate) max: Option<u64>,
}

/// Bounds on what a client, a service or a version saw; which keys apply where is checked
/// when the expectations are built (`share`, `margin` for a version, `versions` for a service).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FiguresExpect {
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) min_success_rate: Option<f64>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) max_success_rate: Option<f64>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) max_p99_ms: Option<f64>,
    pub(crate) min_requests: Option<u64>,
    pub(crate) max_requests: Option<u64>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) share: Option<f64>,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) margin: Option<f64>,
    pub(crate) versions: Option<BTreeMap<String, FiguresExpect>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Variant {
    pub(crate) name: String,
    pub(crate) judge: String,
    #[serde(default, deserialize_with = "finite_or_none")]
    pub(crate) alpha: Option<f64>,
    pub(crate) min_requests: Option<i64>,
    pub(crate) expect: Expect,
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

/// A CPU quantity written as a number (`0.5`, `2`) or a string (`500m`), kept as text.
fn cpu_quantity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match serde_norway::Value::deserialize(d)? {
        serde_norway::Value::String(s) => Ok(Some(s)),
        serde_norway::Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(D::Error::custom(
            "expected a CPU quantity such as `500m`, `0.5` or `2`",
        )),
    }
}

const NO_VALUE: &str = "has no value: write true or false, or leave the key out";

/// A boolean that may be left out but, when its key is written, needs a value: YAML reads a key
/// with nothing after it as null, which would otherwise pass for "not set" and take the default.
fn bool_if_written<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<bool>::deserialize(d)? {
        Some(b) => Ok(Some(b)),
        None => Err(D::Error::custom(NO_VALUE)),
    }
}

/// A mapping kept in the order written; a key written twice is an error, as in the rest of
/// the file.
fn ordered_map<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<Vec<(String, V)>, D::Error> {
    struct Visit<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
        type Value = Vec<(String, V)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map from version names to versions")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, V)> = Vec::new();
            while let Some(k) = m.next_key::<String>()? {
                if out.iter().any(|(o, _)| *o == k) {
                    return Err(A::Error::custom(format!(
                        "duplicate entry with key \"{k}\""
                    )));
                }
                let v = m.next_value()?;
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Visit(std::marker::PhantomData))
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
        } else if message == NO_VALUE {
            // The parser points at the mapping holding the empty key: name the key's line.
            Outline::of(text).line(0, &path).or(line)
        } else {
            line
        };
        (path, line, message)
    })
}
