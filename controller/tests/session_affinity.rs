//! `analysis.sessionAffinity`: the cookies the rollout core keeps (chosen when the canary first
//! gets traffic, kept through steps and restarts, expired after the rollout) and the routes the
//! builders write for them on Istio and the Gateway API. Pure: no cluster needed.

mod support;

use fledge_controller::rollout::{Phase, RolloutState, SessionCookies};
use fledge_controller::routes::{Provider, Routes, with_cookies};
use fledge_controller::spec::{Canary, validate};
use serde_json::{Value, json};
use support::{Driver, canary_spec};

const AFFINITY: &str = "stepWeight: 10\n    maxWeight: 30\n    sessionAffinity: {cookieName: flagger-cookie, maxAge: 600}";

fn is_cookie(text: &str, name: &str) -> bool {
    text.strip_prefix(&format!("{name}="))
        .is_some_and(|v| v.len() == 10 && v.chars().all(|c| c.is_ascii_alphabetic()))
}

/// Ticks until the canary has traffic.
fn to_first_step(d: &mut Driver) {
    for _ in 0..5 {
        if d.state.canary_weight > 0 {
            return;
        }
        d.tick();
    }
    panic!("no traffic on the canary: {}", d.state.message);
}

#[test]
fn a_rollout_chooses_its_cookie_when_the_canary_first_gets_traffic_and_keeps_it_every_step() {
    let mut d = Driver::new(canary_spec(AFFINITY));
    assert_eq!(d.state.cookies, SessionCookies::default());
    d.deploy("v2");
    to_first_step(&mut d);
    let chosen = d.state.cookies.canary.clone().expect("a cookie");
    assert!(is_cookie(&chosen, "flagger-cookie"), "{chosen}");
    assert_eq!(d.state.cookies.primary, None, "no primaryCookieName");
    while d.state.phase != Phase::Succeeded {
        d.tick();
        if d.state.canary_weight > 0 {
            assert_eq!(d.state.cookies.canary.as_ref(), Some(&chosen));
        }
        assert!(d.now < 100_000_000, "{}", d.state.message);
    }
    // Back on the primary: the cookie is the previous one, which the routes expire.
    assert_eq!(d.state.cookies.canary, None);
    assert_eq!(d.state.cookies.previous, Some(chosen));
}

#[test]
fn a_restarted_controller_keeps_the_cookie_it_recorded() {
    let mut d = Driver::new(canary_spec(AFFINITY));
    d.deploy("v2");
    to_first_step(&mut d);
    let chosen = d.state.cookies.canary.clone();
    // The record the status keeps, read back by a new controller.
    let recorded = serde_json::to_value(&d.state).unwrap();
    assert_eq!(recorded["cookies"]["canary"], json!(chosen));
    d.state = RolloutState::restore(&recorded).expect("restores");
    d.tick();
    assert!(d.state.canary_weight > 10, "{}", d.state.message);
    assert_eq!(d.state.cookies.canary, chosen);
}

#[test]
fn each_rollout_has_its_own_cookie_and_a_rollback_expires_it() {
    let mut d = Driver::new(canary_spec(AFFINITY));
    d.deploy("v2");
    to_first_step(&mut d);
    let first = d.state.cookies.canary.clone().expect("a cookie");
    d.success_rate = 50.0;
    while d.state.phase != Phase::Failed {
        d.tick();
        assert!(d.now < 100_000_000, "{}", d.state.message);
    }
    assert_eq!(d.state.cookies.canary, None);
    assert_eq!(d.state.cookies.previous.as_ref(), Some(&first));
    d.success_rate = 100.0;
    d.deploy("v3");
    to_first_step(&mut d);
    let second = d.state.cookies.canary.clone().expect("a cookie");
    assert_ne!(second, first);
    // The last rollout's cookie stays recorded until this one ends.
    assert_eq!(d.state.cookies.previous, Some(first));
}

