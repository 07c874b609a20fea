//! Istio: a `VirtualService` named like the apex service, and `DestinationRule`s for the
//! primary and canary services, as Flagger writes them.
//!
//! The VirtualService answers for `service.hosts` plus the apex service, on `service.gateways`
//! (the `mesh` gateway when none is given; neither for a `delegation` VirtualService). Its HTTP
//! route sends `primary`/`canary` percent to `<svc>-primary`/`<svc>-canary`, carries the
//! `match`, `rewrite`, `headers`, `retries`, `timeout` and `corsPolicy` of the Canary's service
//! block, and mirrors to the canary when asked. For A/B testing a first route with
//! `analysis.match` (merged into `service.match`) sends every matching request to the canary
//! (primary 0, canary 100, as Flagger writes it) and the second, general route carries the
//! split.

use serde_json::{Map, Value, json};

use super::affinity::{self, Cookie, Sticky};
use super::service_routing::{istio_rewrite, merged};
use super::{
    RouteError, Routes, RuleShape, ServiceNames, general_rule, object_metadata, required_matches,
    service_names,
};
use crate::spec::Canary;

pub const GROUP: &str = "networking.istio.io";
/// Served by every Istio release since 1.5, so older meshes work too.
pub const VERSION: &str = "v1beta1";

/// The VirtualService for `routes`, exactly as applied.
pub fn virtual_service(canary: &Canary, routes: &Routes) -> Result<Value, RouteError> {
    super::check_weights(routes)?;
    let names = service_names(canary);
    let service = &canary.spec.service;

    let mut hosts = service.hosts.clone();
    if !hosts.iter().any(|h| h == &names.apex || h == "*") {
        hosts.push(names.apex.clone());
    }
    let gateways = if service.gateways.is_empty() {
        vec!["mesh".to_string()]
    } else {
        service.gateways.clone()
    };
    // A delegate VirtualService has neither (validation refuses them with `delegation`).
    let (hosts, gateways) = if service.delegation {
        (Vec::new(), Vec::new())
    } else {
        (hosts, gateways)
    };

    let mut general = weighted_route(canary, &names, routes);
    let http = if let Some(sticky) = affinity::sticky(canary, routes) {
        let mut http = sticky_routes(canary, &names, routes, &sticky);
        if let Sticky::Pinning { canary: c, primary } = &sticky {
            set_cookie_on(&mut general, &names.canary, &c.set_cookie);
            if let Some(p) = primary {
                set_cookie_on(&mut general, &names.primary, &p.set_cookie);
            }
        }
        http.push(Value::Object(general));
        http
    } else if routes.matched {
        let mut matched = route_options(canary);
        let ab = required_matches(canary)?.to_vec();
        matched.insert("match".into(), json!(merged(ab, &service.match_)));
        matched.insert(
            "route".into(),
            json!([
                destination(canary, &names.primary, 0),
                destination(canary, &names.canary, 100),
            ]),
        );
        vec![Value::Object(matched), Value::Object(general)]
    } else {
        vec![Value::Object(general)]
    };

    Ok(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "VirtualService",
        "metadata": object_metadata(canary, &names.apex),
        "spec": {
            "hosts": hosts,
            "gateways": gateways,
            "http": http,
        }
    }))
}

/// The DestinationRule for one of the generated services, with `service.trafficPolicy`.
pub fn destination_rule(canary: &Canary, host: &str) -> Value {
    let mut spec = json!({ "host": host });
    if let Some(policy) = &canary.spec.service.traffic_policy {
        spec["trafficPolicy"] = policy.clone();
    }
    let mut metadata = json!({ "name": host });
    if let Some(ns) = canary.metadata.namespace.as_deref() {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "DestinationRule",
        "metadata": metadata,
        "spec": spec,
    })
}

