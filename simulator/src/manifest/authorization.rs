//! Istio's `AuthorizationPolicy` (security.istio.io) as users write it: the action, the workload
//! selector and the rules' sources and operations. The mesh evaluates it at the server's
//! sidecar (`mesh/authz.rs`).
//!
//! Conditions the simulator cannot evaluate (`when`, IP blocks, hosts, ports, service-account
//! fields) are read, warned about, and treated as istiod treats a rule it cannot translate: an
//! ALLOW rule holding one never matches, a DENY rule holding one matches as if the condition
//! held (the safe side both ways). CUSTOM and AUDIT policies are warned about and ignored;
//! `targetRef(s)` (policies bound to a gateway) too.

use std::collections::BTreeMap;

use super::ManifestError;
use super::reader::{Doc, Node, get, idx, join};

/// What a matching policy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthzAction {
    /// Requests must match one rule of some ALLOW policy, when there is one.
    Allow,
    /// A request matching a rule is denied, whatever the ALLOW policies say.
    Deny,
}

/// A string as AuthorizationPolicy matches it: exact, `prefix*`, `*suffix`, or `*` (any
/// non-empty value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Pattern {
    pub(crate) fn new(s: &str) -> Self {
        if s == "*" {
            Pattern::Any
        } else if let Some(p) = s.strip_suffix('*') {
            Pattern::Prefix(p.to_string())
        } else if let Some(p) = s.strip_prefix('*') {
            Pattern::Suffix(p.to_string())
        } else {
            Pattern::Exact(s.to_string())
        }
    }

    pub(crate) fn matches(&self, v: &str) -> bool {
        match self {
            Pattern::Any => !v.is_empty(),
            Pattern::Exact(s) => v == s,
            Pattern::Prefix(p) => v.starts_with(p.as_str()),
            Pattern::Suffix(p) => v.ends_with(p.as_str()),
        }
    }
}

/// A field and its negation (`principals` / `notPrincipals`): the request must match one of
/// `is` (when given) and none of `not`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) is: Option<Vec<Pattern>>,
    pub(crate) not: Vec<Pattern>,
}

impl Field {
    /// Whether a request whose value is `v` (none: the request has no such value, e.g. no
    /// principal over plaintext) matches. A missing value matches no positive pattern, and
    /// no negative one either.
    pub(crate) fn matches(&self, v: Option<&str>) -> bool {
        let any = |ps: &[Pattern]| v.is_some_and(|v| ps.iter().any(|p| p.matches(v)));
        self.is.as_deref().is_none_or(any) && !any(&self.not)
    }
}

/// `rules[].from[].source`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) principals: Field,
    pub(crate) request_principals: Field,
    pub(crate) namespaces: Field,
    /// A condition written that the simulator does not evaluate.
    pub(crate) unsupported: bool,
}

/// `rules[].to[].operation`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Operation {
    pub(crate) methods: Field,
    pub(crate) paths: Field,
    pub(crate) unsupported: bool,
}

/// One rule: a request matches when it matches one source (if any are given), one operation
/// (if any) and the conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AuthzRule {
    pub(crate) from: Vec<Source>,
    pub(crate) to: Vec<Operation>,
    /// `when` was given (not evaluated).
    pub(crate) unsupported: bool,
}

/// An Istio AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthorizationPolicy {
    /// `metadata.name`.
    pub(crate) name: String,
    /// `metadata.namespace` (`istio-system` is the mesh root namespace).
    pub(crate) namespace: Option<String>,
    /// `spec.selector.matchLabels`; `None` applies to the whole namespace.
    pub(crate) selector: Option<BTreeMap<String, String>>,
    /// `spec.action`.
    pub action: AuthzAction,
    /// `spec.rules`: none means an ALLOW policy allows nothing and a DENY one denies nothing.
    pub(crate) rules: Vec<AuthzRule>,
}

const SOURCE_KEYS: [&str; 6] = [
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
];
const SOURCE_UNSUPPORTED: [&str; 6] = [
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
];
const OPERATION_KEYS: [&str; 4] = ["methods", "notMethods", "paths", "notPaths"];
const OPERATION_UNSUPPORTED: [&str; 4] = ["hosts", "notHosts", "ports", "notPorts"];

