//! The `service` block: the Services Fledge generates and what it copies into the mesh's own
//! objects. What is copied must be what that mesh's API accepts, or the router's object is
//! refused on a cluster (and read as a routing failure in the simulator) long after the Canary
//! was accepted: so the durations of `trafficPolicy`, copied into Istio DestinationRules, are
//! checked as Istio checks them, and `timeout`, copied into a Gateway API HTTPRoute's
//! `timeouts.request`, as the Gateway API's schema does (GEP-2257).

use serde_json::Value;

use super::{FieldError, Problems};
use crate::routes::Provider;
use crate::spec::{
    CanaryService, GATEWAY_DURATION, ISTIO_DURATION, is_gateway_duration, is_istio_duration,
    parse_nanos,
};

/// Checks the service block; `provider` is the Canary's own, when it names one.
pub(super) fn service(p: &mut Problems, service: &CanaryService, provider: Option<Provider>) {
    if !(1..=65535).contains(&service.port) {
        p.add(
            "spec.service.port",
            format!("must be a port between 1 and 65535, got {}", service.port),
        );
    }
    for (path, text) in service.route_durations() {
        match text.map(parse_nanos) {
            Err(value) => p.add(
                path,
                format!("must be a duration such as `10s` (a string), got `{value}`"),
            ),
            Ok(Err(e)) => p.add(path, e.to_string()),
            Ok(Ok(_)) => {}
        }
    }
    if let Some(text) = &service.backend_timeout
        && let Err(e) = parse_nanos(text)
    {
        p.add("spec.service.backendTimeout", e.to_string());
    }
    if let Some(value) = &service.traffic_distribution
        && !TRAFFIC_DISTRIBUTIONS.contains(&value.as_str())
    {
        p.add(
            "spec.service.trafficDistribution",
            format!(
                "must be one of {}, got `{value}`",
                TRAFFIC_DISTRIBUTIONS.join(", ")
            ),
        );
    }
    if let Some(provider) = provider {
        p.0.extend(service.unroutable_by(provider));
    }
}

/// The values of a Service's `spec.trafficDistribution` Kubernetes accepts (1.31 and 1.33).
pub const TRAFFIC_DISTRIBUTIONS: &[&str] = &["PreferClose", "PreferSameZone", "PreferSameNode"];

/// What the service block sets that `provider`'s objects do not carry, as warnings at the fields.
pub(super) fn unused_by(service: &CanaryService, provider: Provider) -> Vec<FieldError> {
    let mut out = Vec::new();
    if provider != Provider::Istio && service.traffic_policy.is_some() {
        out.push(FieldError {
            path: "spec.service.trafficPolicy".into(),
            message: format!("not used: provider {provider} writes no DestinationRule"),
        });
    }
    if !matches!(provider, Provider::GatewayApi(_)) && service.backend_timeout.is_some() {
        out.push(FieldError {
            path: "spec.service.backendTimeout".into(),
            message: format!(
                "not used: only an HTTPRoute (provider gatewayapi) has a backend request \
                 timeout; provider {provider} writes none"
            ),
        });
    }
    out.extend(super::service_routing::unused_by(service, provider));
    out
}

impl CanaryService {
    /// The durations copied into every route, `timeout` and Istio's `retries.perTryTimeout`
    /// and `retries.backoff`:
    /// their text, or the value that is not text.
    fn route_durations(&self) -> Vec<(&'static str, Result<&str, &Value>)> {
        let mut found = Vec::new();
        if let Some(timeout) = &self.timeout {
            found.push(("spec.service.timeout", Ok(timeout.as_str())));
        }
        // Istio's `ValidateHTTPRetry` checks both with `ValidateDuration`.
        for (key, path) in [
            ("perTryTimeout", "spec.service.retries.perTryTimeout"),
            ("backoff", "spec.service.retries.backoff"),
        ] {
            if let Some(value) = self.retries.as_ref().and_then(|r| r.get(key)) {
                found.push((path, value.as_str().ok_or(value)));
            }
        }
        found
    }

