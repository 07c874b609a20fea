//! The Helm chart's RBAC against what the controller really asks of the API server.
//!
//! Each test drives the controller, with its real traffic routers, through initialisation, a
//! promotion, a rollback, an operator abort, deletion with `revertOnDeletion`, the watches of
//! `run` (all namespaces and a namespace list) and leader election, against the fake API server
//! of the mock-API suite (the lives are in `lives.rs`). Every request it records is turned into the permission the API
//! server's authorizer checks: GET of a named object is `get`, of a collection `list`, a watch
//! `watch`; POST `create`, PUT `update`, PATCH `patch`, DELETE `delete` (of a collection
//! `deletecollection`), for the API group and resource (with subresource) of the path. A
//! server-side apply that creates its object needs `create` as well as `patch`: the API server
//! authorises an apply patch of a missing object as a create. That set
//! must equal what `charts/fledge/rbac/permissions.yaml` grants for the same settings, scope by
//! scope: a permission missing from the chart would fail on a real cluster, an extra one is
//! privilege nobody uses. A rule with `resourceNames` covers only requests for those names (a
//! create, whose name the authorizer does not know, never), and a request outside any namespace
//! only where the chart grants a ClusterRole: with a namespace list it has Roles only.
#![cfg(feature = "cluster")]

#[path = "../cluster_support/mod.rs"]
mod cluster_support;
mod lives;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cluster_support::*;
use fledge_controller::analysis::MetricReading;
use fledge_controller::cluster::lease::{Attempt, LeaderElection, LeaseConfig, Timing};
use fledge_controller::cluster::providers::LiveRouting;
use fledge_controller::cluster::telemetry::Metrics;
use fledge_controller::cluster::{Config, Context};
use fledge_controller::routes::{PROVIDER_NAMES, Provider};
use kube::runtime::events::Reporter;
use lives::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// Where the Lease lives (the release's namespace) and where a MetricTemplate outside the
/// Canary's namespace lives.
const RELEASE_NS: &str = "fledge-system";
const TEMPLATES_NS: &str = "istio-system";

/// Where a permission is needed, as the chart's Roles are scoped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Outside any namespace (a cluster-wide list or watch): only a ClusterRole grants it.
    Cluster,
    /// Where Canaries are reconciled (their namespace, or cluster-wide for all namespaces).
    Watched,
    /// A namespace that only MetricTemplates are read from.
    Templates,
    /// The release's namespace (the Lease).
    Release,
}

/// One permission: scope, API group, resource (with subresource), verb, and the object's name:
/// in a grant, one of the rule's `resourceNames` (none: any object); in a request, the name in
/// its path (none for a collection or a create).
type Permission = (Scope, String, String, String, Option<String>);

/// The Lease the test elects with; `{leaseName}` in permissions.yaml stands for it (the chart
/// puts `leaderElection.leaseName` there).
const LEASE: &str = "fledge-leader";

// ---- what the chart grants ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    why: String,
    #[serde(rename = "apiGroups")]
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    #[serde(rename = "resourceNames", default)]
    resource_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Family {
    providers: Vec<String>,
    rules: Vec<Rule>,
    watch: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Permissions {
    canaries: Vec<Rule>,
    #[serde(rename = "metricTemplates")]
    metric_templates: Vec<Rule>,
    #[serde(rename = "metricTemplateSecrets")]
    metric_template_secrets: Vec<Rule>,
    #[serde(rename = "flaggerCanaries")]
    flagger_canaries: Vec<Rule>,
    #[serde(rename = "flaggerMetricTemplates")]
    flagger_metric_templates: Vec<Rule>,
    routing: BTreeMap<String, Family>,
    #[serde(rename = "leaderElection")]
    leader_election: Vec<Rule>,
}

fn chart_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/fledge")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn permissions() -> Permissions {
    serde_norway::from_str(&chart_file("rbac/permissions.yaml"))
        .unwrap_or_else(|e| panic!("charts/fledge/rbac/permissions.yaml: {e}"))
}

