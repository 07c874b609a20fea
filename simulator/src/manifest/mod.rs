//! Mesh manifests as users write them: Istio `VirtualService`, `DestinationRule`,
//! `PeerAuthentication`, Linkerd `ServiceProfile`, SMI `TrafficSplit` and Gateway API `HTTPRoute`.
//!
//! [`parse`] reads multi-document YAML. Unknown fields are ignored and reported in
//! [`Manifests::warnings`]; a field of the wrong type is a [`ManifestError`] naming the document
//! (index, kind, name), the field path and the expected type. Documents of other kinds are skipped
//! with a warning. Values keep Istio's meaning: absent fields stay `None` and the mesh applies
//! Istio's defaults when it resolves them.

pub(crate) mod yaml;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::engine::SimTime;

/// Why manifests could not be read. Messages count documents from 1, as the Canary loader does.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    /// The text is not valid YAML (a syntax error, a key written twice, too deep a nesting).
    #[error("document {}: invalid YAML: {message}", .doc + 1)]
    Yaml {
        /// Zero-based document index.
        doc: usize,
        /// The 1-based line of the text, when known.
        line: Option<usize>,
        /// Parser message.
        message: String,
    },
    /// A field has the wrong type or an invalid value.
    #[error("document {} ({kind} {name:?}): field `{field}`: expected {expected}", .doc + 1)]
    WrongType {
        /// Zero-based document index.
        doc: usize,
        /// The document's kind.
        kind: String,
        /// The document's `metadata.name`.
        name: String,
        /// Dotted path of the field.
        field: String,
        /// What was expected.
        expected: String,
    },
    /// A required field is absent.
    #[error("document {} ({kind} {name:?}): missing required field `{field}`", .doc + 1)]
    Missing {
        /// Zero-based document index.
        doc: usize,
        /// The document's kind.
        kind: String,
        /// The document's `metadata.name`.
        name: String,
        /// Dotted path of the field.
        field: String,
    },
}

/// How a string is matched.
#[derive(Clone, Debug)]
pub enum StringMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Matches the whole value (RE2 semantics as Envoy's `safe_regex`).
    Regex(regex::Regex),
}

impl PartialEq for StringMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) | (Self::Prefix(a), Self::Prefix(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl StringMatch {
    /// A full-match regex (Envoy anchors `safe_regex`).
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self::Regex(regex::Regex::new(&format!("^(?:{pattern})$"))?))
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Regex(r) => r.is_match(value),
        }
    }
}

/// One header condition.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderMatch {
    /// Header name (lower case).
    pub name: String,
    /// Condition on its value.
    pub matcher: StringMatch,
}

impl HeaderMatch {
    /// `name: exact value`.
    pub fn exact(name: &str, value: &str) -> Self {
        Self {
            name: name.to_ascii_lowercase(),
            matcher: StringMatch::Exact(value.to_string()),
        }
    }
}

/// A routing destination.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteDestination {
    /// Target host (service name or FQDN).
    pub host: String,
    /// Subset name, if any.
    pub subset: Option<String>,
    /// Relative weight (Istio: absent means 100 for a single destination).
    pub weight: Option<u32>,
}

/// Retry condition set (Envoy `retry_on`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `5xx`.
    pub five_xx: bool,
    /// `gateway-error` (502, 503, 504).
    pub gateway_error: bool,
    /// `connect-failure`.
    pub connect_failure: bool,
    /// `reset`.
    pub reset: bool,
    /// `refused-stream`.
    pub refused_stream: bool,
    /// `retriable-status-codes` (uses `codes`).
    pub retriable_status_codes: bool,
    /// Integer codes listed in `retryOn`.
    pub codes: Vec<u16>,
}

impl RetryOn {
    /// Parses Istio's comma-separated `retryOn`, warning about conditions the model ignores.
    pub fn parse(s: &str, warn: &mut dyn FnMut(String)) -> Self {
        let mut r = RetryOn::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "5xx" => r.five_xx = true,
                "gateway-error" => r.gateway_error = true,
                "connect-failure" => r.connect_failure = true,
                "reset" => r.reset = true,
                "refused-stream" => r.refused_stream = true,
                "retriable-status-codes" => r.retriable_status_codes = true,
                // Conditions that never arise in the model.
                "unavailable"
                | "cancelled"
                | "deadline-exceeded"
                | "resource-exhausted"
                | "retriable-4xx"
                | "retriable-headers"
                | "envoy-ratelimited"
                | "http3-post-connect-failure" => {}
                other => match other.parse::<u16>() {
                    Ok(code) => {
                        r.codes.push(code);
                        r.retriable_status_codes = true;
                    }
                    Err(_) => warn(format!("retryOn: unknown condition `{other}` ignored")),
                },
            }
        }
        r
    }

    /// Istio's default: `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
    /// with no status codes (EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY defaults to true).
    pub fn istio_default() -> Self {
        RetryOn {
            connect_failure: true,
            refused_stream: true,
            retriable_status_codes: true,
            ..Default::default()
        }
    }
}

/// VirtualService `retries`.
#[derive(Clone, Debug, PartialEq)]
pub struct Retries {
    /// Retries after the first try.
    pub attempts: u32,
    /// Per-try timeout.
    pub per_try_timeout: Option<SimTime>,
    /// Conditions (absent: Istio's default set).
    pub retry_on: Option<RetryOn>,
}

/// VirtualService `fault`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultInjection {
    /// Fixed delay and the percentage of requests delayed.
    pub delay: Option<(SimTime, f64)>,
    /// HTTP status and the percentage of requests aborted.
    pub abort: Option<(u16, f64)>,
}

/// One VirtualService HTTP route.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpRoute {
    /// Route name.
    pub name: Option<String>,
    /// Match blocks (ORed); each holds header conditions (ANDed). Empty: matches everything.
    pub matches: Vec<Vec<HeaderMatch>>,
    /// Weighted destinations.
    pub route: Vec<RouteDestination>,
    /// Route timeout.
    pub timeout: Option<SimTime>,
    /// Retry policy.
    pub retries: Option<Retries>,
    /// Fault injection.
    pub fault: Option<FaultInjection>,
    /// Mirror destination.
    pub mirror: Option<RouteDestination>,
    /// Mirror percentage (Istio: 100 when `mirror` is set without it).
    pub mirror_percentage: Option<f64>,
}

/// An Istio VirtualService.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualService {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `spec.hosts`.
    pub hosts: Vec<String>,
    /// `spec.gateways`: empty means `mesh`, the sidecars.
    pub gateways: Vec<String>,
    /// `spec.http`.
    pub http: Vec<HttpRoute>,
}

impl VirtualService {
    /// Whether the sidecars apply it: Istio binds a VirtualService to the reserved gateway
    /// `mesh` when `gateways` is absent; one bound to named gateways only routes at those
    /// gateways, not for the mesh's clients.
    pub fn binds_mesh(&self) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh")
    }
}