    /// What `provider`'s objects cannot carry of this block, as errors at its fields: a
    /// DestinationRule's `trafficPolicy` and a VirtualService's timeouts take only the
    /// durations Istio's validation accepts, an
    /// HTTPRoute's request timeout only the Gateway API's. Validation checks an explicit
    /// `spec.provider`; a shell checks its default provider through [`super::unroutable_by`].
    pub fn unroutable_by(&self, provider: Provider) -> Vec<FieldError> {
        let mut errors = Vec::new();
        // Only Istio's DestinationRules carry `trafficPolicy`; elsewhere it is not used.
        if let (Provider::Istio, Some(policy)) = (provider, &self.traffic_policy) {
            let mut p = Problems::default();
            traffic_policy(&mut p, "spec.service.trafficPolicy", policy);
            errors.extend(p.0);
        }
        if provider == Provider::Istio {
            for (path, text) in self.route_durations() {
                let Ok(text) = text else { continue };
                if parse_nanos(text).is_ok_and(|nanos| !is_istio_duration(nanos)) {
                    errors.push(FieldError {
                        path: path.into(),
                        message: format!(
                            "`{text}` is not {ISTIO_DURATION}: provider istio copies it into the \
                             VirtualService, whose validation refuses it"
                        ),
                    });
                }
            }
        }
        if matches!(provider, Provider::GatewayApi(_)) {
            errors.extend(self.gateway_timeouts(provider));
        }
        errors.extend(super::service_routing::unroutable_by(self, provider));
        errors
    }

    /// An HTTPRoute's `timeouts`: each a GEP-2257 duration, and the backend request's no longer
    /// than the whole request's unless that is `0s` (none), as the HTTPRoute's schema requires.
    fn gateway_timeouts(&self, provider: Provider) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (path, field, text) in [
            ("spec.service.timeout", "request", &self.timeout),
            (
                "spec.service.backendTimeout",
                "backendRequest",
                &self.backend_timeout,
            ),
        ] {
            if let Some(text) = text
                && !is_gateway_duration(text)
            {
                errors.push(FieldError {
                    path: path.into(),
                    message: format!(
                        "`{text}` is not {GATEWAY_DURATION}: provider {provider} copies it into \
                         the HTTPRoute's timeouts.{field}, whose schema takes nothing else"
                    ),
                });
            }
        }
        let nanos = |t: &Option<String>| t.as_deref().and_then(|t| parse_nanos(t).ok());
        if let (Some(request), Some(backend)) = (nanos(&self.timeout), nanos(&self.backend_timeout))
            && request > 0
            && backend > request
        {
            errors.push(FieldError {
                path: "spec.service.backendTimeout".into(),
                message: format!(
                    "`{}` is longer than spec.service.timeout (`{}`): the HTTPRoute's schema \
                     refuses a backend request timeout longer than the request timeout",
                    self.backend_timeout.as_deref().unwrap_or_default(),
                    self.timeout.as_deref().unwrap_or_default()
                ),
            });
        }
        errors
    }
}

/// How Istio checks one Duration field of a TrafficPolicy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationRule {
    /// `ValidateDuration` (and the CRD's `>= 1ms`): at least 1ms, in whole milliseconds.
    Istio,
    /// `tcp.idleTimeout`: 0 disables it, so Istio checks it only when it has whole milliseconds.
    ZeroOrIstio,
    /// The CRD's `duration(self) >= duration('1ms')` only.
    AtLeastMilli,
    /// Any Duration.
    Any,
}

