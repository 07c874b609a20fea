//! Ingress: client workloads whose requests enter the mesh through an Istio ingress gateway
//! ([`ClientConfig::gateway`](super::ClientConfig::gateway)). Such a client is the gateway's
//! Envoy: it sends as a sidecar does, with its own Envoy clusters (connection pools, outlier
//! detection, balancing) and its own `reporter="source"` telemetry under its workload name, but
//! it routes by the VirtualServices bound to its Gateway (`gateways: [name]`), not by those of
//! the mesh. As in Istio, a VirtualService without `gateways` is the mesh's only; one bound to
//! gateways applies at them only, unless it lists `mesh` too; a gateway no VirtualService
//! routes answers 404 `NR`.
//!
//! A VirtualService's `gateways` entry is `name` (the Gateway of the VirtualService's own
//! namespace) or `namespace/name`; a match block's own `gateways` narrow the VirtualService's,
//! so the block applies at the gateways it names only (`mesh`: at the sidecars only). Several
//! VirtualServices may be bound to one gateway, each for its own hosts: the gateway keeps the
//! routes of each (a VirtualService applied again replaces its own).
//!
//! Simplified: a gateway client reaches the one service it is configured for, so a bound
//! VirtualService none of whose routes leads there serves hosts the client does not ask for and
//! is left out (one routing to it and elsewhere has the other destinations warned about and
//! dropped, as the sidecars' are); a Gateway's server hosts and ports are not matched against
//! the request's authority (the routes of the bound VirtualServices are walked in the order
//! they were applied); the hop from outside the cluster to the gateway is not timed.

use super::{ClientId, Mesh, RuleId};
use crate::manifest::{IstioGateway, VirtualService};

/// The routes of a client entering through a gateway.
#[derive(Clone, Debug, Default)]
pub(super) struct Ingress {
    /// The Istio Gateway's `metadata.name`.
    pub(super) gateway: String,
    /// Its `metadata.namespace` (the mesh's namespace until the Gateway is applied).
    pub(super) namespace: String,
    /// Per bound VirtualService (`namespace/name`), its rules towards the client's service.
    bound: Vec<(String, Vec<RuleId>)>,
    /// The rules the gateway walks: every bound VirtualService's, in the order applied; none
    /// until one is applied (404 `NR`).
    pub(super) rules: Vec<RuleId>,
    /// Bumped at each change of `rules`, telling apart the configurations pushed to the
    /// gateway's proxy (propagation.rs).
    pub(super) epoch: u32,
}

impl Ingress {
    pub(super) fn new(gateway: String, namespace: String) -> Self {
        Ingress {
            gateway,
            namespace,
            ..Default::default()
        }
    }

    fn set_rules(&mut self) {
        self.rules = self
            .bound
            .iter()
            .flat_map(|(_, r)| r.iter().copied())
            .collect();
        self.epoch = self.epoch.wrapping_add(1);
    }
}

/// Whether a VirtualService's `gateways` entry names the Gateway `name` of `namespace`: written
/// as `name` (the VirtualService's namespace, `vs_namespace`), `namespace/name` or
/// `name.namespace.svc.cluster.local`.
pub(super) fn names_gateway(entry: &str, vs_namespace: &str, name: &str, namespace: &str) -> bool {
    if entry == "mesh" {
        return false;
    }
    let (ns, short) = match entry.split_once('/') {
        Some((ns, short)) => (ns, short),
        None => match entry.split_once('.') {
            Some((short, rest)) => (rest.split('.').next().unwrap_or(rest), short),
            None => (vs_namespace, entry),
        },
    };
    short == name && ns == namespace
}

/// The service account of a gateway's proxy not given one: `<workload>-service-account`, as
/// Istio's gateway chart names it (so its principal is e.g.
/// `cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account`).
pub(super) fn gateway_service_account(cc: &super::ClientConfig) -> Option<String> {
    cc.gateway
        .as_ref()
        .map(|_| format!("{}-service-account", cc.name))
}

