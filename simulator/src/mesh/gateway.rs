//! Ingress: client workloads whose requests enter the mesh through an Istio ingress gateway
//! ([`ClientConfig::gateway`](super::ClientConfig::gateway)). Such a client is the gateway's
//! Envoy: it sends as a sidecar does, with its own Envoy clusters (connection pools, outlier
//! detection, balancing) and its own `reporter="source"` telemetry under its workload name, but
//! it routes by the VirtualServices bound to its Gateway (`gateways: [name]`), not by those of
//! the mesh. As in Istio, a VirtualService without `gateways` is the mesh's only; one bound to
//! gateways applies at them only, unless it lists `mesh` too; a gateway no VirtualService
//! routes answers 404 `NR`.
//!
//! Simplified: a gateway client reaches the one service it is configured for (a bound route to
//! another service is warned about and dropped, as the sidecars' are); a Gateway's server
//! hosts and ports are not matched against the request's authority (every bound
//! VirtualService applies, the last one applied wins); the hop from outside the cluster to the
//! gateway is not timed.

use super::{ClientId, Mesh, RuleId};
use crate::manifest::VirtualService;

/// The routes of a client entering through a gateway.
#[derive(Clone, Debug, Default)]
pub(super) struct Ingress {
    /// The Istio Gateway's `metadata.name`.
    pub(super) gateway: String,
    /// The rules of the VirtualServices bound to it; none until one is applied (404 `NR`).
    pub(super) rules: Vec<RuleId>,
}

/// Whether a VirtualService's `gateways` entry names the Gateway `name`: written as `name`,
/// `namespace/name` or `name.namespace.svc.cluster.local` (namespaces are not compared).
pub(super) fn names_gateway(entry: &str, name: &str) -> bool {
    let short = entry.rsplit('/').next().unwrap_or(entry);
    short == name || short.split('.').next() == Some(name)
}

impl Mesh {
    /// Installs `vs`'s routes on the clients entering through a gateway it is bound to.
    pub(super) fn apply_gateway_routes(&mut self, vs: &VirtualService, warnings: &mut Vec<String>) {
        let bound: Vec<ClientId> = (0..self.clients.len() as u32)
            .map(ClientId)
            .filter(|&c| {
                self.clients[c].ingress.as_ref().is_some_and(|i| {
                    vs.gateways
                        .iter()
                        .any(|g| g != "mesh" && names_gateway(g, &i.gateway))
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
            let (rules, by_host, _) = self.compile_http_routes(vs, s, warnings);
            let mut ids = Vec::with_capacity(rules.len());
            for r in rules {
                ids.push(RuleId(self.rules.len() as u32));
                self.rules.push(r);
            }
            if let Some(i) = self.clients[c].ingress.as_mut() {
                i.rules = ids;
            }
            // The gateway's clusters for versions named by their own host take that host's
            // policy, as the sidecars' do.
            let mut routed = self.services[s].host_routed.clone();
            routed.extend(by_host);
            self.set_host_routed(s, routed);
            // The client's cached rule per header profile is stale now.
            self.clients[c].cache_epoch = None;
        }
    }

    /// Every gateway back to no route: the routing objects in effect are applied after.
    pub(super) fn reset_gateway_routes(&mut self) {
        for cl in &mut self.clients {
            if let Some(i) = cl.ingress.as_mut() {
                i.rules.clear();
                cl.cache_epoch = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names_gateway;

    #[test]
    fn a_gateway_is_named_short_by_namespace_or_by_its_service_name() {
        assert!(names_gateway("public", "public"));
        assert!(names_gateway("ingress/public", "public"));
        assert!(names_gateway("public.ingress.svc.cluster.local", "public"));
        assert!(!names_gateway("ingress/private", "public"));
        assert!(!names_gateway("mesh", "public"));
    }
}
