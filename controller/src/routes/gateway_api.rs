//! Gateway API: an `HTTPRoute` named like the apex service.
//!
//! It attaches to `service.gatewayRefs`, or, when none are given, to the apex Service itself
//! (the GAMMA way meshes such as Istio and Linkerd route east-west traffic with HTTPRoutes).
//! Its rule sends `primary`/`canary` weight to the two Services, mirrors with a
//! `RequestMirror` filter, turns the Istio-style `headers` block into header modifier filters,
//! `rewrite` into a `URLRewrite` filter, `service.mirror` into `RequestMirror` filters,
//! `corsPolicy` into a `CORS` filter and `timeout` and `backendTimeout` into the rule's
//! `timeouts`; every rule carries `service.match`. For A/B testing a first rule carries the
//! Canary's `analysis.match` converted to HTTPRoute matches (merged into `service.match`) and
//! sends every matching request to the canary (primary 0, canary 100, as Flagger writes it); the
//! second, general rule carries the split.

use serde_json::{Map, Value, json};

use super::affinity::{self, Cookie, Sticky};
use super::service_routing::{gateway_filters, merged};
use super::{
    RouteError, Routes, RuleShape, ServiceNames, general_rule, object_metadata, percentages,
    required_matches, service_names,
};
use crate::spec::Canary;

pub const GROUP: &str = "gateway.networking.k8s.io";

/// The HTTPRoute API versions Fledge writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GatewayVersion {
    V1,
    V1Beta1,
}

impl GatewayVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayVersion::V1 => "v1",
            GatewayVersion::V1Beta1 => "v1beta1",
        }
    }
}

/// The HTTPRoute for `routes`, exactly as applied.
pub fn http_route(
    canary: &Canary,
    routes: &Routes,
    version: GatewayVersion,
) -> Result<Value, RouteError> {
    super::check_weights(routes)?;
    let names = service_names(canary);
    let service = &canary.spec.service;
    let port = service.port;

    let parent_refs = match &service.gateway_refs {
        Some(refs) if !refs.is_empty() => json!(refs),
        _ => json!([{ "group": "", "kind": "Service", "name": names.apex, "port": port }]),
    };

    let service_matches = service_matches(canary)?;
    let mut general = rule_options(canary)?;
    if !service_matches.is_empty() {
        general.insert("matches".into(), Value::Array(service_matches.clone()));
    }
    general.insert(
        "backendRefs".into(),
        json!([
            backend(&names.primary, port, routes.primary),
            backend(&names.canary, port, routes.canary),
        ]),
    );
    if let Some(pct) = routes.mirror {
        let mut mirror = json!({
            "backendRef": { "group": "", "kind": "Service", "name": names.canary, "port": port },
        });
        // `percent` is recent (Gateway API v1.2); leaving it out at 100% keeps older CRDs
        // working. Below 100% an older CRD prunes it, which `check_stored` reports.
        if pct < 100 {
            mirror["percent"] = json!(pct);
        }
        push_filter(
            &mut general,
            json!({ "type": "RequestMirror", "requestMirror": mirror }),
        );
    }

    let rules = if let Some(sticky) = affinity::sticky(canary, routes) {
        let mut rules = sticky_rules(canary, &names, routes, &sticky, &service_matches)?;
        if let Sticky::Pinning { canary: c, primary } = &sticky {
            set_cookie_on(&mut general, &names.canary, &c.set_cookie);
            if let Some(p) = primary {
                set_cookie_on(&mut general, &names.primary, &p.set_cookie);
            }
        }
        rules.push(Value::Object(general));
        rules
    } else if routes.matched {
        let mut matched = rule_options(canary)?;
        let ab = merged(ab_matches(canary)?, &service_matches);
        matched.insert("matches".into(), Value::Array(ab));
        matched.insert(
            "backendRefs".into(),
            json!([
                backend(&names.primary, port, 0),
                backend(&names.canary, port, 100),
            ]),
        );
        vec![Value::Object(matched), Value::Object(general)]
    } else {
        vec![Value::Object(general)]
    };

    let mut spec = json!({ "parentRefs": parent_refs });
    if !service.hosts.is_empty() {
        spec["hostnames"] = json!(service.hosts);
    }
    spec["rules"] = Value::Array(rules);
    Ok(json!({
        "apiVersion": format!("{GROUP}/{}", version.as_str()),
        "kind": "HTTPRoute",
        "metadata": object_metadata(canary, &names.apex),
        "spec": spec,
    }))
}

