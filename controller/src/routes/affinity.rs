//! Session affinity (`analysis.sessionAffinity`) as Flagger routes it on Istio and the Gateway
//! API, from the Canary's spec and the cookies its status records (`sessionAffinityCookie`,
//! `previousSessionAffinityCookie`, `primarySessionAffinityCookie`, each `name=value`; the
//! rollout core chooses them and the shells record them before the routes are built).
//!
//! While the canary has traffic, the weighted route's canary destination answers with
//! `Set-Cookie: <canary cookie>; Max-Age=<maxAge>` and a route placed before it sends every
//! request whose `Cookie` header carries that cookie to the canary, so a user the canary
//! answered once stays on it. With `primaryCookieName` the primary's answers likewise set the
//! primary cookie (for one `interval`) and a second route keeps its carriers on the primary.
//! Once traffic is back on the primary (promoted or rolled back), a route answers requests
//! carrying the last rollout's cookie with that cookie expired (`Max-Age=-1`), routing them as
//! everyone else.
//!
//! Differences from Flagger, each a fix: the expired cookie keeps `Domain` and `Path` (a browser
//! deletes a cookie only when they match), the cookie's name and value are escaped in the
//! regular expression and matched as `name=value`, Istio's header match is named `cookie` in
//! lower case as Istio asks, and no duplicate rule is written when there is no cookie to expire.

use super::Routes;
use crate::rollout::SessionCookies;
use crate::spec::{Canary, SessionAffinity, analysis_interval};

/// Flagger's default `maxAge`: a day.
const DEFAULT_MAX_AGE: i64 = 86_400;

/// A cookie as recorded: `name=value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cookie<'a> {
    pub(super) name: &'a str,
    pub(super) value: &'a str,
}

impl<'a> Cookie<'a> {
    fn parse(text: &'a str) -> Option<Cookie<'a>> {
        let (name, value) = text.split_once('=')?;
        (!name.is_empty() && !value.is_empty()).then_some(Cookie { name, value })
    }

    /// The regular expression (matched against the whole header, as Envoy and the Gateway API
    /// match) of a `Cookie` header that carries this cookie.
    pub(super) fn pattern(self) -> String {
        format!(
            ".*{}={}.*",
            super::escape_regex(self.name),
            super::escape_regex(self.value)
        )
    }

    /// The `Set-Cookie` value that sets it for `max_age` seconds, with the attributes of the
    /// spec in Flagger's order.
    fn set(self, affinity: &SessionAffinity, max_age: i64) -> String {
        let mut out = format!("{}={}; Max-Age={max_age}", self.name, self.value);
        if !affinity.domain.is_empty() {
            out += &format!("; Domain={}", affinity.domain);
        }
        if affinity.http_only {
            out += "; HttpOnly";
        }
        if affinity.partitioned {
            out += "; Partitioned";
        }
        if !affinity.path.is_empty() {
            out += &format!("; Path={}", affinity.path);
        }
        if !affinity.same_site.is_empty() {
            out += &format!("; SameSite={}", affinity.same_site);
        }
        if affinity.secure {
            out += "; Secure";
        }
        out
    }
}

/// A cookie with the `Set-Cookie` value a route answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Pinned<'a> {
    pub(super) cookie: Cookie<'a>,
    pub(super) set_cookie: String,
}

/// What the routes of a split add for session affinity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Sticky<'a> {
    /// The canary has traffic: its answers set `canary`, whose carriers go to the canary; with
    /// a primary cookie, the primary's answers set it and its carriers stay on the primary.
    Pinning {
        canary: Pinned<'a>,
        primary: Option<Pinned<'a>>,
    },
    /// The canary has no traffic: carriers of the last rollout's cookie get it expired.
    Expiring(Pinned<'a>),
}

