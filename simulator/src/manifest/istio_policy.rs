//! Istio's policies: DestinationRule (load balancer, connection pool and circuit breaking,
//! outlier detection, client TLS, subsets) and PeerAuthentication (the server's mTLS mode).

use std::collections::BTreeMap;

use fledge_controller::spec::TRAFFIC_POLICY_DURATIONS;

use super::ManifestError;
use super::reader::{Doc, Node, get, idx, join};
use crate::engine::SimTime;

/// Load-balancing algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LbPolicy {
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
pub(crate) struct ConnectionPool {
    /// `tcp.maxConnections`.
    pub(crate) max_connections: Option<u32>,
    /// `tcp.connectTimeout`.
    pub(crate) connect_timeout: Option<SimTime>,
    /// `http.http1MaxPendingRequests`.
    pub(crate) http1_max_pending_requests: Option<u32>,
    /// `http.http2MaxRequests`.
    pub(crate) http2_max_requests: Option<u32>,
    /// `http.maxRequestsPerConnection`.
    pub(crate) max_requests_per_connection: Option<u32>,
    /// `http.maxRetries`.
    pub(crate) max_retries: Option<u32>,
    /// `http.idleTimeout` (or `tcp.idleTimeout`).
    pub(crate) idle_timeout: Option<SimTime>,
    /// `http.h2UpgradePolicy: UPGRADE`.
    pub(crate) h2_upgrade: Option<bool>,
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
    /// `splitExternalLocalOriginErrors`.
    pub split_external_local_origin_errors: bool,
    /// `consecutiveLocalOriginFailures` (read only in split mode, as Istio does).
    pub consecutive_local_origin_failures: Option<u32>,
}

/// Client-side TLS mode from a DestinationRule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// Istio mutual TLS.
    IstioMutual,
    /// Plaintext.
    Disable,
}

/// A DestinationRule `trafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TrafficPolicy {
    /// `loadBalancer.simple`.
    pub(crate) load_balancer: Option<LbPolicy>,
    /// `connectionPool`.
    pub(crate) connection_pool: Option<ConnectionPool>,
    /// `outlierDetection`.
    pub(crate) outlier_detection: Option<OutlierDetectionSpec>,
    /// `tls.mode`.
    pub(crate) tls: Option<TlsMode>,
    /// `retryBudget`.
    pub(crate) retry_budget: Option<RetryBudgetSpec>,
}

/// DestinationRule `trafficPolicy.retryBudget`: Envoy's retry budget, which replaces the
/// `maxRetries` circuit breaker (istio/istio `cluster_traffic_policy.go`, `applyRetryBudget`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RetryBudgetSpec {
    /// `percent` of the active requests that may be retries (default 20).
    pub(crate) percent: f64,
    /// `minRetryConcurrency`: retries always allowed in flight (default 3).
    pub(crate) min_retry_concurrency: u32,
}

impl TrafficPolicy {
    /// Subset policy over this one: each group the subset sets replaces the top-level one.
    pub(crate) fn overlay(&self, subset: &TrafficPolicy) -> TrafficPolicy {
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
            retry_budget: subset.retry_budget.or(self.retry_budget),
        }
    }
}

/// A DestinationRule subset.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Subset {
    /// Subset name.
    pub(crate) name: String,
    /// Pod labels selecting it.
    pub(crate) labels: BTreeMap<String, String>,
    /// Subset-level policy.
    pub(crate) traffic_policy: Option<TrafficPolicy>,
}

/// An Istio DestinationRule.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationRule {
    /// `metadata.name`.
    pub(crate) name: String,
    /// `metadata.namespace`.
    pub(crate) namespace: Option<String>,
    /// `spec.host`.
    pub(crate) host: String,
    /// `spec.trafficPolicy`.
    pub(crate) traffic_policy: TrafficPolicy,
    /// `spec.subsets`.
    pub(crate) subsets: Vec<Subset>,
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
    pub(crate) name: String,
    /// `metadata.namespace` (`istio-system` is the mesh root namespace).
    pub(crate) namespace: Option<String>,
    /// `spec.selector.matchLabels`; `None` applies to the whole namespace.
    pub(crate) selector: Option<BTreeMap<String, String>>,
    /// `spec.mtls.mode`.
    pub mode: MtlsMode,
    /// `spec.portLevelMtls`: the mode per port of the workload's pods (the container port).
    pub(crate) port_level: BTreeMap<u32, MtlsMode>,
}