/// Reads the split from a VirtualService's `spec`: the general split from the first HTTP route
/// without a match that sends traffic to the primary or canary service, and A/B from a matched
/// route before it that sends everything to the canary.
pub fn read_routes(canary: &Canary, spec: &Value) -> Result<Routes, String> {
    let names = service_names(canary);
    let http = spec["http"].as_array().ok_or("it has no HTTP routes")?;
    // The session affinity routes pin some users; the split is the weighted route's.
    let pinning = http.iter().any(sets_cookie_on_a_destination);
    let http: Vec<Value> = http
        .iter()
        .filter(|r| !is_sticky_route(r, pinning))
        .cloned()
        .collect();
    let ours = |r: &Value| {
        r["route"].as_array().is_some_and(|ds| {
            ds.iter().any(|d| {
                let host = &d["destination"]["host"];
                same_host(host, &names.canary) || same_host(host, &names.primary)
            })
        })
    };
    // Every route carries `service.match`: only other matches are A/B ones.
    let service_match = json!(canary.spec.service.match_);
    let shape = RuleShape {
        ours: &ours,
        matched: &|r: &Value| {
            r["match"].as_array().is_some_and(|m| !m.is_empty()) && r["match"] != service_match
        },
        weights: &|r: &Value| weights(r, &names),
    };
    let (route, (primary, canary_weight), matched) = general_rule(&http, &shape, || {
        format!(
            "no HTTP route without a match sends traffic to {} or {}",
            names.primary, names.canary
        )
    })?;
    let mirror = if same_host(&route["mirror"]["host"], &names.canary) {
        let pct = route["mirrorPercentage"]["value"].as_f64().unwrap_or(100.0);
        if !(0.0..=100.0).contains(&pct) {
            return Err(format!("mirror percentage {pct} is not between 0 and 100"));
        }
        Some(pct.round() as u8)
    } else {
        None
    };
    Ok(Routes {
        primary,
        canary: canary_weight,
        mirror,
        matched,
    })
}

/// The primary and canary weights of one HTTP route, which must add up to 100.
fn weights(route: &Value, names: &ServiceNames) -> Result<(u8, u8), String> {
    let destinations = route["route"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let (mut primary, mut canary) = (0u64, 0u64);
    for d in destinations {
        let host = &d["destination"]["host"];
        // Istio: a lone destination takes all traffic whatever its weight; without a weight,
        // others take none.
        let weight = match &d["weight"] {
            _ if destinations.len() == 1 => 100,
            Value::Null => 0,
            w => super::integer_weight(w)
                .ok_or_else(|| format!("weight {w} of {host} is not a whole number"))?,
        };
        if same_host(host, &names.primary) {
            primary += weight;
        } else if same_host(host, &names.canary) {
            canary += weight;
        } else if weight > 0 {
            return Err(format!("the canary route also sends {weight}% to {host}"));
        }
    }
    if primary + canary != 100 {
        return Err(format!(
            "weights {primary} (primary) and {canary} (canary) do not add up to 100"
        ));
    }
    Ok((primary as u8, canary as u8))
}

/// `name`, or a longer form of it (`name.ns`, `name.ns.svc.cluster.local`).
fn same_host(host: &Value, name: &str) -> bool {
    host.as_str()
        .is_some_and(|h| h == name || h.strip_prefix(name).is_some_and(|r| r.starts_with('.')))
}

/// The session affinity routes placed before the weighted one: carriers of the canary cookie to
/// the canary and of the primary cookie to the primary; or, with no traffic on the canary,
/// carriers of the last rollout's cookie routed as everyone else and answered with it expired.
fn sticky_routes(
    canary: &Canary,
    names: &ServiceNames,
    routes: &Routes,
    sticky: &Sticky<'_>,
) -> Vec<Value> {
    let pinned = |cookie: Cookie<'_>, primary: u8| {
        let mut route = route_options(canary);
        route.insert("match".into(), cookie_match(canary, cookie));
        route.insert(
            "route".into(),
            json!([
                destination(canary, &names.primary, primary),
                destination(canary, &names.canary, 100 - primary),
            ]),
        );
        Value::Object(route)
    };
    match sticky {
        Sticky::Pinning { canary: c, primary } => std::iter::once(pinned(c.cookie, 0))
            .chain(primary.as_ref().map(|p| pinned(p.cookie, 100)))
            .collect(),
        Sticky::Expiring(expired) => {
            let mut route = route_options(canary);
            route.insert("match".into(), cookie_match(canary, expired.cookie));
            let headers = route.entry("headers").or_insert_with(|| json!({}));
            if !headers.is_object() {
                *headers = json!({});
            }
            let response = headers
                .as_object_mut()
                .map(|h| h.entry("response").or_insert_with(|| json!({})));
            if let Some(response) = response {
                if !response["add"].is_object() {
                    response["add"] = json!({});
                }
                response["add"]["Set-Cookie"] = json!(expired.set_cookie);
            }
            route.insert(
                "route".into(),
                json!([
                    destination(canary, &names.primary, routes.primary),
                    destination(canary, &names.canary, routes.canary),
                ]),
            );
            vec![Value::Object(route)]
        }
    }
}

