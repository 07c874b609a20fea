//! Leader election through a scripted API server (tower-test), on tokio's paused clock: time
//! moves only when every task waits, so deadlines and timeouts are exact and instant, and the
//! order of two replicas' events is deterministic. Each replica has its own link to the server,
//! which a test can cut (requests hang) or make fail.
#![cfg(feature = "cluster")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_controller::cluster::lease::{
    Attempt, LeaderElection, LeaseConfig, LeaseError, Lost, Timing,
};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

const NAME: &str = "fledge-leader";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/fledge-system/leases";

/// How the server treats one replica's requests.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Link {
    Up,
    /// Never answered.
    Hang,
    /// Answered with this status.
    Fail(u16),
}

#[derive(Default)]
struct State {
    lease: Option<Value>,
    version: u64,
    /// The next write is answered 409, as if another replica wrote first.
    conflict_next_write: bool,
    /// Writes record a `renewTime` an hour behind, as a holder with a slow clock would.
    holder_clock_an_hour_behind: bool,
    /// Each write that landed: the holder it names and when.
    landed: Vec<(String, Instant)>,
}

#[derive(Clone, Default)]
struct Server(Arc<Mutex<State>>);

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

impl Server {
    fn holder(&self) -> Option<String> {
        let s = self.0.lock().unwrap();
        s.lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(String::from)
    }

    /// Someone (a person, another tool) writes the Lease.
    fn put(&self, mut lease: Value) {
        let mut s = self.0.lock().unwrap();
        s.version += 1;
        lease["metadata"]["resourceVersion"] = json!(s.version.to_string());
        s.lease = Some(lease);
    }

    fn edit(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.0.lock().unwrap());
    }

    fn answer(&self, method: &str, path: &str, mut body: Value) -> (u16, Value) {
        let mut s = self.0.lock().unwrap();
        let object = format!("{LEASES}/{NAME}");
        let write = |s: &mut State, body: &mut Value| {
            s.version += 1;
            body["metadata"]["resourceVersion"] = json!(s.version.to_string());
            if s.holder_clock_an_hour_behind {
                let behind = k8s_openapi::jiff::Timestamp::now()
                    - k8s_openapi::jiff::SignedDuration::from_hours(1);
                body["spec"]["renewTime"] = json!(behind.to_string());
            }
            let holder = body["spec"]["holderIdentity"].as_str().unwrap_or("");
            s.landed.push((holder.to_string(), Instant::now()));
            s.lease = Some(body.clone());
            (200, body.clone())
        };
        match (method, path) {
            ("GET", p) if p == object => match &s.lease {
                Some(l) => (200, l.clone()),
                None => (404, status(404, "NotFound")),
            },
            ("POST", LEASES) if s.lease.is_some() => (409, status(409, "AlreadyExists")),
            ("POST", LEASES) => write(&mut s, &mut body),
            ("PUT", p) if p == object => {
                let current = s
                    .lease
                    .as_ref()
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if std::mem::take(&mut s.conflict_next_write)
                    || current != Some(body["metadata"]["resourceVersion"].clone())
                {
                    return (409, status(409, "Conflict"));
                }
                write(&mut s, &mut body)
            }
            _ => (405, status(405, "MethodNotAllowed")),
        }
    }

    /// A replica named `identity` whose requests pass through `link`.
    fn replica(&self, identity: &str, link: &Arc<Mutex<Link>>) -> LeaderElection {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (server, link) = (self.clone(), link.clone());
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().to_string();
                let path = request.uri().path().to_string();
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .unwrap_or_default();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (code, answer) = match *link.lock().unwrap() {
                    // Held, never answered, until the test ends.
                    Link::Hang => {
                        tokio::spawn(async move {
                            std::future::pending::<()>().await;
                            drop(send);
                        });
                        continue;
                    }
                    Link::Fail(code) => (code, status(code, "InternalError")),
                    Link::Up => server.answer(&method, &path, body),
                };
                let response = Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        LeaderElection::new(
            kube::Client::new(service, "fledge-system"),
            LeaseConfig {
                name: NAME.into(),
                namespace: "fledge-system".into(),
                identity: identity.into(),
                timing: Timing::default(),
            },
        )
    }
}

