//! Mesh manifests as users write them: Istio `VirtualService`, `DestinationRule`,
//! `PeerAuthentication`, `Gateway`, `ServiceEntry`, Linkerd `ServiceProfile`, SMI `TrafficSplit`
//! and Gateway API `HTTPRoute`.
//!
//! [`parse`] reads multi-document YAML. Unknown fields are ignored and reported in
//! [`Manifests::warnings`]; a field of the wrong type is a [`ManifestError`] naming the document
//! (index, kind, name), the field path and the expected type. Documents of other kinds are skipped
//! with a warning. Values keep Istio's meaning: absent fields stay `None` and the mesh applies
//! Istio's defaults when it resolves them.
//!
//! One reader (`reader`: the YAML value as Kubernetes reads it, typed fields with their paths,
//! durations and quantities) serves a file per mesh API: `istio` (VirtualService),
//! `istio_policy` (DestinationRule, PeerAuthentication), `linkerd` (ServiceProfile), `smi`
//! (TrafficSplit), `gateway` (HTTPRoute), `istio_gateway` (Istio's Gateway) and
//! `service_entry` (ServiceEntry). This file holds what they share: the error, the
//! header matches, the parsed manifest and the dispatch by kind.

mod authorization;
mod gateway;
mod istio;
mod istio_gateway;
mod istio_policy;
mod linkerd;
mod path_template;
mod reader;
mod request_authentication;
mod service_entry;
mod smi;
pub(crate) mod yaml;

use serde::Deserialize;
use serde_json::Value;

pub use authorization::{AuthorizationPolicy, AuthzAction};
pub(crate) use authorization::{AuthzRule, Field, Operation, Source};
pub use gateway::GatewayHttpRoute;
pub use istio::{FaultInjection, IstioHttpRoute, VirtualService};
pub use istio_gateway::IstioGateway;
pub use istio_policy::{DestinationRule, MtlsMode, OutlierDetectionSpec, PeerAuthentication};
pub use linkerd::ServiceProfile;
pub use request_authentication::RequestAuthentication;
pub use service_entry::ServiceEntry;
pub use smi::TrafficSplit;

pub(crate) use istio::{Retries, RetryOn};
pub(crate) use istio_policy::{LbPolicy, TlsMode, TrafficPolicy};
pub(crate) use linkerd::RetryBudget;
pub(crate) use reader::parse_quantity_milli;
pub(crate) use service_entry::{Location, Resolution};

/// A security policy that applies to workloads by namespace and selector (PeerAuthentication,
/// AuthorizationPolicy, RequestAuthentication): what the mesh needs to scope and replace it.
pub(crate) trait WorkloadPolicy: Clone {
    /// `metadata.name`.
    fn name(&self) -> &str;
    /// `metadata.namespace`; none: the default namespace.
    fn namespace(&self) -> Option<&str>;
    /// `spec.selector.matchLabels`; none: every workload of the namespace.
    fn selector(&self) -> Option<&std::collections::BTreeMap<String, String>>;
}

macro_rules! workload_policy {
    ($($t:ty),*) => {$(
        impl WorkloadPolicy for $t {
            fn name(&self) -> &str {
                &self.name
            }
            fn namespace(&self) -> Option<&str> {
                self.namespace.as_deref()
            }
            fn selector(&self) -> Option<&std::collections::BTreeMap<String, String>> {
                self.selector.as_ref()
            }
        }
    )*};
}
workload_policy!(
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication
);

use gateway::gateway_http_route;
use istio::virtual_service;
use istio_gateway::istio_gateway;
use istio_policy::{destination_rule, peer_authentication};
use linkerd::service_profile;
use reader::{Doc, Node, get, to_json};
use service_entry::service_entry;
use smi::traffic_split;

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
    /// Any value: the header is present (Istio's `{}`, Envoy's `present_match`).
    Present,
}

impl PartialEq for StringMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) | (Self::Prefix(a), Self::Prefix(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            (Self::Present, Self::Present) => true,
            _ => false,
        }
    }
}

impl StringMatch {
    /// A full-match regex (Envoy anchors `safe_regex`).
    pub(crate) fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self::Regex(regex::Regex::new(&format!("^(?:{pattern})$"))?))
    }

    /// Whether `value` matches.
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Regex(r) => r.is_match(value),
            Self::Present => true,
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
    GatewayHttpRoute(GatewayHttpRoute),
    /// Istio Gateway (`networking.istio.io`, not the Gateway API's).
    IstioGateway(IstioGateway),
    /// Istio ServiceEntry.
    ServiceEntry(ServiceEntry),
    /// Istio AuthorizationPolicy.
    AuthorizationPolicy(AuthorizationPolicy),
    /// Istio RequestAuthentication.
    RequestAuthentication(RequestAuthentication),
}

impl Manifest {
    /// Its kind and `metadata.name`, as a manifest writes them.
    pub fn kind_name(&self) -> (&'static str, &str) {
        match self {
            Manifest::VirtualService(x) => ("VirtualService", &x.name),
            Manifest::DestinationRule(x) => ("DestinationRule", &x.name),
            Manifest::PeerAuthentication(x) => ("PeerAuthentication", &x.name),
            Manifest::ServiceProfile(x) => ("ServiceProfile", &x.name),
            Manifest::TrafficSplit(x) => ("TrafficSplit", &x.name),
            Manifest::GatewayHttpRoute(x) => ("HTTPRoute", &x.name),
            Manifest::IstioGateway(x) => ("Gateway", &x.name),
            Manifest::ServiceEntry(x) => ("ServiceEntry", &x.name),
            Manifest::AuthorizationPolicy(x) => ("AuthorizationPolicy", &x.name),
            Manifest::RequestAuthentication(x) => ("RequestAuthentication", &x.name),
        }
    }
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
    pub(crate) fn extend(&mut self, other: Manifests) {
        self.items.extend(other.items);
        self.warnings.extend(other.warnings);
    }
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
        "HTTPRoute" => Manifest::GatewayHttpRoute(gateway_http_route(doc, spec?, name, namespace)?),
        // The Gateway API's `Gateway` has another group; only Istio's is read here.
        "Gateway" if is_istio_networking(map) => {
            Manifest::IstioGateway(istio_gateway(doc, spec?, name, namespace)?)
        }
        "ServiceEntry" => Manifest::ServiceEntry(service_entry(doc, spec?, name, namespace)?),
        "AuthorizationPolicy" => {
            match authorization::authorization_policy(doc, spec?, name, namespace)? {
                Some(p) => Manifest::AuthorizationPolicy(p),
                None => return Ok(None),
            }
        }
        "RequestAuthentication" => {
            match request_authentication::request_authentication(doc, spec?, name, namespace)? {
                Some(p) => Manifest::RequestAuthentication(p),
                None => return Ok(None),
            }
        }
        other => {
            doc.warn(format!("kind `{other}` is not simulated; document ignored"));
            return Ok(None);
        }
    }))
}

/// Whether the document's `apiVersion` is Istio's `networking.istio.io` group.
fn is_istio_networking(map: &serde_json::Map<String, Value>) -> bool {
    map.get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("networking.istio.io/"))
}

#[cfg(test)]
mod tests {
    use super::reader::parse_quantity_milli;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity_milli("900m"), Some(900));
        assert_eq!(parse_quantity_milli("1"), Some(1000));
        assert_eq!(parse_quantity_milli("x"), None);
    }
}