/// Load-balancing algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    /// Envoy LEAST_REQUEST, power of two choices (Istio's default).
    LeastRequest,
    /// Round robin.
    RoundRobin,
    /// Uniform random.
    Random,
    /// Linkerd's peak-EWMA power of two choices.
    PeakEwma,
}

/// DestinationRule `connectionPool`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionPool {
    /// `tcp.maxConnections`.
    pub max_connections: Option<u32>,
    /// `tcp.connectTimeout`.
    pub connect_timeout: Option<SimTime>,
    /// `http.http1MaxPendingRequests`.
    pub http1_max_pending_requests: Option<u32>,
    /// `http.http2MaxRequests`.
    pub http2_max_requests: Option<u32>,
    /// `http.maxRequestsPerConnection`.
    pub max_requests_per_connection: Option<u32>,
    /// `http.maxRetries`.
    pub max_retries: Option<u32>,
    /// `http.idleTimeout` (or `tcp.idleTimeout`).
    pub idle_timeout: Option<SimTime>,
    /// `http.h2UpgradePolicy: UPGRADE`.
    pub h2_upgrade: Option<bool>,
}

/// DestinationRule `outlierDetection` as written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutlierDetectionSpec {
    /// `consecutive5xxErrors`.
    pub consecutive_5xx_errors: Option<u32>,
    /// `consecutiveGatewayErrors`.
    pub consecutive_gateway_errors: Option<u32>,
    /// `interval`.
    pub interval: Option<SimTime>,
    /// `baseEjectionTime`.
    pub base_ejection_time: Option<SimTime>,
    /// `maxEjectionPercent`.
    pub max_ejection_percent: Option<u32>,
    /// `minHealthPercent`.
    pub min_health_percent: Option<u32>,
}

/// Client-side TLS mode from a DestinationRule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Istio mutual TLS.
    IstioMutual,
    /// Plaintext.
    Disable,
}

/// A DestinationRule `trafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrafficPolicy {
    /// `loadBalancer.simple`.
    pub load_balancer: Option<LbPolicy>,
    /// `connectionPool`.
    pub connection_pool: Option<ConnectionPool>,
    /// `outlierDetection`.
    pub outlier_detection: Option<OutlierDetectionSpec>,
    /// `tls.mode`.
    pub tls: Option<TlsMode>,
}

impl TrafficPolicy {
    /// Subset policy over this one: each group the subset sets replaces the top-level one.
    pub fn overlay(&self, subset: &TrafficPolicy) -> TrafficPolicy {
        TrafficPolicy {
            load_balancer: subset.load_balancer.or(self.load_balancer),
            connection_pool: subset
                .connection_pool
                .clone()
                .or_else(|| self.connection_pool.clone()),
            outlier_detection: subset
                .outlier_detection
                .clone()
                .or_else(|| self.outlier_detection.clone()),
            tls: subset.tls.or(self.tls),
        }
    }
}

/// A DestinationRule subset.
#[derive(Clone, Debug, PartialEq)]
pub struct Subset {
    /// Subset name.
    pub name: String,
    /// Pod labels selecting it.
    pub labels: BTreeMap<String, String>,
    /// Subset-level policy.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// An Istio DestinationRule.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationRule {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `spec.host`.
    pub host: String,
    /// `spec.trafficPolicy`.
    pub traffic_policy: TrafficPolicy,
    /// `spec.subsets`.
    pub subsets: Vec<Subset>,
}

/// PeerAuthentication mTLS mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtlsMode {
    /// Inherit from the parent policy.
    Unset,
    /// Plaintext only.
    Disable,
    /// mTLS or plaintext.
    Permissive,
    /// mTLS required.
    Strict,
}

/// An Istio PeerAuthentication.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerAuthentication {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (`istio-system` is the mesh root namespace).
    pub namespace: Option<String>,
    /// `spec.selector.matchLabels`; `None` applies to the whole namespace.
    pub selector: Option<BTreeMap<String, String>>,
    /// `spec.mtls.mode`.
    pub mode: MtlsMode,
}

/// A ServiceProfile route.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRoute {
    /// Route name.
    pub name: String,
    /// `condition.method`.
    pub method: Option<String>,
    /// `condition.pathRegex`.
    pub path_regex: Option<String>,
    /// Status ranges classed as failures (`responseClasses` with `isFailure`).
    pub failure_ranges: Vec<(u16, u16)>,
    /// `isRetryable`.
    pub is_retryable: bool,
    /// `timeout`.
    pub timeout: Option<SimTime>,
}

/// Linkerd retry budget.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudget {
    /// `retryRatio`.
    pub retry_ratio: f64,
    /// `minRetriesPerSecond`.
    pub min_retries_per_second: u32,
    /// `ttl`.
    pub ttl: SimTime,
}

/// A Linkerd ServiceProfile.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceProfile {
    /// `metadata.name` (the service FQDN).
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `spec.routes`.
    pub routes: Vec<ProfileRoute>,
    /// `spec.retryBudget`.
    pub retry_budget: Option<RetryBudget>,
}

/// An SMI TrafficSplit.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficSplit {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `spec.service` (the apex service).
    pub service: String,
    /// Backends with weights in thousandths (`900m` is 900, `1` is 1000).
    pub backends: Vec<(String, u64)>,
}

/// A Gateway API HTTPRoute rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayRule {
    /// Match blocks (ORed) of header conditions (ANDed).
    pub matches: Vec<Vec<HeaderMatch>>,
    /// Backend services with weights (default 1).
    pub backends: Vec<(String, u32)>,
    /// `timeouts.request`.
    pub request_timeout: Option<SimTime>,
    /// `timeouts.backendRequest`.
    pub backend_request_timeout: Option<SimTime>,
    /// A `RequestMirror` filter: the backend copied to and the percentage (100 by default).
    pub mirror: Option<(String, f64)>,
}

/// A Gateway API HTTPRoute.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRouteSpec {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `spec.parentRefs[].name` (a Service for mesh routing).
    pub parents: Vec<String>,
    /// `spec.rules`.
    pub rules: Vec<GatewayRule>,
}

/// One parsed manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    /// Istio VirtualService.
    VirtualService(VirtualService),
    /// Istio DestinationRule.
    DestinationRule(DestinationRule),
    /// Istio PeerAuthentication.
    PeerAuthentication(PeerAuthentication),
    /// Linkerd ServiceProfile.
    ServiceProfile(ServiceProfile),
    /// SMI TrafficSplit.
    TrafficSplit(TrafficSplit),
    /// Gateway API HTTPRoute.
    HttpRoute(HttpRouteSpec),
}

/// Parsed manifests and the warnings collected while reading them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifests {
    /// Manifests in document order.
    pub items: Vec<Manifest>,
    /// Ignored fields and documents, one message each.
    pub warnings: Vec<String>,
}

impl Manifests {
    /// Appends another set.
    pub fn extend(&mut self, other: Manifests) {
        self.items.extend(other.items);
        self.warnings.extend(other.warnings);
    }
}

