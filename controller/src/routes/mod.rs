//! The routing vocabulary, pure: what a split between primary and canary means, which provider
//! carries it, which Services it names, and the exact objects that express it.
//!
//! The cluster's routers ([`crate::router`], feature `cluster`) apply what these builders return
//! and read back what is there; the simulator loads the very same objects through its manifest
//! loader. Neither builds routes of its own, so what a scenario rehearses is what a cluster gets.
//!
//! # What a [`Routes`] means
//! - `primary`/`canary`: the percentages of the *general* traffic, the requests that match no A/B
//!   rule.
//! - `matched` (A/B testing): a rule placed before the general one sends every request matching
//!   the Canary's `analysis.match` to the canary (100%, as Flagger writes it: primary 0,
//!   canary 100); everything else takes the general split, which the rollout core keeps on the
//!   primary.
//! - `mirror`: `mirror`% of the general rule's requests are also copied to the canary, whose
//!   answers are discarded (Istio's `mirror` + `mirrorPercentage`, the Gateway API's
//!   `RequestMirror` filter). SMI can neither match nor mirror: validation refuses both.
//!
//! Each reader inverts its builder (`read(build(r)) == r`, a property test), so the reconciler's
//! drift check compares like with like.

mod affinity;
pub mod gateway_api;
pub mod istio;
mod service_routing;
pub mod smi;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::spec::Canary;
pub use affinity::with_cookies;
pub use gateway_api::GatewayVersion;
pub use smi::SmiVersion;

/// A traffic split between primary and canary (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routes {
    /// Percentage of the general traffic served by the primary.
    pub primary: u8,
    /// Percentage of the general traffic served by the canary.
    pub canary: u8,
    /// Percentage of the general traffic copied to the canary (responses discarded).
    pub mirror: Option<u8>,
    /// A/B: requests matching the Canary's `analysis.match` all go to the canary.
    pub matched: bool,
}

impl Routes {
    /// Everything to the primary, nothing mirrored or matched.
    pub const PRIMARY_ONLY: Routes = Routes {
        primary: 100,
        canary: 0,
        mirror: None,
        matched: false,
    };
}

impl fmt::Display for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "primary {}%, canary {}%", self.primary, self.canary)?;
        if let Some(m) = self.mirror {
            write!(f, ", mirror {m}%")?;
        }
        if self.matched {
            f.write_str(", A/B matches to the canary")?;
        }
        Ok(())
    }
}

/// The mesh API a Canary's traffic is routed with. Parsed once, at validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Istio: a VirtualService and two DestinationRules.
    Istio,
    /// An SMI TrafficSplit (what Linkerd reads through its SMI extension).
    Smi(SmiVersion),
    /// A Gateway API HTTPRoute.
    GatewayApi(GatewayVersion),
}

/// Every spelling of a provider that [`Provider::from_str`] accepts.
pub const PROVIDER_NAMES: &[&str] = &[
    "istio",
    "linkerd",
    "smi",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "gatewayapi",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
];

/// Flagger's traffic providers that Fledge has no router for (Flagger's pkg/router/factory.go),
/// each with what it routes through. A name matches itself or itself followed by `:`
/// (`appmesh:v1beta2`, `gloo:...`).
pub const FLAGGER_ONLY_PROVIDERS: &[(&str, &str)] = &[
    ("apisix", "Apache APISIX routes"),
    ("appmesh", "AWS App Mesh"),
    ("contour", "Contour HTTPProxies"),
    ("gloo", "Gloo Edge upstreams"),
    ("knative", "Knative Services"),
    (
        "kubernetes",
        "Kubernetes Services alone (blue/green without a mesh)",
    ),
    ("kuma", "Kuma TrafficRoutes"),
    ("nginx", "the NGINX Ingress controller"),
    ("osm", "Open Service Mesh"),
    ("skipper", "Skipper Ingresses"),
    ("traefik", "Traefik services"),
];

/// What `name` routes through in Flagger, when it is one of [`FLAGGER_ONLY_PROVIDERS`].
pub fn flagger_only_provider(name: &str) -> Option<&'static str> {
    FLAGGER_ONLY_PROVIDERS
        .iter()
        .find(|(p, _)| name == *p || name.strip_prefix(p).is_some_and(|r| r.starts_with(':')))
        .map(|(_, what)| *what)
}

