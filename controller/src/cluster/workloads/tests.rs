//! Tests of building the primary and reading revisions and readiness (no cluster).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::primary::NOT_COPIED;
use super::*;
use crate::cluster::config_copies::Tracked;
use crate::rollout::Readiness;
use crate::spec::{Canary, CanarySpec, LocalObjectReference};

fn target(image: &str) -> Deployment {
    let labels = BTreeMap::from([("app".to_string(), "podinfo".to_string())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some("podinfo".into()),
            namespace: Some("test".into()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([
                (NOT_COPIED[0].to_string(), "{}".to_string()),
                ("team".to_string(), "a".to_string()),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some(image.into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn canary() -> Canary {
    let mut c = Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: LocalObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: "podinfo".into(),
            },
            ..CanarySpec::default()
        },
    );
    c.metadata.namespace = Some("test".into());
    c.metadata.uid = Some("uid-1".into());
    c
}

#[test]
fn the_revision_changes_with_the_pod_template_and_only_with_it() {
    let a = target("podinfo:1");
    let mut scaled = a.clone();
    scaled.spec.as_mut().unwrap().replicas = Some(7);
    assert_eq!(revision(&a), revision(&scaled));
    assert_ne!(revision(&a), revision(&target("podinfo:2")));
    assert_eq!(revision(&a), revision(&target("podinfo:1")));
}

#[test]
fn the_primary_selects_its_own_pods_and_is_owned_by_the_canary() {
    let p = primary_deployment(
        &canary(),
        &target("podinfo:1"),
        None,
        Some(2),
        &Tracked::default(),
    )
    .unwrap();
    let spec = p.spec.unwrap();
    let want = BTreeMap::from([("app".to_string(), "podinfo-primary".to_string())]);
    assert_eq!(spec.selector.match_labels, Some(want.clone()));
    assert_eq!(spec.template.metadata.unwrap().labels, Some(want));
    assert_eq!(p.metadata.name.as_deref(), Some("podinfo-primary"));
    let owners = p.metadata.owner_references.unwrap();
    assert_eq!(owners[0].kind, "Canary");
    assert_eq!(owners[0].controller, Some(true));
    let annotations = p.metadata.annotations.unwrap();
    assert!(!annotations.contains_key(NOT_COPIED[0]));
    assert_eq!(annotations.get("team").map(String::as_str), Some("a"));
}

fn selecting(mut d: Deployment, labels: &[(&str, &str)]) -> Deployment {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let spec = d.spec.as_mut().unwrap();
    spec.selector.match_labels = Some(labels.clone());
    spec.template.metadata.as_mut().unwrap().labels = Some(labels);
    d
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_primary_selects_on_flaggers_one_label_and_copies_the_other_selector_labels() {
    let t = selecting(target("podinfo:1"), &[("team", "a"), ("app", "podinfo")]);
    let s = selectors(&t, None).unwrap();
    assert_eq!(s.primary, map(&[("app", "podinfo-primary")]));
    assert_eq!(s.canary, map(&[("app", "podinfo")]));
    let p = primary_deployment(&canary(), &t, None, Some(2), &Tracked::default()).unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(spec.selector.match_labels, Some(s.primary.clone()));
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels, map(&[("app", "podinfo-primary"), ("team", "a")]));
    // `name` before `app.kubernetes.io/name`; none of Flagger's: every label suffixed.
    let t2 = selecting(
        target("podinfo:1"),
        &[("app.kubernetes.io/name", "x"), ("name", "y")],
    );
    assert_eq!(
        selectors(&t2, None).unwrap().primary,
        map(&[("name", "y-primary")])
    );
    let t3 = selecting(target("podinfo:1"), &[("tier", "web"), ("role", "api")]);
    assert_eq!(
        selectors(&t3, None).unwrap().primary,
        map(&[("role", "api-primary"), ("tier", "web-primary")])
    );
}

#[test]
fn an_existing_primarys_selector_is_kept_as_found() {
    let t = selecting(target("podinfo:1"), &[("app", "podinfo"), ("team", "a")]);
    // An older Fledge suffixed every selector label; the selector is immutable.
    let old = map(&[("app", "podinfo-primary"), ("team", "a-primary")]);
    let live = selecting(
        target("podinfo:0"),
        &[("app", "podinfo-primary"), ("team", "a-primary")],
    );
    let s = selectors(&t, Some(&live)).unwrap();
    assert_eq!(s.primary, old);
    assert_eq!(s.canary, map(&[("app", "podinfo"), ("team", "a")]));
    let p = primary_deployment(&canary(), &t, Some(&live), None, &Tracked::default()).unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(spec.selector.match_labels, Some(old.clone()));
    assert_eq!(spec.template.metadata.unwrap().labels, Some(old));
    // A selector on keys the target does not select on is not read back.
    let foreign = selecting(target("podinfo:0"), &[("other", "x")]);
    assert_eq!(
        selectors(&t, Some(&foreign)).unwrap().primary,
        map(&[("app", "podinfo-primary")])
    );
}

#[test]
fn a_deployment_without_match_labels_is_reported_not_cloned() {
    let mut t = target("podinfo:1");
    t.spec.as_mut().unwrap().selector = LabelSelector::default();
    assert_eq!(
        primary_deployment(&canary(), &t, None, None, &Tracked::default()),
        Err(WorkloadProblem::NoSelector {
            target: "podinfo".into()
        })
    );
}

#[test]
fn readiness_counts_only_pods_of_a_finished_rollout() {
    let mut d = target("podinfo:1");
    d.metadata.generation = Some(3);
    d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
        observed_generation: Some(2),
        ready_replicas: Some(2),
        updated_replicas: Some(2),
        ..Default::default()
    });
    assert_eq!(
        readiness(&d),
        Readiness {
            ready: 0,
            desired: 2
        }
    );
    let status = d.status.as_mut().unwrap();
    status.observed_generation = Some(3);
    status.updated_replicas = Some(1);
    assert_eq!(
        readiness(&d),
        Readiness {
            ready: 1,
            desired: 2
        }
    );
}