/// Parses a Kubernetes quantity such as `900m`, `1`, `0.5` or `10` into thousandths.
pub fn parse_quantity_milli(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<u64>().ok();
    }
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * 1000.0).round() as u64)
}

/// Parses a protobuf/Go duration such as `10s`, `1.5s`, `250ms`, `1m`, `1h30m`, `100us`.
pub fn parse_duration(s: &str) -> Option<SimTime> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * mult;
    }
    (total.is_finite() && total < u64::MAX as f64).then(|| total.round() as SimTime)
}

struct Doc<'w> {
    index: usize,
    kind: String,
    name: String,
    warnings: &'w mut Vec<String>,
}

#[derive(Clone, Copy)]
struct Node<'a> {
    v: &'a Value,
}

impl Doc<'_> {
    fn wrong(&self, field: &str, expected: &str) -> ManifestError {
        ManifestError::WrongType {
            doc: self.index,
            kind: self.kind.clone(),
            name: self.name.clone(),
            field: field.to_string(),
            expected: expected.to_string(),
        }
    }

    fn missing(&self, field: &str) -> ManifestError {
        ManifestError::Missing {
            doc: self.index,
            kind: self.kind.clone(),
            name: self.name.clone(),
            field: field.to_string(),
        }
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(format!(
            "document {} ({} {:?}): {msg}",
            self.index + 1,
            self.kind,
            self.name
        ));
    }

    /// Checks `n` is a mapping and warns about keys outside `known`.
    fn obj<'a>(
        &mut self,
        n: Node<'a>,
        path: &str,
        known: &[&str],
    ) -> Result<&'a serde_json::Map<String, Value>, ManifestError> {
        let m =
            n.v.as_object()
                .ok_or_else(|| self.wrong(path, "a mapping"))?;
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                let p = join(path, k);
                self.warn(format!("unknown field `{p}` ignored"));
            }
        }
        Ok(m)
    }

    fn str(&self, n: Node<'_>, path: &str) -> Result<String, ManifestError> {
        match n.v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.wrong(path, "a string")),
        }
    }

    fn u32(&self, n: Node<'_>, path: &str) -> Result<u32, ManifestError> {
        n.v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| self.wrong(path, "a non-negative integer"))
    }

    fn f64(&self, n: Node<'_>, path: &str) -> Result<f64, ManifestError> {
        n.v.as_f64().ok_or_else(|| self.wrong(path, "a number"))
    }

    fn bool(&self, n: Node<'_>, path: &str) -> Result<bool, ManifestError> {
        n.v.as_bool().ok_or_else(|| self.wrong(path, "a boolean"))
    }

    fn duration(&self, n: Node<'_>, path: &str) -> Result<SimTime, ManifestError> {
        match n.v {
            Value::String(s) => parse_duration(s)
                .ok_or_else(|| self.wrong(path, "a duration such as `10s` or `250ms`")),
            _ => Err(self.wrong(path, "a duration such as `10s` or `250ms`")),
        }
    }

    fn list<'a>(&self, n: Node<'a>, path: &str) -> Result<&'a Vec<Value>, ManifestError> {
        n.v.as_array().ok_or_else(|| self.wrong(path, "a list"))
    }

    fn labels(
        &mut self,
        n: Node<'_>,
        path: &str,
    ) -> Result<BTreeMap<String, String>, ManifestError> {
        let m =
            n.v.as_object()
                .ok_or_else(|| self.wrong(path, "a mapping of strings"))?;
        let mut out = BTreeMap::new();
        for (k, v) in m {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(x) => x.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(self.wrong(&join(path, k), "a string")),
            };
            out.insert(k.clone(), s);
        }
        Ok(out)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn get<'a>(m: &'a serde_json::Map<String, Value>, key: &str) -> Option<Node<'a>> {
    m.get(key).filter(|v| !v.is_null()).map(|v| Node { v })
}

/// Parses multi-document YAML into manifests.
pub fn parse(yaml: &str) -> Result<Manifests, ManifestError> {
    if let Err(deep) = yaml::check_depth(yaml) {
        return Err(ManifestError::Yaml {
            doc: yaml::Outline::of(yaml).documents().saturating_sub(1),
            line: Some(deep.line),
            message: deep.to_string(),
        });
    }
    let mut out = Manifests::default();
    for (index, de) in serde_norway::Deserializer::from_str(yaml).enumerate() {
        // Through YAML's own value first: it refuses a key written twice, as kubectl does.
        let value = serde_norway::Value::deserialize(de).map_err(|e| {
            let mut line = e.location().map(|l| l.line());
            let mut message = e.to_string();
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            if message.contains("duplicate entry") {
                // The parser points at the mapping; the second key is the one to remove.
                let outline = yaml::Outline::of(yaml);
                line = outline.duplicate(index).map(|(_, l)| l).or(line);
            }
            ManifestError::Yaml {
                doc: index,
                line,
                message,
            }
        })?;
        let kind = value
            .get("kind")
            .and_then(serde_norway::Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(serde_norway::Value::as_str)
            .unwrap_or("")
            .to_string();
        let value = to_json(value, "").map_err(|(field, expected)| ManifestError::WrongType {
            doc: index,
            kind: kind.clone(),
            name: name.clone(),
            field,
            expected: expected.into(),
        })?;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        let Some(map) = value.as_object() else {
            return Err(ManifestError::WrongType {
                doc: index,
                kind: String::new(),
                name: String::new(),
                field: String::new(),
                expected: "a mapping with apiVersion, kind, metadata and spec".into(),
            });
        };
        let mut doc = Doc {
            index,
            kind: kind.clone(),
            name,
            warnings: &mut out.warnings,
        };
        if let Some(item) = parse_doc(&mut doc, map)? {
            out.items.push(item);
        }
    }
    Ok(out)
}

/// A YAML value as the JSON Kubernetes reads: mapping keys become strings, tags are dropped,
/// and a number JSON cannot hold (`.nan`, `.inf`) is a type error at its path.
fn to_json(v: serde_norway::Value, path: &str) -> Result<Value, (String, &'static str)> {
    use serde_norway::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| (path.to_string(), "a finite number"))?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &idx(path, i)))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    _ => return Err((path.to_string(), "a mapping with string keys")),
                };
                let value = to_json(v, &join(path, &key))?;
                out.insert(key, value);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => to_json(t.value, path)?,
    })
}