impl DurationRule {
    /// What the rule asks for, in words, or `None` when `nanos` passes.
    fn refuses(self, nanos: u64) -> Option<String> {
        const MILLI: u64 = 1_000_000;
        match self {
            DurationRule::Istio if !is_istio_duration(nanos) => Some(ISTIO_DURATION.into()),
            DurationRule::ZeroOrIstio if nanos >= MILLI && !is_istio_duration(nanos) => {
                Some(format!("0s (none) or {ISTIO_DURATION}"))
            }
            DurationRule::AtLeastMilli if nanos < MILLI => {
                Some("a duration of at least 1ms".into())
            }
            _ => None,
        }
    }

    /// Checks one written value under this rule: why Istio refuses it, if it does. The one
    /// check of a TrafficPolicy's durations, for the Canary's and for a scenario's own
    /// DestinationRules alike.
    pub fn check(self, value: &Value) -> Result<(), String> {
        let Some(text) = value.as_str() else {
            return Err(format!(
                "must be a duration such as `10s` (a string), got `{value}`"
            ));
        };
        let nanos = parse_nanos(text).map_err(|e| e.to_string())?;
        match self.refuses(nanos) {
            Some(expected) => Err(format!(
                "`{text}` is not {expected}, as Istio requires in a DestinationRule"
            )),
            None => Ok(()),
        }
    }
}

/// The Duration fields of an Istio TrafficPolicy (the DestinationRule's own and each of its
/// `portLevelSettings`), by their path below it, with the rule Istio's validation (and the
/// rules of its CRD) applies to each. TLS settings have none.
pub const TRAFFIC_POLICY_DURATIONS: &[(&str, DurationRule)] = &[
    ("outlierDetection.interval", DurationRule::Istio),
    ("outlierDetection.baseEjectionTime", DurationRule::Istio),
    ("connectionPool.tcp.connectTimeout", DurationRule::Istio),
    (
        "connectionPool.tcp.maxConnectionDuration",
        DurationRule::Istio,
    ),
    ("connectionPool.tcp.idleTimeout", DurationRule::ZeroOrIstio),
    ("connectionPool.tcp.tcpKeepalive.time", DurationRule::Istio),
    (
        "connectionPool.tcp.tcpKeepalive.interval",
        DurationRule::Istio,
    ),
    ("connectionPool.http.idleTimeout", DurationRule::Istio),
    (
        "connectionPool.http.http2KeepAlive.interval",
        DurationRule::Istio,
    ),
    (
        "connectionPool.http.http2KeepAlive.timeout",
        DurationRule::Istio,
    ),
    ("loadBalancer.warmup.duration", DurationRule::Istio),
    (
        "loadBalancer.warmupDurationSecs",
        DurationRule::AtLeastMilli,
    ),
    (
        "loadBalancer.consistentHash.httpCookie.ttl",
        DurationRule::Any,
    ),
    (
        "loadBalancer.backendUtilization.weightExpirationPeriod",
        DurationRule::Any,
    ),
    (
        "loadBalancer.backendUtilization.weightStabilizationPeriod",
        DurationRule::Any,
    ),
    (
        "loadBalancer.backendUtilization.weightUpdatePeriod",
        DurationRule::Any,
    ),
    ("retryBudget.budgetInterval", DurationRule::Any),
];

/// Checks the durations of a TrafficPolicy at `path` and of each of its port-level settings.
fn traffic_policy(p: &mut Problems, path: &str, policy: &Value) {
    durations(p, path, policy);
    let ports = policy.get("portLevelSettings").and_then(Value::as_array);
    for (i, port) in ports.into_iter().flatten().enumerate() {
        durations(p, &format!("{path}.portLevelSettings[{i}]"), port);
    }
}