/// Reads the split from an HTTPRoute's `spec`: the general split from the first rule without an
/// A/B match that has the canary as a backend, and A/B from a matching rule before it that sends
/// everything to the canary.
pub fn read_routes(canary: &Canary, spec: &Value) -> Result<Routes, String> {
    let names = service_names(canary);
    let rules = spec["rules"].as_array().ok_or("it has no rules")?;
    // The session affinity rules pin some users; the split is the weighted rule's.
    let pinning = rules.iter().any(sets_cookie_on_a_backend);
    let rules: Vec<Value> = rules
        .iter()
        .filter(|r| !is_sticky_rule(r, pinning))
        .cloned()
        .collect();
    let ours = |r: &Value| {
        r["backendRefs"].as_array().is_some_and(|bs| {
            bs.iter()
                .any(|b| b["name"] == names.canary.as_str() || b["name"] == names.primary.as_str())
        })
    };
    // Every rule carries `service.match`: only other matches are A/B ones.
    let service_matches = service_matches(canary).map_err(|e| e.to_string())?;
    // Compared as stored: the API server fills in the defaults Fledge and Flagger leave out.
    let general_matches =
        (!service_matches.is_empty()).then(|| as_stored(&Value::Array(service_matches)));
    let shape = RuleShape {
        ours: &ours,
        matched: &|r: &Value| {
            has_ab_match(r) && general_matches.as_ref() != Some(&as_stored(&r["matches"]))
        },
        weights: &|r: &Value| weights(r, &names),
    };
    let (rule, (primary, canary_weight), matched) = general_rule(&rules, &shape, || {
        format!(
            "no rule without a header, query or method match has {} or {} as a backend",
            names.primary, names.canary
        )
    })?;
    let mirror = rule["filters"]
        .as_array()
        .and_then(|fs| {
            fs.iter().find(|f| {
                f["type"] == "RequestMirror"
                    && f["requestMirror"]["backendRef"]["name"] == names.canary.as_str()
            })
        })
        .map(|f| mirror_percent(&f["requestMirror"]))
        .transpose()?;
    Ok(Routes {
        primary,
        canary: canary_weight,
        mirror,
        matched,
    })
}