fn parse_doc(
    doc: &mut Doc<'_>,
    map: &serde_json::Map<String, Value>,
) -> Result<Option<Manifest>, ManifestError> {
    let top = Node {
        v: map.get("kind").unwrap_or(&Value::Null),
    };
    if !map.contains_key("kind") {
        return Err(doc.missing("kind"));
    }
    doc.str(top, "kind")?;
    doc.obj(
        Node {
            v: &Value::Object(map.clone()),
        },
        "",
        &["apiVersion", "kind", "metadata", "spec", "status"],
    )?;
    let meta = get(map, "metadata").ok_or_else(|| doc.missing("metadata"))?;
    let meta = doc.obj(
        meta,
        "metadata",
        &[
            "name",
            "namespace",
            "labels",
            "annotations",
            "generation",
            "resourceVersion",
            "uid",
            "creationTimestamp",
        ],
    )?;
    let name = doc.str(
        get(meta, "name").ok_or_else(|| doc.missing("metadata.name"))?,
        "metadata.name",
    )?;
    let namespace = get(meta, "namespace")
        .map(|n| doc.str(n, "metadata.namespace"))
        .transpose()?;
    let spec = get(map, "spec").ok_or_else(|| doc.missing("spec"));
    let kind = doc.kind.clone();
    Ok(Some(match kind.as_str() {
        "VirtualService" => Manifest::VirtualService(virtual_service(doc, spec?, name, namespace)?),
        "DestinationRule" => {
            Manifest::DestinationRule(destination_rule(doc, spec?, name, namespace)?)
        }
        "PeerAuthentication" => {
            Manifest::PeerAuthentication(peer_authentication(doc, spec?, name, namespace)?)
        }
        "ServiceProfile" => Manifest::ServiceProfile(service_profile(doc, spec?, name, namespace)?),
        "TrafficSplit" => Manifest::TrafficSplit(traffic_split(doc, spec?, name, namespace)?),
        "HTTPRoute" => Manifest::HttpRoute(http_route(doc, spec?, name, namespace)?),
        other => {
            doc.warn(format!("kind `{other}` is not simulated; document ignored"));
            return Ok(None);
        }
    }))
}

fn string_match(doc: &mut Doc<'_>, n: Node<'_>, path: &str) -> Result<StringMatch, ManifestError> {
    let m = doc.obj(n, path, &["exact", "prefix", "regex"])?;
    if let Some(v) = get(m, "exact") {
        return Ok(StringMatch::Exact(doc.str(v, &join(path, "exact"))?));
    }
    if let Some(v) = get(m, "prefix") {
        return Ok(StringMatch::Prefix(doc.str(v, &join(path, "prefix"))?));
    }
    if let Some(v) = get(m, "regex") {
        let p = join(path, "regex");
        let s = doc.str(v, &p)?;
        return StringMatch::regex(&s).map_err(|_| doc.wrong(&p, "a valid RE2 regular expression"));
    }
    Err(doc.wrong(path, "one of exact, prefix or regex"))
}

fn destination(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
    weight: Option<u32>,
) -> Result<RouteDestination, ManifestError> {
    let m = doc.obj(n, path, &["host", "subset", "port"])?;
    let host = doc.str(
        get(m, "host").ok_or_else(|| doc.missing(&join(path, "host")))?,
        &join(path, "host"),
    )?;
    let subset = get(m, "subset")
        .map(|s| doc.str(s, &join(path, "subset")))
        .transpose()?;
    Ok(RouteDestination {
        host,
        subset,
        weight,
    })
}

fn percentage(
    doc: &mut Doc<'_>,
    m: &serde_json::Map<String, Value>,
    path: &str,
) -> Result<Option<f64>, ManifestError> {
    if let Some(p) = get(m, "percentage") {
        let pp = join(path, "percentage");
        let pm = doc.obj(p, &pp, &["value"])?;
        return get(pm, "value")
            .map(|v| doc.f64(v, &join(&pp, "value")))
            .transpose();
    }
    if let Some(p) = get(m, "percent") {
        return Ok(Some(f64::from(doc.u32(p, &join(path, "percent"))?)));
    }
    Ok(None)
}

