//! The operator's commands (`fledge-controller status|promote|abort|resume`) reach Flagger's
//! Canaries too, which the controller reconciles under `--flagger-canaries`: a name that is not
//! a `fledge.dev` Canary is looked up as a `flagger.app` one, and the table lists both.
#![cfg(feature = "cluster")]

mod cluster_support;

use cluster_support::*;
use fledge_controller::cluster::cli::{self, Request};
use serde_json::json;

fn flagger_only() -> FakeCluster {
    flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    )
}

#[tokio::test]
async fn status_describes_a_flagger_canary_and_lists_it_beside_fledges() {
    let c = flagger_only();
    let one = cli::status(c.client(), Some(NS), Some("podinfo"), false)
        .await
        .unwrap();
    assert!(
        one.starts_with("Canary test/podinfo (flagger.app)"),
        "{one}"
    );
    assert!(one.contains("Phase:          Succeeded"), "{one}");

    let mut other = canary(json!({}));
    other["metadata"]["name"] = json!("frontend");
    c.put(
        "/apis/fledge.dev/v1alpha1/namespaces/test/canaries/frontend",
        other,
    );
    let table = cli::status(c.client(), Some(NS), None, false)
        .await
        .unwrap();
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[0].starts_with("test\tfrontend\tfledge.dev\t"),
        "{table}"
    );
    assert!(
        rows[1].starts_with("test\tpodinfo\tflagger.app\tSucceeded\t0\t"),
        "{table}"
    );
}

#[tokio::test]
async fn promote_abort_and_resume_reach_a_flagger_canary() {
    let c = flagger_only();
    for (request, annotation) in [(Request::Promote, "promote"), (Request::Abort, "abort")] {
        let said = cli::send(c.client(), Some(NS), "podinfo", request)
            .await
            .unwrap();
        assert!(said.starts_with("test/podinfo: "), "{said}");
        let stored = c.get(FLAGGER_CANARY).unwrap();
        assert_eq!(
            stored["metadata"]["annotations"]["fledge.dev/command"],
            annotation
        );
    }
    let mut suspended = c.get(FLAGGER_CANARY).unwrap();
    suspended["spec"]["suspend"] = json!(true);
    c.put(FLAGGER_CANARY, suspended);
    let said = cli::send(c.client(), Some(NS), "podinfo", Request::Resume)
        .await
        .unwrap();
    assert_eq!(said, "test/podinfo: resumed (phase Succeeded)");
    assert_eq!(c.get(FLAGGER_CANARY).unwrap()["spec"]["suspend"], false);
}

#[tokio::test]
async fn a_name_that_is_neither_canary_is_an_error_naming_it() {
    let c = flagger_only();
    let e = cli::send(c.client(), Some(NS), "nope", Request::Promote)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
    let e = cli::status(c.client(), Some(NS), Some("nope"), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
}

/// `status` lists Flagger's Canaries beside Fledge's; a user allowed to read only `fledge.dev`
/// Canaries (a namespaced developer role), on a cluster where Flagger's CRD is installed, still
/// gets Fledge's, with a note that Flagger's could not be read (review r14c, finding 7).
#[tokio::test]
async fn status_lists_fledges_canaries_when_flaggers_cannot_be_read() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.fail(
        "GET",
        "/apis/flagger.app/v1beta1/namespaces/test/canaries",
        403,
        1,
    );
    let table = cli::status(c.client(), Some(NS), None, false)
        .await
        .unwrap_or_else(|e| panic!("no table for a 403 on Flagger's Canaries: {e}"));
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|r| r.starts_with("test\tpodinfo\tfledge.dev\t")),
        "{table}"
    );
    assert!(
        table.contains("Flagger's Canaries (flagger.app) could not be read"),
        "{table}"
    );
}