/// Why `route` (a whole HTTPRoute as read) is not in force yet, as Flagger's router checks it
/// before shifting traffic: for each of its `parentRefs`, every `status.parents` entry of that
/// parent (one per controller that handles it) must carry `Accepted` `True` observed at the
/// route's current generation. As in
/// Flagger, a parent with no entry (or no `Accepted` condition) is not waited on: some
/// implementations never report status for some parents, and waiting on them would stall
/// every rollout until the progress deadline.
pub fn not_accepted(route: &Value) -> Option<String> {
    let namespace = route["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = format!(
        "{namespace}/{}",
        route["metadata"]["name"].as_str().unwrap_or_default()
    );
    let generation = route["metadata"]["generation"].as_i64().unwrap_or(0);
    let parents = route["status"]["parents"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let refs = route["spec"]["parentRefs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for parent in refs {
        let which = parent_name(parent, namespace);
        // One entry per controller that handles the parent: every one must accept.
        let accepted = parents
            .iter()
            .filter(|p| same_parent(&p["parentRef"], parent, namespace))
            .filter_map(|e| {
                let conditions = e["conditions"].as_array()?;
                let accepted = conditions.iter().find(|c| c["type"] == "Accepted")?;
                Some((e["controllerName"].as_str(), accepted))
            });
        for (controller, accepted) in accepted {
            let by = controller
                .map(|c| format!(" (controller {c})"))
                .unwrap_or_default();
            let observed = accepted["observedGeneration"].as_i64().unwrap_or(0);
            if accepted["status"] != "True" {
                let status = accepted["status"].as_str().unwrap_or("unknown");
                let reason = accepted["reason"].as_str().unwrap_or_default();
                let message = accepted["message"].as_str().unwrap_or_default();
                return Some(format!(
                    "HTTPRoute {name}: parent {which}{by} does not accept it (Accepted \
                     {status}: {reason} {message})"
                ));
            }
            if observed < generation {
                return Some(format!(
                    "HTTPRoute {name}: parent {which}{by} accepted generation {observed}, not \
                     the current {generation} yet"
                ));
            }
        }
    }
    None
}

/// A parent reference with the Gateway API's defaults: group `gateway.networking.k8s.io`,
/// kind `Gateway`, the route's namespace.
fn parent_key<'v>(r: &'v Value, route_namespace: &'v str) -> [Option<String>; 6] {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    [
        text(&r["group"]).or_else(|| Some(GROUP.into())),
        text(&r["kind"]).or_else(|| Some("Gateway".into())),
        text(&r["namespace"]).or_else(|| Some(route_namespace.into())),
        text(&r["name"]),
        text(&r["sectionName"]),
        text(&r["port"]),
    ]
}

fn same_parent(a: &Value, b: &Value, route_namespace: &str) -> bool {
    parent_key(a, route_namespace) == parent_key(b, route_namespace)
}

/// `Kind namespace/name` of a parent reference.
fn parent_name(r: &Value, route_namespace: &str) -> String {
    let [_, kind, namespace, name, ..] = parent_key(r, route_namespace);
    format!(
        "{} {}/{}",
        kind.unwrap_or_default(),
        namespace.unwrap_or_default(),
        name.unwrap_or_default()
    )
}

/// Why the HTTPRoute the API server stored reads as `found` where `routes` was applied, when
/// the cause is known. An HTTPRoute CRD older than Gateway API v1.2 has no
/// `requestMirror.percent` and prunes it silently: the gateway then mirrors everything, and the
/// drift check would find 100% where 50% was written and re-apply forever. Fledge cannot tell
/// the CRD's version before writing, so it refuses such a route, naming the cause, rather than
/// tolerate a mirror it did not ask for.
pub(crate) fn pruned_mirror_percent(routes: &Routes, found: &Routes) -> Option<String> {
    let pct = routes.mirror.filter(|p| *p < 100)?;
    (found.mirror == Some(100)).then(|| {
        format!(
            "the API server dropped requestMirror.percent ({pct}%) from the RequestMirror \
             filter: this cluster's HTTPRoute CRD predates Gateway API v1.2, so the gateway \
             would mirror every request. Install the Gateway API v1.2 CRDs or later, or leave \
             spec.analysis.mirrorWeight unset to mirror 100%"
        )
    })
}

/// The API server fills in a `/` path prefix match on a rule without matches; any other match
/// (headers, query, method, another path) makes an A/B rule.
fn has_ab_match(rule: &Value) -> bool {
    rule["matches"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| !matches_everything(m)))
}

/// `matches` as the API server stores them: the HTTPRoute CRD defaults a match's `path` to a
/// `/` prefix (a path's `type` to `PathPrefix`, its `value` to `/`) and a header's or query
/// parameter's `type` to `Exact`.
fn as_stored(matches: &Value) -> Value {
    let mut matches = matches.clone();
    for m in matches.as_array_mut().into_iter().flatten() {
        let Some(m) = m.as_object_mut() else { continue };
        let path = m.entry("path").or_insert_with(|| json!({}));
        if let Some(path) = path.as_object_mut() {
            path.entry("type").or_insert_with(|| json!("PathPrefix"));
            path.entry("value").or_insert_with(|| json!("/"));
        }
        for list in ["headers", "queryParams"] {
            let conditions = m.get_mut(list).and_then(Value::as_array_mut);
            for c in conditions
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                c.entry("type").or_insert_with(|| json!("Exact"));
            }
        }
    }
    matches
}

