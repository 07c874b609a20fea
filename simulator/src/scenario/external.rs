//! `external`: dependencies outside the mesh, as a ServiceEntry with `location: MESH_EXTERNAL`
//! declares them to Istio. Each is a host the scenario's versions may `call`, with its own
//! latency and errors; the ServiceEntry naming it gives its endpoints (`resolution`,
//! `endpoints`). In the mesh it is a service whose endpoints have no sidecar: calls leave the
//! caller's sidecar in plaintext (no mTLS), only the caller's proxy reports them
//! (`reporter="source"`, the destination service the host, its workload `unknown`), and the
//! routes and DestinationRules written for the host apply as Istio applies them.

use super::{Context, ScenarioError, ServiceModel, raw};
use crate::manifest::{Location, Manifest, Manifests, Resolution, ServiceEntry};

/// The version an external host's endpoints stand for.
pub(crate) const EXTERNAL_VERSION: &str = "external";

/// Requests an external endpoint serves at once unless the scenario says: an external API is
/// rarely the scenario's bottleneck, its latency is.
const DEFAULT_WORKERS: u32 = 1000;

/// Protocols for which Istio's sidecar sees requests (and reports `istio_requests_total`); a
/// port without a protocol is sniffed, so HTTP to it is seen as HTTP too.
const HTTP_PROTOCOLS: [&str; 3] = ["HTTP", "HTTP2", "GRPC"];

impl Context {
    /// The external hosts as services of one version each (their endpoints counted once the
    /// manifests are read: [`Context::resolve_externals`]).
    pub(super) fn externals(
        &mut self,
        list: &[raw::External],
    ) -> Result<Vec<ServiceModel>, ScenarioError> {
        let mut out: Vec<ServiceModel> = Vec::with_capacity(list.len());
        for (i, e) in list.iter().enumerate() {
            let field = format!("external[{i}]");
            let host = e.host.trim();
            if host.is_empty() || host.contains(['/', ' ', '*']) {
                return Err(self.error(
                    &format!("{field}.host"),
                    format!("`{}` is not a host name such as `api.example.com`", e.host),
                ));
            }
            if out.iter().any(|s| s.name == host) {
                return Err(self.error(
                    &format!("{field}.host"),
                    format!("`{host}` is listed twice"),
                ));
            }
            let a = &e.answers;
            let outside = [
                (
                    "pods",
                    a.pods.is_some(),
                    "its endpoints are the ServiceEntry's",
                ),
                ("sidecar", a.sidecar.is_some(), "it has none"),
                ("labels", a.labels.is_some(), "it has no pods"),
                (
                    "service_account",
                    a.service_account.is_some(),
                    "it has no mesh identity",
                ),
                (
                    "calls",
                    a.calls.is_some(),
                    "what it calls is outside the mesh",
                ),
                ("proxy", a.proxy.is_some(), "it has no sidecar"),
            ];
            if let Some((key, _, why)) = outside.iter().find(|k| k.1) {
                return Err(self.error(
                    &format!("{field}.{key}"),
                    format!("does not apply to a host outside the mesh: {why}"),
                ));
            }
            let written = raw::Version {
                workers: Some(a.workers.unwrap_or(DEFAULT_WORKERS)),
                sidecar: Some(false),
                ..a.clone()
            };
            let version = self.version(&field, &written, None, 0)?;
            out.push(ServiceModel {
                name: host.to_string(),
                versions: vec![(EXTERNAL_VERSION.into(), version)],
            });
        }
        Ok(out)
    }

    /// Each external host needs a MESH_EXTERNAL ServiceEntry among the manifests, which gives
    /// its endpoints: the `endpoints` listed (STATIC, DNS), else one address (the host's DNS
    /// answer, or the original destination with `resolution: NONE`).
    pub(super) fn resolve_externals(
        &mut self,
        externals: &mut [ServiceModel],
        services: &[ServiceModel],
        manifests: &Manifests,
    ) -> Result<(), ScenarioError> {
        let entries: Vec<&ServiceEntry> = manifests
            .items
            .iter()
            .filter_map(|m| match m {
                Manifest::ServiceEntry(se) => Some(se),
                _ => None,
            })
            .collect();
        for (i, ext) in externals.iter_mut().enumerate() {
            let field = format!("external[{i}].host");
            let host = ext.name.clone();
            if services.iter().any(|s| s.name == host) {
                return Err(self.error(
                    &field,
                    format!("`{host}` is a service of the scenario, not an external host"),
                ));
            }
            let Some(se) = entries.iter().find(|se| se.names(&host)) else {
                return Err(self.error(
                    &field,
                    format!(
                        "no ServiceEntry among the manifests names `{host}`: declare it with one (hosts: [{host}], location: MESH_EXTERNAL), as a mesh that lets only registered hosts out requires"
                    ),
                ));
            };
            if se.location == Location::MeshInternal {
                return Err(self.error(
                    &field,
                    format!(
                        "ServiceEntry {} puts `{host}` inside the mesh (MESH_INTERNAL): a workload of the mesh is a service of `services:`",
                        se.name
                    ),
                ));
            }
            let endpoints = match se.resolution {
                Resolution::Static => se.endpoints,
                Resolution::Dns if se.endpoints > 0 => se.endpoints,
                _ => 1,
            };
            if endpoints > 1000 {
                return Err(self.error(
                    &field,
                    format!(
                        "ServiceEntry {} lists {endpoints} endpoints; at most 1000 are simulated",
                        se.name
                    ),
                ));
            }
            ext.versions[0].1.pods = endpoints as u32;
            if !se.ports.is_empty()
                && !se
                    .ports
                    .iter()
                    .any(|p| p.protocol.is_empty() || HTTP_PROTOCOLS.contains(&p.protocol.as_str()))
            {
                self.warnings.push(format!(
                    "ServiceEntry {}: no HTTP port, so on a cluster the sidecar sees only a TCP or TLS stream to `{host}` and reports no request metrics for it; the simulator reports its calls as HTTP",
                    se.name
                ));
            }
        }
        Ok(())
    }
}