/// A provider string no router exists for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownProvider(pub String);

impl std::error::Error for UnknownProvider {}

impl fmt::Display for UnknownProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.0;
        let known = PROVIDER_NAMES.join(", ");
        if let Some(what) = flagger_only_provider(name) {
            return write!(
                f,
                "provider `{name}` ({what}) is one of Flagger's that Fledge does not support; \
                 Fledge routes with {known}"
            );
        }
        // Flagger's SMI spelling with the mesh's name: `smi:v1alpha2:linkerd`.
        if let Some((version, _mesh)) = name
            .strip_prefix("smi:")
            .and_then(|rest| rest.split_once(':'))
        {
            return write!(
                f,
                "unknown provider `{name}`: Fledge's SMI providers name no mesh; write \
                 `smi:{version}` (expected one of {known})"
            );
        }
        write!(f, "unknown provider `{name}`; expected one of {known}")
    }
}

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "istio" => Provider::Istio,
            // Linkerd's SMI extension serves every TrafficSplit version; v1alpha2 has integer
            // weights.
            "linkerd" | "smi" | "smi:v1alpha2" => Provider::Smi(SmiVersion::V1Alpha2),
            "smi:v1alpha1" => Provider::Smi(SmiVersion::V1Alpha1),
            "smi:v1alpha3" => Provider::Smi(SmiVersion::V1Alpha3),
            "gatewayapi" | "gatewayapi:v1" => Provider::GatewayApi(GatewayVersion::V1),
            "gatewayapi:v1beta1" => Provider::GatewayApi(GatewayVersion::V1Beta1),
            other => return Err(UnknownProvider(other.to_string())),
        })
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Istio => f.write_str("istio"),
            Provider::Smi(v) => write!(f, "smi:{}", v.as_str()),
            Provider::GatewayApi(v) => write!(f, "gatewayapi:{}", v.as_str()),
        }
    }
}

impl Serialize for Provider {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Provider {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The API of the object that carries a provider's split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutingKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
}

impl Provider {
    /// Whether the provider can send matched requests to the canary (A/B testing).
    pub fn can_match(self) -> bool {
        !matches!(self, Provider::Smi(_))
    }

    /// Whether the provider can mirror requests to the canary.
    pub fn can_mirror(self) -> bool {
        !matches!(self, Provider::Smi(_))
    }

    /// The object that carries the split (the one the reconciler watches for hand edits).
    pub fn routing_kind(self) -> RoutingKind {
        match self {
            Provider::Istio => RoutingKind {
                group: istio::GROUP,
                version: istio::VERSION,
                kind: "VirtualService",
            },
            Provider::Smi(v) => RoutingKind {
                group: smi::GROUP,
                version: v.as_str(),
                kind: "TrafficSplit",
            },
            Provider::GatewayApi(v) => RoutingKind {
                group: gateway_api::GROUP,
                version: v.as_str(),
                kind: "HTTPRoute",
            },
        }
    }

    /// The object that carries the split for `routes`, exactly as applied.
    pub fn routing_object(self, canary: &Canary, routes: &Routes) -> Result<Value, RouteError> {
        match self {
            Provider::Istio => istio::virtual_service(canary, routes),
            Provider::Smi(v) => smi::traffic_split(canary, routes, v),
            Provider::GatewayApi(v) => gateway_api::http_route(canary, routes, v),
        }
    }

    /// The objects the router keeps beside the routing object (Istio's DestinationRules for the
    /// primary and canary hosts, carrying `service.trafficPolicy`).
    pub fn companion_objects(self, canary: &Canary) -> Vec<Value> {
        match self {
            Provider::Istio => {
                let names = service_names(canary);
                vec![
                    istio::destination_rule(canary, &names.primary),
                    istio::destination_rule(canary, &names.canary),
                ]
            }
            Provider::Smi(_) | Provider::GatewayApi(_) => Vec::new(),
        }
    }