/// A match with no condition but (at most) a `/` path prefix: the one the API server defaults.
fn matches_everything(m: &Value) -> bool {
    m.as_object().is_some_and(|o| {
        o.keys().all(|k| k == "path")
            && (o.get("path").is_none_or(|p| {
                p["value"] == "/" && matches!(p["type"].as_str(), None | Some("PathPrefix"))
            }))
    })
}

/// The primary and canary weights of one rule, as percentages.
fn weights(rule: &Value, names: &ServiceNames) -> Result<(u8, u8), String> {
    let (mut primary, mut canary) = (0u64, 0u64);
    for b in rule["backendRefs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let name = b["name"].as_str().unwrap_or_default();
        // The Gateway API default weight is 1.
        let weight = match &b["weight"] {
            Value::Null => 1,
            w => super::integer_weight(w)
                .ok_or_else(|| format!("weight {w} of {name} is not a whole number"))?,
        };
        if name == names.primary {
            primary += weight;
        } else if name == names.canary {
            canary += weight;
        } else if weight > 0 {
            return Err(format!("the canary rule also sends traffic to {name}"));
        }
    }
    percentages(primary as f64, canary as f64)
        .ok_or_else(|| format!("weights {primary} and {canary} cannot be split"))
}

fn mirror_percent(mirror: &Value) -> Result<u8, String> {
    let pct = if let Some(p) = mirror.get("percent") {
        p.as_f64()
            .ok_or_else(|| format!("mirror percent {p} is not a number"))?
    } else if let Some(f) = mirror.get("fraction") {
        let numerator = f["numerator"].as_f64().unwrap_or(0.0);
        let denominator = f["denominator"].as_f64().unwrap_or(100.0);
        if denominator <= 0.0 {
            return Err(format!("mirror fraction {f} has no positive denominator"));
        }
        100.0 * numerator / denominator
    } else {
        100.0
    };
    if !(0.0..=100.0).contains(&pct) {
        return Err(format!("mirror percentage {pct} is not between 0 and 100"));
    }
    Ok(pct.round() as u8)
}

/// The session affinity rules placed before the weighted one: carriers of the canary cookie to
/// the canary and of the primary cookie to the primary; or, with no traffic on the canary,
/// carriers of the last rollout's cookie routed as everyone else and answered with it expired.
fn sticky_rules(
    canary: &Canary,
    names: &ServiceNames,
    routes: &Routes,
    sticky: &Sticky<'_>,
    service_matches: &[Value],
) -> Result<Vec<Value>, RouteError> {
    let port = canary.spec.service.port;
    let rule = |cookie: Cookie<'_>, primary: u8, canary_weight: u8| {
        let mut rule = rule_options(canary)?;
        let matches = merged(vec![cookie_match(cookie)], service_matches);
        rule.insert("matches".into(), Value::Array(matches));
        rule.insert(
            "backendRefs".into(),
            json!([
                backend(&names.primary, port, primary),
                backend(&names.canary, port, canary_weight),
            ]),
        );
        Ok::<_, RouteError>(rule)
    };
    Ok(match sticky {
        Sticky::Pinning { canary: c, primary } => {
            let mut rules = vec![Value::Object(rule(c.cookie, 0, 100)?)];
            if let Some(p) = primary {
                rules.push(Value::Object(rule(p.cookie, 100, 0)?));
            }
            rules
        }
        Sticky::Expiring(expired) => {
            let mut rule = rule(expired.cookie, routes.primary, routes.canary)?;
            add_response_header(&mut rule, "Set-Cookie", &expired.set_cookie);
            vec![Value::Object(rule)]
        }
    })
}

