//! Mutual TLS as Istio and Linkerd do it: PeerAuthentication resolves each workload's server mode
//! (workload selector, then namespace, then the mesh-wide policy in `istio-system`), the client side
//! follows the DestinationRule's TLS mode or Istio's auto-mTLS, and a connection's handshake fails on
//! a mode mismatch (a STRICT server resets plaintext, a plaintext server cannot speak TLS) or on an
//! expired certificate. Certificates rotate before they expire, as the Istio agent and Linkerd's
//! identity controller renew them; a workload whose rotation stops lets its certificate expire.

use super::config::{DataPlane, NetworkConfig};
use super::event::Ev;
use super::routes::labels_match;
use super::trace::trace;
use super::{CertId, ClientId, Mesh, VersionId};
use crate::engine::SimTime;
use crate::manifest::{MtlsMode, PeerAuthentication};
use crate::telemetry::flags;
use std::collections::BTreeMap;

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
    /// TCP is up after this long (plaintext: nothing more to negotiate), but the server resets
    /// the connection on the first request's bytes: that request fails `UC`, a reset after
    /// connecting, not a connect failure.
    Resets { after: SimTime },
}

/// The TCP and TLS part of opening a connection to a live pod. Auto mTLS (Istio) speaks mTLS
/// when both ends have a sidecar and the server does not disable it; Linkerd's proxies always
/// do, and accept plaintext too (permissive). A STRICT server resets plaintext after the
/// client's first bytes, once connected (503 `UC`); a plaintext server fails the client's TLS
/// hello, and an expired certificate fails the handshake after the CPU for one side (503 `UF`).
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
        Handshake::Resets { after: rtt }
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
        match self.clients[c].caller {
            // A call leaves with its version's certificate.
            Some(v) => self.version_cert(v),
            None => CertId(c.0),
        }
    }

    /// A version's certificate (its pods share one, as they share a service account).
    pub(super) fn version_cert(&self, v: VersionId) -> CertId {
        CertId(self.own_certs + v.0)
    }

    pub(super) fn on_cert_rotate(&mut self, cert: CertId) {
        if self.certs[cert].rotating {
            trace!(self, "cert-rotate", "workload" => self.cert_holder(cert));
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
            let svc = &self.services[self.versions[v].service];
            let mode = effective_mode(
                &self.peer_auth,
                &svc.namespace,
                &self.versions[v].labels,
                &self.default_namespace,
                self.default_mtls,
                svc.target_port,
            );
            self.versions[v].server_mode = mode;
        }
    }
}

/// Istio's root namespace, where a policy without a selector is mesh-wide.
const ROOT_NAMESPACE: &str = "istio-system";

/// The mTLS mode of a workload in namespace `ns` with `labels`, serving on `port`, as istiod
/// composes it (istio/istio `pilot/pkg/security/authn/policy_applier.go`,
/// `ComposePeerAuthentication` and `GetMutualTLSModeForPort`): in each scope (mesh: root
/// namespace without selector; namespace: no selector, or one with no labels; workload: a
/// matching selector outside the root namespace) the OLDEST policy is taken, whatever its mode;
/// then mesh, namespace and workload apply in turn, UNSET inheriting; last the workload
/// policy's `portLevelMtls` entry for `port`, if any (UNSET: the workload's mode).
/// `policies` are in creation order.
pub(super) fn effective_mode(
    policies: &[PeerAuthentication],
    ns: &str,
    labels: &BTreeMap<String, String>,
    home: &str,
    default: MtlsMode,
    port: u32,
) -> MtlsMode {
    let ns_of = |p: &PeerAuthentication| p.namespace.as_deref().unwrap_or(home).to_string();
    let wide = |p: &PeerAuthentication| p.selector.as_ref().is_none_or(|s| s.is_empty());
    let oldest = |pred: &dyn Fn(&PeerAuthentication) -> bool| policies.iter().find(|p| pred(p));
    let mesh = oldest(&|p| wide(p) && ns_of(p) == ROOT_NAMESPACE);
    let namespace = oldest(&|p| wide(p) && ns_of(p) == ns && ns != ROOT_NAMESPACE);
    let workload = oldest(&|p| {
        !wide(p)
            && ns_of(p) == ns
            && ns != ROOT_NAMESPACE
            && p.selector.as_ref().is_some_and(|s| labels_match(s, labels))
    });
    // The narrowest scope with a mode set decides.
    let mode = [workload, namespace, mesh]
        .into_iter()
        .flatten()
        .map(|p| p.mode)
        .find(|m| *m != MtlsMode::Unset)
        .unwrap_or(default);
    match workload.and_then(|p| p.port_level.get(&port)) {
        Some(&m) if m != MtlsMode::Unset => m,
        _ => mode,
    }
}

