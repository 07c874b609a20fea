//! Istio's VirtualService: HTTP routes with their matches, weighted destinations, timeouts,
//! retries (Envoy's `retry_on` conditions), fault injection and mirroring, read with Istio's
//! meaning (absent stays absent; the mesh applies Istio's defaults).

use serde_json::Value;

use super::reader::{Doc, Node, get, idx, join};
use super::{HeaderMatch, ManifestError, StringMatch};
use crate::engine::SimTime;

/// A routing destination.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RouteDestination {
    /// Target host (service name or FQDN).
    pub(crate) host: String,
    /// Subset name, if any.
    pub(crate) subset: Option<String>,
    /// Relative weight (Istio: absent means 100 for a single destination).
    pub(crate) weight: Option<u32>,
}

/// Retry condition set (Envoy `retry_on`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RetryOn {
    /// `5xx`.
    pub(crate) five_xx: bool,
    /// `gateway-error` (502, 503, 504).
    pub(crate) gateway_error: bool,
    /// `connect-failure`.
    pub(crate) connect_failure: bool,
    /// `reset`.
    pub(crate) reset: bool,
    /// `reset-before-request`: a reset or connect failure before the request went upstream.
    pub(crate) reset_before_request: bool,
    /// `refused-stream`.
    pub(crate) refused_stream: bool,
    /// `retriable-status-codes` (uses `codes`).
    pub(crate) retriable_status_codes: bool,
    /// Integer codes listed in `retryOn`.
    pub(crate) codes: Vec<u16>,
}

impl RetryOn {
    /// Parses Istio's comma-separated `retryOn`, warning about conditions the model ignores.
    pub(crate) fn parse(s: &str, warn: &mut dyn FnMut(String)) -> Self {
        let mut r = RetryOn::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "5xx" => r.five_xx = true,
                "gateway-error" => r.gateway_error = true,
                "connect-failure" => r.connect_failure = true,
                "reset" => r.reset = true,
                "reset-before-request" => r.reset_before_request = true,
                "refused-stream" => r.refused_stream = true,
                "retriable-status-codes" => r.retriable_status_codes = true,
                // Conditions that never arise in the model.
                "unavailable"
                | "cancelled"
                | "deadline-exceeded"
                | "resource-exhausted"
                | "retriable-4xx"
                | "retriable-headers"
                | "envoy-ratelimited"
                | "http3-post-connect-failure" => {}
                other => match other.parse::<u16>() {
                    Ok(code) => {
                        r.codes.push(code);
                        r.retriable_status_codes = true;
                    }
                    Err(_) => warn(format!("retryOn: unknown condition `{other}` ignored")),
                },
            }
        }
        r
    }

    /// Istio's default: `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`,
    /// whose status codes are 503 only when `retry_503` (Istio up to 1.23, or
    /// EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY=false on 1.24 to 1.26) and none otherwise
    /// (istio/istio `pilot/pkg/networking/core/route/retry/retry.go`, release note 50506).
    pub(crate) fn istio_default(retry_503: bool) -> Self {
        RetryOn {
            connect_failure: true,
            refused_stream: true,
            retriable_status_codes: true,
            codes: if retry_503 { vec![503] } else { Vec::new() },
            ..Default::default()
        }
    }
}

/// VirtualService `retries`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Retries {
    /// Retries after the first try.
    pub(crate) attempts: u32,
    /// Per-try timeout.
    pub(crate) per_try_timeout: Option<SimTime>,
    /// Conditions (absent: Istio's default set).
    pub(crate) retry_on: Option<RetryOn>,
    /// Envoy's `retry_back_off.base_interval` (Istio 1.26 and later; absent: Envoy's 25 ms).
    pub(crate) backoff: Option<SimTime>,
    /// `retryIgnorePreviousHosts` (absent: Istio's default, true).
    pub(crate) ignore_previous_hosts: Option<bool>,
}

/// VirtualService `fault`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultInjection {
    /// Fixed delay and the percentage of requests delayed.
    pub delay: Option<(SimTime, f64)>,
    /// HTTP status and the percentage of requests aborted.
    pub abort: Option<(u16, f64)>,
}