/// A match on a `Cookie` header that carries `cookie`.
fn cookie_match(cookie: Cookie<'_>) -> Value {
    json!({ "headers": [{ "type": "RegularExpression", "name": "Cookie", "value": cookie.pattern() }] })
}

/// The weighted rule's backend `name` answers with `Set-Cookie: value`.
fn set_cookie_on(rule: &mut Map<String, Value>, name: &str, value: &str) {
    let backends = rule.get_mut("backendRefs").and_then(Value::as_array_mut);
    for b in backends.into_iter().flatten() {
        if b["name"] == name {
            let mut filtered = Map::new();
            add_response_header(&mut filtered, "Set-Cookie", value);
            b["filters"] = filtered.remove("filters").unwrap_or_default();
        }
    }
}

/// Adds a response header to the rule's `ResponseHeaderModifier` filter (one of each type is
/// allowed per rule), creating it if absent.
fn add_response_header(rule: &mut Map<String, Value>, name: &str, value: &str) {
    let header = json!({ "name": name, "value": value });
    let existing = rule
        .get_mut("filters")
        .and_then(Value::as_array_mut)
        .and_then(|fs| {
            fs.iter_mut()
                .find(|f| f["type"] == "ResponseHeaderModifier")
        });
    match existing {
        Some(filter) => {
            let modifier = &mut filter["responseHeaderModifier"];
            match modifier["add"].as_array_mut() {
                Some(add) => add.push(header),
                None => modifier["add"] = json!([header]),
            }
        }
        None => push_filter(
            rule,
            json!({ "type": "ResponseHeaderModifier", "responseHeaderModifier": { "add": [header] } }),
        ),
    }
}

/// A session affinity rule (see [`affinity::is_sticky`]): every match's headers are one
/// `Cookie` regular expression (beside, at most, a path, which the API server defaults), and
/// the rules pin or this one expires its cookie.
fn is_sticky_rule(rule: &Value, pinning: bool) -> bool {
    let cookie_only = rule["matches"].as_array().is_some_and(|ms| {
        !ms.is_empty()
            && ms.iter().all(|m| {
                m["headers"].as_array().is_some_and(|hs| {
                    hs.len() == 1
                        && hs.iter().all(|h| {
                            h["name"]
                                .as_str()
                                .is_some_and(|n| n.eq_ignore_ascii_case("cookie"))
                                && h["type"] == "RegularExpression"
                        })
                })
            })
    });
    let expiring = response_headers(&rule["filters"])
        .any(|h| is_set_cookie(h) && h["value"].as_str().is_some_and(affinity::expires));
    affinity::is_sticky(cookie_only, pinning, expiring)
}

/// Whether a backend of `rule` answers with `Set-Cookie`: the weighted rule while the canary's
/// users are pinned.
fn sets_cookie_on_a_backend(rule: &Value) -> bool {
    rule["backendRefs"].as_array().is_some_and(|bs| {
        bs.iter()
            .any(|b| response_headers(&b["filters"]).any(is_set_cookie))
    })
}

/// The headers that `filters`' `ResponseHeaderModifier`s add or set.
fn response_headers(filters: &Value) -> impl Iterator<Item = &Value> {
    filters
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["type"] == "ResponseHeaderModifier")
        .flat_map(|f| {
            let modifier = &f["responseHeaderModifier"];
            [&modifier["add"], &modifier["set"]]
        })
        .flat_map(|list| list.as_array().into_iter().flatten())
}

fn is_set_cookie(header: &Value) -> bool {
    header["name"]
        .as_str()
        .is_some_and(|n| n.eq_ignore_ascii_case("set-cookie"))
}

fn backend(name: &str, port: i32, weight: u8) -> Value {
    json!({ "group": "", "kind": "Service", "name": name, "port": port, "weight": weight })
}

fn push_filter(rule: &mut Map<String, Value>, filter: Value) {
    match rule.get_mut("filters") {
        Some(Value::Array(filters)) => filters.push(filter),
        _ => {
            rule.insert("filters".into(), json!([filter]));
        }
    }
}