#[test]
fn the_primary_cookie_is_chosen_once_and_kept_across_rollouts() {
    let spec = canary_spec(
        "stepWeight: 50\n    maxWeight: 50\n    sessionAffinity: {cookieName: c, primaryCookieName: p}",
    );
    let mut d = Driver::new(spec);
    d.deploy("v2");
    to_first_step(&mut d);
    let primary = d.state.cookies.primary.clone().expect("a primary cookie");
    assert!(is_cookie(&primary, "p"), "{primary}");
    while d.state.phase != Phase::Succeeded {
        d.tick();
        assert!(d.now < 100_000_000, "{}", d.state.message);
    }
    d.deploy("v3");
    to_first_step(&mut d);
    assert_eq!(d.state.cookies.primary, Some(primary));
}

#[test]
fn a_cookie_recorded_under_a_renamed_cookie_name_is_chosen_again_under_the_new_name() {
    let spec = |names: &str| {
        canary_spec(&format!(
            "stepWeight: 10\n    maxWeight: 30\n    sessionAffinity: {{{names}}}"
        ))
    };
    let mut d = Driver::new(spec("cookieName: c, primaryCookieName: p"));
    d.deploy("v2");
    to_first_step(&mut d);
    let first = d.state.cookies.clone();
    // Renamed mid-rollout: both cookies are chosen again at the next step.
    d.spec = spec("cookieName: c2, primaryCookieName: p2");
    while d.state.cookies == first {
        d.tick();
        assert!(d.now < 100_000_000, "{}", d.state.message);
    }
    let canary = d.state.cookies.canary.clone().expect("a canary cookie");
    assert!(is_cookie(&canary, "c2"), "{canary}");
    let primary = d.state.cookies.primary.clone().expect("a primary cookie");
    assert!(is_cookie(&primary, "p2"), "{primary}");
    // Kept from then on.
    d.tick();
    assert_eq!(d.state.cookies.primary, Some(primary));
}

#[test]
fn without_session_affinity_no_cookie_is_kept() {
    let mut d = Driver::new(canary_spec("stepWeight: 10\n    maxWeight: 30"));
    d.deploy("v2");
    to_first_step(&mut d);
    d.tick();
    assert_eq!(d.state.cookies, SessionCookies::default());
}

// The routes.

fn canary(provider: &str, affinity: Value) -> Canary {
    serde_json::from_value(json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "Canary",
        "metadata": { "name": "podinfo", "namespace": "test" },
        "spec": {
            "provider": provider,
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo" },
            "service": { "port": 9898 },
            "analysis": { "interval": "30s", "stepWeight": 10, "sessionAffinity": affinity },
        },
    }))
    .expect("a Canary")
}

fn affinity() -> Value {
    json!({ "cookieName": "flagger-cookie", "primaryCookieName": "primary-cookie",
            "maxAge": 600, "path": "/", "secure": true, "sameSite": "Lax" })
}

fn cookies(canary: Option<&str>, previous: Option<&str>) -> SessionCookies {
    SessionCookies {
        canary: canary.map(String::from),
        previous: previous.map(String::from),
        primary: Some("primary-cookie=PPPPPPPPPP".into()),
    }
}

fn split(canary: u8) -> Routes {
    Routes {
        primary: 100 - canary,
        canary,
        mirror: None,
        matched: false,
    }
}

/// The routing object's `spec` for `routes` with `cookies` recorded.
fn spec(provider: &str, cookies: &SessionCookies, routes: Routes) -> Value {
    let c = with_cookies(&canary(provider, affinity()), cookies);
    let p: Provider = provider.parse().unwrap();
    let object = p.routing_object(&c, &routes).expect("builds");
    let read = p.read_routes(&c, &object["spec"]).expect("reads back");
    assert_eq!(read, routes, "the split reads back past the cookie routes");
    object["spec"].clone()
}

const PINNED: &str = "flagger-cookie=AbCdEfGhIj";

