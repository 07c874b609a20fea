//! Hosts outside the mesh ([`ServiceConfig::external`]), as an Istio ServiceEntry with
//! `location: MESH_EXTERNAL` declares them. Nothing special happens on the request path: the
//! endpoints have no sidecar, so a caller's proxy speaks plaintext to them (auto mTLS finds no
//! peer certificate; a PeerAuthentication has no proxy to enforce it) and no destination proxy
//! reports their requests. What differs is how the callers' proxies label them: Istio's stats
//! filter gets no peer metadata from an external endpoint, so every workload label of the
//! destination is `unknown`, and the destination service is the host as the ServiceEntry
//! writes it, not a cluster-local name.
//!
//! Simplified: a request to an external endpoint still crosses the network as between pods
//! (the scenario's latency for the host includes its distance); TLS the application itself
//! originates (an HTTPS port) is reported as HTTP requests, where Istio would see a TCP stream.

use super::config::{ServiceConfig, VersionConfig};
use crate::telemetry::DestLabels;

/// The `destination_service` label of a service's requests: the host for an external one,
/// else the cluster-local name.
pub(super) fn service_label(sc: &ServiceConfig, namespace: &str) -> String {
    if sc.external {
        sc.name.clone()
    } else {
        format!("{}.{namespace}.svc.cluster.local", sc.name)
    }
}

/// The labels the callers' proxies give an external host's endpoints; refuses an endpoint
/// with a sidecar (an external host has none).
pub(super) fn endpoint_labels(
    sc: &ServiceConfig,
    vc: &VersionConfig,
) -> Result<DestLabels, String> {
    if vc.sidecar {
        return Err("an external host's endpoints have no sidecar (set `sidecar` false)".into());
    }
    let mut labels = DestLabels::unknown(sc.name.clone());
    // It answers, so its requests are the version's (the figures count them), though no
    // peer metadata names it.
    labels.peer = true;
    Ok(labels)
}