fn durations(p: &mut Problems, path: &str, policy: &Value) {
    for &(field, rule) in TRAFFIC_POLICY_DURATIONS {
        let value = field
            .split('.')
            .try_fold(policy, |v, key| v.get(key))
            .filter(|v| !v.is_null());
        if let Some(Err(message)) = value.map(|v| rule.check(v)) {
            p.add(format!("{path}.{field}"), message);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::{CanarySpec, FieldError, validate};

    /// A minimal Canary with `extra` added to its service block (indented under it).
    fn canary(provider: &str, service: &str) -> CanarySpec {
        let text = format!(
            "{provider}targetRef: {{kind: Deployment, name: podinfo}}\nservice:\n  port: 9898\n{service}analysis: {{stepWeight: 10, maxWeight: 50}}\n"
        );
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn errors(spec: &CanarySpec) -> Vec<FieldError> {
        validate(spec).err().map(|e| e.0).unwrap_or_default()
    }

    fn policy_errors(policy: &str) -> Vec<FieldError> {
        errors(&canary(
            "provider: istio\n",
            &format!("  trafficPolicy:\n{policy}"),
        ))
    }

    /// Only Istio's DestinationRules carry `trafficPolicy`: another provider neither checks
    /// its durations against Istio's rules nor uses it, and says so.
    #[test]
    fn a_traffic_policy_is_checked_under_istio_only_and_warned_unused_elsewhere() {
        let policy = "  trafficPolicy:\n    outlierDetection: {interval: 0s}\n";
        for provider in ["provider: linkerd\n", "provider: gatewayapi\n"] {
            let spec = canary(provider, policy);
            assert!(validate(&spec).is_ok(), "{provider}");
            let warnings = crate::spec::warnings(&spec);
            assert!(
                warnings
                    .iter()
                    .any(|w| w.path == "spec.service.trafficPolicy"
                        && w.message.contains("not used")),
                "{provider}: {warnings:?}"
            );
        }
        // Without a provider, the shell checks its default one.
        let spec = canary("", policy);
        let rollout = validate(&spec).expect("valid without a provider");
        let istio = crate::routes::Provider::Istio;
        assert_eq!(crate::spec::unroutable_by(&spec, &rollout, istio).len(), 1);
        assert!(crate::spec::warnings(&spec).is_empty());
    }

    #[test]
    fn a_traffic_policy_duration_istio_refuses_is_refused_at_its_field() {
        let at = |field: &str, value: &str| {
            let mut policy = String::new();
            let parts: Vec<&str> = field.split('.').collect();
            for (depth, key) in parts.iter().enumerate() {
                let indent = "  ".repeat(depth + 2);
                if depth + 1 == parts.len() {
                    policy.push_str(&format!("{indent}{key}: {value}\n"));
                } else {
                    policy.push_str(&format!("{indent}{key}:\n"));
                }
            }
            policy_errors(&policy)
        };
        for (field, value, says) in [
            ("outlierDetection.interval", "1d", "is not a duration"),
            ("outlierDetection.interval", "0s", "at least 1ms"),
            ("outlierDetection.baseEjectionTime", "5124095h", "too long"),
            (
                "outlierDetection.baseEjectionTime",
                "1500us",
                "whole milliseconds",
            ),
            ("connectionPool.tcp.connectTimeout", "0s", "at least 1ms"),
            ("connectionPool.tcp.idleTimeout", "1500us", "0s (none) or"),
            (
                "connectionPool.tcp.tcpKeepalive.time",
                "'10'",
                "is not a duration",
            ),
            ("connectionPool.http.idleTimeout", "30", "(a string)"),
            (
                "connectionPool.http.http2KeepAlive.timeout",
                "0s",
                "at least 1ms",
            ),
            ("loadBalancer.warmup.duration", "0s", "at least 1ms"),
            ("loadBalancer.warmupDurationSecs", "500us", "at least 1ms"),
            (
                "loadBalancer.consistentHash.httpCookie.ttl",
                "1d",
                "is not a duration",
            ),
            ("retryBudget.budgetInterval", "soon", "is not a duration"),
        ] {
            let errors = at(field, value);
            let path = format!("spec.service.trafficPolicy.{field}");
            assert!(
                errors
                    .iter()
                    .any(|e| e.path == path && e.message.contains(says)),
                "{field}: {value}: `{says}` at {path} in {errors:?}"
            );
        }
        for (field, value) in [
            ("outlierDetection.interval", "1.5s"),
            ("outlierDetection.baseEjectionTime", "3m"),
            ("connectionPool.tcp.idleTimeout", "0s"),
            ("loadBalancer.warmupDurationSecs", "1500us"),
            ("loadBalancer.consistentHash.httpCookie.ttl", "0s"),
            ("outlierDetection.consecutive5xxErrors", "7"),
        ] {
            assert_eq!(at(field, value), [], "{field}: {value}");
        }
    }

    #[test]
    fn a_port_level_traffic_policy_duration_is_checked_at_its_port() {
        let errors = policy_errors(
            "    portLevelSettings:\n      - port: {number: 9898}\n        outlierDetection: {interval: 0s}\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].path,
            "spec.service.trafficPolicy.portLevelSettings[0].outlierDetection.interval"
        );
    }

    /// Istio validates every HTTP route's `timeout`, `retries.perTryTimeout` and `backoff` with
    /// `ValidateDuration` (at least 1ms, whole milliseconds); any text must be a duration.
    #[test]
    fn route_durations_are_durations_and_what_istio_accepts_under_istio() {
        for service in [
            "  timeout: 0s\n",
            "  retries: {attempts: 2, perTryTimeout: 1500us}\n",
            "  retries: {attempts: 2, backoff: 0s}\n",
        ] {
            let errors = errors(&canary("provider: istio\n", service));
            assert_eq!(errors.len(), 1, "{service}: {errors:?}");
            assert!(errors[0].message.contains("at least 1ms"), "{errors:?}");
            // Without a provider, the shell checks its default one.
            let spec = canary("", service);
            let rollout = validate(&spec).expect("valid without a provider");
            let istio = crate::routes::Provider::Istio;
            assert_eq!(crate::spec::unroutable_by(&spec, &rollout, istio).len(), 1);
            assert!(validate(&canary("provider: linkerd\n", service)).is_ok());
        }
        for (service, path) in [
            ("  timeout: banana\n", "spec.service.timeout"),
            (
                "  retries: {perTryTimeout: 5}\n",
                "spec.service.retries.perTryTimeout",
            ),
            (
                "  retries: {backoff: soon}\n",
                "spec.service.retries.backoff",
            ),
        ] {
            let errors = errors(&canary("provider: linkerd\n", service));
            assert_eq!(errors.len(), 1, "{service}: {errors:?}");
            assert_eq!(errors[0].path, path);
        }
    }

    #[test]
    fn a_gateway_api_timeout_outside_gep_2257_is_refused_for_every_gateway_provider() {
        for provider in ["gatewayapi", "gatewayapi:v1", "gatewayapi:v1beta1"] {
            let spec = canary(&format!("provider: {provider}\n"), "  timeout: 1.5s\n");
            let errors = errors(&spec);
            assert_eq!(errors.len(), 1, "{provider}: {errors:?}");
            assert_eq!(errors[0].path, "spec.service.timeout");
            assert!(
                errors[0].message.contains("`1.5s`")
                    && errors[0].message.contains("GEP-2257")
                    && errors[0].message.contains("^([0-9]{1,5}(h|m|s|ms)){1,4}$"),
                "{provider}: {}",
                errors[0].message
            );
            let fine = canary(&format!("provider: {provider}\n"), "  timeout: 1m30s\n");
            assert!(validate(&fine).is_ok(), "{provider}");
        }
        // Istio's routes take Go's durations; without a provider the shell checks its default.
        for provider in ["provider: istio\n", ""] {
            assert!(validate(&canary(provider, "  timeout: 1.5s\n")).is_ok());
        }
        let spec = canary("", "  timeout: 1.5s\n");
        let provider = "gatewayapi".parse().expect("a provider");
        assert_eq!(spec.service.unroutable_by(provider).len(), 1);
    }
}
