//! Istio's `Gateway` (networking.istio.io): the proxy it configures (a workload selector, as
//! `istio: ingressgateway` picks Istio's ingress gateway pods) and the servers it opens, each a
//! port with the hosts it accepts. VirtualServices bind to it by name in their `gateways`.

use std::collections::BTreeMap;

use super::ManifestError;
use super::reader::{Doc, Node, get, idx, join};

/// One `spec.servers` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GatewayServer {
    /// `port.number`.
    pub(crate) port: u32,
    /// `port.protocol` (upper case as Istio compares it: HTTP, HTTPS, HTTP2, GRPC, TLS, TCP).
    pub(crate) protocol: String,
    /// `hosts`: `*`, `example.com`, `*.example.com`, optionally `namespace/` in front.
    pub(crate) hosts: Vec<String>,
}

/// An Istio Gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct IstioGateway {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub(crate) namespace: Option<String>,
    /// `spec.selector`: the labels of the gateway proxy's pods.
    pub(crate) selector: BTreeMap<String, String>,
    /// `spec.servers`.
    pub(crate) servers: Vec<GatewayServer>,
}

/// Istio's host wildcard: `*` is every host, `*.example.com` every host ending in
/// `.example.com`, anything else itself (case-insensitively, as DNS names compare).
pub(crate) fn host_wildcard_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match p.strip_prefix('*') {
        Some(suffix) => h.ends_with(suffix),
        None => p == h,
    }
}

pub(super) fn istio_gateway(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<IstioGateway, ManifestError> {
    let s = doc.obj(spec, "spec", &["selector", "servers"])?;
    let selector = match get(s, "selector") {
        Some(n) => doc.labels(n, "spec.selector")?,
        None => BTreeMap::new(),
    };
    let mut servers = Vec::new();
    let list = get(s, "servers").ok_or_else(|| doc.missing("spec.servers"))?;
    for (i, v) in doc.list(list, "spec.servers")?.iter().enumerate() {
        servers.push(server(doc, Node { v }, &idx("spec.servers", i))?);
    }
    if servers.is_empty() {
        // Istio's validation: "gateway must have at least one server".
        return Err(doc.wrong("spec.servers", "at least one server"));
    }
    Ok(IstioGateway {
        name,
        namespace,
        selector,
        servers,
    })
}

fn server(doc: &mut Doc<'_>, n: Node<'_>, path: &str) -> Result<GatewayServer, ManifestError> {
    let m = doc.obj(
        n,
        path,
        &["port", "hosts", "tls", "name", "bind", "defaultEndpoint"],
    )?;
    let pp = join(path, "port");
    let port = doc.obj(
        get(m, "port").ok_or_else(|| doc.missing(&pp))?,
        &pp,
        &["number", "name", "protocol", "targetPort"],
    )?;
    let np = join(&pp, "number");
    let number = doc.u32(get(port, "number").ok_or_else(|| doc.missing(&np))?, &np)?;
    if !(1..=65535).contains(&number) {
        return Err(doc.wrong(&np, "a port number from 1 to 65535"));
    }
    let prp = join(&pp, "protocol");
    let protocol = doc
        .str(
            get(port, "protocol").ok_or_else(|| doc.missing(&prp))?,
            &prp,
        )?
        .to_ascii_uppercase();
    let hp = join(path, "hosts");
    let mut hosts = Vec::new();
    for (i, v) in doc
        .list(get(m, "hosts").ok_or_else(|| doc.missing(&hp))?, &hp)?
        .iter()
        .enumerate()
    {
        hosts.push(doc.str(Node { v }, &idx(&hp, i))?);
    }
    if hosts.is_empty() {
        return Err(doc.wrong(&hp, "at least one host (`*` for any)"));
    }
    if get(m, "tls").is_some() {
        doc.warn(format!(
            "`{path}.tls` is not simulated: the server is taken as plaintext from the outside"
        ));
    }
    Ok(GatewayServer {
        port: number,
        protocol,
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::host_wildcard_matches;
    use crate::manifest::{Manifest, ManifestError, parse};

    /// Istio's bookinfo ingress as its samples write it: a Gateway on the default ingress
    /// gateway's pods and a VirtualService bound to it alone.
    const BOOKINFO_INGRESS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"#;

    #[test]
    fn the_bookinfo_ingress_loads_without_a_warning() {
        let m = parse(BOOKINFO_INGRESS).expect("parses");
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let Manifest::IstioGateway(g) = &m.items[0] else {
            panic!("a Gateway first: {:?}", m.items[0]);
        };
        assert_eq!(
            g.selector.get("istio").map(String::as_str),
            Some("ingressgateway")
        );
        assert_eq!(g.servers[0].port, 8080);
        assert_eq!(g.servers[0].protocol, "HTTP");
        assert_eq!(g.servers[0].hosts, ["*"]);
        let Manifest::VirtualService(vs) = &m.items[1] else {
            panic!("a VirtualService second");
        };
        assert_eq!(vs.gateways, ["bookinfo-gateway"]);
        assert!(
            !vs.binds_mesh(),
            "bound to the gateway alone, not to `mesh`"
        );
    }

    #[test]
    fn a_gateway_api_gateway_is_not_read_as_istios() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: istio\n  listeners: []\n";
        let m = parse(yaml).expect("parses");
        assert!(m.items.is_empty());
        assert!(m.warnings[0].contains("not simulated"), "{:?}", m.warnings);
    }

    #[test]
    fn a_gateway_without_servers_or_with_a_bad_port_is_refused_with_its_field() {
        let head = "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  selector: {istio: ingressgateway}\n";
        let none = parse(&format!("{head}  servers: []\n")).unwrap_err();
        assert!(
            matches!(&none, ManifestError::WrongType { field, .. } if field == "spec.servers"),
            "{none}"
        );
        let port = parse(&format!(
            "{head}  servers:\n  - port: {{number: 70000, name: http, protocol: HTTP}}\n    hosts: ['*']\n"
        ))
        .unwrap_err();
        assert!(
            matches!(&port, ManifestError::WrongType { field, .. } if field == "spec.servers[0].port.number"),
            "{port}"
        );
        let hosts = parse(&format!(
            "{head}  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n"
        ))
        .unwrap_err();
        assert!(
            matches!(&hosts, ManifestError::Missing { field, .. } if field == "spec.servers[0].hosts"),
            "{hosts}"
        );
    }

    #[test]
    fn server_hosts_match_as_istio_wildcards() {
        assert!(host_wildcard_matches("*", "bookinfo.example.com"));
        assert!(host_wildcard_matches(
            "*.example.com",
            "bookinfo.example.com"
        ));
        assert!(!host_wildcard_matches("*.example.com", "example.org"));
        assert!(host_wildcard_matches(
            "Bookinfo.example.com",
            "bookinfo.EXAMPLE.com"
        ));
        assert!(!host_wildcard_matches(
            "bookinfo.example.com",
            "reviews.example.com"
        ));
    }
}