impl Permissions {
    fn family(&self, provider: &str) -> &Family {
        self.routing
            .values()
            .find(|f| f.providers.iter().any(|p| p == provider))
            .unwrap_or_else(|| panic!("no routing family lists provider `{provider}`"))
    }

    /// The rules rendered into each scope for a default provider and extra providers (and,
    /// with `flagger`, the value `flaggerCanaries` on), as templates/rbac.yaml selects them.
    fn rendered(&self, default: &str, extra: &[&str], flagger: bool) -> Vec<(Scope, &Rule)> {
        let mut out: Vec<(Scope, &Rule)> = Vec::new();
        let none: &[Rule] = &[];
        let (flaggers, flagger_templates) = match flagger {
            true => (
                &self.flagger_canaries[..],
                &self.flagger_metric_templates[..],
            ),
            false => (none, none),
        };
        let templates: Vec<&Rule> = self
            .metric_templates
            .iter()
            .chain(flagger_templates)
            .collect();
        let watched = self
            .canaries
            .iter()
            .chain(flaggers)
            .chain(templates.clone());
        out.extend(watched.map(|r| (Scope::Watched, r)));
        let mut families: Vec<&Family> = Vec::new();
        for p in std::iter::once(&default).chain(extra) {
            let f = self.family(p);
            if !families.iter().any(|g| std::ptr::eq(*g, f)) {
                families.push(f);
            }
        }
        for f in families {
            out.extend(f.rules.iter().map(|r| (Scope::Watched, r)));
        }
        out.extend(
            self.family(default)
                .watch
                .iter()
                .map(|r| (Scope::Watched, r)),
        );
        let secrets = self.metric_template_secrets.iter();
        out.extend(
            templates
                .into_iter()
                .chain(secrets)
                .map(|r| (Scope::Templates, r)),
        );
        out.extend(self.leader_election.iter().map(|r| (Scope::Release, r)));
        out
    }

    fn granted(&self, default: &str, extra: &[&str], flagger: bool) -> BTreeSet<Permission> {
        let mut out = BTreeSet::new();
        for (scope, rule) in self.rendered(default, extra, flagger) {
            let names: Vec<Option<String>> = match rule.resource_names.as_slice() {
                [] => vec![None],
                names => names
                    .iter()
                    .map(|n| Some(n.replace("{leaseName}", LEASE)))
                    .collect(),
            };
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    for verb in &rule.verbs {
                        for name in &names {
                            let (g, r, v) = (group.clone(), resource.clone(), verb.clone());
                            out.insert((scope, g, r, v, name.clone()));
                        }
                    }
                }
            }
        }
        out
    }
}

// ---- what the controller requests ----

/// The permissions a recorded request needs; none for the fake's own calls (router, hooks).
fn permissions_of(call: &Call) -> Vec<Permission> {
    let segments: Vec<&str> = call.path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return vec![],
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(name.to_string())),
        [resource, name, sub] => (format!("{resource}/{sub}"), Some(name.to_string())),
        _ => panic!("unexpected API path {}", call.path),
    };
    let verb = match (call.method.as_str(), name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("WATCH", _) => "watch",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return vec![],
    };
    let scope = match namespace {
        None => Scope::Cluster,
        Some(NS) => Scope::Watched,
        Some(TEMPLATES_NS) => Scope::Templates,
        Some(RELEASE_NS) => Scope::Release,
        Some(other) => panic!("request in unexpected namespace {other}: {}", call.path),
    };
    let mut out = vec![(
        scope,
        group.to_string(),
        resource.clone(),
        verb.to_string(),
        name,
    )];
    if call.created {
        // An apply of a missing object passes the API server's create authorisation too; a
        // create is never matched by name (RBAC cannot limit it with resourceNames).
        out.push((
            scope,
            group.to_string(),
            resource,
            "create".to_string(),
            None,
        ));
    }
    out
}

/// The chart's two RBAC layouts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// `namespaces` empty: a ClusterRole, which also grants requests outside any namespace.
    ClusterRole,
    /// `namespaces` set: Roles only.
    Roles,
}

