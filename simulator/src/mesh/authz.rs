//! Authorization at the server's sidecar, with Istio's semantics: the AuthorizationPolicies that
//! apply to a workload (its namespace's without a selector, its namespace's whose selector
//! matches its labels, and those of the root namespace `istio-system`, mesh-wide or by
//! selector) are evaluated DENY first, then ALLOW: a request matching a DENY rule is denied; with
//! no ALLOW policy it is allowed; else it must match a rule of one. A denied request is answered
//! 403 by the sidecar (Envoy's RBAC filter: body `RBAC: access denied`, response flags `-`, the
//! policy in the response code details), and never reaches the application.
//!
//! Before that, the RequestAuthentications that apply (scoped the same way) verify the
//! request's JSON Web Token, taken from `authorization: Bearer TOKEN`: no token passes (with no
//! request principal); a token that fails verification, or whose issuer none of them lists, is
//! answered 401 (Envoy's jwt_authn filter: `Jwt verification fails`). The simulator does not
//! sign tokens: `iss=ISSUER;sub=SUBJECT` stands for a token signed by that issuer's key, any
//! other text for one that does not verify (a bad signature, an expired token). A verified
//! token's request principal is `ISSUER/SUBJECT`.
//!
//! The source principal is the calling workload's identity, `cluster.local/ns/NS/sa/SA`, known
//! only over mutual TLS: a plaintext request has no principal and no source namespace, so it
//! matches no `principals` or `namespaces` pattern (and every negation). A request principal
//! (`iss/sub` of a verified JWT, jwt.rs) is matched by `requestPrincipals`.

use super::config::MeshConfig;
use super::event::Ev;
use super::request::Stage;
use super::tls::{Handshake, Peers, handshake};
use super::trace::trace;
use super::{AttemptId, ClientId, Mesh, VersionId, headers};
use crate::manifest::{AuthorizationPolicy, AuthzAction, RequestAuthentication};
use crate::manifest::{AuthzRule, Field, Operation, Source, WorkloadPolicy};
use crate::mesh::routes::labels_match;
use crate::telemetry::Reporter;

/// The mesh's root namespace: its policies apply to every workload.
pub(super) const ROOT_NAMESPACE: &str = "istio-system";

const UNAUTHORIZED: u16 = 401;
const FORBIDDEN: u16 = 403;

/// The issuer and subject of a stand-in token `iss=ISSUER;sub=SUBJECT` (either order); none
/// for any other text, a token that does not verify.
pub(crate) fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (mut iss, mut sub) = (None, None);
    for part in token.split(';') {
        match part.split_once('=') {
            Some(("iss", v)) if !v.is_empty() => iss = Some(v),
            Some(("sub", v)) if !v.is_empty() => sub = Some(v),
            _ => return None,
        }
    }
    Some((iss?, sub?))
}

/// A service account when none is given (Kubernetes gives every pod one, `default`).
pub(crate) const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// What a request brings to authorization.
pub(crate) struct Request<'a> {
    /// The source principal, over mTLS only.
    pub(crate) principal: Option<&'a str>,
    /// The source namespace, over mTLS only.
    pub(crate) namespace: Option<&'a str>,
    /// `iss/sub` of a verified token.
    pub(crate) request_principal: Option<&'a str>,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
}

/// Whether Istio allows `req` under `policies` (those that apply to the workload).
pub(crate) fn allows<'p>(
    policies: impl Iterator<Item = &'p AuthorizationPolicy> + Clone,
    req: &Request<'_>,
) -> bool {
    let matching = |action| {
        policies
            .clone()
            .filter(move |p| p.action == action)
            .flat_map(|p| &p.rules)
    };
    if matching(AuthzAction::Deny).any(|r| rule_matches(r, req, AuthzAction::Deny)) {
        return false;
    }
    let mut allow = policies
        .filter(|p| p.action == AuthzAction::Allow)
        .peekable();
    allow.peek().is_none()
        || allow
            .flat_map(|p| &p.rules)
            .any(|r| rule_matches(r, req, AuthzAction::Allow))
}

/// Whether a rule matches `req`: one of its sources (if any), one of its operations (if any)
/// and its conditions.
fn rule_matches(r: &AuthzRule, req: &Request<'_>, action: AuthzAction) -> bool {
    let source = |s: &Source| {
        all_match(
            s.unsupported,
            action,
            &[
                (&s.principals, req.principal),
                (&s.namespaces, req.namespace),
                (&s.request_principals, req.request_principal),
            ],
        )
    };
    let operation = |o: &Operation| {
        all_match(
            o.unsupported,
            action,
            &[(&o.methods, Some(req.method)), (&o.paths, Some(req.path))],
        )
    };
    all_match(r.unsupported, action, &[])
        && (r.from.is_empty() || r.from.iter().any(source))
        && (r.to.is_empty() || r.to.iter().any(operation))
}

