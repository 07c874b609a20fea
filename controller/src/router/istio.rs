//! Istio: a `VirtualService` named like the apex service, and `DestinationRule`s for the
//! primary and canary services, as Flagger writes them.
//!
//! The VirtualService answers for `service.hosts` plus the apex service, on `service.gateways`
//! (the `mesh` gateway when none is given). Its HTTP route sends `primary`/`canary` percent to
//! `<svc>-primary`/`<svc>-canary`, carries the `headers`, `retries` and `timeout` of the
//! Canary's service block, and mirrors to the canary when asked. For A/B testing a first route
//! with `analysis.match` takes the weighted destinations and a second, unmatched route sends
//! everything else to the primary.

use serde_json::{Map, Value, json};

use super::{
    Objects, RouterError, Routes, ServiceNames, namespace, object_metadata, service_names,
};
use crate::spec::Canary;

pub const GROUP: &str = "networking.istio.io";
/// Served by every Istio release since 1.5, so older meshes work too.
pub const VERSION: &str = "v1beta1";

/// Writes VirtualServices and DestinationRules.
#[derive(Clone)]
pub struct Istio {
    virtual_services: Objects,
    destination_rules: Objects,
}

impl Istio {
    pub fn new(client: kube::Client) -> Self {
        Istio {
            virtual_services: Objects::new(client.clone(), GROUP, VERSION, "VirtualService"),
            destination_rules: Objects::new(client, GROUP, VERSION, "DestinationRule"),
        }
    }

    pub(super) async fn reconcile(&self, canary: &Canary) -> Result<(), RouterError> {
        let ns = namespace(canary)?;
        let names = service_names(canary);
        for host in [&names.primary, &names.canary] {
            let existing = self.destination_rules.get(&ns, host).await?;
            self.destination_rules
                .apply(canary, existing.as_ref(), destination_rule(canary, host))
                .await?;
        }
        let existing = self.virtual_services.get(&ns, &names.apex).await?;
        // Keep a rollout's current split: reconcile runs at every tick, not only at the start.
        let routes = existing
            .as_ref()
            .and_then(|vs| read_routes(canary, &vs.data["spec"]).ok())
            .filter(|r| !r.matched || !canary.spec.analysis.match_.is_empty())
            .unwrap_or(Routes::PRIMARY_ONLY);
        self.virtual_services
            .apply(canary, existing.as_ref(), virtual_service(canary, &routes)?)
            .await
    }

    pub(super) async fn set_routes(
        &self,
        canary: &Canary,
        routes: &Routes,
    ) -> Result<(), RouterError> {
        let desired = virtual_service(canary, routes)?;
        let ns = namespace(canary)?;
        let existing = self
            .virtual_services
            .get(&ns, &service_names(canary).apex)
            .await?;
        self.virtual_services
            .apply(canary, existing.as_ref(), desired)
            .await
    }

    pub(super) async fn get_routes(&self, canary: &Canary) -> Result<Routes, RouterError> {
        let ns = namespace(canary)?;
        let vs = self
            .virtual_services
            .get_existing(&ns, &service_names(canary).apex)
            .await?;
        read_routes(canary, &vs.data["spec"])
            .map_err(|why| self.virtual_services.malformed(&vs, why))
    }

    pub(super) async fn finalize(&self, canary: &Canary) -> Result<(), RouterError> {
        let ns = namespace(canary)?;
        let Some(existing) = self
            .virtual_services
            .get(&ns, &service_names(canary).apex)
            .await?
        else {
            return Ok(());
        };
        self.virtual_services
            .apply(
                canary,
                Some(&existing),
                virtual_service(canary, &Routes::PRIMARY_ONLY)?,
            )
            .await
    }
}

/// The VirtualService for `routes`, exactly as applied.
pub fn virtual_service(canary: &Canary, routes: &Routes) -> Result<Value, RouterError> {
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

    let weighted = weighted_route(canary, &names, routes);
    let http = if routes.matched {
        let matches = &canary.spec.analysis.match_;
        if matches.is_empty() {
            return Err(RouterError::InvalidSpec {
                field: "spec.analysis.match".into(),
                reason: "A/B routing was asked for but no match is set".into(),
            });
        }
        let mut matched = Map::new();
        matched.insert("match".into(), json!(matches));
        matched.extend(weighted);
        let mut rest = route_options(canary);
        rest.insert(
            "route".into(),
            json!([destination(canary, &names.primary, 100)]),
        );
        vec![Value::Object(matched), Value::Object(rest)]
    } else {
        vec![Value::Object(weighted)]
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

/// Reads the split from a VirtualService's `spec`: the first HTTP route that sends traffic to
/// the canary service is the one the router writes.
pub fn read_routes(canary: &Canary, spec: &Value) -> Result<Routes, String> {
    let names = service_names(canary);
    let http = spec["http"].as_array().ok_or("it has no HTTP routes")?;
    let route = http
        .iter()
        .find(|r| {
            r["route"].as_array().is_some_and(|ds| {
                ds.iter()
                    .any(|d| same_host(&d["destination"]["host"], &names.canary))
            })
        })
        .ok_or_else(|| format!("no HTTP route sends traffic to {}", names.canary))?;
    let destinations = route["route"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let (mut primary, mut canary_weight) = (0u64, 0u64);
    for d in destinations {
        let host = &d["destination"]["host"];
        // Istio's default: a lone destination takes all traffic, others none.
        let weight = match &d["weight"] {
            Value::Null if destinations.len() == 1 => 100,
            Value::Null => 0,
            w => super::integer_weight(w)
                .ok_or_else(|| format!("weight {w} of {host} is not a whole number"))?,
        };
        if same_host(host, &names.primary) {
            primary += weight;
        } else if same_host(host, &names.canary) {
            canary_weight += weight;
        } else if weight > 0 {
            return Err(format!("the canary route also sends {weight}% to {host}"));
        }
    }
    if primary + canary_weight != 100 {
        return Err(format!(
            "weights {primary} (primary) and {canary_weight} (canary) do not add up to 100"
        ));
    }
    let mirror = if same_host(&route["mirror"]["host"], &names.canary) {
        let pct = route["mirrorPercentage"]["value"].as_f64().unwrap_or(100.0);
        if !(0.0..=100.0).contains(&pct) {
            return Err(format!("mirror percentage {pct} is not between 0 and 100"));
        }
        Some(pct.round() as u8)
    } else {
        None
    };
    let matched = route["match"].as_array().is_some_and(|m| !m.is_empty());
    Ok(Routes {
        primary: primary as u8,
        canary: canary_weight as u8,
        mirror,
        matched,
    })
}

/// `name`, or a longer form of it (`name.ns`, `name.ns.svc.cluster.local`).
fn same_host(host: &Value, name: &str) -> bool {
    host.as_str()
        .is_some_and(|h| h == name || h.strip_prefix(name).is_some_and(|r| r.starts_with('.')))
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

/// Headers, retries and timeout from the Canary's service block, on every route.
fn route_options(canary: &Canary) -> Map<String, Value> {
    let service = &canary.spec.service;
    let mut options = Map::new();
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
