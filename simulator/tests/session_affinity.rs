//! Session affinity in the simulated mesh: the controller's own routes (built with a cookie
//! recorded) send every request carrying the canary's cookie to the canary, and once traffic
//! is back on the primary, carriers of the expired cookie reach the primary.
//!
//! The simulated clients do not keep cookies: a client that got `Set-Cookie` from the canary
//! does not send it back by itself. Here a share of the requests carries the cookie from the
//! start (a header profile), which is what a user pinned by an earlier answer sends.

use fledge_controller::rollout::SessionCookies;
use fledge_controller::routes::{Provider, Routes, with_cookies};
use fledge_controller::spec::Canary;
use fledge_simulator::engine::SECONDS;
use fledge_simulator::manifest;
use fledge_simulator::mesh::{
    ClientConfig, HeaderProfile, Mesh, MeshConfig, ServiceConfig, VersionConfig,
};
use serde_json::json;

const COOKIE: &str = "flagger-cookie=AbCdEfGhIj";

fn canary() -> Canary {
    let c: Canary = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": { "name": "podinfo", "namespace": "test" },
        "spec": {
            "provider": "istio",
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo" },
            "service": { "port": 9898 },
            "analysis": { "stepWeight": 10, "sessionAffinity": { "cookieName": "flagger-cookie" } },
        },
    }))
    .unwrap();
    with_cookies(
        &c,
        &SessionCookies {
            canary: Some(COOKIE.into()),
            ..SessionCookies::default()
        },
    )
}

/// A mesh where a fifth of the requests carries `cookie` (with another cookie before it, as
/// browsers send several).
fn mesh(cookie: &str) -> Mesh {
    let behaviour = fledge_simulator::mesh::Behaviour::default();
    let cfg = MeshConfig {
        seed: 5,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![
                VersionConfig::new("primary", 4, behaviour.clone()),
                VersionConfig::new("canary", 2, behaviour),
            ],
        )],
        clients: vec![ClientConfig {
            headers: vec![
                HeaderProfile {
                    weight: 2.0,
                    headers: vec![("cookie".into(), format!("session=1; {cookie}"))],
                },
                HeaderProfile {
                    weight: 8.0,
                    headers: vec![],
                },
            ],
            ..ClientConfig::new("client", "podinfo", 500.0)
        }],
        ..Default::default()
    };
    Mesh::new(cfg).unwrap()
}

/// The canary's share of the requests over a minute with the controller's routes for a
/// `canary`% split.
fn canary_share(mesh: &mut Mesh, canary_weight: u8) -> f64 {
    let routes = Routes {
        primary: 100 - canary_weight,
        canary: canary_weight,
        mirror: None,
        matched: false,
    };
    let objects = Provider::Istio.objects(&canary(), &routes).unwrap();
    let text: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    let manifests = manifest::parse(&text.join("\n---\n")).unwrap();
    let warnings = mesh.apply_manifests(&manifests).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let from = mesh.now();
    let to = from + 60 * SECONDS;
    mesh.run_until(to);
    let s = mesh.service_id("podinfo").unwrap();
    let (p, c) = mesh.primary_canary(s).unwrap();
    let np = mesh.destination_stats(p, from, to).requests as f64;
    let nc = mesh.destination_stats(c, from, to).requests as f64;
    nc / (np + nc)
}

#[test]
fn requests_carrying_the_canary_cookie_all_reach_the_canary_and_the_rest_split_by_weight() {
    // 20% carry the cookie (all to the canary), 10% of the other 80% by weight: 28%.
    let share = canary_share(&mut mesh(COOKIE), 10);
    assert!((share - 0.28).abs() < 0.02, "canary share {share}");
    // Another value of the cookie (another rollout's) is not pinned.
    let share = canary_share(&mut mesh("flagger-cookie=ZZZZZZZZZZ"), 10);
    assert!((share - 0.10).abs() < 0.02, "canary share {share}");
}

#[test]
fn once_traffic_is_back_on_the_primary_carriers_of_the_cookie_reach_the_primary() {
    let mut m = mesh(COOKIE);
    assert!(canary_share(&mut m, 10) > 0.2);
    let share = canary_share(&mut m, 0);
    assert!(share < 0.005, "canary share {share}");
}