    /// Every object the provider's router writes for `routes`, in the order it applies them
    /// (Istio's DestinationRules before the VirtualService that names their hosts).
    pub fn objects(self, canary: &Canary, routes: &Routes) -> Result<Vec<Value>, RouteError> {
        let mut objects = self.companion_objects(canary);
        objects.push(self.routing_object(canary, routes)?);
        Ok(objects)
    }

    /// Checks the `spec` of the routing object as the API server stored it (the answer to an
    /// apply) against the `routes` applied: a CRD that prunes a field the split needs must not
    /// go unseen, or the drift check would rewrite the object on every reconcile.
    pub fn check_stored(
        self,
        canary: &Canary,
        routes: &Routes,
        stored: &Value,
    ) -> Result<(), String> {
        let found = self.read_routes(canary, stored)?;
        if found == *routes {
            return Ok(());
        }
        let known = match self {
            Provider::GatewayApi(_) => gateway_api::pruned_mirror_percent(routes, &found),
            Provider::Istio | Provider::Smi(_) => None,
        };
        Err(known
            .unwrap_or_else(|| format!("the API server stored {found} where {routes} was applied")))
    }

    /// Reads the split back from the `spec` of the provider's routing object.
    pub fn read_routes(self, canary: &Canary, spec: &Value) -> Result<Routes, String> {
        match self {
            Provider::Istio => istio::read_routes(canary, spec),
            Provider::Smi(_) => smi::read_routes(canary, spec),
            Provider::GatewayApi(_) => gateway_api::read_routes(canary, spec),
        }
    }
}

/// Why a split cannot be written as an object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The Canary asks for something the object cannot express.
    #[error("{field}: {reason}")]
    InvalidSpec { field: String, reason: String },
    /// The mesh cannot do what was asked (mirroring or A/B with SMI).
    #[error("{provider} does not support {feature}")]
    Unsupported {
        provider: &'static str,
        feature: &'static str,
    },
}

/// The three Services of a Canary, named as Flagger names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceNames {
    /// `service.name` when set and not empty, or the target's name.
    pub apex: String,
    /// `<apex>-primary`.
    pub primary: String,
    /// `<apex>-canary`.
    pub canary: String,
}

/// The Services a Canary routes between: the one function that names them.
pub fn service_names(canary: &Canary) -> ServiceNames {
    let apex = canary
        .spec
        .service
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| canary.spec.target_ref.name.clone());
    ServiceNames {
        primary: format!("{apex}-primary"),
        canary: format!("{apex}-canary"),
        apex,
    }
}

/// `metadata` for a generated object: name, the Canary's namespace, and the labels and
/// annotations of `service.apex`.
fn object_metadata(canary: &Canary, name: &str) -> Value {
    let mut meta = json!({ "name": name });
    if let Some(ns) = canary.metadata.namespace.as_deref() {
        meta["namespace"] = json!(ns);
    }
    if let Some(apex) = &canary.spec.service.apex {
        if !apex.labels.is_empty() {
            meta["labels"] = json!(apex.labels);
        }
        if !apex.annotations.is_empty() {
            meta["annotations"] = json!(apex.annotations);
        }
    }
    meta
}

/// Turns two relative weights into percentages that add up to 100.
fn percentages(primary: f64, canary: f64) -> Option<(u8, u8)> {
    let total = primary + canary;
    if !(primary >= 0.0 && canary >= 0.0 && total > 0.0 && total.is_finite()) {
        return None;
    }
    let canary_pct = (100.0 * canary / total).round().clamp(0.0, 100.0) as u8;
    Some((100 - canary_pct, canary_pct))
}

/// Refuses a split that does not add up, before anything is built.
fn check_weights(routes: &Routes) -> Result<(), RouteError> {
    let bad = |reason: String| {
        Err(RouteError::InvalidSpec {
            field: "routes".into(),
            reason,
        })
    };
    if u16::from(routes.primary) + u16::from(routes.canary) != 100 {
        return bad(format!(
            "weights {} (primary) and {} (canary) must add up to 100",
            routes.primary, routes.canary
        ));
    }
    if let Some(m) = routes.mirror.filter(|m| *m > 100) {
        return bad(format!("mirror percentage {m} is above 100"));
    }
    Ok(())
}

