//! What the Canary's `service` block puts on every generated route beside headers, retries
//! and timeouts, as Flagger's Istio and Gateway API routers put it: `match` (the conditions
//! every route carries, an A/B match or a session cookie merged into each), `rewrite`,
//! `corsPolicy` and (Gateway API) `mirror`.

use serde_json::{Map, Value, json};

use super::RouteError;
use crate::spec::{Canary, HttpRewrite, parse_nanos};

/// Each of `first` (an A/B match, a cookie match) merged into each of `service` (the
/// Canary's `service.match`), as Flagger's `mergeMatchConditions` merges them: the service
/// match with the conditions `first` sets in place of its own. (Flagger carries over only the
/// headers and source labels, or headers and query parameters on the Gateway API, and drops
/// an A/B match's other conditions; Fledge keeps every condition it was given.) Without
/// service matches, `first` as it is.
pub(crate) fn merged(first: Vec<Value>, service: &[Value]) -> Vec<Value> {
    if service.is_empty() {
        return first;
    }
    let mut out = Vec::with_capacity(first.len() * service.len());
    for f in &first {
        for s in service {
            let mut m = s.clone();
            if let (Some(m), Some(f)) = (m.as_object_mut(), f.as_object()) {
                m.extend(f.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            out.push(m);
        }
    }
    out
}

/// Istio's `rewrite` of every route: `uri` and `authority` (an Istio rewrite has no type).
pub(crate) fn istio_rewrite(rewrite: &HttpRewrite) -> Option<Value> {
    let mut out = Map::new();
    if let Some(uri) = rewrite.uri.as_deref().filter(|u| !u.is_empty()) {
        out.insert("uri".into(), json!(uri));
    }
    if let Some(authority) = rewrite.authority.as_deref().filter(|a| !a.is_empty()) {
        out.insert("authority".into(), json!(authority));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The Gateway API filters of `rewrite`, `mirror` and `corsPolicy`, in Flagger's order, for
/// every rule.
pub(crate) fn gateway_filters(canary: &Canary) -> Result<Vec<Value>, RouteError> {
    let service = &canary.spec.service;
    let mut filters = Vec::new();
    if let Some(rewrite) = &service.rewrite {
        let mut url = Map::new();
        if let Some(authority) = rewrite.authority.as_deref().filter(|a| !a.is_empty()) {
            url.insert("hostname".into(), json!(authority));
        }
        if let Some(uri) = rewrite.uri.as_deref().filter(|u| !u.is_empty()) {
            url.insert("path".into(), path_modifier(rewrite.type_.as_deref(), uri));
        }
        filters.push(json!({ "type": "URLRewrite", "urlRewrite": url }));
    }
    for (i, mirror) in service.mirror.iter().enumerate() {
        if !mirror["backendRef"]["name"].is_string() {
            return Err(RouteError::InvalidSpec {
                field: format!("spec.service.mirror[{i}].backendRef.name"),
                reason: "a mirror needs the name of the backend it copies requests to".into(),
            });
        }
        filters.push(json!({ "type": "RequestMirror", "requestMirror": mirror }));
    }
    if let Some(cors) = &service.cors_policy {
        filters.push(json!({ "type": "CORS", "cors": gateway_cors(cors) }));
    }
    Ok(filters)
}

/// `ReplacePrefixMatch` when asked for, else (Flagger's default) `ReplaceFullPath`.
fn path_modifier(type_: Option<&str>, uri: &str) -> Value {
    if type_ == Some("ReplacePrefixMatch") {
        json!({ "type": "ReplacePrefixMatch", "replacePrefixMatch": uri })
    } else {
        json!({ "type": "ReplaceFullPath", "replaceFullPath": uri })
    }
}

/// Istio's CORS policy as an HTTPRoute `CORS` filter, field by field as Flagger maps it:
/// `allowOrigin` (plain origins; Istio's `allowOrigins` string matches have no equivalent and
/// are refused by validation), the methods and headers, `allowCredentials` and `maxAge` in
/// seconds.
fn gateway_cors(policy: &Value) -> Value {
    let mut cors = Map::new();
    for (from, to) in [
        ("allowOrigin", "allowOrigins"),
        ("allowMethods", "allowMethods"),
        ("allowHeaders", "allowHeaders"),
        ("exposeHeaders", "exposeHeaders"),
    ] {
        if let Some(list) = policy[from].as_array().filter(|l| !l.is_empty()) {
            cors.insert(to.into(), Value::Array(list.clone()));
        }
    }
    if policy["allowCredentials"] == json!(true) {
        cors.insert("allowCredentials".into(), json!(true));
    }
    if let Some(Ok(nanos)) = policy["maxAge"].as_str().map(parse_nanos) {
        cors.insert("maxAge".into(), json!(nanos / 1_000_000_000));
    }
    Value::Object(cors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ab_match_is_merged_into_each_service_match() {
        let service = [
            json!({"uri": {"prefix": "/api"}}),
            json!({"uri": {"prefix": "/v2"}}),
        ];
        let ab = vec![json!({"headers": {"x-canary": {"exact": "1"}}})];
        assert_eq!(
            merged(ab.clone(), &service),
            [
                json!({"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "1"}}}),
                json!({"uri": {"prefix": "/v2"}, "headers": {"x-canary": {"exact": "1"}}}),
            ]
        );
        assert_eq!(merged(ab.clone(), &[]), ab);
    }
}
