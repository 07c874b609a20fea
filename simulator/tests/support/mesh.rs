//! What the mesh tests share: a pod's behaviour, a mesh built with manifests applied (a canary
//! mesh of `podinfo` among them), the controller's Istio route, and requests counted by reporter
//! and by response flag.

use fledge_simulator::engine::MILLIS;
use fledge_simulator::manifest;
use fledge_simulator::mesh::{
    Behaviour, Call, ClientConfig, HeaderProfile, Mesh, MeshConfig, ServiceConfig, ServiceTime,
    VersionConfig,
};
use fledge_simulator::telemetry::{Reporter, Selector, WindowStats};

/// A pod with `workers` workers and exponential service times of mean `mean_ms`.
pub fn behaviour(mean_ms: u64, workers: u32) -> Behaviour {
    Behaviour {
        workers,
        service_time: ServiceTime::Exponential {
            mean: mean_ms * MILLIS,
        },
        ..Default::default()
    }
}

/// A pod with the default workers whose every request takes `ms` milliseconds.
pub fn constant(ms: u64) -> Behaviour {
    Behaviour {
        service_time: ServiceTime::Constant(ms * MILLIS),
        ..Default::default()
    }
}

/// A client of `service` at `rps` requests/s whose every request carries `headers`
/// (`:method` and `:path` among them when given).
pub fn client_with(name: &str, service: &str, rps: f64, headers: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new(name, service, rps);
    c.headers = vec![HeaderProfile {
        weight: 1.0,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }];
    c
}

/// A service whose one version, `v1`, has `pods` pods of `behaviour`.
pub fn one_version(name: &str, pods: u32, behaviour: Behaviour) -> ServiceConfig {
    ServiceConfig::new(name, vec![VersionConfig::new("v1", pods, behaviour)])
}

/// A service with versions `v1` and `v2`, each of `pods` pods of `behaviour`.
pub fn v1_and_v2(name: &str, pods: u32, behaviour: Behaviour) -> ServiceConfig {
    ServiceConfig::new(
        name,
        vec![
            VersionConfig::new("v1", pods, behaviour.clone()),
            VersionConfig::new("v2", pods, behaviour),
        ],
    )
}

/// The mesh of `cfg` with `manifests` (YAML, possibly empty) applied.
pub fn mesh_with(cfg: MeshConfig, manifests: &str) -> Mesh {
    let mut mesh = Mesh::new(cfg).expect("mesh builds");
    if !manifests.is_empty() {
        mesh.apply_manifests(&manifest::parse(manifests).expect("manifests parse"))
            .expect("manifests apply");
    }
    mesh
}

