//! Linkerd's ServiceProfile: routes with their conditions, retryability, timeouts and response
//! classes, and the service's retry budget.

use super::ManifestError;
use super::reader::{Doc, Node, get, idx, join};
use crate::engine::SimTime;

/// A ServiceProfile route.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProfileRoute {
    /// Route name.
    pub(crate) name: String,
    /// `condition.method`.
    pub(crate) method: Option<String>,
    /// `condition.pathRegex`.
    pub(crate) path_regex: Option<String>,
    /// Status ranges classed as failures (`responseClasses` with `isFailure`).
    pub(crate) failure_ranges: Vec<(u16, u16)>,
    /// `isRetryable`.
    pub(crate) is_retryable: bool,
    /// `timeout`.
    pub(crate) timeout: Option<SimTime>,
}

/// Linkerd retry budget.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RetryBudget {
    /// `retryRatio`.
    pub(crate) retry_ratio: f64,
    /// `minRetriesPerSecond`.
    pub(crate) min_retries_per_second: u32,
    /// `ttl`.
    pub(crate) ttl: SimTime,
}

/// A Linkerd ServiceProfile.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceProfile {
    /// `metadata.name` (the service FQDN).
    pub(crate) name: String,
    /// `metadata.namespace`.
    pub(crate) namespace: Option<String>,
    /// `spec.routes`.
    pub(crate) routes: Vec<ProfileRoute>,
    /// `spec.retryBudget`.
    pub(crate) retry_budget: Option<RetryBudget>,
}

pub(super) fn service_profile(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<ServiceProfile, ManifestError> {
    let s = doc.obj(
        spec,
        "spec",
        &["routes", "retryBudget", "dstOverrides", "opaquePorts"],
    )?;
    let mut routes = Vec::new();
    if let Some(rs) = get(s, "routes") {
        for (i, v) in doc.list(rs, "spec.routes")?.iter().enumerate() {
            let p = idx("spec.routes", i);
            let rm = doc.obj(
                Node { v },
                &p,
                &[
                    "name",
                    "condition",
                    "responseClasses",
                    "isRetryable",
                    "timeout",
                ],
            )?;
            let rname = doc.str(
                get(rm, "name").ok_or_else(|| doc.missing(&join(&p, "name")))?,
                &join(&p, "name"),
            )?;
            let (mut method, mut path_regex) = (None, None);
            if let Some(c) = get(rm, "condition") {
                let cp = join(&p, "condition");
                let cm = doc.obj(c, &cp, &["method", "pathRegex", "all", "any", "not"])?;
                method = get(cm, "method")
                    .map(|v| doc.str(v, &join(&cp, "method")))
                    .transpose()?;
                path_regex = get(cm, "pathRegex")
                    .map(|v| doc.str(v, &join(&cp, "pathRegex")))
                    .transpose()?;
            }
            let mut failure_ranges = Vec::new();
            if let Some(rc) = get(rm, "responseClasses") {
                let rcp = join(&p, "responseClasses");
                for (j, v) in doc.list(rc, &rcp)?.iter().enumerate() {
                    let cp = idx(&rcp, j);
                    let cm = doc.obj(Node { v }, &cp, &["condition", "isFailure"])?;
                    let is_failure = get(cm, "isFailure")
                        .map(|v| doc.bool(v, &join(&cp, "isFailure")))
                        .transpose()?
                        .unwrap_or(false);
                    let mut range = (100u16, 599u16);
                    if let Some(c) = get(cm, "condition") {
                        let ccp = join(&cp, "condition");
                        let ccm = doc.obj(
                            c,
                            &ccp,
                            &["status", "all", "any", "not", "method", "pathRegex"],
                        )?;
                        if let Some(st) = get(ccm, "status") {
                            let sp = join(&ccp, "status");
                            let sm = doc.obj(st, &sp, &["min", "max"])?;
                            if let Some(v) = get(sm, "min") {
                                range.0 = doc.u32(v, &join(&sp, "min"))?.min(999) as u16;
                            }
                            if let Some(v) = get(sm, "max") {
                                range.1 = doc.u32(v, &join(&sp, "max"))?.min(999) as u16;
                            }
                        }
                    }
                    if is_failure {
                        failure_ranges.push(range);
                    }
                }
            }
            let is_retryable = get(rm, "isRetryable")
                .map(|v| doc.bool(v, &join(&p, "isRetryable")))
                .transpose()?
                .unwrap_or(false);
            let timeout = get(rm, "timeout")
                .map(|v| doc.duration(v, &join(&p, "timeout")))
                .transpose()?;
            routes.push(ProfileRoute {
                name: rname,
                method,
                path_regex,
                failure_ranges,
                is_retryable,
                timeout,
            });
        }
    }
    let retry_budget = match get(s, "retryBudget") {
        Some(b) => {
            let bm = doc.obj(
                b,
                "spec.retryBudget",
                &["retryRatio", "minRetriesPerSecond", "ttl"],
            )?;
            Some(RetryBudget {
                retry_ratio: get(bm, "retryRatio")
                    .map(|v| doc.f64(v, "spec.retryBudget.retryRatio"))
                    .transpose()?
                    .unwrap_or(0.2),
                min_retries_per_second: get(bm, "minRetriesPerSecond")
                    .map(|v| doc.u32(v, "spec.retryBudget.minRetriesPerSecond"))
                    .transpose()?
                    .unwrap_or(10),
                ttl: get(bm, "ttl")
                    .map(|v| doc.duration(v, "spec.retryBudget.ttl"))
                    .transpose()?
                    .unwrap_or(10 * crate::engine::SECONDS),
            })
        }
        None => None,
    };
    Ok(ServiceProfile {
        name,
        namespace,
        routes,
        retry_budget,
    })
}