fn virtual_service(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<VirtualService, ManifestError> {
    let s = doc.obj(
        spec,
        "spec",
        &["hosts", "gateways", "http", "tcp", "tls", "exportTo"],
    )?;
    let mut hosts = Vec::new();
    if let Some(h) = get(s, "hosts") {
        for (i, v) in doc.list(h, "spec.hosts")?.iter().enumerate() {
            hosts.push(doc.str(Node { v }, &idx("spec.hosts", i))?);
        }
    }
    let mut gateways = Vec::new();
    if let Some(g) = get(s, "gateways") {
        for (i, v) in doc.list(g, "spec.gateways")?.iter().enumerate() {
            gateways.push(doc.str(Node { v }, &idx("spec.gateways", i))?);
        }
    }
    let mut http = Vec::new();
    if let Some(h) = get(s, "http") {
        for (i, v) in doc.list(h, "spec.http")?.iter().enumerate() {
            let path = idx("spec.http", i);
            http.push(http_route_vs(doc, Node { v }, &path)?);
        }
    }
    Ok(VirtualService {
        name,
        namespace,
        hosts,
        gateways,
        http,
    })
}

fn http_route_vs(doc: &mut Doc<'_>, n: Node<'_>, path: &str) -> Result<HttpRoute, ManifestError> {
    let m = doc.obj(
        n,
        path,
        &[
            "name",
            "match",
            "route",
            "timeout",
            "retries",
            "fault",
            "mirror",
            "mirrorPercentage",
            "mirror_percent",
            "mirrorPercent",
            "headers",
            "rewrite",
            "redirect",
            "corsPolicy",
            "directResponse",
            "delegate",
            "mirrors",
        ],
    )?;
    let mut r = HttpRoute {
        name: get(m, "name")
            .map(|v| doc.str(v, &join(path, "name")))
            .transpose()?,
        ..Default::default()
    };
    if let Some(ms) = get(m, "match") {
        let mp = join(path, "match");
        for (i, v) in doc.list(ms, &mp)?.iter().enumerate() {
            let bp = idx(&mp, i);
            let b = doc.obj(
                Node { v },
                &bp,
                &[
                    "name",
                    "headers",
                    "uri",
                    "method",
                    "scheme",
                    "authority",
                    "port",
                    "queryParams",
                    "sourceLabels",
                    "ignoreUriCase",
                    "withoutHeaders",
                    "gateways",
                    "sourceNamespace",
                ],
            )?;
            let mut block = Vec::new();
            if let Some(h) = get(b, "headers") {
                let hp = join(&bp, "headers");
                let hm =
                    h.v.as_object()
                        .ok_or_else(|| doc.wrong(&hp, "a mapping of header name to match"))?;
                for (hn, hv) in hm {
                    let matcher = string_match(doc, Node { v: hv }, &join(&hp, hn))?;
                    block.push(HeaderMatch {
                        name: hn.to_ascii_lowercase(),
                        matcher,
                    });
                }
            }
            for other in [
                "uri",
                "method",
                "authority",
                "queryParams",
                "sourceLabels",
                "withoutHeaders",
            ] {
                if b.contains_key(other) {
                    doc.warn(format!("`{bp}.{other}` is not simulated: requests carry only headers; condition ignored"));
                }
            }
            r.matches.push(block);
        }
    }
    if let Some(rs) = get(m, "route") {
        let rp = join(path, "route");
        for (i, v) in doc.list(rs, &rp)?.iter().enumerate() {
            let dp = idx(&rp, i);
            let d = doc.obj(Node { v }, &dp, &["destination", "weight", "headers"])?;
            let weight = get(d, "weight")
                .map(|w| doc.u32(w, &join(&dp, "weight")))
                .transpose()?;
            let dest =
                get(d, "destination").ok_or_else(|| doc.missing(&join(&dp, "destination")))?;
            r.route
                .push(destination(doc, dest, &join(&dp, "destination"), weight)?);
        }
    }
    if let Some(t) = get(m, "timeout") {
        r.timeout = Some(doc.duration(t, &join(path, "timeout"))?);
    }
    if let Some(rt) = get(m, "retries") {
        let rp = join(path, "retries");
        let rm = doc.obj(
            rt,
            &rp,
            &[
                "attempts",
                "perTryTimeout",
                "retryOn",
                "retryRemoteLocalities",
                "retryIgnorePreviousHosts",
                "backoff",
            ],
        )?;
        let attempts = get(rm, "attempts")
            .map(|a| doc.u32(a, &join(&rp, "attempts")))
            .transpose()?
            .unwrap_or(0);
        let per_try_timeout = get(rm, "perTryTimeout")
            .map(|a| doc.duration(a, &join(&rp, "perTryTimeout")))
            .transpose()?;
        let retry_on = match get(rm, "retryOn") {
            Some(v) => {
                let s = doc.str(v, &join(&rp, "retryOn"))?;
                let mut msgs = Vec::new();
                let on = RetryOn::parse(&s, &mut |w| msgs.push(w));
                for w in msgs {
                    doc.warn(w);
                }
                Some(on)
            }
            None => None,
        };
        r.retries = Some(Retries {
            attempts,
            per_try_timeout,
            retry_on,
        });
    }
    if let Some(f) = get(m, "fault") {
        let fp = join(path, "fault");
        let fm = doc.obj(f, &fp, &["delay", "abort"])?;
        let mut fault = FaultInjection::default();
        if let Some(d) = get(fm, "delay") {
            let dp = join(&fp, "delay");
            let dm = doc.obj(
                d,
                &dp,
                &["fixedDelay", "percentage", "percent", "exponentialDelay"],
            )?;
            let fixed =
                get(dm, "fixedDelay").ok_or_else(|| doc.missing(&join(&dp, "fixedDelay")))?;
            let fixed = doc.duration(fixed, &join(&dp, "fixedDelay"))?;
            // No percentage: Istio delays nothing.
            let pct = percentage(doc, dm, &dp)?.unwrap_or(0.0);
            fault.delay = Some((fixed, pct));
        }
        if let Some(a) = get(fm, "abort") {
            let ap = join(&fp, "abort");
            let am = doc.obj(
                a,
                &ap,
                &[
                    "httpStatus",
                    "percentage",
                    "percent",
                    "grpcStatus",
                    "http2Error",
                ],
            )?;
            let status =
                get(am, "httpStatus").ok_or_else(|| doc.missing(&join(&ap, "httpStatus")))?;
            let status = doc.u32(status, &join(&ap, "httpStatus"))?;
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (100..600).contains(s))
                .ok_or_else(|| {
                    doc.wrong(
                        &join(&ap, "httpStatus"),
                        "an HTTP status between 100 and 599",
                    )
                })?;
            let pct = percentage(doc, am, &ap)?.unwrap_or(0.0);
            fault.abort = Some((status, pct));
        }
        r.fault = Some(fault);
    }
    if let Some(mi) = get(m, "mirror") {
        r.mirror = Some(destination(doc, mi, &join(path, "mirror"), None)?);
        r.mirror_percentage = Some(100.0);
    }
    if let Some(mp) = get(m, "mirrorPercentage") {
        let p = join(path, "mirrorPercentage");
        let pm = doc.obj(mp, &p, &["value"])?;
        r.mirror_percentage = get(pm, "value")
            .map(|v| doc.f64(v, &join(&p, "value")))
            .transpose()?;
    } else if let Some(mp) = get(m, "mirrorPercent").or_else(|| get(m, "mirror_percent")) {
        r.mirror_percentage = Some(f64::from(doc.u32(mp, &join(path, "mirrorPercent"))?));
    }
    Ok(r)
}

fn lb_policy(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
) -> Result<Option<LbPolicy>, ManifestError> {
    let m = doc.obj(
        n,
        path,
        &[
            "simple",
            "consistentHash",
            "localityLbSetting",
            "warmupDurationSecs",
            "warmup",
        ],
    )?;
    if m.contains_key("consistentHash") {
        doc.warn(format!(
            "`{path}.consistentHash` is not simulated; LEAST_REQUEST used"
        ));
    }
    let Some(s) = get(m, "simple") else {
        return Ok(None);
    };
    let p = join(path, "simple");
    Ok(Some(match doc.str(s, &p)?.as_str() {
        "UNSPECIFIED" | "LEAST_REQUEST" | "LEAST_CONN" => LbPolicy::LeastRequest,
        "ROUND_ROBIN" => LbPolicy::RoundRobin,
        "RANDOM" => LbPolicy::Random,
        "PASSTHROUGH" => {
            doc.warn(format!("`{p}: PASSTHROUGH` is simulated as RANDOM"));
            LbPolicy::Random
        }
        _ => {
            return Err(doc.wrong(
                &p,
                "one of UNSPECIFIED, LEAST_REQUEST, LEAST_CONN, ROUND_ROBIN, RANDOM, PASSTHROUGH",
            ));
        }
    }))
}

