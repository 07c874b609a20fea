//! Istio's `ServiceEntry`: hosts the mesh's registry does not hold, most often a dependency
//! outside the mesh (`location: MESH_EXTERNAL`), with its ports and how its endpoints are found
//! (`resolution`).

use super::ManifestError;
use super::reader::{Doc, Node, get, idx, join};

/// `spec.location`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// Outside the mesh: no sidecar answers, so no mTLS and no destination telemetry.
    MeshExternal,
    /// Part of the mesh (e.g. VMs with sidecars).
    MeshInternal,
}

/// `spec.resolution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// The connection's original destination address.
    None,
    /// The addresses in `endpoints`.
    Static,
    /// DNS, every address a host resolves to.
    Dns,
    /// DNS, the first address a host resolves to.
    DnsRoundRobin,
    /// DNS through a dynamic forward proxy (wildcard hosts).
    DynamicDns,
}

/// One `spec.ports` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ServiceEntryPort {
    /// `number`.
    pub(crate) number: u32,
    /// `protocol`, upper case (HTTP, HTTPS, HTTP2, GRPC, TLS, TCP, ...); empty when not
    /// written: the sidecar sniffs the protocol of each connection.
    pub(crate) protocol: String,
}

/// The port protocols Istio knows (it compares them case-insensitively and refuses others).
const PROTOCOLS: [&str; 13] = [
    "HTTP",
    "HTTPS",
    "HTTP2",
    "HTTP_PROXY",
    "GRPC",
    "GRPC-WEB",
    "TLS",
    "TCP",
    "UDP",
    "MONGO",
    "REDIS",
    "MYSQL",
    "THRIFT",
];

/// An Istio ServiceEntry.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceEntry {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub(crate) namespace: Option<String>,
    /// `spec.hosts` (a `*.` prefix is a wildcard).
    pub(crate) hosts: Vec<String>,
    /// `spec.ports`.
    pub(crate) ports: Vec<ServiceEntryPort>,
    /// `spec.location` (Istio's default: MESH_EXTERNAL).
    pub(crate) location: Location,
    /// `spec.resolution` (Istio's default: NONE).
    pub(crate) resolution: Resolution,
    /// How many `spec.endpoints` are listed.
    pub(crate) endpoints: usize,
}

impl ServiceEntry {
    /// Whether one of the entry's hosts names `host` (wildcards as Istio matches them).
    pub(crate) fn names(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|h| super::istio_gateway::host_wildcard_matches(h, host))
    }
}

