//! The Gateway API's HTTPRoute, bound to a Service as GAMMA meshes bind it: rules with their
//! header matches, weighted backendRefs, timeouts and the RequestMirror filter.

use super::reader::{Doc, Node, get, idx, join};
use super::{HeaderMatch, ManifestError, StringMatch};
use crate::engine::SimTime;

/// A Gateway API HTTPRoute rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct GatewayRule {
    /// Match blocks (ORed) of header conditions (ANDed).
    pub(crate) matches: Vec<Vec<HeaderMatch>>,
    /// Every match block has a condition requests here cannot meet (they carry only headers):
    /// the rule matches no request.
    pub(crate) matches_none: bool,
    /// Backend Services as hosts (`name`, or `name.namespace` when the ref sets one) with
    /// weights (default 1).
    pub(crate) backends: Vec<(String, u32)>,
    /// `timeouts.request`.
    pub(crate) request_timeout: Option<SimTime>,
    /// `timeouts.backendRequest`.
    pub(crate) backend_request_timeout: Option<SimTime>,
    /// A `RequestMirror` filter: the backend copied to and the percentage (100 by default).
    pub(crate) mirror: Option<(String, f64)>,
}

/// A Gateway API HTTPRoute.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayHttpRoute {
    /// `metadata.name`.
    pub(crate) name: String,
    /// `metadata.namespace`.
    pub(crate) namespace: Option<String>,
    /// `spec.parentRefs`: a Service of the core group for mesh routing (GAMMA), a Gateway by
    /// default.
    pub(crate) parents: Vec<ParentRef>,
    /// `spec.rules`.
    pub(crate) rules: Vec<GatewayRule>,
}

/// An HTTPRoute `parentRefs` entry, with the Gateway API's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParentRef {
    /// `group`: `gateway.networking.k8s.io` unless set; `""` is the core group.
    pub(crate) group: String,
    /// `kind`: `Gateway` unless set.
    pub(crate) kind: String,
    /// `name`.
    pub(crate) name: String,
    /// `namespace`: the route's own unless set.
    pub(crate) namespace: Option<String>,
}

impl ParentRef {
    /// Whether this parent is a Service (the GAMMA mesh binding), the only kind of parent
    /// whose routes the simulated clients follow.
    pub(crate) fn is_service(&self) -> bool {
        self.group.is_empty() && self.kind == "Service"
    }
}

/// A backendRef (or a mirror's): the Service it names as a host, `name` or `name.namespace`.
/// Other kinds of backend are refused: the simulator has nothing to send their share to.
fn service_ref(
    doc: &mut Doc<'_>,
    m: &serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Result<String, ManifestError> {
    let text = |doc: &mut Doc<'_>, key: &str| {
        get(m, key)
            .map(|v| doc.str(v, &join(path, key)))
            .transpose()
    };
    let group = text(doc, "group")?.unwrap_or_default();
    let kind = text(doc, "kind")?.unwrap_or_else(|| "Service".into());
    if !group.is_empty() || kind != "Service" {
        return Err(doc.wrong(
            &join(path, "kind"),
            "a Service of the core group (group \"\"): other backends are not simulated",
        ));
    }
    let name = text(doc, "name")?.ok_or_else(|| doc.missing(&join(path, "name")))?;
    Ok(match text(doc, "namespace")? {
        Some(ns) => format!("{name}.{ns}"),
        None => name,
    })
}