/// The session affinity of `canary`'s routes at `routes`: `None` without `sessionAffinity`,
/// with A/B testing (see [`crate::spec::validate`]), or with no cookie recorded for the split.
pub(super) fn sticky<'a>(canary: &'a Canary, routes: &Routes) -> Option<Sticky<'a>> {
    let affinity = configured(canary)?;
    let status = canary.status.as_ref()?;
    let recorded = |c: &'a Option<String>| c.as_deref().and_then(Cookie::parse);
    if routes.canary > 0 {
        let cookie = recorded(&status.session_affinity_cookie)?;
        let max_age = match affinity.max_age {
            0 => DEFAULT_MAX_AGE,
            n => n,
        };
        let interval =
            i64::try_from(analysis_interval(&canary.spec).millis() / 1000).unwrap_or(i64::MAX);
        let primary = recorded(&status.primary_session_affinity_cookie)
            .filter(|_| !affinity.primary_cookie_name.is_empty())
            .map(|cookie| Pinned {
                cookie,
                set_cookie: cookie.set(affinity, interval),
            });
        return Some(Sticky::Pinning {
            canary: Pinned {
                cookie,
                set_cookie: cookie.set(affinity, max_age),
            },
            primary,
        });
    }
    // Traffic is back on the primary: the cookie of the rollout that just ended (recorded
    // until the core moves it to `previous`) or of the last one.
    let cookie = recorded(&status.session_affinity_cookie)
        .or_else(|| recorded(&status.previous_session_affinity_cookie))?;
    Some(Sticky::Expiring(Pinned {
        cookie,
        set_cookie: cookie.set(affinity, -1),
    }))
}

/// `canary` with `cookies` (the rollout state's) in its status, where the builders read them: a
/// shell building routes for a state it has not recorded yet passes this.
pub fn with_cookies(canary: &Canary, cookies: &SessionCookies) -> Canary {
    let mut c = canary.clone();
    let status = c.status.get_or_insert_default();
    status.session_affinity_cookie.clone_from(&cookies.canary);
    status
        .previous_session_affinity_cookie
        .clone_from(&cookies.previous);
    status
        .primary_session_affinity_cookie
        .clone_from(&cookies.primary);
    c
}

/// `sessionAffinity` when the routes carry it (not with A/B testing).
fn configured(canary: &Canary) -> Option<&SessionAffinity> {
    let analysis = &canary.spec.analysis;
    analysis
        .session_affinity
        .as_ref()
        .filter(|_| analysis.match_.is_empty())
}

/// Whether a `Set-Cookie` value expires its cookie (`Max-Age=-1`), as the route answering the
/// last rollout's cookie does (Flagger's and Fledge's alike).
pub(super) fn expires(set_cookie: &str) -> bool {
    set_cookie
        .split(';')
        .any(|attribute| attribute.trim().eq_ignore_ascii_case("max-age=-1"))
}

/// Whether a route is one of the session affinity routes a builder wrote (which the readers
/// skip: the split is the weighted route's), recognised by its shape as Flagger recognises it,
/// not by the spec's cookie names, which may have been renamed, or `sessionAffinity` removed,
/// since the routes were written: every match is on the `Cookie` header only
/// (`cookie_only`), and either the routes pin (a backend of the weighted route answers with
/// `Set-Cookie`: `pinning`) or this route answers with its cookie expired (`expiring`). An
/// A/B route never comes with either: the builders refuse A/B with session affinity.
pub(super) fn is_sticky(cookie_only: bool, pinning: bool, expiring: bool) -> bool {
    cookie_only && (pinning || expiring)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_cookie_carries_every_attribute_of_the_spec_in_flaggers_order() {
        let affinity = SessionAffinity {
            cookie_name: "c".into(),
            domain: "example.com".into(),
            path: "/".into(),
            http_only: true,
            secure: true,
            partitioned: true,
            same_site: "Strict".into(),
            ..SessionAffinity::default()
        };
        let cookie = Cookie::parse("c=abc").unwrap();
        assert_eq!(
            cookie.set(&affinity, 60),
            "c=abc; Max-Age=60; Domain=example.com; HttpOnly; Partitioned; Path=/; \
             SameSite=Strict; Secure"
        );
        assert_eq!(
            cookie.set(&SessionAffinity::default(), -1),
            "c=abc; Max-Age=-1"
        );
    }

    #[test]
    fn only_a_max_age_of_minus_one_expires_a_cookie() {
        assert!(expires("c=abc; Max-Age=-1; Path=/"));
        assert!(expires("c=abc;max-age=-1"));
        assert!(!expires("c=abc; Max-Age=-10"));
        assert!(!expires("Max-Age=-1=x; Max-Age=60"));
    }

    #[test]
    fn a_cookie_pattern_escapes_what_a_regular_expression_would_read_as_syntax() {
        let cookie = Cookie::parse("a.b=x+y").unwrap();
        assert_eq!(cookie.pattern(), r".*a\.b=x\+y.*");
        assert_eq!(Cookie::parse("novalue="), None);
        assert_eq!(Cookie::parse("nothing"), None);
    }
}