/// One VirtualService HTTP route.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IstioHttpRoute {
    /// Route name.
    pub(crate) name: Option<String>,
    /// Match blocks (ORed); each holds header conditions (ANDed). Empty: matches everything.
    pub matches: Vec<Vec<HeaderMatch>>,
    /// Every match block has a condition requests here cannot meet (they carry only headers):
    /// the route matches no request.
    pub(crate) matches_none: bool,
    /// Per match block, the gateways it is restricted to (`mesh`: the sidecars); empty: every
    /// gateway the VirtualService is bound to.
    pub(crate) match_gateways: Vec<Vec<String>>,
    /// Weighted destinations.
    pub(crate) route: Vec<RouteDestination>,
    /// Route timeout.
    pub(crate) timeout: Option<SimTime>,
    /// Retry policy.
    pub(crate) retries: Option<Retries>,
    /// Fault injection.
    pub fault: Option<FaultInjection>,
    /// Mirror destination.
    pub(crate) mirror: Option<RouteDestination>,
    /// Mirror percentage (Istio: 100 when `mirror` is set without it).
    pub(crate) mirror_percentage: Option<f64>,
    /// The status the proxy answers itself, reaching no pod: a `directResponse`'s, or a
    /// `redirect`'s (301 unless `redirectCode`).
    pub(crate) answer: Option<u16>,
}

/// An Istio VirtualService.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualService {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub(crate) namespace: Option<String>,
    /// `spec.hosts`.
    pub(crate) hosts: Vec<String>,
    /// `spec.gateways`: empty means `mesh`, the sidecars.
    pub(crate) gateways: Vec<String>,
    /// `spec.http`.
    pub http: Vec<IstioHttpRoute>,
}

impl VirtualService {
    /// Whether the sidecars apply it: Istio binds a VirtualService to the reserved gateway
    /// `mesh` when `gateways` is absent; one bound to named gateways only routes at those
    /// gateways, not for the mesh's clients.
    pub(crate) fn binds_mesh(&self) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh")
    }

    /// The VirtualService as the proxy `at` applies it (`at` tells whether a `gateways` entry
    /// names that proxy): a match block restricted to other gateways is left out, and a route
    /// whose every block is left out matches no request there.
    pub(crate) fn at(&self, at: impl Fn(&str) -> bool) -> VirtualService {
        let mut vs = self.clone();
        for r in &mut vs.http {
            let had = !r.matches.is_empty();
            let blocks = std::mem::take(&mut r.matches);
            let gateways = std::mem::take(&mut r.match_gateways);
            for (block, gs) in blocks.into_iter().zip(gateways) {
                if gs.is_empty() || gs.iter().any(|g| at(g)) {
                    r.matches.push(block);
                    r.match_gateways.push(gs);
                }
            }
            r.matches_none |= had && r.matches.is_empty();
        }
        vs
    }
}

pub(super) fn string_match(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
) -> Result<StringMatch, ManifestError> {
    let m = doc.obj(n, path, &["exact", "prefix", "regex"])?;
    if let Some(v) = get(m, "exact") {
        return Ok(StringMatch::Exact(doc.str(v, &join(path, "exact"))?));
    }
    if let Some(v) = get(m, "prefix") {
        return Ok(StringMatch::Prefix(doc.str(v, &join(path, "prefix"))?));
    }
    if let Some(v) = get(m, "regex") {
        let p = join(path, "regex");
        let s = doc.str(v, &p)?;
        // Istio's validation compiles `*` as a regex and refuses it (only `withoutHeaders`
        // takes it); `{}` is how a presence match is written.
        let hint = if s == "*" {
            "a valid RE2 regular expression (for a presence match write `{}`)"
        } else {
            "a valid RE2 regular expression"
        };
        return StringMatch::regex(&s).map_err(|_| doc.wrong(&p, hint));
    }
    // No match type: Istio translates it to Envoy's `present_match` (a `uri` without one
    // is the default prefix `/`, which every path has).
    if m.is_empty() {
        return Ok(StringMatch::Present);
    }
    Err(doc.wrong(path, "one of exact, prefix or regex"))
}

fn http_status(doc: &Doc<'_>, n: Node<'_>, path: &str) -> Result<u16, ManifestError> {
    let status = doc.u32(n, path)?;
    u16::try_from(status)
        .ok()
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| doc.wrong(path, "an HTTP status between 100 and 599"))
}

