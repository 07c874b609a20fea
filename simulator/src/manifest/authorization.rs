//! Istio's `AuthorizationPolicy` (security.istio.io) as users write it: the action, the workload
//! selector and the rules' sources and operations. The mesh evaluates it at the server's
//! sidecar (`mesh/authz.rs`).
//!
//! Conditions the simulator cannot evaluate (`when`, IP blocks, hosts, ports, service-account
//! fields) are read, warned about, and treated as istiod treats a rule it cannot translate: an
//! ALLOW rule holding one never matches, a DENY rule holding one matches as if the condition
//! held (the safe side both ways). CUSTOM and AUDIT policies are warned about and ignored;
//! `targetRef(s)` (policies bound to a gateway) too.
//!
//! What Istio's validation refuses is refused at its field, ignored policies included: an
//! empty `source` or `operation`, a DENY or CUSTOM policy without rules, an empty value, a
//! malformed path template, an unknown `when` key. An empty list reads as no list, as it
//! reaches istiod (see `given_list`): `from: []` constrains no source.

use std::collections::BTreeMap;

use super::ManifestError;
use super::path_template::{self, PathTemplate};
use super::reader::{Doc, Node, Scope, get, idx, join};

mod condition;

/// What a matching policy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthzAction {
    /// Requests must match one rule of some ALLOW policy, when there is one.
    Allow,
    /// A request matching a rule is denied, whatever the ALLOW policies say.
    Deny,
}

/// A string as AuthorizationPolicy matches it: exact, `prefix*`, `*suffix`, or `*` (any
/// non-empty value); in `paths` also a template with `{*}` and `{**}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Template(PathTemplate),
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
            Pattern::Template(t) => t.matches(v),
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
const SOURCE_UNSUPPORTED: [&str; 8] = [
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "notTrustDomains",
];
const OPERATION_KEYS: [&str; 4] = ["methods", "notMethods", "paths", "notPaths"];
const OPERATION_UNSUPPORTED: [&str; 4] = ["hosts", "notHosts", "ports", "notPorts"];
/// Source fields Istio refuses in a CUSTOM policy (the external authorizer is not told them).
const NOT_WITH_CUSTOM: [&str; 10] = [
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "notTrustDomains",
];

/// How a policy's rules are read: acted on with its action, or only checked (a policy the
/// simulator ignores, which must still be one Istio accepts).
#[derive(Clone, Copy)]
struct Reading {
    /// None: the policy is ignored, its rules draw no warnings.
    action: Option<AuthzAction>,
    custom: bool,
}

/// Parses an AuthorizationPolicy, refusing what Istio's validation refuses; `None` for one
/// the simulator ignores (CUSTOM, AUDIT, bound to a gateway by `targetRef`), with a warning.
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
        None => "ALLOW".to_string(),
        Some(a) => doc.str(a, "spec.action")?,
    };
    let acts = match action.as_str() {
        "ALLOW" => Some(AuthzAction::Allow),
        "DENY" => Some(AuthzAction::Deny),
        "CUSTOM" | "AUDIT" => None,
        _ => return Err(doc.wrong("spec.action", "one of ALLOW, DENY, AUDIT, CUSTOM")),
    };
    let custom = action == "CUSTOM";
    // An empty list reaches istiod as no list at all (see `given_list`).
    let listed = match get(s, "rules") {
        Some(n) => doc.list(n, "spec.rules")?.as_slice(),
        None => &[],
    };
    if listed.is_empty() && (custom || action == "DENY") {
        return Err(doc.wrong(
            "spec.rules",
            &format!(
                "at least one rule: Istio refuses a {action} policy without rules, which would never apply (`rules: [{{}}]` matches every request)"
            ),
        ));
    }
    provider(doc, s, custom)?;
    let (selector, bound) = match doc.policy_scope(s)? {
        Scope::Workloads(selector) => (selector, false),
        Scope::Target => (None, true),
    };
    let acting = acts.filter(|_| !bound);
    let reading = Reading {
        action: acting,
        custom,
    };
    let mut rules = Vec::new();
    for (i, r) in listed.iter().enumerate() {
        rules.push(rule(doc, Node { v: r }, &idx("spec.rules", i), reading)?);
    }
    if acts.is_none() {
        doc.warn(format!(
            "spec.action {action} is not simulated (an external authorizer, or audit logging \
             only); policy ignored"
        ));
    }
    let Some(action) = acting else {
        return Ok(None);
    };
    Ok(Some(AuthorizationPolicy {
        name,
        namespace,
        selector,
        action,
        rules,
    }))
}

