//! Istio's `RequestAuthentication` (security.istio.io) as users write it: which workloads verify
//! JSON Web Tokens and from which issuers. The mesh checks a request's token at the server's
//! sidecar (`mesh/authz.rs`). Keys, audiences and token locations are read and not modelled:
//! the simulator's tokens stand for a signed token by their issuer and subject (see
//! `mesh/authz.rs`), carried in the `authorization: Bearer ...` header.

use std::collections::BTreeMap;

use super::ManifestError;
use super::reader::{Doc, Node, Scope, get, idx, join};

/// An Istio RequestAuthentication.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestAuthentication {
    /// `metadata.name`.
    pub(crate) name: String,
    /// `metadata.namespace` (`istio-system` is the mesh root namespace).
    pub(crate) namespace: Option<String>,
    /// `spec.selector.matchLabels`; `None` applies to the whole namespace.
    pub(crate) selector: Option<BTreeMap<String, String>>,
    /// `spec.jwtRules[].issuer`.
    pub(crate) issuers: Vec<String>,
}

/// Keys of a JWT rule that change how a real token is fetched or checked, not whether the
/// simulator's stand-in verifies.
const RULE_KEYS: [&str; 10] = [
    "issuer",
    "audiences",
    "jwksUri",
    "jwks",
    "fromHeaders",
    "fromParams",
    "fromCookies",
    "outputPayloadToHeader",
    "outputClaimToHeaders",
    "forwardOriginalToken",
];

/// Parses a RequestAuthentication; `None` for one bound by `targetRef(s)`, with a warning.
pub(super) fn request_authentication(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<Option<RequestAuthentication>, ManifestError> {
    let s = doc.obj(
        spec,
        "spec",
        &["selector", "jwtRules", "targetRef", "targetRefs"],
    )?;
    let Scope::Workloads(selector) = doc.policy_scope(s)? else {
        return Ok(None);
    };
    let mut issuers = Vec::new();
    if let Some(rules) = get(s, "jwtRules") {
        for (i, r) in doc.list(rules, "spec.jwtRules")?.iter().enumerate() {
            let p = idx("spec.jwtRules", i);
            let m = doc.obj(Node { v: r }, &p, &RULE_KEYS)?;
            let iss = get(m, "issuer").ok_or_else(|| doc.missing(&join(&p, "issuer")))?;
            let iss = doc.str(iss, &join(&p, "issuer"))?;
            if iss.is_empty() {
                return Err(doc.wrong(&join(&p, "issuer"), "a non-empty issuer"));
            }
            issuers.push(iss);
            for key in ["fromHeaders", "fromParams", "fromCookies"] {
                if get(m, key).is_some() {
                    doc.warn(format!(
                        "{} is not simulated: the stand-in token is read from the `authorization` header only, so a token given elsewhere is neither checked nor refused (Istio answers a bad one 401)",
                        join(&p, key)
                    ));
                }
            }
        }
    }
    Ok(Some(RequestAuthentication {
        name,
        namespace,
        selector,
        issuers,
    }))
}