impl Mesh {
    /// An Istio Gateway: the clients entering through it learn its namespace.
    pub(super) fn apply_istio_gateway(&mut self, g: &IstioGateway) {
        let ns = g.namespace.as_deref().unwrap_or(&self.default_namespace);
        for cl in &mut self.clients {
            if let Some(i) = cl.ingress.as_mut().filter(|i| i.gateway == g.name) {
                i.namespace = ns.to_string();
            }
        }
    }

    /// Installs `vs`'s routes on the clients entering through a gateway it is bound to.
    pub(super) fn apply_gateway_routes(&mut self, vs: &VirtualService, warnings: &mut Vec<String>) {
        let vs_ns = &vs
            .namespace
            .clone()
            .unwrap_or_else(|| self.default_namespace.clone());
        let key = format!("{vs_ns}/{}", vs.name);
        let bound: Vec<ClientId> = (0..self.clients.len() as u32)
            .map(ClientId)
            .filter(|&c| {
                self.clients[c].ingress.as_ref().is_some_and(|i| {
                    vs.gateways
                        .iter()
                        .any(|g| names_gateway(g, vs_ns, &i.gateway, &i.namespace))
                })
            })
            .collect();
        if bound.is_empty() && !vs.binds_mesh() {
            warnings.push(format!(
                "VirtualService {}: bound to gateways {} and not to `mesh`, so no sidecar applies it, and no traffic of the scenario enters through those gateways",
                vs.name,
                vs.gateways.join(", ")
            ));
        }
        for c in bound {
            let s = self.clients[c].service;
            let i = self.clients[c].ingress.as_ref().expect("a gateway client");
            let here = vs.at(|g| names_gateway(g, vs_ns, &i.gateway, &i.namespace));
            let mut own = Vec::new();
            let (rules, by_host, _) = self.compile_http_routes(&here, s, &mut own);
            // A VirtualService leading nowhere the client goes serves other hosts.
            let reaches = rules.iter().any(|r| {
                !r.dests.is_empty() || r.whole > 0 || !r.void.is_empty() || r.answer.is_some()
            });
            let mut ids = Vec::with_capacity(rules.len());
            if reaches {
                warnings.extend(own);
                for r in rules {
                    ids.push(RuleId(self.rules.len() as u32));
                    self.rules.push(r);
                }
            }
            let i = self.clients[c].ingress.as_mut().expect("a gateway client");
            match i.bound.iter_mut().find(|(k, _)| *k == key) {
                Some((_, r)) => *r = ids,
                None if reaches => i.bound.push((key.clone(), ids)),
                None => continue,
            }
            i.set_rules();
            // The gateway's clusters for versions named by their own host take that host's
            // policy, as the sidecars' do.
            let mut routed = self.services[s].host_routed.clone();
            routed.extend(by_host);
            self.set_host_routed(s, routed);
            self.gateway_routes_changed(c);
        }
    }

    /// Every gateway back to no route: the routing objects in effect are applied after.
    pub(super) fn reset_gateway_routes(&mut self) {
        for c in 0..self.clients.len() as u32 {
            let c = ClientId(c);
            if let Some(i) = self.clients[c].ingress.as_mut() {
                i.bound.clear();
                i.set_rules();
                self.gateway_routes_changed(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names_gateway;

    #[test]
    fn a_gateway_is_named_in_the_virtual_services_namespace_by_namespace_or_by_its_service_name() {
        let named = |entry| names_gateway(entry, "shop", "public", "ingress");
        assert!(named("ingress/public"));
        assert!(named("public.ingress.svc.cluster.local"));
        assert!(
            !named("public"),
            "a bare name is a Gateway of the VirtualService's namespace"
        );
        assert!(names_gateway("public", "ingress", "public", "ingress"));
        assert!(!named("shop/public"));
        assert!(!named("ingress/private"));
        assert!(!named("mesh"));
    }
}
