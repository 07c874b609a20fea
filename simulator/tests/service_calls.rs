//! Calls between services: a version's requests call other services through its sidecar, the
//! worker waiting; the callee's routes and faults apply to the calls, headers propagate, and a
//! failed call fails the caller unless it is optional.

mod support;

use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::mesh::*;
use support::mesh::{apply, call_of, client_with, one_version, seen};

/// `frontend` (one version, `v1`) calls `backend` with `call`; clients `jason` (every request
/// with `end-user: jason`) and `anon` (no header) call `frontend`.
fn mesh(call: Call, backend: Behaviour) -> Mesh {
    let frontend = Behaviour {
        calls: vec![vec![call]],
        ..Behaviour::default()
    };
    let jason = client_with("jason", "frontend", 200.0, &[("end-user", "jason")]);
    let cfg = MeshConfig {
        seed: 5,
        services: vec![
            one_version("frontend", 2, frontend),
            one_version("backend", 2, backend),
        ],
        clients: vec![jason, ClientConfig::new("anon", "frontend", 200.0)],
        ..Default::default()
    };
    Mesh::new(cfg).expect("a valid mesh")
}

fn backend_served(mesh: &Mesh) -> u64 {
    let v = mesh.version_id("backend", "v1").expect("backend v1");
    mesh.destination_stats(v, 0, mesh.now()).requests
}

#[test]
fn a_header_matched_fault_on_a_downstream_call_fails_only_the_matching_users() {
    let mut mesh = mesh(call_of("backend", false, None), Behaviour::default());
    apply(
        &mut mesh,
        r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
    - match: [{headers: {end-user: {exact: jason}}}]
      fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
      route: [{destination: {host: backend}}]
    - route: [{destination: {host: backend}}]
"#,
    );
    mesh.run_until(30 * SECONDS);
    let (jason, anon) = (seen(&mesh, "jason", None), seen(&mesh, "anon", None));
    assert!(jason.requests > 4_000 && anon.requests > 4_000);
    assert_eq!(
        jason.failures, jason.requests,
        "every call of jason's is aborted"
    );
    assert_eq!(anon.failures, 0, "no one else's call is");
    // Only anon's calls reach the backend: jason's are aborted by the frontend's sidecar.
    let served = backend_served(&mesh);
    assert!(served >= anon.requests - 100 && served <= anon.requests + 100);
}

#[test]
fn a_failed_optional_call_does_not_fail_the_caller() {
    let failing = Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    };
    let mut optional = mesh(call_of("backend", true, None), failing.clone());
    optional.run_until(20 * SECONDS);
    assert!(backend_served(&optional) > 4_000, "the calls are made");
    let anon = seen(&optional, "anon", None);
    assert!(anon.requests > 3_000);
    assert_eq!(anon.failures, 0);

    let mut required = mesh(call_of("backend", false, None), failing);
    required.run_until(20 * SECONDS);
    let anon = seen(&required, "anon", None);
    assert_eq!(
        anon.failures, anon.requests,
        "a required call's failure is the caller's"
    );
}

#[test]
fn a_call_holds_the_callers_worker_until_it_is_answered() {
    // The backend answers in 50 ms; the frontend's own work takes 1 ms.
    let slow = Behaviour {
        service_time: ServiceTime::Constant(50 * MILLIS),
        ..Behaviour::default()
    };
    let mut mesh = mesh(call_of("backend", false, None), slow);
    mesh.run_until(20 * SECONDS);
    let p50 = seen(&mesh, "anon", None)
        .quantile_ms(0.5)
        .expect("requests");
    assert!(
        p50 >= 50.0,
        "the caller's latency holds the call's: p50 {p50} ms"
    );
    // 400 requests/s held 50 ms each over 2 pods of 16 workers: about 10 busy a pod, so
    // some queue only because the calls hold the workers.
    let v = mesh.version_id("frontend", "v1").expect("frontend");
    let q = mesh.queue_stats(v);
    assert!(q.queued > 0, "{q:?}");
}