impl Mesh {
    /// A PeerAuthentication: every workload's server mode is resolved again.
    pub(super) fn apply_peer_authentication(&mut self, pa: &PeerAuthentication) {
        // Re-applying a policy updates it in place: it keeps its age, which decides among
        // policies of one scope.
        super::authz::upsert(&mut self.peer_auth, pa, &self.default_namespace);
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

    fn pa(
        name: &str,
        ns: Option<&str>,
        selector: Option<&[(&str, &str)]>,
        mode: MtlsMode,
    ) -> PeerAuthentication {
        PeerAuthentication {
            name: name.into(),
            namespace: ns.map(Into::into),
            selector: selector.map(|s| {
                s.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            mode,
            port_level: BTreeMap::new(),
        }
    }

    /// istio/istio `pilot/pkg/security/authn/policy_applier.go` (`ComposePeerAuthentication`):
    /// the oldest policy of a scope wins even when UNSET; an empty selector is namespace-level;
    /// workload over namespace over mesh; UNSET inherits; a selector in the root namespace is
    /// ignored.
    #[test]
    fn peer_authentication_composes_as_istiod_does() {
        use MtlsMode::*;
        let app: &[(&str, &str)] = &[("app", "podinfo")];
        let other: &[(&str, &str)] = &[("app", "other")];
        let none: &[(&str, &str)] = &[];
        let cases: Vec<(Vec<PeerAuthentication>, MtlsMode)> = vec![
            (vec![], Permissive),
            (vec![pa("m", Some("istio-system"), None, Strict)], Strict),
            // Oldest namespace policy wins.
            (
                vec![pa("a", None, None, Disable), pa("b", None, None, Strict)],
                Disable,
            ),
            // Oldest is UNSET: it still wins its scope and inherits from the mesh.
            (
                vec![
                    pa("m", Some("istio-system"), None, Strict),
                    pa("a", None, None, Unset),
                    pa("b", None, None, Disable),
                ],
                Strict,
            ),
            // An empty selector is namespace-level, so the workload policy overrides it.
            (
                vec![
                    pa("w", None, Some(app), Disable),
                    pa("e", None, Some(none), Strict),
                ],
                Disable,
            ),
            (
                vec![
                    pa("e", None, Some(none), Strict),
                    pa("x", None, Some(other), Disable),
                ],
                Strict,
            ),
            // Workload over namespace; oldest matching workload policy wins.
            (
                vec![
                    pa("n", None, None, Strict),
                    pa("w1", None, Some(app), Permissive),
                    pa("w2", None, Some(app), Disable),
                ],
                Permissive,
            ),
            // A selector in the root namespace is not a policy for anyone.
            (
                vec![pa("r", Some("istio-system"), Some(app), Strict)],
                Permissive,
            ),
            // Another namespace's policy does not apply.
            (vec![pa("o", Some("other"), None, Strict)], Permissive),
        ];
        let labels: BTreeMap<String, String> = [("app".to_string(), "podinfo".to_string())].into();
        for (policies, want) in cases {
            let got = effective_mode(&policies, "default", &labels, "default", Permissive, 80);
            assert_eq!(got, want, "{policies:?}");
        }
    }

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
    fn strict_server_lets_a_plaintext_client_connect_in_one_round_trip_then_resets() {
        let net = NetworkConfig::default();
        let rtt = 2 * net.one_way;
        let p = istio_peers(ClientTls::Plain, MtlsMode::Strict);
        assert_eq!(handshake(&p, &net), Handshake::Resets { after: rtt });
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