/// An HTTP match on a `Cookie` header that carries `cookie` (Istio names header matches in
/// lower case), merged into `service.match`.
fn cookie_match(canary: &Canary, cookie: Cookie<'_>) -> Value {
    let cookie = json!({ "headers": { "cookie": { "regex": cookie.pattern() } } });
    json!(merged(vec![cookie], &canary.spec.service.match_))
}

/// The weighted route's destination `host` answers with `Set-Cookie: value`.
fn set_cookie_on(route: &mut Map<String, Value>, host: &str, value: &str) {
    let destinations = route.get_mut("route").and_then(Value::as_array_mut);
    for d in destinations.into_iter().flatten() {
        if d["destination"]["host"] == host {
            d["headers"] = json!({ "response": { "add": { "Set-Cookie": value } } });
        }
    }
}

/// A session affinity route (see [`affinity::is_sticky`]): every match's one header condition
/// is a `Cookie` regular expression (Flagger adds `service.match`'s other conditions), and the
/// routes pin or this one expires its cookie.
fn is_sticky_route(route: &Value, pinning: bool) -> bool {
    let cookie_only = route["match"].as_array().is_some_and(|ms| {
        !ms.is_empty()
            && ms.iter().all(|m| {
                m["headers"].as_object().is_some_and(|h| {
                    h.len() == 1
                        && h.iter().all(|(name, v)| {
                            name.eq_ignore_ascii_case("cookie") && v["regex"].is_string()
                        })
                })
            })
    });
    let expiring = route["headers"]["response"]["add"]["Set-Cookie"]
        .as_str()
        .is_some_and(affinity::expires);
    affinity::is_sticky(cookie_only, pinning, expiring)
}

/// Whether a destination of `route` answers with `Set-Cookie`: the weighted route while the
/// canary's users are pinned.
fn sets_cookie_on_a_destination(route: &Value) -> bool {
    route["route"].as_array().is_some_and(|ds| {
        ds.iter()
            .any(|d| d["headers"]["response"]["add"]["Set-Cookie"].is_string())
    })
}

fn weighted_route(canary: &Canary, names: &ServiceNames, routes: &Routes) -> Map<String, Value> {
    let mut route = route_options(canary);
    route.insert(
        "route".into(),
        json!([
            destination(canary, &names.primary, routes.primary),
            destination(canary, &names.canary, routes.canary),
        ]),
    );
    if let Some(pct) = routes.mirror {
        route.insert(
            "mirror".into(),
            json!({ "host": names.canary, "port": { "number": canary.spec.service.port } }),
        );
        route.insert(
            "mirrorPercentage".into(),
            json!({ "value": f64::from(pct) }),
        );
    }
    route
}

/// `match` (the general route's; others replace it), `rewrite`, headers, retries, timeout and
/// CORS policy from the Canary's service block, on every route, as Flagger writes each.
fn route_options(canary: &Canary) -> Map<String, Value> {
    let service = &canary.spec.service;
    let mut options = Map::new();
    if !service.match_.is_empty() {
        options.insert("match".into(), json!(service.match_));
    }
    if let Some(rewrite) = service.rewrite.as_ref().and_then(istio_rewrite) {
        options.insert("rewrite".into(), rewrite);
    }
    if let Some(cors) = &service.cors_policy {
        options.insert("corsPolicy".into(), cors.clone());
    }
    if let Some(headers) = &service.headers {
        options.insert("headers".into(), headers.clone());
    }
    if let Some(retries) = &service.retries {
        options.insert("retries".into(), retries.clone());
    }
    if let Some(timeout) = &service.timeout {
        options.insert("timeout".into(), json!(timeout));
    }
    options
}

fn destination(canary: &Canary, host: &str, weight: u8) -> Value {
    json!({
        "destination": { "host": host, "port": { "number": canary.spec.service.port } },
        "weight": weight,
    })
}