pub(super) fn gateway_http_route(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<GatewayHttpRoute, ManifestError> {
    let s = doc.obj(spec, "spec", &["parentRefs", "hostnames", "rules"])?;
    let mut parents = Vec::new();
    if let Some(pr) = get(s, "parentRefs") {
        for (i, v) in doc.list(pr, "spec.parentRefs")?.iter().enumerate() {
            let p = idx("spec.parentRefs", i);
            let pm = doc.obj(
                Node { v },
                &p,
                &["group", "kind", "name", "namespace", "port", "sectionName"],
            )?;
            let text = |doc: &mut Doc<'_>, key: &str| {
                get(pm, key).map(|v| doc.str(v, &join(&p, key))).transpose()
            };
            parents.push(ParentRef {
                group: text(doc, "group")?.unwrap_or_else(|| "gateway.networking.k8s.io".into()),
                kind: text(doc, "kind")?.unwrap_or_else(|| "Gateway".into()),
                name: text(doc, "name")?.ok_or_else(|| doc.missing(&join(&p, "name")))?,
                namespace: text(doc, "namespace")?,
            });
        }
    }
    let mut rules = Vec::new();
    if let Some(rs) = get(s, "rules") {
        for (i, v) in doc.list(rs, "spec.rules")?.iter().enumerate() {
            let p = idx("spec.rules", i);
            let rm = doc.obj(
                Node { v },
                &p,
                &[
                    "matches",
                    "backendRefs",
                    "filters",
                    "timeouts",
                    "name",
                    "retry",
                    "sessionPersistence",
                ],
            )?;
            let mut rule = GatewayRule::default();
            if let Some(ms) = get(rm, "matches") {
                let mp = join(&p, "matches");
                for (j, v) in doc.list(ms, &mp)?.iter().enumerate() {
                    let bp = idx(&mp, j);
                    let bm = doc.obj(
                        Node { v },
                        &bp,
                        &["path", "headers", "queryParams", "method"],
                    )?;
                    let mut block = Vec::new();
                    if let Some(hs) = get(bm, "headers") {
                        let hp = join(&bp, "headers");
                        for (k, v) in doc.list(hs, &hp)?.iter().enumerate() {
                            let ep = idx(&hp, k);
                            let em = doc.obj(Node { v }, &ep, &["type", "name", "value"])?;
                            let hn = doc.str(
                                get(em, "name").ok_or_else(|| doc.missing(&join(&ep, "name")))?,
                                &join(&ep, "name"),
                            )?;
                            let hv = doc.str(
                                get(em, "value").ok_or_else(|| doc.missing(&join(&ep, "value")))?,
                                &join(&ep, "value"),
                            )?;
                            let ty = get(em, "type")
                                .map(|t| doc.str(t, &join(&ep, "type")))
                                .transpose()?
                                .unwrap_or_else(|| "Exact".into());
                            let matcher = match ty.as_str() {
                                "Exact" => StringMatch::Exact(hv),
                                "RegularExpression" => StringMatch::regex(&hv).map_err(|_| {
                                    doc.wrong(&join(&ep, "value"), "a valid regular expression")
                                })?,
                                _ => {
                                    return Err(
                                        doc.wrong(&join(&ep, "type"), "Exact or RegularExpression")
                                    );
                                }
                            };
                            block.push(HeaderMatch {
                                name: hn.to_ascii_lowercase(),
                                matcher,
                            });
                        }
                    }
                    let unmet: Vec<&str> = ["path", "method", "queryParams"]
                        .into_iter()
                        .filter(|k| bm.contains_key(*k))
                        // A `/` prefix (what the API server fills in) holds for every path.
                        .filter(|&k| {
                            k != "path"
                                || !matches!(bm["path"]["value"].as_str(), Some("/"))
                                || !matches!(bm["path"]["type"].as_str(), None | Some("PathPrefix"))
                        })
                        .collect();
                    if unmet.is_empty() {
                        rule.matches.push(block);
                    } else {
                        doc.warn(format!("`{bp}`: {} not simulated: requests carry only headers, so this match block matches no request", unmet.join(", ")));
                    }
                }
                rule.matches_none = rule.matches.is_empty();
            }
            if let Some(br) = get(rm, "backendRefs") {
                let bp = join(&p, "backendRefs");
                for (j, v) in doc.list(br, &bp)?.iter().enumerate() {
                    let ep = idx(&bp, j);
                    let em = doc.obj(
                        Node { v },
                        &ep,
                        &[
                            "group",
                            "kind",
                            "name",
                            "namespace",
                            "port",
                            "weight",
                            "filters",
                        ],
                    )?;
                    let bn = service_ref(doc, em, &ep)?;
                    let w = get(em, "weight")
                        .map(|w| doc.u32(w, &join(&ep, "weight")))
                        .transpose()?
                        .unwrap_or(1);
                    rule.backends.push((bn, w));
                }
            }
            if let Some(fs) = get(rm, "filters") {
                let fp = join(&p, "filters");
                for (j, v) in doc.list(fs, &fp)?.iter().enumerate() {
                    let ep = idx(&fp, j);
                    rule.mirror = request_mirror(doc, Node { v }, &ep)?.or(rule.mirror);
                }
            }
            if let Some(t) = get(rm, "timeouts") {
                let tp = join(&p, "timeouts");
                let tm = doc.obj(t, &tp, &["request", "backendRequest"])?;
                rule.request_timeout = get(tm, "request")
                    .map(|v| doc.gateway_duration(v, &join(&tp, "request")))
                    .transpose()?;
                rule.backend_request_timeout = get(tm, "backendRequest")
                    .map(|v| doc.gateway_duration(v, &join(&tp, "backendRequest")))
                    .transpose()?;
            }
            rules.push(rule);
        }
    }
    Ok(GatewayHttpRoute {
        name,
        namespace,
        parents,
        rules,
    })
}