pub(super) fn service_entry(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<ServiceEntry, ManifestError> {
    let s = doc.obj(
        spec,
        "spec",
        &[
            "hosts",
            "addresses",
            "ports",
            "location",
            "resolution",
            "endpoints",
            "workloadSelector",
            "exportTo",
            "subjectAltNames",
        ],
    )?;
    let mut hosts = Vec::new();
    let hl = get(s, "hosts").ok_or_else(|| doc.missing("spec.hosts"))?;
    for (i, v) in doc.list(hl, "spec.hosts")?.iter().enumerate() {
        let p = idx("spec.hosts", i);
        let h = doc.str(Node { v }, &p)?;
        if h == "*" || h.is_empty() {
            // Istio refuses the full wildcard in a ServiceEntry.
            return Err(doc.wrong(&p, "a host name (`*` alone is not allowed)"));
        }
        hosts.push(h);
    }
    if hosts.is_empty() {
        return Err(doc.wrong("spec.hosts", "at least one host"));
    }
    let mut ports = Vec::new();
    if let Some(pl) = get(s, "ports") {
        for (i, v) in doc.list(pl, "spec.ports")?.iter().enumerate() {
            let p = idx("spec.ports", i);
            let m = doc.obj(
                Node { v },
                &p,
                &["number", "protocol", "name", "targetPort"],
            )?;
            let np = join(&p, "number");
            let number = doc.u32(get(m, "number").ok_or_else(|| doc.missing(&np))?, &np)?;
            if !(1..=65535).contains(&number) {
                return Err(doc.wrong(&np, "a port number from 1 to 65535"));
            }
            let pp = join(&p, "protocol");
            // Without a protocol Istio sniffs it per connection (HTTP is seen as HTTP).
            let protocol = match get(m, "protocol") {
                Some(n) => doc.str(n, &pp)?.to_ascii_uppercase(),
                None => String::new(),
            };
            if !protocol.is_empty() && !PROTOCOLS.contains(&protocol.as_str()) {
                return Err(doc.wrong(
                    &pp,
                    "a protocol Istio knows: HTTP, HTTPS, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB, TLS, TCP, UDP, MONGO, REDIS, MYSQL or THRIFT",
                ));
            }
            if ports.iter().any(|q: &ServiceEntryPort| q.number == number) {
                return Err(doc.wrong(&np, "a port number not already defined"));
            }
            ports.push(ServiceEntryPort { number, protocol });
        }
    }
    let location = match get(s, "location") {
        None => Location::MeshExternal,
        Some(n) => match doc.str(n, "spec.location")?.as_str() {
            "MESH_EXTERNAL" => Location::MeshExternal,
            "MESH_INTERNAL" => Location::MeshInternal,
            _ => return Err(doc.wrong("spec.location", "MESH_EXTERNAL or MESH_INTERNAL")),
        },
    };
    let resolution = match get(s, "resolution") {
        None => Resolution::None,
        Some(n) => match doc.str(n, "spec.resolution")?.as_str() {
            "NONE" => Resolution::None,
            "STATIC" => Resolution::Static,
            "DNS" => Resolution::Dns,
            "DNS_ROUND_ROBIN" => Resolution::DnsRoundRobin,
            "DYNAMIC_DNS" => Resolution::DynamicDns,
            _ => {
                return Err(doc.wrong(
                    "spec.resolution",
                    "NONE, STATIC, DNS, DNS_ROUND_ROBIN or DYNAMIC_DNS",
                ));
            }
        },
    };
    let endpoints = match get(s, "endpoints") {
        Some(e) => doc.list(e, "spec.endpoints")?.len(),
        None => 0,
    };
    // Istio's validation (ValidateServiceEntry): no endpoints with NONE, at most one with
    // DNS_ROUND_ROBIN. STATIC without endpoints is valid: a cluster with no endpoint (503 UH).
    if resolution == Resolution::None && endpoints > 0 {
        return Err(doc.wrong(
            "spec.endpoints",
            "no endpoints with `resolution: NONE` (the original destination is used)",
        ));
    }
    if resolution == Resolution::DnsRoundRobin && endpoints > 1 {
        return Err(doc.wrong(
            "spec.endpoints",
            "at most one endpoint with `resolution: DNS_ROUND_ROBIN`",
        ));
    }
    Ok(ServiceEntry {
        name,
        namespace,
        hosts,
        ports,
        location,
        resolution,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::{Location, Resolution};
    use crate::manifest::{Manifest, ManifestError, parse};

    fn entry(spec: &str) -> Result<super::ServiceEntry, ManifestError> {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: payments-api}}\nspec:\n{spec}"
        );
        let m = parse(&yaml)?;
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        match m.items.into_iter().next() {
            Some(Manifest::ServiceEntry(se)) => Ok(se),
            other => panic!("a ServiceEntry: {other:?}"),
        }
    }

    #[test]
    fn an_external_api_entry_reads_hosts_ports_location_and_resolution() {
        let se = entry(
            "  hosts: [api.payments.example.com]\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n  - {number: 443, name: https, protocol: TLS}\n  location: MESH_EXTERNAL\n  resolution: DNS\n",
        )
        .expect("loads");
        assert_eq!(se.location, Location::MeshExternal);
        assert_eq!(se.resolution, Resolution::Dns);
        assert_eq!(se.ports.len(), 2);
        assert_eq!(
            (se.ports[1].number, se.ports[1].protocol.as_str()),
            (443, "TLS")
        );
        assert!(se.names("api.payments.example.com"));
        assert!(!se.names("payments.example.com"));
    }

    #[test]
    fn location_and_resolution_default_as_istio_defaults_them() {
        let se = entry(
            "  hosts: ['*.example.com']\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
        )
        .expect("loads");
        assert_eq!(se.location, Location::MeshExternal);
        assert_eq!(se.resolution, Resolution::None);
        assert!(
            se.names("api.example.com"),
            "a wildcard host names its subdomains"
        );
    }

    #[test]
    fn entries_istio_refuses_are_refused_with_their_field() {
        let field_of = |spec: &str| match entry(spec).unwrap_err() {
            ManifestError::WrongType { field, .. } | ManifestError::Missing { field, .. } => field,
            e => panic!("{e}"),
        };
        assert_eq!(field_of("  hosts: ['*']\n"), "spec.hosts[0]");
        assert_eq!(
            field_of("  hosts: [a.example.com]\n  ports: [{number: 80, protocol: HTTPX}]\n"),
            "spec.ports[0].protocol"
        );
        assert_eq!(field_of("  ports: []\n"), "spec.hosts");
        assert_eq!(
            field_of("  hosts: [a.example.com]\n  location: OUTSIDE\n"),
            "spec.location"
        );
        assert_eq!(
            field_of(
                "  hosts: [a.example.com]\n  resolution: NONE\n  endpoints: [{address: 1.2.3.4}]\n"
            ),
            "spec.endpoints"
        );
        assert_eq!(
            field_of(
                "  hosts: [a.example.com]\n  ports: [{number: 80, protocol: HTTP}, {number: 80, protocol: TCP}]\n"
            ),
            "spec.ports[1].number"
        );
    }
}