#[test]
fn istio_pins_the_canary_cookies_carriers_to_the_canary_and_its_answers_set_it() {
    let http = spec("istio", &cookies(Some(PINNED), None), split(20))["http"].clone();
    assert_eq!(http.as_array().map(Vec::len), Some(3), "{http:#}");
    let dest =
        |h: &str, w: u8| json!({"destination": {"host": h, "port": {"number": 9898}}, "weight": w});
    assert_eq!(
        http[0],
        json!({"match": [{"headers": {"cookie": {"regex": ".*flagger-cookie=AbCdEfGhIj.*"}}}],
               "route": [dest("podinfo-primary", 0), dest("podinfo-canary", 100)]})
    );
    assert_eq!(
        http[1],
        json!({"match": [{"headers": {"cookie": {"regex": ".*primary-cookie=PPPPPPPPPP.*"}}}],
               "route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)]})
    );
    let set = |d: &Value| d["headers"]["response"]["add"]["Set-Cookie"].clone();
    assert_eq!(
        set(&http[2]["route"][1]),
        json!("flagger-cookie=AbCdEfGhIj; Max-Age=600; Path=/; SameSite=Lax; Secure")
    );
    // The primary's cookie lasts one interval.
    assert_eq!(
        set(&http[2]["route"][0]),
        json!("primary-cookie=PPPPPPPPPP; Max-Age=30; Path=/; SameSite=Lax; Secure")
    );
    assert_eq!(http[2]["route"][1]["weight"], json!(20));
}

#[test]
fn gateway_api_pins_the_canary_cookies_carriers_to_the_canary_and_its_answers_set_it() {
    let rules = spec("gatewayapi", &cookies(Some(PINNED), None), split(20))["rules"].clone();
    assert_eq!(rules.as_array().map(Vec::len), Some(3), "{rules:#}");
    let backend = |n: &str, w: u8| json!({"group": "", "kind": "Service", "name": n, "port": 9898, "weight": w});
    assert_eq!(
        rules[0],
        json!({"matches": [{"headers": [{"type": "RegularExpression", "name": "Cookie",
                                         "value": ".*flagger-cookie=AbCdEfGhIj.*"}]}],
               "backendRefs": [backend("podinfo-primary", 0), backend("podinfo-canary", 100)]})
    );
    assert_eq!(
        rules[1]["backendRefs"],
        json!([
            backend("podinfo-primary", 100),
            backend("podinfo-canary", 0)
        ])
    );
    let set = |b: &Value| b["filters"].clone();
    assert_eq!(
        set(&rules[2]["backendRefs"][1]),
        json!([{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [
            {"name": "Set-Cookie",
             "value": "flagger-cookie=AbCdEfGhIj; Max-Age=600; Path=/; SameSite=Lax; Secure"}]}}])
    );
    assert_eq!(
        set(&rules[2]["backendRefs"][0])[0]["responseHeaderModifier"]["add"][0]["value"],
        json!("primary-cookie=PPPPPPPPPP; Max-Age=30; Path=/; SameSite=Lax; Secure")
    );
}

#[test]
fn back_on_the_primary_carriers_of_the_last_cookie_get_it_expired_and_reach_the_primary() {
    // Promoted or rolled back: the cookie, whether still recorded as the canary's or already
    // as the previous one, is answered expired.
    for recorded in [cookies(Some(PINNED), None), cookies(None, Some(PINNED))] {
        let http = spec("istio", &recorded, split(0))["http"].clone();
        assert_eq!(http.as_array().map(Vec::len), Some(2), "{http:#}");
        assert_eq!(
            http[0]["match"],
            json!([{"headers": {"cookie": {"regex": ".*flagger-cookie=AbCdEfGhIj.*"}}}])
        );
        assert_eq!(
            http[0]["headers"]["response"]["add"]["Set-Cookie"],
            json!("flagger-cookie=AbCdEfGhIj; Max-Age=-1; Path=/; SameSite=Lax; Secure")
        );
        assert_eq!(http[0]["route"][0]["weight"], json!(100));
        assert_eq!(
            http[1]["route"][0]["headers"],
            Value::Null,
            "no cookie is set"
        );

        let rules = spec("gatewayapi", &recorded, split(0))["rules"].clone();
        assert_eq!(rules.as_array().map(Vec::len), Some(2), "{rules:#}");
        assert_eq!(
            rules[0]["filters"][0]["responseHeaderModifier"]["add"][0]["value"],
            json!("flagger-cookie=AbCdEfGhIj; Max-Age=-1; Path=/; SameSite=Lax; Secure")
        );
        assert_eq!(rules[0]["backendRefs"][0]["weight"], json!(100));
    }
}

#[test]
fn without_a_recorded_cookie_the_routes_are_the_plain_split() {
    for provider in ["istio", "gatewayapi"] {
        let none = SessionCookies::default();
        let plain = canary(provider, affinity());
        let p: Provider = provider.parse().unwrap();
        for w in [0, 30] {
            assert_eq!(
                spec(provider, &none, split(w)),
                p.routing_object(&plain, &split(w)).unwrap()["spec"],
                "{provider} at {w}%"
            );
        }
    }
}

#[test]
fn with_ab_testing_the_routes_carry_no_cookie_rule_and_a_cookie_match_stays_an_ab_rule() {
    let mut ab = canary("istio", affinity());
    ab.spec.analysis.match_ =
        vec![json!({"headers": {"cookie": {"regex": ".*flagger-cookie=.*"}}})];
    let ab = with_cookies(&ab, &cookies(Some(PINNED), Some("flagger-cookie=old")));
    let routes = Routes {
        matched: true,
        ..split(0)
    };
    for p in [Provider::Istio, "gatewayapi".parse().unwrap()] {
        let object = p.routing_object(&ab, &routes).unwrap();
        assert!(!object.to_string().contains("Set-Cookie"), "{object:#}");
        assert_eq!(p.read_routes(&ab, &object["spec"]), Ok(routes), "{p}");
    }
}

#[test]
fn the_split_reads_back_past_the_cookie_routes_at_every_weight_and_mirror() {
    for provider in ["istio", "gatewayapi"] {
        for w in [0, 1, 50, 99, 100] {
            spec(
                provider,
                &cookies(Some(PINNED), Some("flagger-cookie=old")),
                split(w),
            );
        }
        let mirrored = Routes {
            mirror: Some(50),
            ..split(0)
        };
        spec(provider, &cookies(None, Some(PINNED)), mirrored);
    }
}

#[test]
fn a_cookie_name_is_escaped_in_the_match_and_the_route_still_reads_back() {
    let c = with_cookies(
        &canary("istio", json!({"cookieName": "a.b"})),
        &SessionCookies {
            canary: Some("a.b=xyz".into()),
            ..SessionCookies::default()
        },
    );
    let object = Provider::Istio.routing_object(&c, &split(10)).unwrap();
    assert_eq!(
        object["spec"]["http"][0]["match"][0]["headers"]["cookie"]["regex"],
        json!(r".*a\.b=xyz.*")
    );
    assert_eq!(
        Provider::Istio.read_routes(&c, &object["spec"]),
        Ok(split(10))
    );
}

/// The cookies keep the names the spec had when they were chosen: after a rename of
/// `cookieName`/`primaryCookieName` the routes written for them must still read back, or the
/// router would take its own pinning rule for a malformed A/B rule.
#[test]
fn routes_written_for_cookies_recorded_under_a_previous_cookie_name_still_read_back() {
    let renamed = json!({ "cookieName": "new-cookie", "primaryCookieName": "new-primary" });
    let recorded = [
        // Mid-rollout rename: the canary and primary cookies were chosen under the old names.
        (
            SessionCookies {
                canary: Some("old-cookie=AbCdEfGhIj".into()),
                previous: None,
                primary: Some("old-primary=PPPPPPPPPP".into()),
            },
            split(20),
        ),
        // Renamed between rollouts: the last rollout's cookie is expired under its old name.
        (
            SessionCookies {
                canary: None,
                previous: Some("old-cookie=AbCdEfGhIj".into()),
                primary: Some("old-primary=PPPPPPPPPP".into()),
            },
            split(0),
        ),
    ];
    for provider in ["istio", "gatewayapi"] {
        let p: Provider = provider.parse().unwrap();
        for (cookies, routes) in &recorded {
            let c = with_cookies(&canary(provider, renamed.clone()), cookies);
            let object = p.routing_object(&c, routes).expect("builds");
            assert_eq!(
                p.read_routes(&c, &object["spec"]),
                Ok(*routes),
                "{provider}: {cookies:?}"
            );
        }
    }
}

/// `sessionAffinity` removed mid-rollout: the live routing object still has the cookie rules
/// written under it, and the router reads it with the new spec before rewriting it.
#[test]
fn routes_written_with_session_affinity_read_back_once_it_is_removed_from_the_spec() {
    for (cookies, routes) in [
        (cookies(Some(PINNED), None), split(20)),
        (cookies(None, Some(PINNED)), split(0)),
    ] {
        for provider in ["istio", "gatewayapi"] {
            let p: Provider = provider.parse().unwrap();
            let with = with_cookies(&canary(provider, affinity()), &cookies);
            let object = p.routing_object(&with, &routes).expect("builds");
            let mut without = with.clone();
            without.spec.analysis.session_affinity = None;
            assert_eq!(
                p.read_routes(&without, &object["spec"]),
                Ok(routes),
                "{provider}"
            );
        }
    }
}

/// Flagger's own sticky route (taken over mid-way between rollouts or read while Flagger
/// wrote it) matches `.*name.*value.*` and merges `service.match` into it; it is found, as
/// Flagger finds it, by the `Set-Cookie` on the weighted route's canary destination.
#[test]
fn a_sticky_route_as_flagger_writes_it_is_skipped_for_the_weighted_split() {
    let c = canary("istio", affinity());
    let set_cookie =
        json!({"response": {"add": {"Set-Cookie": "flagger-cookie=xyz; Max-Age=600"}}});
    let spec = json!({"http": [
        {"match": [{"uri": {"prefix": "/"}, "headers": {"Cookie": {"regex": ".*flagger-cookie.*xyz.*"}}}],
         "route": [{"destination": {"host": "podinfo-primary"}, "weight": 0},
                   {"destination": {"host": "podinfo-canary"}, "weight": 100}]},
        {"route": [{"destination": {"host": "podinfo-primary"}, "weight": 70},
                   {"destination": {"host": "podinfo-canary"}, "weight": 30, "headers": set_cookie}]},
    ]});
    assert_eq!(Provider::Istio.read_routes(&c, &spec), Ok(split(30)));
}

// The spec.

fn errors(affinity: Value) -> Vec<String> {
    match validate(&canary("istio", affinity).spec) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn a_session_affinity_the_routes_cannot_carry_is_refused_naming_its_field() {
    assert_eq!(errors(affinity()), Vec::<String>::new());
    let cases = [
        (
            json!({}),
            "sessionAffinity.cookieName: must name the cookie",
        ),
        (
            json!({"cookieName": "a b"}),
            "sessionAffinity.cookieName: `a b` is not a cookie name",
        ),
        (
            json!({"cookieName": "a=b"}),
            "sessionAffinity.cookieName: `a=b` is not a cookie name",
        ),
        (
            json!({"cookieName": "c", "primaryCookieName": "c"}),
            "sessionAffinity.primaryCookieName: must differ from cookieName",
        ),
        (
            json!({"cookieName": "c", "maxAge": -5}),
            "sessionAffinity.maxAge: must be a positive",
        ),
        (
            json!({"cookieName": "c", "sameSite": "lax"}),
            "sessionAffinity.sameSite: must be Strict, Lax or None",
        ),
        (
            json!({"cookieName": "c", "path": "/; Secure"}),
            "sessionAffinity.path: `/; Secure` would end",
        ),
    ];
    for (affinity, expected) in cases {
        let found = errors(affinity.clone());
        assert!(
            found.len() == 1 && found[0].starts_with(&format!("spec.analysis.{expected}")),
            "{affinity}: {found:?}"
        );
    }
}