fn link(state: Link) -> Arc<Mutex<Link>> {
    Arc::new(Mutex::new(state))
}

const SECOND: Duration = Duration::from_secs(1);

/// `f`, or a failure after an hour of (virtual) time.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(3600 * SECOND, f)
        .await
        .expect("finished within an hour")
}

#[tokio::test(start_paused = true)]
async fn one_of_two_replicas_leads_and_the_other_takes_over_a_lease_duration_after_it_stops() {
    let server = Server::default();
    let (a, b) = (
        server.replica("a", &link(Link::Up)),
        server.replica("b", &link(Link::Up)),
    );
    assert_eq!(a.try_hold().await.unwrap(), Attempt::Holding);
    assert_eq!(b.try_hold().await.unwrap(), Attempt::HeldBy("a".into()));
    sleep(14 * SECOND).await;
    assert_eq!(b.try_hold().await.unwrap(), Attempt::HeldBy("a".into()));
    // a renews: b's wait starts again from when b sees it.
    assert_eq!(a.try_hold().await.unwrap(), Attempt::Holding);
    assert_eq!(b.try_hold().await.unwrap(), Attempt::HeldBy("a".into()));
    sleep(14 * SECOND).await;
    assert_eq!(b.try_hold().await.unwrap(), Attempt::HeldBy("a".into()));
    sleep(SECOND).await;
    assert_eq!(b.try_hold().await.unwrap(), Attempt::Holding);
    assert_eq!(a.try_hold().await.unwrap(), Attempt::HeldBy("b".into()));
    let lease = server.0.lock().unwrap().lease.clone().unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_standby_never_takes_a_renewed_lease_however_old_its_holders_clock_says_it_is() {
    let server = Server::default();
    server.edit(|s| s.holder_clock_an_hour_behind = true);
    let (a, b) = (
        server.replica("a", &link(Link::Up)),
        server.replica("b", &link(Link::Up)),
    );
    let renewed = a.acquire().await;
    let leader = tokio::spawn(async move { a.keep(renewed).await });
    for _ in 0..60 {
        assert_eq!(b.try_hold().await.unwrap(), Attempt::HeldBy("a".into()));
        sleep(SECOND).await;
    }
    assert!(!leader.is_finished(), "the leader kept its lease");
}

/// A Lease another tool wrote, held by `x`.
fn foreign_lease(duration: i32, time: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": NAME, "namespace": "fledge-system"},
        "spec": {"holderIdentity": "x", "leaseDurationSeconds": duration,
                 "renewTime": time, "acquireTime": time, "leaseTransitions": i32::MAX}
    })
}