/// The one matcher of a rule's parts: each field matches the request's value for it, and a
/// condition the simulator cannot evaluate (`unsupported`) holds for a DENY rule and fails for
/// an ALLOW one (istiod's safe side, see manifest/authorization.rs).
fn all_match(unsupported: bool, action: AuthzAction, fields: &[(&Field, Option<&str>)]) -> bool {
    (!unsupported || action == AuthzAction::Deny) && fields.iter().all(|(f, v)| f.matches(*v))
}

/// Puts `p` in `list`, replacing the policy of the same namespace (absent: `default_ns`) and
/// name, which keeps its place: a re-applied policy keeps its age.
pub(super) fn upsert<P: WorkloadPolicy>(list: &mut Vec<P>, p: &P, default_ns: &str) {
    let key = |q: &P| {
        (
            q.namespace().unwrap_or(default_ns).to_string(),
            q.name().to_string(),
        )
    };
    match list.iter().position(|q| key(q) == key(p)) {
        Some(i) => list[i] = p.clone(),
        None => list.push(p.clone()),
    }
}

/// The policies of `list` (indices) that apply to a workload of namespace `ns` with `labels`:
/// its namespace's and the root namespace's, all workloads' or those their selector picks.
fn applying<P: WorkloadPolicy>(
    list: &[P],
    default_ns: &str,
    ns: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Vec<u32> {
    (0..list.len() as u32)
        .filter(|&i| {
            let p = &list[i as usize];
            let pns = p.namespace().unwrap_or(default_ns);
            (pns == ns || pns == ROOT_NAMESPACE)
                && p.selector().is_none_or(|s| labels_match(s, labels))
        })
        .collect()
}

/// The policies in effect and which apply to each version.
#[derive(Default)]
pub(super) struct Authz {
    /// Whether any policy was applied: until then nothing is checked.
    pub(super) active: bool,
    policies: Vec<AuthorizationPolicy>,
    authns: Vec<RequestAuthentication>,
    /// Per version, the policies (indices) that apply to its pods.
    applies: Vec<Vec<u32>>,
    /// Per version, the RequestAuthentications (indices) that apply to its pods.
    verifies: Vec<Vec<u32>>,
    /// Per client, its principal and namespace (a call's: its version's).
    identity: Vec<(String, String)>,
}

impl Authz {
    /// Identities of the mesh's workloads, from the configuration.
    pub(super) fn new(cfg: &MeshConfig, mesh: &Mesh) -> Self {
        let accounts: Vec<String> = mesh
            .versions
            .iter()
            .map(|v| {
                let s = &mesh.services[v.service];
                cfg.services
                    .iter()
                    .find(|sc| sc.name == s.name)
                    .and_then(|sc| sc.versions.iter().find(|vc| vc.name == v.name))
                    .and_then(|vc| vc.service_account.clone())
                    .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.into())
            })
            .collect();
        let identity = (0..mesh.clients.len())
            .map(|c| {
                let (ns, sa) = match mesh.clients[ClientId(c as u32)].caller {
                    Some(v) => (
                        mesh.services[mesh.versions[v].service].namespace.clone(),
                        accounts[v.0 as usize].clone(),
                    ),
                    None => {
                        let cc = &cfg.clients[c];
                        (
                            cc.namespace
                                .clone()
                                .unwrap_or_else(|| cfg.namespace.clone()),
                            cc.service_account
                                .clone()
                                .or_else(|| super::gateway::gateway_service_account(cc))
                                .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.into()),
                        )
                    }
                };
                (format!("cluster.local/ns/{ns}/sa/{sa}"), ns)
            })
            .collect();
        Authz {
            identity,
            ..Default::default()
        }
    }
}

impl Mesh {
    /// Applies an AuthorizationPolicy (replacing one of the same namespace and name).
    pub(super) fn apply_authorization_policy(&mut self, p: &AuthorizationPolicy) {
        upsert(&mut self.authz.policies, p, &self.default_namespace);
        self.rescope_authz();
    }