/// `spec.provider`: the external authorizer of a CUSTOM policy, and only of one.
fn provider(
    doc: &mut Doc<'_>,
    s: &serde_json::Map<String, serde_json::Value>,
    custom: bool,
) -> Result<(), ManifestError> {
    let Some(p) = get(s, "provider") else {
        return match custom {
            true => Err(doc.missing("spec.provider.name")),
            false => Ok(()),
        };
    };
    if !custom {
        return Err(doc.wrong(
            "spec.provider",
            "no `provider` unless the action is CUSTOM (Istio refuses it with another action)",
        ));
    }
    let m = doc.obj(p, "spec.provider", &["name"])?;
    let name = get(m, "name")
        .map(|n| doc.str(n, "spec.provider.name"))
        .transpose()?;
    if name.is_none_or(|n| n.is_empty()) {
        return Err(doc.wrong(
            "spec.provider.name",
            "the name of an extension provider of the mesh config",
        ));
    }
    Ok(())
}

fn rule(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
    reading: Reading,
) -> Result<AuthzRule, ManifestError> {
    let m = doc.obj(n, path, &["from", "to", "when"])?;
    let mut out = AuthzRule::default();
    if let Some(from) = given_list(doc, m, path, "from", reading, "every source matches")? {
        let p = join(path, "from");
        for (i, f) in from.iter().enumerate() {
            let pi = idx(&p, i);
            let fm = doc.obj(Node { v: f }, &pi, &["source"])?;
            let src = get(fm, "source").ok_or_else(|| doc.missing(&join(&pi, "source")))?;
            out.from
                .push(source(doc, src, &join(&pi, "source"), reading)?);
        }
    }
    if let Some(to) = given_list(doc, m, path, "to", reading, "every operation matches")? {
        let p = join(path, "to");
        for (i, t) in to.iter().enumerate() {
            let pi = idx(&p, i);
            let tm = doc.obj(Node { v: t }, &pi, &["operation"])?;
            let op = get(tm, "operation").ok_or_else(|| doc.missing(&join(&pi, "operation")))?;
            out.to
                .push(operation(doc, op, &join(&pi, "operation"), reading)?);
        }
    }
    if let Some(when) = given_list(doc, m, path, "when", reading, "no condition applies")? {
        let p = join(path, "when");
        for (i, c) in when.iter().enumerate() {
            condition::check(doc, Node { v: c }, &idx(&p, i), reading)?;
        }
        unsupported(doc, &p, reading);
        out.unsupported = true;
    }
    Ok(out)
}

fn source(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
    reading: Reading,
) -> Result<Source, ManifestError> {
    let known: Vec<&str> = SOURCE_KEYS
        .iter()
        .chain(&SOURCE_UNSUPPORTED)
        .copied()
        .collect();
    let m = doc.obj(n, path, &known)?;
    let mut out = Source {
        principals: field(
            doc,
            m,
            path,
            ["principals", "notPrincipals"],
            reading,
            plain,
        )?,
        request_principals: field(
            doc,
            m,
            path,
            ["requestPrincipals", "notRequestPrincipals"],
            reading,
            plain,
        )?,
        namespaces: field(
            doc,
            m,
            path,
            ["namespaces", "notNamespaces"],
            reading,
            plain,
        )?,
        unsupported: false,
    };
    let unsupported_given = unsupported_fields(doc, m, path, &SOURCE_UNSUPPORTED, reading)?;
    let given = |k: &str| has_items(m, k);
    if !known.iter().any(|k| given(k)) {
        return Err(doc.wrong(path, "at least one field (Istio refuses an empty `source`)"));
    }
    let accounts = ["serviceAccounts", "notServiceAccounts"];
    let identities = ["principals", "notPrincipals", "namespaces", "notNamespaces"];
    if accounts.iter().any(|k| given(k)) && identities.iter().any(|k| given(k)) {
        return Err(doc.wrong(
            &join(path, "serviceAccounts"),
            "no `serviceAccounts` beside `principals` or `namespaces` (Istio refuses them together)",
        ));
    }
    if let Some(k) = NOT_WITH_CUSTOM.iter().find(|k| reading.custom && given(k)) {
        return Err(doc.wrong(
            &join(path, k),
            "no such field in a CUSTOM policy (Istio does not support it with action CUSTOM)",
        ));
    }
    if !unsupported_given.is_empty() {
        for k in &unsupported_given {
            unsupported(doc, &join(path, k), reading);
        }
        out.unsupported = true;
    }
    Ok(out)
}