fn traffic_policy(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
) -> Result<TrafficPolicy, ManifestError> {
    let m = doc.obj(
        n,
        path,
        &[
            "loadBalancer",
            "connectionPool",
            "outlierDetection",
            "tls",
            "portLevelSettings",
            "tunnel",
            "proxyProtocol",
        ],
    )?;
    let mut tp = TrafficPolicy::default();
    if let Some(lb) = get(m, "loadBalancer") {
        tp.load_balancer = lb_policy(doc, lb, &join(path, "loadBalancer"))?;
    }
    if let Some(cp) = get(m, "connectionPool") {
        let p = join(path, "connectionPool");
        let cm = doc.obj(cp, &p, &["tcp", "http"])?;
        let mut pool = ConnectionPool::default();
        if let Some(t) = get(cm, "tcp") {
            let tp_ = join(&p, "tcp");
            let tm = doc.obj(
                t,
                &tp_,
                &[
                    "maxConnections",
                    "connectTimeout",
                    "tcpKeepalive",
                    "maxConnectionDuration",
                    "idleTimeout",
                ],
            )?;
            pool.max_connections = get(tm, "maxConnections")
                .map(|v| doc.u32(v, &join(&tp_, "maxConnections")))
                .transpose()?;
            pool.connect_timeout = get(tm, "connectTimeout")
                .map(|v| doc.duration(v, &join(&tp_, "connectTimeout")))
                .transpose()?;
            pool.idle_timeout = get(tm, "idleTimeout")
                .map(|v| doc.duration(v, &join(&tp_, "idleTimeout")))
                .transpose()?;
        }
        if let Some(h) = get(cm, "http") {
            let hp = join(&p, "http");
            let hm = doc.obj(
                h,
                &hp,
                &[
                    "http1MaxPendingRequests",
                    "http2MaxRequests",
                    "maxRequestsPerConnection",
                    "maxRetries",
                    "idleTimeout",
                    "h2UpgradePolicy",
                    "useClientProtocol",
                    "maxConcurrentStreams",
                ],
            )?;
            pool.http1_max_pending_requests = get(hm, "http1MaxPendingRequests")
                .map(|v| doc.u32(v, &join(&hp, "http1MaxPendingRequests")))
                .transpose()?;
            pool.http2_max_requests = get(hm, "http2MaxRequests")
                .map(|v| doc.u32(v, &join(&hp, "http2MaxRequests")))
                .transpose()?;
            pool.max_requests_per_connection = get(hm, "maxRequestsPerConnection")
                .map(|v| doc.u32(v, &join(&hp, "maxRequestsPerConnection")))
                .transpose()?;
            pool.max_retries = get(hm, "maxRetries")
                .map(|v| doc.u32(v, &join(&hp, "maxRetries")))
                .transpose()?;
            if let Some(v) = get(hm, "idleTimeout") {
                pool.idle_timeout = Some(doc.duration(v, &join(&hp, "idleTimeout"))?);
            }
            if let Some(v) = get(hm, "h2UpgradePolicy") {
                let up = join(&hp, "h2UpgradePolicy");
                pool.h2_upgrade = Some(match doc.str(v, &up)?.as_str() {
                    "UPGRADE" => true,
                    "DO_NOT_UPGRADE" | "DEFAULT" => false,
                    _ => return Err(doc.wrong(&up, "one of DEFAULT, DO_NOT_UPGRADE, UPGRADE")),
                });
            }
        }
        tp.connection_pool = Some(pool);
    }
    if let Some(od) = get(m, "outlierDetection") {
        let p = join(path, "outlierDetection");
        let om = doc.obj(
            od,
            &p,
            &[
                "consecutiveErrors",
                "consecutive5xxErrors",
                "consecutiveGatewayErrors",
                "consecutiveLocalOriginFailures",
                "splitExternalLocalOriginErrors",
                "interval",
                "baseEjectionTime",
                "maxEjectionPercent",
                "minHealthPercent",
            ],
        )?;
        let u =
            |doc: &mut Doc<'_>, k: &str| get(om, k).map(|v| doc.u32(v, &join(&p, k))).transpose();
        let d = |doc: &mut Doc<'_>, k: &str| {
            get(om, k)
                .map(|v| doc.duration(v, &join(&p, k)))
                .transpose()
        };
        let mut spec = OutlierDetectionSpec {
            consecutive_5xx_errors: u(doc, "consecutive5xxErrors")?,
            consecutive_gateway_errors: u(doc, "consecutiveGatewayErrors")?,
            interval: d(doc, "interval")?,
            base_ejection_time: d(doc, "baseEjectionTime")?,
            max_ejection_percent: u(doc, "maxEjectionPercent")?,
            min_health_percent: u(doc, "minHealthPercent")?,
        };
        // The deprecated `consecutiveErrors` meant gateway errors (502/503/504) in Istio.
        if spec.consecutive_gateway_errors.is_none()
            && let Some(v) = u(doc, "consecutiveErrors")?
        {
            spec.consecutive_gateway_errors = Some(v);
        }
        tp.outlier_detection = Some(spec);
    }
    if let Some(t) = get(m, "tls") {
        let p = join(path, "tls");
        let tm = doc.obj(
            t,
            &p,
            &[
                "mode",
                "clientCertificate",
                "privateKey",
                "caCertificates",
                "credentialName",
                "subjectAltNames",
                "sni",
                "insecureSkipVerify",
            ],
        )?;
        if let Some(mode) = get(tm, "mode") {
            let mp = join(&p, "mode");
            tp.tls = Some(match doc.str(mode, &mp)?.as_str() {
                "ISTIO_MUTUAL" | "MUTUAL" => TlsMode::IstioMutual,
                "DISABLE" => TlsMode::Disable,
                "SIMPLE" => {
                    doc.warn(format!("`{mp}: SIMPLE` is simulated as ISTIO_MUTUAL"));
                    TlsMode::IstioMutual
                }
                _ => return Err(doc.wrong(&mp, "one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL")),
            });
        }
    }
    Ok(tp)
}