    /// Applies a RequestAuthentication (replacing one of the same namespace and name).
    pub(super) fn apply_request_authentication(&mut self, r: &RequestAuthentication) {
        upsert(&mut self.authz.authns, r, &self.default_namespace);
        self.rescope_authz();
    }

    /// Which policies and RequestAuthentications apply to each version.
    fn rescope_authz(&mut self) {
        let (az, ns) = (&self.authz, self.default_namespace.as_str());
        let (applies, verifies) = self
            .versions
            .iter()
            .map(|ver| {
                let home = &self.services[ver.service].namespace;
                (
                    applying(&az.policies, ns, home, &ver.labels),
                    applying(&az.authns, ns, home, &ver.labels),
                )
            })
            .unzip();
        self.authz.applies = applies;
        self.authz.verifies = verifies;
        self.authz.active = true;
    }

    /// The code the server's sidecar answers attempt `a` with itself (401 for a token that
    /// does not verify, 403 for what the policies do not allow), if any.
    pub(super) fn refused(&self, a: AttemptId) -> Option<u16> {
        let at = &self.atts[a];
        let v = self.pods[at.pod].version;
        let (applies, verifies) = (
            &self.authz.applies[v.0 as usize],
            &self.authz.verifies[v.0 as usize],
        );
        if (applies.is_empty() && verifies.is_empty()) || !self.versions[v].sidecar {
            return None;
        }
        let header = |name: &str| {
            self.header_sets.sets[at.headers as usize]
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let request_principal = if verifies.is_empty() {
            None
        } else {
            match header("authorization").and_then(|h| h.strip_prefix("Bearer ")) {
                None => None,
                Some(token) => {
                    let verified = parse_token(token).filter(|(iss, _)| {
                        verifies.iter().any(|&i| {
                            self.authz.authns[i as usize]
                                .issuers
                                .iter()
                                .any(|x| x == iss)
                        })
                    });
                    match verified {
                        Some((iss, sub)) => Some(format!("{iss}/{sub}")),
                        None => return Some(UNAUTHORIZED),
                    }
                }
            }
        };
        let client = self.clusters[at.cluster].client;
        let (principal, namespace) = if self.mutual(at.cluster, v) {
            let (p, ns) = &self.authz.identity[client.0 as usize];
            (Some(p.as_str()), Some(ns.as_str()))
        } else {
            (None, None)
        };
        let req = Request {
            principal,
            namespace,
            request_principal: request_principal.as_deref(),
            method: header(headers::METHOD).unwrap_or("GET"),
            // Istio builds `paths` into Envoy's `url_path` matcher: no query string.
            path: super::routes::path_only(header(headers::PATH).unwrap_or("/")),
        };
        let ok = allows(
            applies.iter().map(|&i| &self.authz.policies[i as usize]),
            &req,
        );
        (!ok).then_some(FORBIDDEN)
    }

    /// Whether connections of cluster `ci` to version `v` speak mutual TLS, as their
    /// handshake decides it (certificates aside: an expired one fails the connection).
    fn mutual(&self, ci: super::ClusterId, v: VersionId) -> bool {
        let client = self.clusters[ci].client;
        let ver = &self.versions[v];
        let peers = Peers {
            data_plane: self.data_plane,
            client_sidecar: self.clients[client].sidecar,
            client_tls: self.clusters[ci].policy.tls,
            server_sidecar: ver.sidecar,
            server_mode: ver.server_mode,
            certs_valid: true,
        };
        matches!(
            handshake(&peers, &self.net),
            Handshake::Ready { mutual: true, .. }
        )
    }

    /// The server's sidecar answers attempt `a` itself with `code`, without the pod.
    pub(super) fn deny_at_sidecar(&mut self, a: AttemptId, code: u16) {
        let at = self.atts[a];
        let version = self.pods[at.pod].version;
        let source = self.clusters[at.cluster].client;
        trace!(self, "refused", "req" => at.number, "try" => at.try_no,
            "pod" => self.pod_name(at.pod), "code" => code);
        self.telemetry.record(
            Reporter::Destination,
            source.0,
            version.0,
            code,
            0,
            at.inbound,
        );
        if at.is_mirror() {
            self.free_att(a);
            return;
        }
        let at = &mut self.atts[a];
        at.code = code;
        at.stage = Stage::Returning;
        let g = at.tag;
        let back = self.net.one_way + at.back;
        self.q
            .schedule_in(back, Ev::Response { attempt: a, tag: g });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, parse};

    fn policies(yaml: &str) -> Vec<AuthorizationPolicy> {
        parse(yaml)
            .expect("valid policies")
            .items
            .into_iter()
            .map(|m| match m {
                Manifest::AuthorizationPolicy(p) => p,
                other => panic!("not a policy: {other:?}"),
            })
            .collect()
    }

    fn request<'a>(principal: Option<&'a str>, method: &'a str, path: &'a str) -> Request<'a> {
        Request {
            principal,
            namespace: principal.map(|_| "shop"),
            request_principal: None,
            method,
            path,
        }
    }

    const CHECKOUT: &str = "cluster.local/ns/shop/sa/checkout";

    const ALLOW_CHECKOUT: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-checkout}