/// Applies `yaml` to `mesh`, which takes it without a warning.
pub fn apply(mesh: &mut Mesh, yaml: &str) {
    let m = manifest::parse(yaml).expect("manifests");
    let warnings = mesh.apply_manifests(&m).expect("applied");
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// Applies `yaml` to `mesh`: the warnings of its reading and of its applying.
pub fn applied(mesh: &mut Mesh, yaml: &str) -> Vec<String> {
    let m = manifest::parse(yaml).expect("manifests");
    let mut warnings = m.warnings.clone();
    warnings.extend(mesh.apply_manifests(&m).expect("applied"));
    warnings
}

/// The requests `service`'s `version` served so far (its pods' sidecars' count).
pub fn served(mesh: &Mesh, service: &str, version: &str) -> u64 {
    let v = mesh.version_id(service, version).expect("a version");
    mesh.destination_stats(v, 0, mesh.now()).requests
}

/// A call every request makes to `service`, with its own `path` if given.
pub fn call_of(service: &str, optional: bool, path: Option<&str>) -> Call {
    Call {
        service: service.into(),
        probability: 1.0,
        optional,
        method: None,
        path: path.map(Into::into),
        timeout: None,
    }
}

/// What client `client` saw of its requests so far (reporter `source`, after retries): those
/// answered by `version` (service, version), or all.
pub fn seen(mesh: &Mesh, client: &str, version: Option<(&str, &str)>) -> WindowStats {
    let c = mesh.client_id(client).expect("a client");
    let dest = version.map(|(s, v)| mesh.version_id(s, v).expect("a version").0);
    mesh.telemetry().totals(&Selector {
        reporter: Reporter::Source,
        source: Some(c.0),
        dest,
    })
}

/// The mean latency of `stats`, which must have requests.
pub fn mean_ms(stats: &WindowStats) -> f64 {
    stats.mean_ms().expect("requests")
}

/// Requests the clients' sidecars reported so far whose response flags satisfy `pred`.
pub fn count_flags(mesh: &Mesh, pred: impl Fn(u16) -> bool) -> u64 {
    let sel = Selector {
        reporter: Reporter::Source,
        source: None,
        dest: None,
    };
    mesh.telemetry()
        .by_code(&sel, 0, mesh.now(), mesh.now())
        .iter()
        .filter(|(_, f, _)| pred(*f))
        .map(|x| x.2)
        .sum()
}

/// Routes `podinfo` as the controller's Istio router does: `primary`/`canary` percent to the
/// versions' own Services, requests with `header` all to the canary, `mirror` percent copied.
pub fn route(
    mesh: &mut Mesh,
    primary: u8,
    canary: u8,
    mirror: Option<u8>,
    header: Option<(&str, &str)>,
) {
    let general = format!(
        "      - route:\n          - {{destination: {{host: podinfo-primary}}, weight: {primary}}}\n          - {{destination: {{host: podinfo-canary}}, weight: {canary}}}\n{}",
        mirror.map_or(String::new(), |m| format!(
            "        mirror: {{host: podinfo-canary}}\n        mirrorPercentage: {{value: {m}}}\n"
        ))
    );
    let matched = header.map_or(String::new(), |(k, v)| {
        format!(
            "      - match: [{{headers: {{{k}: {{exact: {v}}}}}}}]\n        route:\n          - {{destination: {{host: podinfo-canary}}, weight: 100}}\n"
        )
    });
    let vs = format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: podinfo}}\nspec:\n  hosts: [podinfo]\n  http:\n{matched}{general}"
    );
    let manifests = manifest::parse(&vs).unwrap_or_else(|e| panic!("{e}\n{vs}"));
    let warnings = mesh.apply_manifests(&manifests).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// A mesh of `podinfo` (4 primary and 2 canary pods, 8 workers of 10 ms each) and one client
/// sending `rps`, with `manifests` applied.
pub fn canary_mesh(seed: u64, rps: f64, manifests: &str) -> Mesh {
    let cfg = MeshConfig {
        seed,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![
                VersionConfig::new("primary", 4, behaviour(10, 8)),
                VersionConfig::new("canary", 2, behaviour(10, 8)),
            ],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", rps)],
        ..Default::default()
    };
    mesh_with(cfg, manifests)
}

/// `(response code, response flags, requests)` the servers' sidecars reported so far.
pub fn destination_codes(mesh: &Mesh) -> Vec<(u16, u16, u64)> {
    let sel = Selector {
        reporter: Reporter::Destination,
        source: None,
        dest: None,
    };
    mesh.telemetry().by_code(&sel, 0, mesh.now(), mesh.now())
}

/// Requests the clients' sidecars reported so far with response flag `flag`.
pub fn count_flag(mesh: &Mesh, flag: u16) -> u64 {
    count_flags(mesh, |f| f & flag != 0)
}

/// Requests and failures `reporter` reported so far.
pub fn total(mesh: &Mesh, reporter: Reporter) -> (u64, u64) {
    let w = mesh.telemetry().totals(&Selector {
        reporter,
        source: None,
        dest: None,
    });
    (w.requests, w.failures)
}

/// The mesh-wide PeerAuthentication that requires mutual TLS.
pub const STRICT: &str = "kind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n";

/// One service `podinfo` with a `primary` version of `pods` pods (5 ms, 8 workers) and one
/// client `client` sending `rps`.
pub fn podinfo(seed: u64, pods: u32, rps: f64) -> MeshConfig {
    MeshConfig {
        seed,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new("primary", pods, behaviour(5, 8))],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", rps)],
        ..Default::default()
    }
}

/// A VirtualService routing `podinfo` to the whole service; a test appends to its route.
pub const VS_PODINFO: &str = "kind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n";

/// Every connection to `podinfo` fails its TLS handshake (the DestinationRule, whose
/// `trafficPolicy` gets `outlier`, asks `ISTIO_MUTUAL` of servers whose sidecars have mTLS
/// disabled): each attempt ends 503 `UF`, a local-origin error (Envoy `outlier.rst`). `retries`
/// is appended to [`VS_PODINFO`]'s route.
pub fn handshake_failures(outlier: &str, retries: &str) -> String {
    format!(
        "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL}}\n{outlier}---\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: DISABLE\n---\n{VS_PODINFO}{retries}"
    )
}