fn destination_rule(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<DestinationRule, ManifestError> {
    let s = doc.obj(
        spec,
        "spec",
        &[
            "host",
            "trafficPolicy",
            "subsets",
            "exportTo",
            "workloadSelector",
        ],
    )?;
    let host = doc.str(
        get(s, "host").ok_or_else(|| doc.missing("spec.host"))?,
        "spec.host",
    )?;
    let top_policy = get(s, "trafficPolicy")
        .map(|t| traffic_policy(doc, t, "spec.trafficPolicy"))
        .transpose()?
        .unwrap_or_default();
    let mut subsets = Vec::new();
    if let Some(ss) = get(s, "subsets") {
        for (i, v) in doc.list(ss, "spec.subsets")?.iter().enumerate() {
            let p = idx("spec.subsets", i);
            let sm = doc.obj(Node { v }, &p, &["name", "labels", "trafficPolicy"])?;
            let name = doc.str(
                get(sm, "name").ok_or_else(|| doc.missing(&join(&p, "name")))?,
                &join(&p, "name"),
            )?;
            let labels = get(sm, "labels")
                .map(|l| doc.labels(l, &join(&p, "labels")))
                .transpose()?
                .unwrap_or_default();
            let tp = get(sm, "trafficPolicy")
                .map(|t| traffic_policy(doc, t, &join(&p, "trafficPolicy")))
                .transpose()?;
            subsets.push(Subset {
                name,
                labels,
                traffic_policy: tp,
            });
        }
    }
    Ok(DestinationRule {
        name,
        namespace,
        host,
        traffic_policy: top_policy,
        subsets,
    })
}

fn peer_authentication(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<PeerAuthentication, ManifestError> {
    let s = doc.obj(spec, "spec", &["selector", "mtls", "portLevelMtls"])?;
    let selector = match get(s, "selector") {
        Some(sel) => {
            let sm = doc.obj(sel, "spec.selector", &["matchLabels"])?;
            Some(
                get(sm, "matchLabels")
                    .map(|l| doc.labels(l, "spec.selector.matchLabels"))
                    .transpose()?
                    .unwrap_or_default(),
            )
        }
        None => None,
    };
    let mut mode = MtlsMode::Unset;
    if let Some(m) = get(s, "mtls") {
        let mm = doc.obj(m, "spec.mtls", &["mode"])?;
        if let Some(v) = get(mm, "mode") {
            mode = match doc.str(v, "spec.mtls.mode")?.as_str() {
                "UNSET" => MtlsMode::Unset,
                "DISABLE" => MtlsMode::Disable,
                "PERMISSIVE" => MtlsMode::Permissive,
                "STRICT" => MtlsMode::Strict,
                _ => {
                    return Err(doc.wrong(
                        "spec.mtls.mode",
                        "one of UNSET, DISABLE, PERMISSIVE, STRICT",
                    ));
                }
            };
        }
    }
    Ok(PeerAuthentication {
        name,
        namespace,
        selector,
        mode,
    })
}

fn service_profile(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<ServiceProfile, ManifestError> {
    let s = doc.obj(
        spec,
        "spec",
        &["routes", "retryBudget", "dstOverrides", "opaquePorts"],
    )?;
    let mut routes = Vec::new();
    if let Some(rs) = get(s, "routes") {
        for (i, v) in doc.list(rs, "spec.routes")?.iter().enumerate() {
            let p = idx("spec.routes", i);
            let rm = doc.obj(
                Node { v },
                &p,
                &[
                    "name",
                    "condition",
                    "responseClasses",
                    "isRetryable",
                    "timeout",
                ],
            )?;
            let rname = doc.str(
                get(rm, "name").ok_or_else(|| doc.missing(&join(&p, "name")))?,
                &join(&p, "name"),
            )?;
            let (mut method, mut path_regex) = (None, None);
            if let Some(c) = get(rm, "condition") {
                let cp = join(&p, "condition");
                let cm = doc.obj(c, &cp, &["method", "pathRegex", "all", "any", "not"])?;
                method = get(cm, "method")
                    .map(|v| doc.str(v, &join(&cp, "method")))
                    .transpose()?;
                path_regex = get(cm, "pathRegex")
                    .map(|v| doc.str(v, &join(&cp, "pathRegex")))
                    .transpose()?;
            }
            let mut failure_ranges = Vec::new();
            if let Some(rc) = get(rm, "responseClasses") {
                let rcp = join(&p, "responseClasses");
                for (j, v) in doc.list(rc, &rcp)?.iter().enumerate() {
                    let cp = idx(&rcp, j);
                    let cm = doc.obj(Node { v }, &cp, &["condition", "isFailure"])?;
                    let is_failure = get(cm, "isFailure")
                        .map(|v| doc.bool(v, &join(&cp, "isFailure")))
                        .transpose()?
                        .unwrap_or(false);
                    let mut range = (100u16, 599u16);
                    if let Some(c) = get(cm, "condition") {
                        let ccp = join(&cp, "condition");
                        let ccm = doc.obj(
                            c,
                            &ccp,
                            &["status", "all", "any", "not", "method", "pathRegex"],
                        )?;
                        if let Some(st) = get(ccm, "status") {
                            let sp = join(&ccp, "status");
                            let sm = doc.obj(st, &sp, &["min", "max"])?;
                            if let Some(v) = get(sm, "min") {
                                range.0 = doc.u32(v, &join(&sp, "min"))?.min(999) as u16;
                            }
                            if let Some(v) = get(sm, "max") {
                                range.1 = doc.u32(v, &join(&sp, "max"))?.min(999) as u16;
                            }
                        }
                    }
                    if is_failure {
                        failure_ranges.push(range);
                    }
                }
            }
            let is_retryable = get(rm, "isRetryable")
                .map(|v| doc.bool(v, &join(&p, "isRetryable")))
                .transpose()?
                .unwrap_or(false);
            let timeout = get(rm, "timeout")
                .map(|v| doc.duration(v, &join(&p, "timeout")))
                .transpose()?;
            routes.push(ProfileRoute {
                name: rname,
                method,
                path_regex,
                failure_ranges,
                is_retryable,
                timeout,
            });
        }
    }
    let retry_budget = match get(s, "retryBudget") {
        Some(b) => {
            let bm = doc.obj(
                b,
                "spec.retryBudget",
                &["retryRatio", "minRetriesPerSecond", "ttl"],
            )?;
            Some(RetryBudget {
                retry_ratio: get(bm, "retryRatio")
                    .map(|v| doc.f64(v, "spec.retryBudget.retryRatio"))
                    .transpose()?
                    .unwrap_or(0.2),
                min_retries_per_second: get(bm, "minRetriesPerSecond")
                    .map(|v| doc.u32(v, "spec.retryBudget.minRetriesPerSecond"))
                    .transpose()?
                    .unwrap_or(10),
                ttl: get(bm, "ttl")
                    .map(|v| doc.duration(v, "spec.retryBudget.ttl"))
                    .transpose()?
                    .unwrap_or(10 * crate::engine::SECONDS),
            })
        }
        None => None,
    };
    Ok(ServiceProfile {
        name,
        namespace,
        routes,
        retry_budget,
    })
}

fn traffic_split(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<TrafficSplit, ManifestError> {
    let s = doc.obj(spec, "spec", &["service", "backends", "matches"])?;
    let service = doc.str(
        get(s, "service").ok_or_else(|| doc.missing("spec.service"))?,
        "spec.service",
    )?;
    let mut backends = Vec::new();
    if let Some(b) = get(s, "backends") {
        for (i, v) in doc.list(b, "spec.backends")?.iter().enumerate() {
            let p = idx("spec.backends", i);
            let bm = doc.obj(Node { v }, &p, &["service", "weight"])?;
            let svc = doc.str(
                get(bm, "service").ok_or_else(|| doc.missing(&join(&p, "service")))?,
                &join(&p, "service"),
            )?;
            let wp = join(&p, "weight");
            let weight = match get(bm, "weight").map(|n| n.v) {
                None => 0,
                Some(Value::Number(n)) => n
                    .as_f64()
                    .filter(|x| *x >= 0.0)
                    .map(|x| (x * 1000.0).round() as u64)
                    .ok_or_else(|| doc.wrong(&wp, "a quantity such as `900m` or `1`"))?,
                Some(Value::String(q)) => parse_quantity_milli(q)
                    .ok_or_else(|| doc.wrong(&wp, "a quantity such as `900m` or `1`"))?,
                Some(_) => return Err(doc.wrong(&wp, "a quantity such as `900m` or `1`")),
            };
            backends.push((svc, weight));
        }
    }
    Ok(TrafficSplit {
        name,
        namespace,
        service,
        backends,
    })
}

fn http_route(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<HttpRouteSpec, ManifestError> {
    let s = doc.obj(spec, "spec", &["parentRefs", "hostnames", "rules"])?;
    let mut parents = Vec::new();
    if let Some(pr) = get(s, "parentRefs") {
        for (i, v) in doc.list(pr, "spec.parentRefs")?.iter().enumerate() {
            let p = idx("spec.parentRefs", i);
            let pm = doc.obj(
                Node { v },
                &p,
                &["group", "kind", "name", "namespace", "port", "sectionName"],
            )?;
            parents.push(doc.str(
                get(pm, "name").ok_or_else(|| doc.missing(&join(&p, "name")))?,
                &join(&p, "name"),
            )?);
        }
    }
    let mut rules = Vec::new();
    if let Some(rs) = get(s, "rules") {
        for (i, v) in doc.list(rs, "spec.rules")?.iter().enumerate() {
            let p = idx("spec.rules", i);
            let rm = doc.obj(
                Node { v },
                &p,
                &[
                    "matches",
                    "backendRefs",
                    "filters",
                    "timeouts",
                    "name",
                    "retry",
                    "sessionPersistence",
                ],
            )?;
            let mut rule = GatewayRule::default();
            if let Some(ms) = get(rm, "matches") {
                let mp = join(&p, "matches");
                for (j, v) in doc.list(ms, &mp)?.iter().enumerate() {
                    let bp = idx(&mp, j);
                    let bm = doc.obj(
                        Node { v },
                        &bp,
                        &["path", "headers", "queryParams", "method"],
                    )?;
                    let mut block = Vec::new();
                    if let Some(hs) = get(bm, "headers") {
                        let hp = join(&bp, "headers");
                        for (k, v) in doc.list(hs, &hp)?.iter().enumerate() {
                            let ep = idx(&hp, k);
                            let em = doc.obj(Node { v }, &ep, &["type", "name", "value"])?;
                            let hn = doc.str(
                                get(em, "name").ok_or_else(|| doc.missing(&join(&ep, "name")))?,
                                &join(&ep, "name"),
                            )?;
                            let hv = doc.str(
                                get(em, "value").ok_or_else(|| doc.missing(&join(&ep, "value")))?,
                                &join(&ep, "value"),
                            )?;
                            let ty = get(em, "type")
                                .map(|t| doc.str(t, &join(&ep, "type")))
                                .transpose()?
                                .unwrap_or_else(|| "Exact".into());
                            let matcher = match ty.as_str() {
                                "Exact" => StringMatch::Exact(hv),
                                "RegularExpression" => StringMatch::regex(&hv).map_err(|_| {
                                    doc.wrong(&join(&ep, "value"), "a valid regular expression")
                                })?,
                                _ => {
                                    return Err(
                                        doc.wrong(&join(&ep, "type"), "Exact or RegularExpression")
                                    );
                                }
                            };
                            block.push(HeaderMatch {
                                name: hn.to_ascii_lowercase(),
                                matcher,
                            });
                        }
                    }
                    if bm.contains_key("path")
                        || bm.contains_key("method")
                        || bm.contains_key("queryParams")
                    {
                        doc.warn(format!(
                            "`{bp}` path, method and query conditions are not simulated; ignored"
                        ));
                    }
                    rule.matches.push(block);
                }
            }
            if let Some(br) = get(rm, "backendRefs") {
                let bp = join(&p, "backendRefs");
                for (j, v) in doc.list(br, &bp)?.iter().enumerate() {
                    let ep = idx(&bp, j);
                    let em = doc.obj(
                        Node { v },
                        &ep,
                        &[
                            "group",
                            "kind",
                            "name",
                            "namespace",
                            "port",
                            "weight",
                            "filters",
                        ],
                    )?;
                    let bn = doc.str(
                        get(em, "name").ok_or_else(|| doc.missing(&join(&ep, "name")))?,
                        &join(&ep, "name"),
                    )?;
                    let w = get(em, "weight")
                        .map(|w| doc.u32(w, &join(&ep, "weight")))
                        .transpose()?
                        .unwrap_or(1);
                    rule.backends.push((bn, w));
                }
            }
            if let Some(fs) = get(rm, "filters") {
                let fp = join(&p, "filters");
                for (j, v) in doc.list(fs, &fp)?.iter().enumerate() {
                    let ep = idx(&fp, j);
                    rule.mirror = request_mirror(doc, Node { v }, &ep)?.or(rule.mirror);
                }
            }
            if let Some(t) = get(rm, "timeouts") {
                let tp = join(&p, "timeouts");
                let tm = doc.obj(t, &tp, &["request", "backendRequest"])?;
                rule.request_timeout = get(tm, "request")
                    .map(|v| doc.duration(v, &join(&tp, "request")))
                    .transpose()?;
                rule.backend_request_timeout = get(tm, "backendRequest")
                    .map(|v| doc.duration(v, &join(&tp, "backendRequest")))
                    .transpose()?;
            }
            rules.push(rule);
        }
    }
    Ok(HttpRouteSpec {
        name,
        namespace,
        parents,
        rules,
    })
}

/// An HTTPRoute filter: a `RequestMirror` as (backend, percent); any other type is warned about,
/// since the simulator does not model it.
fn request_mirror(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
) -> Result<Option<(String, f64)>, ManifestError> {
    let m = doc.obj(
        n,
        path,
        &[
            "type",
            "requestMirror",
            "requestHeaderModifier",
            "responseHeaderModifier",
            "requestRedirect",
            "urlRewrite",
            "extensionRef",
            "cors",
            "externalAuth",
        ],
    )?;
    let ty = doc.str(
        get(m, "type").ok_or_else(|| doc.missing(&join(path, "type")))?,
        &join(path, "type"),
    )?;
    if ty != "RequestMirror" {
        doc.warn(format!("`{path}`: filter {ty} is not simulated; ignored"));
        return Ok(None);
    }
    let rp = join(path, "requestMirror");
    let rm = doc.obj(
        get(m, "requestMirror").ok_or_else(|| doc.missing(&rp))?,
        &rp,
        &["backendRef", "percent", "fraction"],
    )?;
    let bp = join(&rp, "backendRef");
    let br = doc.obj(
        get(rm, "backendRef").ok_or_else(|| doc.missing(&bp))?,
        &bp,
        &["group", "kind", "name", "namespace", "port"],
    )?;
    let backend = doc.str(
        get(br, "name").ok_or_else(|| doc.missing(&join(&bp, "name")))?,
        &join(&bp, "name"),
    )?;
    let percent = match (get(rm, "percent"), get(rm, "fraction")) {
        (Some(p), _) => doc.f64(p, &join(&rp, "percent"))?,
        (None, Some(f)) => {
            let fp = join(&rp, "fraction");
            let fm = doc.obj(f, &fp, &["numerator", "denominator"])?;
            let num = get(fm, "numerator")
                .map(|v| doc.f64(v, &join(&fp, "numerator")))
                .transpose()?
                .unwrap_or(0.0);
            let den = get(fm, "denominator")
                .map(|v| doc.f64(v, &join(&fp, "denominator")))
                .transpose()?
                .unwrap_or(100.0);
            if den <= 0.0 {
                return Err(doc.wrong(&join(&fp, "denominator"), "a positive number"));
            }
            100.0 * num / den
        }
        (None, None) => 100.0,
    };
    if !(0.0..=100.0).contains(&percent) {
        return Err(doc.wrong(&join(&rp, "percent"), "a percentage from 0 to 100"));
    }
    Ok(Some((backend, percent)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_quantities_parse_like_kubernetes() {
        assert_eq!(parse_duration("10s"), Some(10_000_000_000));
        assert_eq!(parse_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_quantity_milli("900m"), Some(900));
        assert_eq!(parse_quantity_milli("1"), Some(1000));
        assert_eq!(parse_quantity_milli("x"), None);
    }
}
