//! `analysis.sessionAffinity`: the cookie names and attributes go into `Set-Cookie` headers and
//! `Cookie` header regular expressions verbatim, so each must be what a browser and a proxy
//! read as one token or attribute value.

use super::{FieldError, Problems};
use crate::routes::Provider;
use crate::spec::{CanarySpec, SessionAffinity};

const PATH: &str = "spec.analysis.sessionAffinity";

/// The session affinity the rollout keeps cookies for: `None` without it, and with A/B testing
/// (`analysis.match`), whose rules route matched requests by themselves (Flagger's Istio router
/// writes no cookie rules then either; [`super::warnings`] says so).
pub(super) fn session_affinity(p: &mut Problems, spec: &CanarySpec) -> Option<SessionAffinity> {
    let a = spec.analysis.session_affinity.as_ref()?;
    match a.cookie_name.as_str() {
        "" => p.add(
            format!("{PATH}.cookieName"),
            "must name the cookie that pins a user to the canary",
        ),
        name => token(p, "cookieName", name),
    }
    if !a.primary_cookie_name.is_empty() {
        token(p, "primaryCookieName", &a.primary_cookie_name);
        if a.primary_cookie_name == a.cookie_name {
            p.add(
                format!("{PATH}.primaryCookieName"),
                "must differ from cookieName: one cookie cannot pin a user to both sides",
            );
        }
    }
    if a.max_age < 0 {
        p.add(
            format!("{PATH}.maxAge"),
            format!(
                "must be a positive number of seconds (0 or absent: a day), got {}",
                a.max_age
            ),
        );
    }
    if !matches!(a.same_site.as_str(), "" | "Strict" | "Lax" | "None") {
        p.add(
            format!("{PATH}.sameSite"),
            format!("must be Strict, Lax or None, got `{}`", a.same_site),
        );
    }
    for (field, value) in [("domain", &a.domain), ("path", &a.path)] {
        if value.chars().any(|c| c == ';' || c.is_control()) {
            p.add(
                format!("{PATH}.{field}"),
                format!(
                    "`{value}` would end the Set-Cookie attribute: no `;` or control characters"
                ),
            );
        }
    }
    spec.analysis.match_.is_empty().then(|| a.clone())
}

/// A cookie name as RFC 6265 allows it (an HTTP token): no separators, spaces or controls.
fn token(p: &mut Problems, field: &str, name: &str) {
    let bad = name
        .chars()
        .find(|c| !c.is_ascii_graphic() || "()<>@,;:\\\"/[]?={}".contains(*c));
    if let Some(c) = bad {
        p.add(
            format!("{PATH}.{field}"),
            format!("`{name}` is not a cookie name: {c:?} is not allowed in one"),
        );
    }
}

/// Why a valid `sessionAffinity` is not used: with A/B testing, or with a provider that cannot
/// match on headers nor set response headers (Flagger's SMI router ignores it too).
pub(super) fn unused(spec: &CanarySpec, provider: Option<Provider>) -> Option<FieldError> {
    spec.analysis.session_affinity.as_ref()?;
    let message = if !spec.analysis.match_.is_empty() {
        "not used with A/B testing: requests matching analysis.match go to the canary by \
         themselves, and no cookie is set"
            .to_string()
    } else if let Some(p @ Provider::Smi(_)) = provider {
        format!(
            "not used: provider {p} cannot match requests on a cookie nor set one (a \
             TrafficSplit only weighs backends); use istio or gatewayapi"
        )
    } else {
        return None;
    };
    Some(FieldError {
        path: PATH.into(),
        message,
    })
}
