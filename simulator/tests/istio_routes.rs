//! An Istio VirtualService's HTTP routes in a scenario, read as Istio's API and istiod read
//! them: the fault fields the API has, header presence matches, a lone destination's weight.

mod support;

use support::scenario::{
    MeshScenario, checked, load, refused, subsets, version_requests, virtual_service,
};

/// `reviews` (v1, v2) and its client, half of whose requests are jason's, routed by `http`
/// (a VirtualService's routes) after a DestinationRule with subsets v1 and v2.
fn routed(http: &str) -> String {
    MeshScenario::new("istio-routes")
        .seed(3)
        .service(
            "reviews",
            &[
                ("v1", "{pods: 1, latency: {constant: 2ms}}"),
                ("v2", "{pods: 1, latency: {constant: 2ms}}"),
            ],
        )
        .client_with(
            "browser",
            "reviews",
            50,
            "headers: [{weight: 1, set: {end-user: jason}}, {weight: 1}]",
        )
        .manifest(&subsets("reviews", &["v1", "v2"]))
        .manifest(&virtual_service("reviews", http))
        .expect("clients:\n  browser: {min_requests: 1}")
        .text()
}

/// Istio's API removed `percent` from an abort (istio/api reserves it; the apiserver refuses
/// it), so a cluster never aborts by it: refused at its field. Only a delay keeps the
/// deprecated integer `percent` (manifests.rs). An abort's status is 200 to 599, as Istio's
/// validation and Envoy's fault filter take it.
#[test]
fn an_abort_with_the_removed_percent_field_or_a_1xx_status_is_refused_at_its_field() {
    let text = routed(
        "- fault:\n    abort: {httpStatus: 500, percent: 100}\n  route:\n  - destination: {host: reviews, subset: v1}\n",
    );
    let e = refused(&text, "Istio's abort has no `percent`");
    assert!(
        e.contains("field `spec.http[0].fault.abort.percent`") && e.contains("percentage"),
        "{e}"
    );
    for status in [150, 600] {
        let text = routed(&format!(
            "- fault:\n    abort: {{httpStatus: {status}, percentage: {{value: 100}}}}\n  route:\n  - destination: {{host: reviews, subset: v1}}\n"
        ));
        let e = refused(&text, "Istio refuses an abort status outside 200-599");
        assert!(
            e.contains("field `spec.http[0].fault.abort.httpStatus`")
                && e.contains("between 200 and 599"),
            "{status}: {e}"
        );
    }
    // 200 and 599 are in.
    for status in [200, 599] {
        let text = routed(&format!(
            "- fault:\n    abort: {{httpStatus: {status}, percentage: {{value: 100}}}}\n  route:\n  - destination: {{host: reviews, subset: v1}}\n"
        ));
        load(&text).unwrap_or_else(|e| panic!("{status}: {e}"));
    }
}

/// A header condition without a match type (`end-user: {}`) is Istio's presence match (Envoy's
/// `present_match`): jason's requests, the half carrying `end-user`, go to v2. Istio's own
/// spelling for `withoutHeaders`, `regex: "*"`, is no RE2 regex and its validation refuses it
/// under `headers`: refused at its field, pointing at `{}`.
#[test]
fn a_header_match_without_a_value_matches_requests_carrying_the_header() {
    let text = routed(
        "- match:\n  - headers:\n      end-user: {}\n  route:\n  - destination: {host: reviews, subset: v2}\n- route:\n  - destination: {host: reviews, subset: v1}\n",
    );
    let r = checked(&text);
    let (v1, v2) = (
        version_requests(&r, "reviews", "v1"),
        version_requests(&r, "reviews", "v2"),
    );
    assert!(v1 + v2 > 2500, "v1 {v1}, v2 {v2}");
    let share = v2 as f64 / (v1 + v2) as f64;
    assert!(
        (share - 0.5).abs() < 0.05,
        "jason (half the requests) goes to v2: v1 {v1}, v2 {v2}"
    );
    let star = text.replace("end-user: {}", "end-user: {regex: \"*\"}");
    let e = refused(
        &star,
        "Istio's validation refuses the regex `*` in `headers`",
    );
    assert!(
        e.contains("field `spec.http[0].match[0].headers.end-user.regex`")
            && e.contains("for a presence match write `{}`"),
        "{e}"
    );
}

/// istiod routes a lone destination as a plain cluster (`processDestination`), so its
/// `weight` counts for nothing, 0 included, with a subset or without (validation refuses a
/// total of 0 only with several destinations).
#[test]
fn a_single_destination_takes_every_request_whatever_its_weight() {
    for destination in ["{host: reviews}", "{host: reviews, subset: v2}"] {
        let text = routed(&format!(
            "- route:\n  - destination: {destination}\n    weight: 0\n"
        ));
        let r = checked(&text);
        let browser = &r.clients[0];
        assert!(browser.requests > 2000, "{destination}: {browser:?}");
        assert_eq!(browser.failed, 0, "{destination}: {browser:?}");
    }
}