/// An abort's status: Istio's validation and Envoy's fault filter take 200 to 599 only.
fn abort_status(doc: &Doc<'_>, n: Node<'_>, path: &str) -> Result<u16, ManifestError> {
    let status = doc.u32(n, path)?;
    u16::try_from(status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .ok_or_else(|| doc.wrong(path, "an HTTP status between 200 and 599"))
}

/// Istio's `ignoreUriCase`: an exact or prefix `uri` compared case-insensitively (Envoy's
/// `case_sensitive: false`); a regex keeps its own case rules.
fn case_insensitive(m: StringMatch) -> StringMatch {
    let pattern = match &m {
        StringMatch::Exact(s) => format!("(?i:{})", regex::escape(s)),
        StringMatch::Prefix(s) => format!("(?i:{})(?s:.*)", regex::escape(s)),
        StringMatch::Regex(_) | StringMatch::Present => return m,
    };
    StringMatch::regex(&pattern).unwrap_or(m)
}

pub(super) fn destination(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
    weight: Option<u32>,
) -> Result<RouteDestination, ManifestError> {
    let m = doc.obj(n, path, &["host", "subset", "port"])?;
    let host = doc.str(
        get(m, "host").ok_or_else(|| doc.missing(&join(path, "host")))?,
        &join(path, "host"),
    )?;
    let subset = get(m, "subset")
        .map(|s| doc.str(s, &join(path, "subset")))
        .transpose()?;
    Ok(RouteDestination {
        host,
        subset,
        weight,
    })
}

pub(super) fn percentage(
    doc: &mut Doc<'_>,
    m: &serde_json::Map<String, Value>,
    path: &str,
) -> Result<Option<f64>, ManifestError> {
    if let Some(p) = get(m, "percentage") {
        let pp = join(path, "percentage");
        let pm = doc.obj(p, &pp, &["value"])?;
        return get(pm, "value")
            .map(|v| doc.f64(v, &join(&pp, "value")))
            .transpose();
    }
    if let Some(p) = get(m, "percent") {
        return Ok(Some(f64::from(doc.u32(p, &join(path, "percent"))?)));
    }
    Ok(None)
}

pub(super) fn virtual_service(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<VirtualService, ManifestError> {
    let s = doc.obj(
        spec,
        "spec",
        &["hosts", "gateways", "http", "tcp", "tls", "exportTo"],
    )?;
    let mut hosts = Vec::new();
    if let Some(h) = get(s, "hosts") {
        for (i, v) in doc.list(h, "spec.hosts")?.iter().enumerate() {
            hosts.push(doc.str(Node { v }, &idx("spec.hosts", i))?);
        }
    }
    let mut gateways = Vec::new();
    if let Some(g) = get(s, "gateways") {
        for (i, v) in doc.list(g, "spec.gateways")?.iter().enumerate() {
            gateways.push(doc.str(Node { v }, &idx("spec.gateways", i))?);
        }
    }
    let mut http = Vec::new();
    if let Some(h) = get(s, "http") {
        for (i, v) in doc.list(h, "spec.http")?.iter().enumerate() {
            let path = idx("spec.http", i);
            http.push(istio_http_route(doc, Node { v }, &path)?);
        }
    }
    Ok(VirtualService {
        name,
        namespace,
        hosts,
        gateways,
        http,
    })
}

pub(super) fn istio_http_route(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
) -> Result<IstioHttpRoute, ManifestError> {
    let m = doc.obj(
        n,
        path,
        &[
            "name",
            "match",
            "route",
            "timeout",
            "retries",
            "fault",
            "mirror",
            "mirrorPercentage",
            "mirror_percent",
            "mirrorPercent",
            "headers",
            "rewrite",
            "redirect",
            "corsPolicy",
            "directResponse",
            "delegate",
            "mirrors",
        ],
    )?;
    let mut r = IstioHttpRoute {
        name: get(m, "name")
            .map(|v| doc.str(v, &join(path, "name")))
            .transpose()?,
        ..Default::default()
    };
    if let Some(ms) = get(m, "match") {
        let mp = join(path, "match");
        for (i, v) in doc.list(ms, &mp)?.iter().enumerate() {
            let bp = idx(&mp, i);
            let b = doc.obj(
                Node { v },
                &bp,
                &[
                    "name",
                    "headers",
                    "uri",
                    "method",
                    "scheme",
                    "authority",
                    "port",
                    "queryParams",
                    "sourceLabels",
                    "ignoreUriCase",
                    "withoutHeaders",
                    "gateways",
                    "sourceNamespace",
                ],
            )?;
            let mut block = Vec::new();
            if let Some(h) = get(b, "headers") {
                let hp = join(&bp, "headers");
                let hm =
                    h.v.as_object()
                        .ok_or_else(|| doc.wrong(&hp, "a mapping of header name to match"))?;
                for (hn, hv) in hm {
                    let matcher = string_match(doc, Node { v: hv }, &join(&hp, hn))?;
                    block.push(HeaderMatch {
                        name: hn.to_ascii_lowercase(),
                        matcher,
                    });
                }
            }
            let ignore_case = get(b, "ignoreUriCase")
                .map(|v| doc.bool(v, &join(&bp, "ignoreUriCase")))
                .transpose()?
                .unwrap_or(false);
            // Envoy matches the path and the method as the pseudo-headers `:path` and
            // `:method`; requests carry both (the mesh's header sets).
            for (key, pseudo) in [("uri", ":path"), ("method", ":method")] {
                if let Some(v) = get(b, key) {
                    let mut matcher = string_match(doc, v, &join(&bp, key))?;
                    if key == "uri" && ignore_case {
                        matcher = case_insensitive(matcher);
                    }
                    block.push(HeaderMatch {
                        name: pseudo.into(),
                        matcher,
                    });
                }
            }
            // A block naming gateways applies at those gateways only (`mesh`: the sidecars),
            // narrowing the VirtualService's own; the source, port and scheme of a request are
            // not modelled.
            let mut gateways = Vec::new();
            if let Some(g) = get(b, "gateways") {
                let gp = join(&bp, "gateways");
                for (i, v) in doc.list(g, &gp)?.iter().enumerate() {
                    gateways.push(doc.str(Node { v }, &idx(&gp, i))?);
                }
            }
            let unmet: Vec<&str> = [
                "authority",
                "queryParams",
                "sourceLabels",
                "sourceNamespace",
                "port",
                "scheme",
                "withoutHeaders",
            ]
            .into_iter()
            .filter(|k| b.contains_key(*k))
            .collect();
            if unmet.is_empty() {
                r.matches.push(block);
                r.match_gateways.push(gateways);
            } else {
                doc.warn(format!("`{bp}`: {} not simulated: requests carry headers, a method and a path only, so this match block matches no request", unmet.join(", ")));
            }
        }
        r.matches_none = r.matches.is_empty();
    }
    if let Some(rs) = get(m, "route") {
        let rp = join(path, "route");
        for (i, v) in doc.list(rs, &rp)?.iter().enumerate() {
            let dp = idx(&rp, i);
            let d = doc.obj(Node { v }, &dp, &["destination", "weight", "headers"])?;
            let weight = get(d, "weight")
                .map(|w| doc.u32(w, &join(&dp, "weight")))
                .transpose()?;
            let dest =
                get(d, "destination").ok_or_else(|| doc.missing(&join(&dp, "destination")))?;
            r.route
                .push(destination(doc, dest, &join(&dp, "destination"), weight)?);
        }
    }
    if let Some(t) = get(m, "timeout") {
        r.timeout = Some(doc.istio_duration(t, &join(path, "timeout"))?);
    }
    if let Some(rt) = get(m, "retries") {
        let rp = join(path, "retries");
        let rm = doc.obj(
            rt,
            &rp,
            &[
                "attempts",
                "perTryTimeout",
                "retryOn",
                "retryRemoteLocalities",
                "retryIgnorePreviousHosts",
                "backoff",
            ],
        )?;
        let attempts = get(rm, "attempts")
            .map(|a| doc.u32(a, &join(&rp, "attempts")))
            .transpose()?
            .unwrap_or(0);
        // Istio's ValidateHTTPRetry refuses these with retries disabled ("http retry policy
        // configured when attempts are set to 0 (disabled)"): ConvertPolicy would drop them.
        if attempts == 0
            && let Some(f) = ["perTryTimeout", "retryOn", "retryRemoteLocalities"]
                .into_iter()
                .find(|f| get(rm, f).is_some())
        {
            return Err(doc.wrong(
                &join(&rp, f),
                "no such setting while `attempts` is 0 or absent: Istio refuses a retry policy configured when attempts are set to 0 (disabled)",
            ));
        }
        let per_try_timeout = get(rm, "perTryTimeout")
            .map(|a| doc.istio_duration(a, &join(&rp, "perTryTimeout")))
            .transpose()?;
        let ignore_previous_hosts = get(rm, "retryIgnorePreviousHosts")
            .map(|v| doc.bool(v, &join(&rp, "retryIgnorePreviousHosts")))
            .transpose()?;
        let backoff = get(rm, "backoff")
            .map(|b| doc.istio_duration(b, &join(&rp, "backoff")))
            .transpose()?;
        let retry_on = match get(rm, "retryOn") {
            Some(v) => {
                let s = doc.str(v, &join(&rp, "retryOn"))?;
                let mut msgs = Vec::new();
                let on = RetryOn::parse(&s, &mut |w| msgs.push(w));
                for w in msgs {
                    doc.warn(w);
                }
                Some(on)
            }
            None => None,
        };
        r.retries = Some(Retries {
            attempts,
            per_try_timeout,
            retry_on,
            backoff,
            ignore_previous_hosts,
        });
    }
    if let Some(f) = get(m, "fault") {
        let fp = join(path, "fault");
        let fm = doc.obj(f, &fp, &["delay", "abort"])?;
        let mut fault = FaultInjection::default();
        if let Some(d) = get(fm, "delay") {
            let dp = join(&fp, "delay");
            let dm = doc.obj(
                d,
                &dp,
                &["fixedDelay", "percentage", "percent", "exponentialDelay"],
            )?;
            let fixed =
                get(dm, "fixedDelay").ok_or_else(|| doc.missing(&join(&dp, "fixedDelay")))?;
            let fixed = doc.istio_duration(fixed, &join(&dp, "fixedDelay"))?;
            // No percentage: Istio delays nothing.
            let pct = percentage(doc, dm, &dp)?.unwrap_or(0.0);
            fault.delay = Some((fixed, pct));
        }
        if let Some(a) = get(fm, "abort") {
            let ap = join(&fp, "abort");
            let am = doc.obj(
                a,
                &ap,
                &["httpStatus", "percentage", "grpcStatus", "http2Error"],
            )?;
            // Unlike delay's, abort's integer `percent` is gone from Istio's API (`reserved`
            // in istio/api): the apiserver refuses it, so a cluster would never abort by it.
            if get(am, "percent").is_some() {
                return Err(doc.wrong(
                    &join(&ap, "percent"),
                    "`percentage: {value: N}` (Istio's abort has no integer `percent`)",
                ));
            }
            let status =
                get(am, "httpStatus").ok_or_else(|| doc.missing(&join(&ap, "httpStatus")))?;
            let status = abort_status(doc, status, &join(&ap, "httpStatus"))?;
            let pct = percentage(doc, am, &ap)?.unwrap_or(0.0);
            fault.abort = Some((status, pct));
        }
        r.fault = Some(fault);
    }
    if get(m, "delegate").is_some() {
        return Err(doc.wrong(
            &join(path, "delegate"),
            "routes written inline (a delegate VirtualService is not simulated)",
        ));
    }
    if let Some(d) = get(m, "directResponse") {
        let dp = join(path, "directResponse");
        let dm = doc.obj(d, &dp, &["status", "body"])?;
        let st = get(dm, "status").ok_or_else(|| doc.missing(&join(&dp, "status")))?;
        r.answer = Some(http_status(doc, st, &join(&dp, "status"))?);
    }
    if let Some(rd) = get(m, "redirect") {
        let rp = join(path, "redirect");
        let rm = doc.obj(
            rd,
            &rp,
            &[
                "uri",
                "authority",
                "port",
                "derivePort",
                "scheme",
                "redirectCode",
            ],
        )?;
        r.answer = Some(match get(rm, "redirectCode") {
            Some(c) => http_status(doc, c, &join(&rp, "redirectCode"))?,
            None => 301,
        });
    }
    if get(m, "rewrite").is_some() {
        doc.warn(format!(
            "`{path}.rewrite` is not simulated: the request keeps its path and authority"
        ));
    }
    if let Some(mi) = get(m, "mirror") {
        r.mirror = Some(destination(doc, mi, &join(path, "mirror"), None)?);
        r.mirror_percentage = Some(100.0);
    }
    if let Some(mp) = get(m, "mirrorPercentage") {
        let p = join(path, "mirrorPercentage");
        let pm = doc.obj(mp, &p, &["value"])?;
        r.mirror_percentage = get(pm, "value")
            .map(|v| doc.f64(v, &join(&p, "value")))
            .transpose()?;
    } else if let Some(mp) = get(m, "mirrorPercent").or_else(|| get(m, "mirror_percent")) {
        r.mirror_percentage = Some(f64::from(doc.u32(mp, &join(path, "mirrorPercent"))?));
    }
    Ok(r)
}