/// An HTTPRoute filter: a `RequestMirror` as (backend, percent); any other type is warned about,
/// since the simulator does not model it.
pub(super) fn request_mirror(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
) -> Result<Option<(String, f64)>, ManifestError> {
    let m = doc.obj(
        n,
        path,
        &[
            "type",
            "requestMirror",
            "requestHeaderModifier",
            "responseHeaderModifier",
            "requestRedirect",
            "urlRewrite",
            "extensionRef",
            "cors",
            "externalAuth",
        ],
    )?;
    let ty = doc.str(
        get(m, "type").ok_or_else(|| doc.missing(&join(path, "type")))?,
        &join(path, "type"),
    )?;
    if ty != "RequestMirror" {
        doc.warn(format!("`{path}`: filter {ty} is not simulated; ignored"));
        return Ok(None);
    }
    let rp = join(path, "requestMirror");
    let rm = doc.obj(
        get(m, "requestMirror").ok_or_else(|| doc.missing(&rp))?,
        &rp,
        &["backendRef", "percent", "fraction"],
    )?;
    let bp = join(&rp, "backendRef");
    let br = doc.obj(
        get(rm, "backendRef").ok_or_else(|| doc.missing(&bp))?,
        &bp,
        &["group", "kind", "name", "namespace", "port"],
    )?;
    let backend = service_ref(doc, br, &bp)?;
    let percent = match (get(rm, "percent"), get(rm, "fraction")) {
        (Some(p), _) => doc.f64(p, &join(&rp, "percent"))?,
        (None, Some(f)) => {
            let fp = join(&rp, "fraction");
            let fm = doc.obj(f, &fp, &["numerator", "denominator"])?;
            let num = get(fm, "numerator")
                .map(|v| doc.f64(v, &join(&fp, "numerator")))
                .transpose()?
                .unwrap_or(0.0);
            let den = get(fm, "denominator")
                .map(|v| doc.f64(v, &join(&fp, "denominator")))
                .transpose()?
                .unwrap_or(100.0);
            if den <= 0.0 {
                return Err(doc.wrong(&join(&fp, "denominator"), "a positive number"));
            }
            100.0 * num / den
        }
        (None, None) => 100.0,
    };
    if !(0.0..=100.0).contains(&percent) {
        return Err(doc.wrong(&join(&rp, "percent"), "a percentage from 0 to 100"));
    }
    Ok(Some((backend, percent)))
}
