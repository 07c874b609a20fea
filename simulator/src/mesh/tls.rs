//! Mutual TLS as Istio and Linkerd do it: PeerAuthentication resolves each workload's server mode
//! (workload selector, then namespace, then the mesh-wide policy in `istio-system`), the client side
//! follows the DestinationRule's TLS mode or Istio's auto-mTLS, and a connection's handshake fails on
//! a mode mismatch (a STRICT server resets plaintext, a plaintext server cannot speak TLS) or on an
//! expired certificate. Certificates rotate before they expire, as the Istio agent and Linkerd's
//! identity controller renew them; a workload whose rotation stops lets its certificate expire.

use super::Mesh;
use super::event::Ev;
use super::routes::labels_match;
use crate::engine::SimTime;
use crate::manifest::{MtlsMode, PeerAuthentication};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientTls {
    Auto,
    Mutual,
    Plain,
}

pub(super) struct Cert {
    pub(super) expires_at: SimTime,
    pub(super) rotating: bool,
}

impl Mesh {
    pub(super) fn schedule_rotation(&mut self, cert: u32) {
        let c = &self.certs_cfg;
        let jitter = 1.0 + c.jitter * (2.0 * self.cert_rng.uniform() - 1.0);
        let after = (c.ttl as f64 * c.grace_ratio * jitter).max(1.0) as SimTime;
        self.q.schedule_in(after, Ev::CertRotate(cert));
    }

    pub(super) fn resolve_peer_auth(&mut self) {
        for v in 0..self.versions.len() {
            let ns = self.services[self.versions[v].service as usize]
                .namespace
                .clone();
            let labels = &self.versions[v].labels;
            let home = self.default_namespace.as_str();
            let find = |pred: &dyn Fn(&PeerAuthentication) -> bool| {
                self.peer_auth
                    .iter()
                    .rev()
                    .find(|p| pred(p) && p.mode != MtlsMode::Unset)
                    .map(|p| p.mode)
            };
            let workload = find(&|p| {
                p.namespace.as_deref().unwrap_or(home) == ns
                    && p.selector.as_ref().is_some_and(|s| labels_match(s, labels))
            });
            let namespace =
                find(&|p| p.namespace.as_deref().unwrap_or(home) == ns && p.selector.is_none());
            let mesh =
                find(&|p| p.namespace.as_deref() == Some("istio-system") && p.selector.is_none());
            self.versions[v].server_mode =
                workload.or(namespace).or(mesh).unwrap_or(self.default_mtls);
        }
    }
}