fn operation(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
    reading: Reading,
) -> Result<Operation, ManifestError> {
    let known: Vec<&str> = OPERATION_KEYS
        .iter()
        .chain(&OPERATION_UNSUPPORTED)
        .copied()
        .collect();
    let m = doc.obj(n, path, &known)?;
    let mut out = Operation {
        methods: field(doc, m, path, ["methods", "notMethods"], reading, plain)?,
        paths: field(doc, m, path, ["paths", "notPaths"], reading, path_pattern)?,
        unsupported: false,
    };
    let unsupported_given = unsupported_fields(doc, m, path, &OPERATION_UNSUPPORTED, reading)?;
    if !known.iter().any(|k| has_items(m, k)) {
        return Err(doc.wrong(
            path,
            "at least one field (Istio refuses an empty `operation`)",
        ));
    }
    if !unsupported_given.is_empty() {
        for k in &unsupported_given {
            unsupported(doc, &join(path, k), reading);
        }
        out.unsupported = true;
    }
    Ok(out)
}

/// A value of a field other than `paths`: exact, prefix, suffix or any.
fn plain(s: &str) -> Result<Pattern, String> {
    Ok(Pattern::new(s))
}

/// A `paths` value: a template when it holds `{*}` or `{**}`, else exact, prefix or suffix.
fn path_pattern(s: &str) -> Result<Pattern, String> {
    path_template::check(s)?;
    Ok(match path_template::is_template(s) {
        true => Pattern::Template(PathTemplate::new(s)),
        false => Pattern::new(s),
    })
}

fn unsupported(doc: &mut Doc<'_>, path: &str, reading: Reading) {
    let effect = match reading.action {
        Some(AuthzAction::Allow) => "this ALLOW rule never matches",
        Some(AuthzAction::Deny) => "this DENY rule matches as if it held",
        None => return,
    };
    doc.warn(format!("{path} is not simulated: {effect}"));
}

/// A list field of a rule, a source or an operation, when given with items. Istio reads an
/// empty list as no list: its JSON decoding into protobuf keeps no empty repeated field, so
/// the check its validation has for `from: []` never sees one, and the builder takes the rule
/// as having no `from`. It loads here as there, with a warning saying what it does.
fn given_list<'a>(
    doc: &mut Doc<'_>,
    m: &'a serde_json::Map<String, serde_json::Value>,
    path: &str,
    key: &str,
    reading: Reading,
    effect: &str,
) -> Result<Option<&'a Vec<serde_json::Value>>, ManifestError> {
    let Some(n) = get(m, key) else {
        return Ok(None);
    };
    let p = join(path, key);
    let items = doc.list(n, &p)?;
    if !items.is_empty() {
        return Ok(Some(items));
    }
    if reading.action.is_some() {
        doc.warn(format!(
            "{p} is an empty list, which Istio reads as no `{key}` at all: {effect}"
        ));
    }
    Ok(None)
}

/// Whether `key` is a list with items (of a mapping whose lists were read).
fn has_items(m: &serde_json::Map<String, serde_json::Value>, key: &str) -> bool {
    get(m, key).is_some_and(|n| n.v.as_array().is_some_and(|a| !a.is_empty()))
}

/// The non-empty strings of a list field given with items.
fn strings(
    doc: &mut Doc<'_>,
    m: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    key: &str,
    reading: Reading,
) -> Result<Option<Vec<String>>, ManifestError> {
    let effect = "it constrains nothing";
    let Some(items) = given_list(doc, m, path, key, reading, effect)? else {
        return Ok(None);
    };
    let p = join(path, key);
    let mut out = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let s = doc.str(Node { v }, &idx(&p, i))?;
        if s.is_empty() {
            return Err(doc.wrong(
                &idx(&p, i),
                "a non-empty value (Istio refuses an empty one)",
            ));
        }
        out.push(s);
    }
    Ok(Some(out))
}

/// The fields of `keys` given (read, not evaluated).
fn unsupported_fields<'k>(
    doc: &mut Doc<'_>,
    m: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    keys: &[&'k str],
    reading: Reading,
) -> Result<Vec<&'k str>, ManifestError> {
    let mut out = Vec::new();
    for k in keys {
        if strings(doc, m, path, k, reading)?.is_some() {
            out.push(*k);
        }
    }
    Ok(out)
}

/// A list of patterns and its negation, each value read by `read`.
fn field(
    doc: &mut Doc<'_>,
    m: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    [is, not]: [&str; 2],
    reading: Reading,
    read: fn(&str) -> Result<Pattern, String>,
) -> Result<Field, ManifestError> {
    let mut patterns = |key: &str| -> Result<Option<Vec<Pattern>>, ManifestError> {
        let Some(values) = strings(doc, m, path, key, reading)? else {
            return Ok(None);
        };
        let p = join(path, key);
        let mut out = Vec::new();
        for (i, s) in values.iter().enumerate() {
            out.push(read(s).map_err(|e| doc.wrong(&idx(&p, i), &e))?);
        }
        Ok(Some(out))
    };
    Ok(Field {
        is: patterns(is)?,
        not: patterns(not)?.unwrap_or_default(),
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