/// Parses an AuthorizationPolicy; `None` for one the simulator ignores (CUSTOM, AUDIT, bound
/// to a gateway by `targetRef`), with a warning.
pub(super) fn authorization_policy(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<Option<AuthorizationPolicy>, ManifestError> {
    let s = doc.obj(
        spec,
        "spec",
        &[
            "selector",
            "action",
            "rules",
            "provider",
            "targetRef",
            "targetRefs",
        ],
    )?;
    let action = match get(s, "action") {
        None => AuthzAction::Allow,
        Some(a) => match doc.str(a, "spec.action")?.as_str() {
            "ALLOW" => AuthzAction::Allow,
            "DENY" => AuthzAction::Deny,
            other @ ("CUSTOM" | "AUDIT") => {
                doc.warn(format!(
                    "spec.action {other} is not simulated (an external authorizer, or audit \
                     logging only); policy ignored"
                ));
                return Ok(None);
            }
            _ => return Err(doc.wrong("spec.action", "one of ALLOW, DENY, AUDIT, CUSTOM")),
        },
    };
    if doc.bound_by_target_ref(s) {
        return Ok(None);
    }
    let selector = doc.workload_selector(s)?;
    let mut rules = Vec::new();
    if let Some(list) = get(s, "rules") {
        for (i, r) in doc.list(list, "spec.rules")?.iter().enumerate() {
            rules.push(rule(doc, Node { v: r }, &idx("spec.rules", i), action)?);
        }
    }
    Ok(Some(AuthorizationPolicy {
        name,
        namespace,
        selector,
        action,
        rules,
    }))
}

fn rule(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
    action: AuthzAction,
) -> Result<AuthzRule, ManifestError> {
    let m = doc.obj(n, path, &["from", "to", "when"])?;
    let mut out = AuthzRule::default();
    if let Some(from) = get(m, "from") {
        let p = join(path, "from");
        for (i, f) in doc.list(from, &p)?.iter().enumerate() {
            let pi = idx(&p, i);
            let fm = doc.obj(Node { v: f }, &pi, &["source"])?;
            let src = get(fm, "source").ok_or_else(|| doc.missing(&join(&pi, "source")))?;
            out.from
                .push(source(doc, src, &join(&pi, "source"), action)?);
        }
    }
    if let Some(to) = get(m, "to") {
        let p = join(path, "to");
        for (i, t) in doc.list(to, &p)?.iter().enumerate() {
            let pi = idx(&p, i);
            let tm = doc.obj(Node { v: t }, &pi, &["operation"])?;
            let op = get(tm, "operation").ok_or_else(|| doc.missing(&join(&pi, "operation")))?;
            out.to
                .push(operation(doc, op, &join(&pi, "operation"), action)?);
        }
    }
    if get(m, "when").is_some() {
        unsupported(doc, &join(path, "when"), action);
        out.unsupported = true;
    }
    Ok(out)
}

fn source(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
    action: AuthzAction,
) -> Result<Source, ManifestError> {
    let known: Vec<&str> = SOURCE_KEYS
        .iter()
        .chain(&SOURCE_UNSUPPORTED)
        .copied()
        .collect();
    let m = doc.obj(n, path, &known)?;
    let mut out = Source {
        principals: field(doc, m, path, "principals", "notPrincipals")?,
        request_principals: field(doc, m, path, "requestPrincipals", "notRequestPrincipals")?,
        namespaces: field(doc, m, path, "namespaces", "notNamespaces")?,
        unsupported: false,
    };
    for k in SOURCE_UNSUPPORTED {
        if get(m, k).is_some() {
            unsupported(doc, &join(path, k), action);
            out.unsupported = true;
        }
    }
    Ok(out)
}

fn operation(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
    action: AuthzAction,
) -> Result<Operation, ManifestError> {
    let known: Vec<&str> = OPERATION_KEYS
        .iter()
        .chain(&OPERATION_UNSUPPORTED)
        .copied()
        .collect();
    let m = doc.obj(n, path, &known)?;
    let mut out = Operation {
        methods: field(doc, m, path, "methods", "notMethods")?,
        paths: field(doc, m, path, "paths", "notPaths")?,
        unsupported: false,
    };
    for k in OPERATION_UNSUPPORTED {
        if get(m, k).is_some() {
            unsupported(doc, &join(path, k), action);
            out.unsupported = true;
        }
    }
    Ok(out)
}

fn unsupported(doc: &mut Doc<'_>, path: &str, action: AuthzAction) {
    let effect = match action {
        AuthzAction::Allow => "this ALLOW rule never matches",
        AuthzAction::Deny => "this DENY rule matches as if it held",
    };
    doc.warn(format!("{path} is not simulated: {effect}"));
}

/// A list of patterns and its negation; an empty list given is refused, as Istio's
/// validation refuses it.
fn field(
    doc: &mut Doc<'_>,
    m: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    is: &str,
    not: &str,
) -> Result<Field, ManifestError> {
    let list = |key: &str| -> Result<Option<Vec<Pattern>>, ManifestError> {
        let Some(n) = get(m, key) else {
            return Ok(None);
        };
        let p = join(path, key);
        let items = doc.list(n, &p)?;
        if items.is_empty() {
            return Err(doc.wrong(&p, "at least one value (an empty list is refused)"));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, v)| doc.str(Node { v }, &idx(&p, i)).map(|s| Pattern::new(&s)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    };
    Ok(Field {
        is: list(is)?,
        not: list(not)?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_exactly_by_prefix_or_by_suffix() {
        let prefix = Pattern::new("/api/*");
        assert!(prefix.matches("/api/v1"));
        assert!(prefix.matches("/api/"));
        assert!(!prefix.matches("/api"));
        let suffix = Pattern::new("*/healthz");
        assert!(suffix.matches("/app/healthz"));
        assert!(!suffix.matches("/app/healthz/x"));
        let exact = Pattern::new("/login");
        assert!(exact.matches("/login"));
        assert!(!exact.matches("/login/"));
        assert!(Pattern::new("*").matches("/"));
    }

    #[test]
    fn a_request_without_a_principal_matches_no_principal_pattern_but_every_negation() {
        let any = Field {
            is: Some(vec![Pattern::Any]),
            not: Vec::new(),
        };
        assert!(!any.matches(None));
        assert!(any.matches(Some("cluster.local/ns/a/sa/b")));
        let not_any = Field {
            is: None,
            not: vec![Pattern::Any],
        };
        assert!(
            not_any.matches(None),
            "notPrincipals: [*] catches plaintext"
        );
        assert!(!not_any.matches(Some("cluster.local/ns/a/sa/b")));
    }
}