/// `b` waits for `x`'s Lease exactly `wait`, then takes it.
async fn taken_after(server: &Server, wait: Duration) {
    let b = server.replica("b", &link(Link::Up));
    assert_eq!(b.try_hold().await.unwrap(), Attempt::HeldBy("x".into()));
    sleep(wait - SECOND).await;
    assert_eq!(b.try_hold().await.unwrap(), Attempt::HeldBy("x".into()));
    sleep(SECOND).await;
    assert_eq!(b.try_hold().await.unwrap(), Attempt::Holding);
    assert_eq!(server.holder().as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_lease_with_times_from_the_future_and_absurd_durations_is_judged_by_local_time() {
    // Renewed (by its holder's clock) a second before the end of time, for an hour.
    let server = Server::default();
    server.put(foreign_lease(3600, "9999-12-30T21:59:59Z"));
    taken_after(&server, 3600 * SECOND).await;
    // A negative duration is no shorter than ours.
    let server = Server::default();
    server.put(foreign_lease(i32::MIN, "9999-12-30T21:59:59Z"));
    taken_after(&server, 15 * SECOND).await;
    // Nor is one from the distant past.
    let server = Server::default();
    server.put(foreign_lease(15, "0001-01-01T00:00:00Z"));
    taken_after(&server, 15 * SECOND).await;
}

/// `a` leads and renews for 20 s, then its link turns to `broken`; `b` waits to take over.
/// Returns when `a` stopped leading, why, when `b`'s successful attempt began, and when `a`'s
/// last renewal landed.
async fn leader_cut_off(broken: Link) -> (Instant, Lost, Instant, Instant) {
    let server = Server::default();
    let a_link = link(Link::Up);
    let (a, b) = (
        server.replica("a", &a_link),
        server.replica("b", &link(Link::Up)),
    );
    let renewed = a.acquire().await;
    let leader = tokio::spawn(async move {
        let why = a.keep(renewed).await;
        (Instant::now(), why)
    });
    let standby = tokio::spawn(async move { b.acquire().await });
    sleep(20 * SECOND).await;
    *a_link.lock().unwrap() = broken;
    // Bounded, so that a leader that never stops fails the test rather than runs forever.
    let (stopped, why) = bounded(leader).await.unwrap();
    let b_leads = bounded(standby).await.unwrap();
    assert_eq!(server.holder().as_deref(), Some("b"));
    let landed = server.0.lock().unwrap().landed.clone();
    let a_last = landed
        .iter()
        .rev()
        .find(|(holder, _)| holder == "a")
        .unwrap()
        .1;
    (stopped, why, b_leads, a_last)
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_calls_hang_stops_leading_before_a_standby_takes_over() {
    let (stopped, why, b_leads, a_last) = leader_cut_off(Link::Hang).await;
    assert_eq!(why, Lost::NotRenewed);
    assert!(stopped <= a_last + Timing::default().renew_deadline());
    assert!(stopped < b_leads, "{stopped:?} !< {b_leads:?}");
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_fail_stops_leading_before_a_standby_takes_over() {
    let (stopped, why, b_leads, a_last) = leader_cut_off(Link::Fail(500)).await;
    assert_eq!(why, Lost::NotRenewed);
    assert!(stopped <= a_last + Timing::default().renew_deadline());
    assert!(stopped < b_leads, "{stopped:?} !< {b_leads:?}");
}

#[tokio::test(start_paused = true)]
async fn every_call_the_elector_makes_gives_up_after_the_call_timeout() {
    let server = Server::default();
    let a = server.replica("a", &link(Link::Hang));
    let timeout = Timing::default().call_timeout();
    // Bounded here too, so that a call without a timeout fails this test rather than hangs it.
    let err = bounded(a.try_hold()).await.unwrap_err();
    assert!(
        matches!(&err, LeaseError::Timeout { after, .. } if *after == timeout),
        "{err}"
    );
    let err = bounded(a.release()).await.unwrap_err();
    assert!(matches!(err, LeaseError::Timeout { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_finds_another_holder_stops_at_once() {
    let server = Server::default();
    let a = server.replica("a", &link(Link::Up));
    let renewed = a.acquire().await;
    let mut lease = server.0.lock().unwrap().lease.clone().unwrap();
    lease["spec"]["holderIdentity"] = json!("c");
    server.put(lease);
    assert_eq!(bounded(a.keep(renewed)).await, Lost::TakenBy("c".into()));
}

#[tokio::test(start_paused = true)]
async fn two_replicas_racing_for_an_expired_lease_do_not_both_win() {
    let server = Server::default();
    let (a, b) = (
        server.replica("a", &link(Link::Up)),
        server.replica("b", &link(Link::Up)),
    );
    assert_eq!(a.try_hold().await.unwrap(), Attempt::Holding);
    assert_eq!(b.try_hold().await.unwrap(), Attempt::HeldBy("a".into()));
    sleep(30 * SECOND).await;
    // b read the expired Lease; someone else wrote it before b's write landed.
    server.edit(|s| s.conflict_next_write = true);
    assert_eq!(b.try_hold().await.unwrap(), Attempt::Raced);
    assert_eq!(server.holder().as_deref(), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_shuts_down_releases_the_lease_for_a_standby() {
    let server = Server::default();
    let (a, b) = (
        server.replica("a", &link(Link::Up)),
        server.replica("b", &link(Link::Up)),
    );
    assert_eq!(a.try_hold().await.unwrap(), Attempt::Holding);
    a.release().await.unwrap();
    assert_eq!(b.try_hold().await.unwrap(), Attempt::Holding);
}