pub(super) fn lb_policy(
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

pub(super) fn traffic_policy(
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
            "retryBudget",
        ],
    )?;
    durations(doc, n, path)?;
    let ports = get(m, "portLevelSettings").and_then(|p| p.v.as_array());
    for (i, port) in ports.into_iter().flatten().enumerate() {
        durations(
            doc,
            Node { v: port },
            &idx(&join(path, "portLevelSettings"), i),
        )?;
    }
    let mut tp = TrafficPolicy::default();
    if let Some(rb) = get(m, "retryBudget") {
        let p = join(path, "retryBudget");
        let rm = doc.obj(
            rb,
            &p,
            &["percent", "minRetryConcurrency", "budgetInterval"],
        )?;
        // Istio's defaults when a budget is given without them: 20% and 3.
        let percent = match get(rm, "percent") {
            Some(v) => {
                let x = doc.f64(v, &join(&p, "percent"))?;
                if !(0.0..=100.0).contains(&x) {
                    return Err(doc.wrong(&join(&p, "percent"), "a percentage from 0 to 100"));
                }
                x
            }
            None => 20.0,
        };
        let min_retry_concurrency = match get(rm, "minRetryConcurrency") {
            Some(v) => Some(doc.u32(v, &join(&p, "minRetryConcurrency"))?).filter(|x| *x > 0),
            None => None,
        }
        .unwrap_or(3);
        if get(rm, "budgetInterval").is_some() {
            doc.warn(format!(
                "`{p}.budgetInterval` is not simulated: the budget counts the requests active now"
            ));
        }
        tp.retry_budget = Some(RetryBudgetSpec {
            percent,
            min_retry_concurrency,
        });
    }
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
                .map(|v| doc.istio_duration(v, &join(&tp_, "connectTimeout")))
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
                pool.idle_timeout = Some(doc.istio_duration(v, &join(&hp, "idleTimeout"))?);
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
                "outlierDetectionHttpErrorCodes",
            ],
        )?;
        let split = match get(om, "splitExternalLocalOriginErrors") {
            Some(v) => doc.bool(v, &join(&p, "splitExternalLocalOriginErrors"))?,
            None => false,
        };
        if !split && get(om, "consecutiveLocalOriginFailures").is_some() {
            // Istio reads it only in split mode (cluster_traffic_policy.go, applyOutlierDetection).
            doc.warn(format!(
                "`{p}.consecutiveLocalOriginFailures` has no effect without splitExternalLocalOriginErrors: true"
            ));
        }
        if get(om, "outlierDetectionHttpErrorCodes").is_some() {
            doc.warn(format!(
                "`{p}.outlierDetectionHttpErrorCodes` is not simulated: 5xx responses count as errors"
            ));
        }
        let u =
            |doc: &mut Doc<'_>, k: &str| get(om, k).map(|v| doc.u32(v, &join(&p, k))).transpose();
        let d = |doc: &mut Doc<'_>, k: &str| {
            get(om, k)
                .map(|v| doc.istio_duration(v, &join(&p, k)))
                .transpose()
        };
        let mut spec = OutlierDetectionSpec {
            consecutive_5xx_errors: u(doc, "consecutive5xxErrors")?,
            consecutive_gateway_errors: u(doc, "consecutiveGatewayErrors")?,
            interval: d(doc, "interval")?,
            base_ejection_time: d(doc, "baseEjectionTime")?,
            max_ejection_percent: u(doc, "maxEjectionPercent")?,
            min_health_percent: u(doc, "minHealthPercent")?,
            split_external_local_origin_errors: split,
            consecutive_local_origin_failures: u(doc, "consecutiveLocalOriginFailures")?,
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

/// Every Duration field of a TrafficPolicy, checked with the rule the Canary's
/// `service.trafficPolicy` is (the controller's table), before any is read.
fn durations(doc: &Doc<'_>, policy: Node<'_>, path: &str) -> Result<(), ManifestError> {
    for &(field, rule) in TRAFFIC_POLICY_DURATIONS {
        let value = field
            .split('.')
            .try_fold(policy.v, |v, key| v.get(key))
            .filter(|v| !v.is_null());
        if let Some(Err(why)) = value.map(|v| rule.check(v)) {
            return Err(doc.wrong(
                &join(path, field),
                &format!("a duration Istio accepts here ({why})"),
            ));
        }
    }
    Ok(())
}

pub(super) fn destination_rule(
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

pub(super) fn peer_authentication(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<PeerAuthentication, ManifestError> {
    let s = doc.obj(spec, "spec", &["selector", "mtls", "portLevelMtls"])?;
    let selector = doc.workload_selector(s)?;
    let mode = match get(s, "mtls") {
        Some(m) => mtls_mode(doc, m, "spec.mtls")?,
        None => MtlsMode::Unset,
    };
    let mut port_level = BTreeMap::new();
    if let Some(ports) = get(s, "portLevelMtls") {
        // Istio's validation: a port-level mode needs a workload selector (mesh- and
        // namespace-wide policies cannot have one), and the map may not be empty
        // (istio/istio `pkg/config/validation/validation.go`, ValidatePeerAuthentication).
        if selector.as_ref().is_none_or(|s| s.is_empty()) {
            return Err(doc.wrong(
                "spec.portLevelMtls",
                "no port-level modes without `spec.selector.matchLabels` (portLevelMtls requires selector)",
            ));
        }
        let pm = ports
            .v
            .as_object()
            .ok_or_else(|| doc.wrong("spec.portLevelMtls", "a mapping of ports to modes"))?;
        if pm.is_empty() {
            return Err(doc.wrong("spec.portLevelMtls", "at least one port"));
        }
        for (port, m) in pm {
            let p = join("spec.portLevelMtls", port);
            let number = port
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=65535).contains(n))
                .ok_or_else(|| doc.wrong(&p, "a port number from 1 to 65535 as the key"))?;
            port_level.insert(number, mtls_mode(doc, Node { v: m }, &p)?);
        }
    }
    Ok(PeerAuthentication {
        name,
        namespace,
        selector,
        mode,
        port_level,
    })
}

/// A `{mode: ...}` block of `spec.mtls` or of one port in `spec.portLevelMtls`.
fn mtls_mode(doc: &mut Doc<'_>, m: Node<'_>, path: &str) -> Result<MtlsMode, ManifestError> {
    let mm = doc.obj(m, path, &["mode"])?;
    let Some(v) = get(mm, "mode") else {
        return Ok(MtlsMode::Unset);
    };
    let p = join(path, "mode");
    Ok(match doc.str(v, &p)?.as_str() {
        "UNSET" => MtlsMode::Unset,
        "DISABLE" => MtlsMode::Disable,
        "PERMISSIVE" => MtlsMode::Permissive,
        "STRICT" => MtlsMode::Strict,
        _ => return Err(doc.wrong(&p, "one of UNSET, DISABLE, PERMISSIVE, STRICT")),
    })
}