/// Header modifiers, the `rewrite`, `mirror` and `corsPolicy` filters and the timeouts
/// (`timeout`, `backendTimeout`) from the Canary's service block.
fn rule_options(canary: &Canary) -> Result<Map<String, Value>, RouteError> {
    let service = &canary.spec.service;
    let mut rule = Map::new();
    if let Some(headers) = &service.headers {
        for (side, filter, field) in [
            ("request", "RequestHeaderModifier", "requestHeaderModifier"),
            (
                "response",
                "ResponseHeaderModifier",
                "responseHeaderModifier",
            ),
        ] {
            let Some(ops) = headers.get(side) else {
                continue;
            };
            let modifier = header_modifier(ops, &format!("spec.service.headers.{side}"))?;
            push_filter(&mut rule, json!({ "type": filter, field: modifier }));
        }
    }
    for filter in gateway_filters(canary)? {
        push_filter(&mut rule, filter);
    }
    let mut timeouts = Map::new();
    if let Some(timeout) = &service.timeout {
        timeouts.insert("request".into(), json!(timeout));
    }
    if let Some(timeout) = &service.backend_timeout {
        timeouts.insert("backendRequest".into(), json!(timeout));
    }
    if !timeouts.is_empty() {
        rule.insert("timeouts".into(), Value::Object(timeouts));
    }
    Ok(rule)
}

