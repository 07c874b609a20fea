//! Mutual TLS as Istio and Linkerd do it: PeerAuthentication resolves each workload's server mode
//! (workload selector, then namespace, then the mesh-wide policy in `istio-system`), the client side
//! follows the DestinationRule's TLS mode or Istio's auto-mTLS, and a connection's handshake fails on
//! a mode mismatch (a STRICT server resets plaintext, a plaintext server cannot speak TLS) or on an
//! expired certificate. Certificates rotate before they expire, as the Istio agent and Linkerd's
//! identity controller renew them; a workload whose rotation stops lets its certificate expire.

use super::config::{DataPlane, NetworkConfig};
use super::event::Ev;
use super::routes::labels_match;
use super::{CertId, ClientId, Mesh, VersionId};
use crate::engine::SimTime;
use crate::manifest::{MtlsMode, PeerAuthentication};
use crate::telemetry::flags;

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

/// What the two ends of a new connection bring to its TLS negotiation.
pub(super) struct Peers {
    pub(super) data_plane: DataPlane,
    pub(super) client_sidecar: bool,
    /// The DestinationRule's client TLS mode for this cluster.
    pub(super) client_tls: ClientTls,
    pub(super) server_sidecar: bool,
    /// The server sidecar's mode as PeerAuthentication resolved it.
    pub(super) server_mode: MtlsMode,
    /// Neither side's certificate has expired.
    pub(super) certs_valid: bool,
}

/// How the connection set-up ends, counted from the connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Handshake {
    /// Usable after this long; `mutual` when the connection is mTLS.
    Ready { after: SimTime, mutual: bool },
    /// Fails after this long with these response flags.
    Fails { after: SimTime, flags: u16 },
}

/// The TCP and TLS part of opening a connection to a live pod. Auto mTLS (Istio) speaks mTLS
/// when both ends have a sidecar and the server does not disable it; Linkerd's proxies always
/// do, and accept plaintext too (permissive). A STRICT server resets plaintext after the
/// client's first bytes (503 `UC`); a plaintext server fails the client's TLS hello, and an
/// expired certificate fails the handshake after the CPU for one side (503 `UF`).
pub(super) fn handshake(p: &Peers, net: &NetworkConfig) -> Handshake {
    let rtt = 2 * net.one_way;
    let mutual = match p.client_tls {
        ClientTls::Mutual => p.client_sidecar,
        ClientTls::Plain => false,
        ClientTls::Auto => {
            p.client_sidecar
                && p.server_sidecar
                && (p.data_plane == DataPlane::Linkerd || p.server_mode != MtlsMode::Disable)
        }
    };
    let server_mode = if !p.server_sidecar {
        MtlsMode::Disable
    } else if p.data_plane == DataPlane::Linkerd {
        MtlsMode::Permissive
    } else {
        p.server_mode
    };
    let fails = |after, flags| Handshake::Fails { after, flags };
    if !mutual && server_mode == MtlsMode::Strict {
        fails(rtt + rtt / 2, flags::UC)
    } else if mutual && server_mode == MtlsMode::Disable {
        fails(2 * rtt, flags::UF)
    } else if mutual && !p.certs_valid {
        fails(2 * rtt + net.handshake_cpu, flags::UF)
    } else if mutual {
        Handshake::Ready {
            after: 2 * rtt + 2 * net.handshake_cpu,
            mutual,
        }
    } else {
        Handshake::Ready { after: rtt, mutual }
    }
}

impl Mesh {
    /// A client workload's certificate.
    pub(super) fn client_cert(&self, c: ClientId) -> CertId {
        CertId(c.0)
    }

    /// A version's certificate (its pods share one, as they share a service account).
    pub(super) fn version_cert(&self, v: VersionId) -> CertId {
        CertId(self.clients.len() as u32 + v.0)
    }

    pub(super) fn on_cert_rotate(&mut self, cert: CertId) {
        if self.certs[cert].rotating {
            self.stats.cert_rotations += 1;
            self.certs[cert].expires_at = self.now().saturating_add(self.certs_cfg.ttl);
            self.schedule_rotation(cert);
        }
    }

    pub(super) fn schedule_rotation(&mut self, cert: CertId) {
        let c = &self.certs_cfg;
        let jitter = 1.0 + c.jitter * (2.0 * self.cert_rng.uniform() - 1.0);
        let after = (c.ttl as f64 * c.grace_ratio * jitter).max(1.0) as SimTime;
        self.q.schedule_in(after, Ev::CertRotate { cert });
    }

    pub(super) fn resolve_peer_auth(&mut self) {
        for v in (0..self.versions.len() as u32).map(VersionId) {
            let ns = self.services[self.versions[v].service].namespace.clone();
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

impl Mesh {
    /// A PeerAuthentication: every workload's server mode is resolved again.
    pub(super) fn apply_peer_authentication(&mut self, pa: &PeerAuthentication) {
        self.peer_auth.push(pa.clone());
        let before: Vec<MtlsMode> = self.versions.iter().map(|v| v.server_mode).collect();
        self.resolve_peer_auth();
        // A sidecar whose mTLS mode changes gets a new inbound listener, and Envoy
        // drains the old one's connections: clients reconnect under the new mode.
        for (v, mode) in before.into_iter().enumerate() {
            let v = VersionId(v as u32);
            if self.versions[v].server_mode != mode {
                self.drain_connections_to(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn istio_peers(client_tls: ClientTls, server_mode: MtlsMode) -> Peers {
        Peers {
            data_plane: DataPlane::Istio,
            client_sidecar: true,
            client_tls,
            server_sidecar: true,
            server_mode,
            certs_valid: true,
        }
    }

    #[test]
    fn strict_server_resets_a_plaintext_client_after_one_and_a_half_round_trips() {
        let net = NetworkConfig::default();
        let rtt = 2 * net.one_way;
        let p = istio_peers(ClientTls::Plain, MtlsMode::Strict);
        assert_eq!(
            handshake(&p, &net),
            Handshake::Fails {
                after: rtt + rtt / 2,
                flags: flags::UC
            }
        );
    }

    #[test]
    fn auto_mtls_costs_two_round_trips_and_both_sides_handshake_cpu() {
        let net = NetworkConfig::default();
        let p = istio_peers(ClientTls::Auto, MtlsMode::Permissive);
        assert_eq!(
            handshake(&p, &net),
            Handshake::Ready {
                after: 4 * net.one_way + 2 * net.handshake_cpu,
                mutual: true
            }
        );
        let plain = Peers {
            server_sidecar: false,
            ..p
        };
        assert_eq!(
            handshake(&plain, &net),
            Handshake::Ready {
                after: 2 * net.one_way,
                mutual: false
            }
        );
    }

    #[test]
    fn expired_certificate_fails_the_mtls_handshake_with_uf() {
        let net = NetworkConfig::default();
        let p = Peers {
            certs_valid: false,
            ..istio_peers(ClientTls::Mutual, MtlsMode::Strict)
        };
        assert_eq!(
            handshake(&p, &net),
            Handshake::Fails {
                after: 4 * net.one_way + net.handshake_cpu,
                flags: flags::UF
            }
        );
    }
}