/// What the controller requests under `layout`: with Roles, every call but those of `run` over
/// all namespaces; with a ClusterRole, every call (it grants the namespaced ones too), a
/// cluster-wide one granted by the watched rules.
fn requested(life: &Life, layout: Layout) -> BTreeSet<Permission> {
    let mut out = BTreeSet::new();
    for (i, call) in life.calls.iter().enumerate() {
        if layout == Layout::Roles && life.all_namespaces.contains(&i) {
            continue;
        }
        for mut p in permissions_of(call) {
            if layout == Layout::ClusterRole && p.0 == Scope::Cluster {
                p.0 = Scope::Watched;
            }
            out.insert(p);
        }
    }
    out
}

fn show<'a>(set: impl IntoIterator<Item = &'a Permission>) -> String {
    set.into_iter()
        .map(|(s, g, r, v, n)| format!("  {s:?} {g:?} {r} {v} {}", n.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a grant lets a request through: the same scope, group, resource and verb, and a
/// rule without resourceNames or naming the requested object.
fn covers(grant: &Permission, request: &Permission) -> bool {
    grant.0 == request.0
        && grant.1 == request.1
        && grant.2 == request.2
        && grant.3 == request.3
        && (grant.4.is_none() || grant.4 == request.4)
}

/// The chart's grants against the requests: nothing missing, nothing unused.
fn check_grants(
    default: &str,
    extra: &[&str],
    layout: Layout,
    requested: &BTreeSet<Permission>,
) -> Result<(), String> {
    check_grants_with(default, extra, false, layout, requested)
}

/// [`check_grants`] with `flaggerCanaries` on or off.
fn check_grants_with(
    default: &str,
    extra: &[&str],
    flagger: bool,
    layout: Layout,
    requested: &BTreeSet<Permission>,
) -> Result<(), String> {
    let granted = permissions().granted(default, extra, flagger);
    let missing: Vec<_> = requested
        .iter()
        .filter(|r| !granted.iter().any(|g| covers(g, r)))
        .collect();
    let unused: Vec<_> = granted
        .iter()
        .filter(|g| !requested.iter().any(|r| covers(g, r)))
        .collect();
    if missing.is_empty() && unused.is_empty() {
        return Ok(());
    }
    Err(format!(
        "provider {default} (extra {extra:?}, flaggerCanaries {flagger}, {layout:?}): \
         charts/fledge/rbac/permissions.yaml\n\
         misses what the controller requests:\n{}\ngrants what it never requests:\n{}",
        show(missing),
        show(unused)
    ))
}

fn assert_grants_exactly(default: &str, extra: &[&str], lives: &[Life]) {
    assert_grants_exactly_with(default, extra, false, lives);
}

fn assert_grants_exactly_with(default: &str, extra: &[&str], flagger: bool, lives: &[Life]) {
    for layout in [Layout::ClusterRole, Layout::Roles] {
        let requested = lives.iter().flat_map(|l| requested(l, layout)).collect();
        if let Err(e) = check_grants_with(default, extra, flagger, layout, &requested) {
            panic!("{e}");
        }
    }
}

#[tokio::test]
async fn the_chart_grants_exactly_what_the_controller_requests_with_each_default_provider() {
    for &provider in PROVIDER_NAMES {
        let life = a_life(provider, None).await;
        assert_grants_exactly(provider, &[], &[life]);
    }
}

#[tokio::test]
async fn with_flagger_canaries_the_chart_grants_exactly_what_taking_them_over_requests() {
    let lives = [a_life("istio", None).await, a_flagger_life().await];
    assert_grants_exactly_with("istio", &[], true, &lives);
}

#[tokio::test]
async fn an_apply_that_creates_its_object_needs_create_as_well_as_patch() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, Patch, PatchParams};
    let c = FakeCluster::new();
    let services: Api<Service> = Api::namespaced(c.client(), NS);
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo"}});
    let params = PatchParams::apply("fledge").force();
    for _ in 0..2 {
        services
            .patch("podinfo", &params, &Patch::Apply(&svc))
            .await
            .expect("apply");
    }
    let perms: Vec<Vec<String>> = c
        .calls()
        .iter()
        .map(|call| permissions_of(call).into_iter().map(|p| p.3).collect())
        .collect();
    assert_eq!(
        perms,
        [vec!["patch", "create"], vec!["patch"]],
        "the first apply creates the Service, the second only patches it"
    );
}

#[tokio::test]
async fn a_canary_naming_another_provider_needs_the_rules_of_an_extra_provider() {
    // Two Canaries on an Istio controller: one on the default, one naming the Gateway API.
    let lives = [
        a_life("istio", None).await,
        a_life("istio", Some("gatewayapi:v1")).await,
    ];
    assert_grants_exactly("istio", &["gatewayapi:v1"], &lives);
}

/// A request the controller would make, as the fake records it.
fn call(method: &str, path: &str) -> Call {
    Call {
        method: method.into(),
        path: path.into(),
        body: Value::Null,
        created: false,
    }
}

#[tokio::test]
async fn a_cluster_wide_request_fails_under_a_namespace_list_but_not_under_a_cluster_role() {
    let mut life = a_life("istio", None).await;
    // As if reconciling in namespace `test` listed Deployments in every namespace.
    life.calls.push(call("GET", "/apis/apps/v1/deployments"));
    let roles = requested(&life, Layout::Roles);
    let err = check_grants("istio", &[], Layout::Roles, &roles)
        .expect_err("a Role cannot grant a cluster-wide list");
    assert!(
        err.contains("Cluster \"apps\" deployments list"),
        "names the request: {err}"
    );
    let cluster = requested(&life, Layout::ClusterRole);
    check_grants("istio", &[], Layout::ClusterRole, &cluster)
        .expect("the ClusterRole grants it (list deployments everywhere)");
}

#[tokio::test]
async fn the_lease_rules_name_the_lease_so_another_lease_is_refused() {
    let mut life = a_life("istio", None).await;
    let other = "/apis/coordination.k8s.io/v1/namespaces/fledge-system/leases/other";
    life.calls.push(call("PUT", other));
    let requested = requested(&life, Layout::Roles);
    let err = check_grants("istio", &[], Layout::Roles, &requested)
        .expect_err("update of another Lease is not granted");
    assert!(
        err.contains("Release \"coordination.k8s.io\" leases update other"),
        "names the request: {err}"
    );
}

#[test]
fn every_rule_says_why_and_none_has_a_wildcard_or_repeats_a_permission() {
    let perms = permissions();
    let words = |r: &Rule| -> Vec<String> {
        r.api_groups
            .iter()
            .chain(&r.resources)
            .chain(&r.verbs)
            .cloned()
            .collect()
    };
    for provider in PROVIDER_NAMES {
        let mut seen = BTreeSet::new();
        for (scope, rule) in perms.rendered(provider, PROVIDER_NAMES, true) {
            assert!(
                !rule.why.trim().is_empty(),
                "a rule without `why`: {:?}",
                words(rule)
            );
            assert!(
                words(rule).iter().all(|w| !w.contains('*')),
                "a wildcard in {:?}",
                words(rule)
            );
            for g in &rule.api_groups {
                for r in &rule.resources {
                    for v in &rule.verbs {
                        assert!(
                            seen.insert((scope, g, r, v)),
                            "{scope:?} {g:?} {r} {v} is granted twice"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_values_schema_knows_exactly_the_providers_the_controller_knows() {
    let schema: Value = serde_json::from_str(&chart_file("values.schema.json")).unwrap();
    let names = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not an enum: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let known: BTreeSet<String> = PROVIDER_NAMES.iter().map(|s| s.to_string()).collect();
    let providers = &schema["$defs"]["provider"]["enum"];
    assert_eq!(names(providers), known, "values.schema.json $defs.provider");
    let listed: BTreeSet<String> = permissions()
        .routing
        .values()
        .flat_map(|f| f.providers.clone())
        .collect();
    assert_eq!(listed, known, "rbac/permissions.yaml routing providers");
}