/// Istio's `{set: {k: v}, add: {k: v}, remove: [k]}` as an HTTPHeaderFilter.
fn header_modifier(ops: &Value, field: &str) -> Result<Value, RouteError> {
    let invalid = |reason: &str| RouteError::InvalidSpec {
        field: field.to_string(),
        reason: reason.to_string(),
    };
    let mut modifier = Map::new();
    for op in ["set", "add"] {
        if let Some(pairs) = ops.get(op) {
            let pairs = pairs
                .as_object()
                .ok_or_else(|| invalid("`set` and `add` must map header names to values"))?;
            let mut list: Vec<(&String, &Value)> = pairs.iter().collect();
            list.sort_by(|a, b| a.0.cmp(b.0));
            let list = list
                .into_iter()
                .map(|(name, value)| {
                    value
                        .as_str()
                        .map(|v| json!({ "name": name, "value": v }))
                        .ok_or_else(|| invalid("header values must be strings"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            modifier.insert(op.into(), Value::Array(list));
        }
    }
    if let Some(remove) = ops.get("remove") {
        if !remove
            .as_array()
            .is_some_and(|r| r.iter().all(Value::is_string))
        {
            return Err(invalid("`remove` must list header names"));
        }
        modifier.insert("remove".into(), remove.clone());
    }
    Ok(Value::Object(modifier))
}

/// The Canary's Istio-style `service.match` as HTTPRoute matches, carried by every rule. As in
/// Flagger, a match left with no condition is dropped.
fn service_matches(canary: &Canary) -> Result<Vec<Value>, RouteError> {
    let mut matches = Vec::new();
    for (i, m) in canary.spec.service.match_.iter().enumerate() {
        let converted = convert_service_match(m, &format!("spec.service.match[{i}]"))?;
        if converted.as_object().is_none_or(|o| !o.is_empty()) {
            matches.push(converted);
        }
    }
    Ok(matches)
}

/// The conditions of an Istio-style match that an HTTPRoute match has none of: Flagger's
/// Gateway API router builds `service.match` from `uri`, `method`, `headers` and `queryParams`
/// alone and drops these (`name` is a label, not a condition).
pub(crate) fn dropped_conditions(m: &Value) -> Vec<&str> {
    const ROUTED: [&str; 5] = ["uri", "method", "headers", "queryParams", "name"];
    let keys = m.as_object().into_iter().flat_map(|o| o.keys());
    keys.map(String::as_str)
        .filter(|k| !ROUTED.contains(k))
        .collect()
}

/// One `service.match` entry as an HTTPRoute match, its [`dropped_conditions`] left out.
pub(crate) fn convert_service_match(m: &Value, path: &str) -> Result<Value, RouteError> {
    let mut kept = m.clone();
    if let Some(o) = kept.as_object_mut() {
        for k in dropped_conditions(m) {
            o.remove(k);
        }
    }
    convert_match(&kept, path)
}

/// The Canary's Istio-style `analysis.match` as HTTPRoute matches.
fn ab_matches(canary: &Canary) -> Result<Vec<Value>, RouteError> {
    required_matches(canary)?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let path = format!("spec.analysis.match[{i}]");
            let converted = convert_match(m, &path)?;
            // It would send every request to the canary, and read back as the general rule.
            if matches_everything(&converted) {
                return Err(RouteError::InvalidSpec {
                    field: path,
                    reason: "matches every request (a `/` prefix is what an HTTPRoute rule \
                             matches by default): give a header, query or method condition"
                        .into(),
                });
            }
            Ok(converted)
        })
        .collect()
}

/// One Istio-style match as an HTTPRoute match, or the field it cannot express.
pub(crate) fn convert_match(m: &Value, path: &str) -> Result<Value, RouteError> {
    let invalid = |field: String, reason: String| RouteError::InvalidSpec { field, reason };
    let object = m
        .as_object()
        .ok_or_else(|| invalid(path.to_string(), "must be an object".into()))?;
    let mut out = Map::new();
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort();
    for key in keys {
        let value = &object[key];
        let field = format!("{path}.{key}");
        match key.as_str() {
            "headers" | "queryParams" => {
                let pairs = value
                    .as_object()
                    .ok_or_else(|| invalid(field.clone(), "must map names to matches".into()))?;
                let mut list = Vec::new();
                let mut names: Vec<&String> = pairs.keys().collect();
                names.sort();
                for name in names {
                    let (kind, value) = string_match(&pairs[name], &format!("{field}.{name}"))?;
                    list.push(json!({ "type": kind, "name": name, "value": value }));
                }
                out.insert(key.clone(), Value::Array(list));
            }
            "uri" => {
                let (kind, value) =
                    match (value.get("prefix"), value.get("exact"), value.get("regex")) {
                        (Some(Value::String(p)), None, None) => ("PathPrefix", p.clone()),
                        _ => string_match(value, &field)?,
                    };
                out.insert("path".into(), json!({ "type": kind, "value": value }));
            }
            "method" => match value.get("exact").and_then(Value::as_str) {
                Some(method) => {
                    out.insert("method".into(), json!(method.to_ascii_uppercase()));
                }
                None => {
                    return Err(invalid(
                        field,
                        "only `exact` methods exist in HTTPRoute".into(),
                    ));
                }
            },
            // A label for the match, not a condition.
            "name" => {}
            other => {
                return Err(invalid(
                    field,
                    format!(
                        "`{other}` has no HTTPRoute equivalent; use headers, queryParams, uri or method"
                    ),
                ));
            }
        }
    }
    Ok(Value::Object(out))
}

/// Istio's StringMatch as an HTTPRoute match type and value. HTTPRoute has no prefix match on
/// headers, so a prefix becomes an anchored regular expression.
fn string_match(m: &Value, field: &str) -> Result<(&'static str, String), RouteError> {
    let exact = m.get("exact").and_then(Value::as_str);
    let regex = m.get("regex").and_then(Value::as_str);
    let prefix = m.get("prefix").and_then(Value::as_str);
    match (exact, regex, prefix) {
        (Some(v), None, None) => Ok(("Exact", v.to_string())),
        (None, Some(v), None) => Ok(("RegularExpression", v.to_string())),
        (None, None, Some(v)) => Ok((
            "RegularExpression",
            format!("^{}.*", super::escape_regex(v)),
        )),
        _ => Err(RouteError::InvalidSpec {
            field: field.to_string(),
            reason: "must have exactly one of exact, regex or prefix (a string)".into(),
        }),
    }
}