spec:
  rules:
  - from:
    - source: {principals: [cluster.local/ns/shop/sa/checkout]}
";

    #[test]
    fn deny_beats_allow() {
        let deny = "
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: [/admin/*]}
";
        let ps = policies(&format!("{ALLOW_CHECKOUT}{deny}"));
        assert!(allows(
            ps.iter(),
            &request(Some(CHECKOUT), "GET", "/orders")
        ));
        assert!(!allows(
            ps.iter(),
            &request(Some(CHECKOUT), "GET", "/admin/users")
        ));
    }

    #[test]
    fn without_an_allow_policy_every_request_not_denied_is_allowed() {
        let ps = policies(
            "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-delete}
spec:
  action: DENY
  rules:
  - to:
    - operation: {methods: [DELETE]}
",
        );
        assert!(allows(ps.iter(), &request(None, "GET", "/")));
        assert!(!allows(ps.iter(), &request(None, "DELETE", "/")));
        assert!(allows(std::iter::empty(), &request(None, "DELETE", "/")));
    }

    #[test]
    fn an_allow_policy_without_rules_allows_nothing_and_an_empty_rule_everything() {
        let nothing = policies(
            "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing}
spec: {}
",
        );
        assert!(!allows(
            nothing.iter(),
            &request(Some(CHECKOUT), "GET", "/")
        ));
        let all = policies(
            "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all}
spec:
  rules: [{}]
",
        );
        assert!(allows(all.iter(), &request(None, "GET", "/")));
    }

    #[test]
    fn a_request_without_a_principal_matches_no_principals_rule() {
        let ps = policies(ALLOW_CHECKOUT);
        assert!(allows(ps.iter(), &request(Some(CHECKOUT), "GET", "/")));
        assert!(!allows(ps.iter(), &request(None, "GET", "/")));
    }

    #[test]
    fn operation_paths_match_exactly_by_prefix_and_by_suffix_and_not_paths_exclude() {
        let ps = policies(
            "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: paths}
spec:
  rules:
  - to:
    - operation: {paths: [/login, /api/*, '*/healthz'], notPaths: [/api/internal/*]}
",
        );
        let ok = |path| allows(ps.iter(), &request(None, "GET", path));
        assert!(ok("/login"));
        assert!(!ok("/login/x"));
        assert!(ok("/api/orders"));
        assert!(!ok("/apiary"));
        assert!(ok("/shop/healthz"));
        assert!(!ok("/api/internal/keys"));
    }

    #[test]
    fn a_condition_not_simulated_fails_an_allow_rule_and_holds_in_a_deny_rule() {
        let allow_when = policies(
            "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: when}
spec:
  rules:
  - when:
    - key: request.headers[x-token]
      values: [abc]
",
        );
        assert!(!allows(allow_when.iter(), &request(None, "GET", "/")));
        let deny_ip = policies(
            "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ip}
spec:
  action: DENY
  rules:
  - from:
    - source: {ipBlocks: [10.0.0.0/8]}
",
        );
        assert!(!allows(deny_ip.iter(), &request(None, "GET", "/")));
    }

    #[test]
    fn a_stand_in_token_names_its_issuer_and_subject() {
        assert_eq!(
            parse_token("iss=https://a.example;sub=alice"),
            Some(("https://a.example", "alice"))
        );
        assert_eq!(parse_token("sub=alice;iss=x"), Some(("x", "alice")));
        assert_eq!(parse_token("invalid"), None);
        assert_eq!(parse_token("iss=x"), None);
        assert_eq!(parse_token("iss=x;sub=a;exp=1"), None);
    }

    #[test]
    fn custom_and_audit_policies_are_ignored_with_a_warning() {
        let m = parse(
            "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
",
        )
        .expect("parses");
        assert!(m.items.is_empty());
        assert!(
            m.warnings[0].contains("CUSTOM is not simulated"),
            "{:?}",
            m.warnings
        );
    }
}