/// The A/B matches a matched split needs, or the error that there are none.
fn required_matches(canary: &Canary) -> Result<&[Value], RouteError> {
    let matches = &canary.spec.analysis.match_;
    if matches.is_empty() {
        return Err(RouteError::InvalidSpec {
            field: "spec.analysis.match".into(),
            reason: "A/B routing was asked for but no match is set".into(),
        });
    }
    Ok(matches)
}

/// A route's or rule's primary and canary percentages, or why they cannot be read.
type Weights = Result<(u8, u8), String>;

/// A route or rule of ours, as the readers see it.
struct RuleShape<'a> {
    /// It sends traffic to the primary or canary Service.
    ours: &'a dyn Fn(&Value) -> bool,
    /// It carries an A/B match.
    matched: &'a dyn Fn(&Value) -> bool,
    /// Its primary and canary percentages.
    weights: &'a dyn Fn(&Value) -> Weights,
}

/// The general rule (the first of ours without an A/B match) with its weights, and whether the
/// rules of ours before it send their matched requests all to the canary, as the builders write
/// A/B. `missing` says what is absent when there is no general rule.
fn general_rule<'v>(
    rules: &'v [Value],
    shape: &RuleShape<'_>,
    missing: impl FnOnce() -> String,
) -> Result<(&'v Value, (u8, u8), bool), String> {
    let at = rules
        .iter()
        .position(|r| !(shape.matched)(r) && (shape.ours)(r))
        .ok_or_else(missing)?;
    let mut matched = false;
    for r in rules[..at].iter().filter(|r| (shape.ours)(r)) {
        let (p, c) = (shape.weights)(r)?;
        if (p, c) != (0, 100) {
            return Err(format!(
                "its A/B route sends {p}% to the primary and {c}% to the canary; Fledge sends \
                 matched requests all to the canary"
            ));
        }
        matched = true;
    }
    Ok((&rules[at], (shape.weights)(&rules[at])?, matched))
}

/// `text` matched literally in an RE2 regular expression.
fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A non-negative integer weight; anything else is a hand edit the reader cannot read.
fn integer_weight(value: &Value) -> Option<u64> {
    value.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_weights_become_percentages_that_add_up_to_one_hundred() {
        assert_eq!(percentages(900.0, 100.0), Some((90, 10)));
        assert_eq!(percentages(1.0, 2.0), Some((33, 67)));
        assert_eq!(percentages(0.0, 0.0), None);
        assert_eq!(percentages(-1.0, 2.0), None);
        assert_eq!(percentages(f64::NAN, 2.0), None);
    }

    #[test]
    fn every_provider_name_parses_and_prints_as_a_name_that_parses_to_itself() {
        for name in PROVIDER_NAMES {
            let p: Provider = name.parse().expect(name);
            assert_eq!(p.to_string().parse::<Provider>(), Ok(p), "{name}");
        }
    }

    #[test]
    fn flaggers_other_providers_are_refused_naming_what_they_route_through() {
        for (name, what) in [
            ("nginx", "NGINX Ingress"),
            ("appmesh:v1beta2", "App Mesh"),
            ("gloo", "Gloo"),
            ("kubernetes", "without a mesh"),
        ] {
            let e = name.parse::<Provider>().unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{name}`"))
                    && e.contains(what)
                    && e.contains("one of Flagger's that Fledge does not support"),
                "{e}"
            );
        }
        // A prefix of a Flagger provider's name is not that provider.
        assert_eq!(flagger_only_provider("nginxish"), None);
        let e = "smi:v1alpha3:linkerd".parse::<Provider>().unwrap_err();
        assert!(e.to_string().contains("write `smi:v1alpha3`"), "{e}");
    }

    #[test]
    fn unknown_providers_are_refused_by_name_with_the_known_ones() {
        let e = "envoy".parse::<Provider>().unwrap_err().to_string();
        assert!(
            e.contains("`envoy`") && e.contains("gatewayapi:v1beta1"),
            "{e}"
        );
    }
}
