//! Traffic entering through an ingress gateway: a `traffic` entry with `gateway: NAME` is the
//! proxy of the Istio Gateway `NAME` (its `client` names the gateway's workload, e.g.
//! `istio-ingressgateway`, in `istio-system` unless `namespace` says otherwise): it routes by
//! the VirtualServices bound to that Gateway and reports its requests as `reporter="source"`
//! (see the mesh's `gateway.rs`).

use super::{Client, Context, ScenarioError};
use crate::manifest::{Manifest, Manifests};

/// Where Istio installs its ingress gateway.
pub(super) const GATEWAY_NAMESPACE: &str = "istio-system";

impl Context {
    /// Each gateway a client enters through is an Istio Gateway of the manifests, entered by
    /// one client (one proxy), which is a proxy (not `sidecar: false`) and not a load tester.
    /// Its namespace defaults to Istio's.
    pub(super) fn check_ingress(
        &self,
        clients: &mut [Client],
        manifests: &Manifests,
    ) -> Result<(), ScenarioError> {
        for i in 0..clients.len() {
            let c = &clients[i];
            let Some(g) = &c.gateway else { continue };
            let field = format!("traffic[{i}].gateway");
            let declared = manifests
                .items
                .iter()
                .any(|m| matches!(m, Manifest::IstioGateway(x) if &x.name == g));
            if !declared {
                return Err(self.error(
                    &field,
                    format!("no Istio Gateway named `{g}` among the manifests (kind: Gateway, apiVersion: networking.istio.io/v1)"),
                ));
            }
            if !c.sidecar {
                return Err(self.error(
                    &format!("traffic[{i}].sidecar"),
                    "a client entering through a gateway is the gateway's Envoy: it cannot be without a sidecar",
                ));
            }
            if c.load_tester {
                return Err(self.error(
                    &format!("traffic[{i}].target"),
                    "a load tester calls the canary's Service from inside the mesh: drop `gateway` or `target`",
                ));
            }
            if let Some(j) = clients[..i]
                .iter()
                .position(|o| o.gateway.as_ref() == Some(g))
            {
                return Err(self.error(
                    &field,
                    format!("traffic[{j}] enters through `{g}` already: one gateway is one proxy, give its mix of requests as `headers` profiles of one entry"),
                ));
            }
            let c = &mut clients[i];
            c.namespace.get_or_insert_with(|| GATEWAY_NAMESPACE.into());
        }
        Ok(())
    }
}
