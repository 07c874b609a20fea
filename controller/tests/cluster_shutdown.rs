//! `fledge-controller run` as a process: `/readyz` says 503 until the API server has answered
//! (the Canary watches have synced; with `--leader-elect`, the Lease and the Canary list have
//! answered too) and 200 after; SIGTERM or SIGINT stops it whether or not the API server can be
//! reached; a port in use for the ops server stops it at start; text logs carry no colour
//! codes into a pipe. Every wait here is a hang guard (the test fails instead of hanging), not
//! a timing assertion.
#![cfg(all(feature = "cluster", unix))]
// A real process on the wall clock: the hang guards need it.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// How long any single wait may take before the test gives up.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A directory of this test's own, with a kubeconfig pointing at `server`.
fn kubeconfig(name: &str, server: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fledge-shutdown-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters: [{{name: test, cluster: {{server: \"{server}\"}}}}]\n\
             users: [{{name: test, user: {{token: test}}}}]\n\
             contexts: [{{name: test, context: {{cluster: test, user: test, namespace: default}}}}]\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

struct Controller {
    child: Child,
    ops: SocketAddr,
    logs: mpsc::Receiver<String>,
}

impl Controller {
    fn start(name: &str, api_server: &str) -> Controller {
        Controller::start_with(name, api_server, &[], free_port())
    }

    /// Starts `fledge-controller run --listen 127.0.0.1:ops_port` with `extra` flags; its
    /// stdout and stderr lines arrive on `logs`.
    fn start_with(name: &str, api_server: &str, extra: &[&str], ops_port: u16) -> Controller {
        let config = kubeconfig(name, api_server);
        let ops = SocketAddr::from(([127, 0, 0, 1], ops_port));
        let mut command = Command::new(env!("CARGO_BIN_EXE_fledge-controller"));
        command
            .args(["run", "--listen", &ops.to_string(), "--log-level", "info"])
            .args(extra)
            .env("KUBECONFIG", &config)
            .env("HOME", config.parent().expect("a directory"))
            .env("POD_NAME", "test-replica")
            .env_remove("POD_NAMESPACE")
            .env_remove("NO_COLOR")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("FLEDGE_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().expect("fledge-controller starts");
        let (tx, logs) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        forward_lines(stdout, tx.clone());
        forward_lines(stderr, tx);
        Controller { child, ops, logs }
    }

    /// Waits for a log line containing `text` and returns it.
    fn wait_for_log(&self, text: &str) -> String {
        let deadline = Instant::now() + HANG_GUARD;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!(
            "no log line with `{text}` (hang guard); the lines:\n{}",
            seen.join("\n")
        );
    }

    /// The status code of `GET /readyz`, or None while the ops server does not answer.
    fn readyz(&self) -> Option<u16> {
        let mut stream = TcpStream::connect_timeout(&self.ops, Duration::from_secs(5)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: fledge\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer.split_whitespace().nth(1)?.parse().ok()
    }

    /// Polls `/readyz` until it answers `code`.
    fn wait_for_readyz(&self, code: u16) {
        let deadline = Instant::now() + HANG_GUARD;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.readyz();
            if last == Some(code) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("/readyz never answered {code}; last {last:?} (hang guard)");
    }

    /// Sends SIGTERM or SIGINT through the shell's `kill` builtin (no procps needed).
    fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{name} {}", self.child.id()))
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit; kills it and fails if it does not.
    fn wait_for_exit(mut self, after: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + HANG_GUARD;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("fledge-controller did not exit after {after} (hang guard)");
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends each line `from` gives to `to`, from a thread of its own.
fn forward_lines(from: impl Read + Send + 'static, to: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if to.send(line).is_err() {
                break;
            }
        }
    });
}

/// A closed port on 127.0.0.1: every connection is refused.
fn unreachable_api_server() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn stops_on_signal_while_the_api_server_is_unreachable(signal: &str) {
    let controller = Controller::start(signal, &unreachable_api_server());
    controller.wait_for_log("failed to perform initial object list");
    controller.wait_for_readyz(503);
    controller.signal(signal);
    let status = controller.wait_for_exit(signal);
    assert!(status.success(), "exit status after {signal}: {status}");
}

#[test]
fn run_answers_readyz_503_while_no_list_succeeds_and_exits_on_sigterm() {
    stops_on_signal_while_the_api_server_is_unreachable("TERM");
}

#[test]
fn run_exits_on_sigint_while_the_api_server_is_unreachable() {
    stops_on_signal_while_the_api_server_is_unreachable("INT");
}

/// How the fake API server answers about the Lease and the Canaries.
#[derive(Clone, Copy)]
enum Api {
    /// No Lease yet: the first replica to ask creates it.
    NoLease,
    /// Another replica holds the Lease (and wins every race to write it).
    LeaseHeldByOther,
    /// As [`Api::LeaseHeldByOther`], and every Canary list is forbidden.
    LeaseHeldByOtherCanariesForbidden,
}

/// The fake API server's state: what it was told to be, and the Lease once created.
#[derive(Clone)]
struct Fake {
    api: Api,
    lease: Arc<Mutex<Option<serde_json::Value>>>,
}

fn status(code: u16, reason: &str) -> Response {
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "reason": reason, "code": code, "message": reason,
    });
    (
        StatusCode::from_u16(code).expect("a status code"),
        axum::Json(body),
    )
        .into_response()
}

/// An API server with nothing in it but (as `fake.api` says) a Lease: every list is empty,
/// every watch stays open and quiet.
async fn fake_api(State(fake): State<Fake>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path();
    if path.contains("/leases/") || path.ends_with("/leases") {
        let mut lease = fake.lease.lock().expect("lease");
        return match (fake.api, method.as_str()) {
            (Api::NoLease, "GET") => match &*lease {
                Some(l) => axum::Json(l.clone()).into_response(),
                None => status(404, "NotFound"),
            },
            (Api::NoLease, "POST" | "PUT") => {
                let mut written: serde_json::Value =
                    serde_json::from_slice(&body).expect("a Lease");
                written["metadata"]["resourceVersion"] = "1".into();
                *lease = Some(written.clone());
                axum::Json(written).into_response()
            }
            (_, "GET") => axum::Json(serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "fledge-leader", "namespace": "fledge-system",
                             "resourceVersion": "7"},
                "spec": {"holderIdentity": "other-replica", "leaseDurationSeconds": 15,
                         "renewTime": "2026-01-01T00:00:00.000000Z"},
            }))
            .into_response(),
            _ => status(409, "Conflict"),
        };
    }
    if path.starts_with("/apis/fledge.dev/")
        && matches!(fake.api, Api::LeaseHeldByOtherCanariesForbidden)
    {
        return status(403, "Forbidden");
    }
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    if watch {
        let quiet = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        return Body::from_stream(quiet).into_response();
    }
    axum::Json(serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": "1"},
        "items": []
    }))
    .into_response()
}

/// Serves [`fake_api`] on 127.0.0.1 from a thread of its own while the test runs.
fn fake_api_server(api: Api) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("address");
    let fake = Fake {
        api,
        lease: Arc::default(),
    };
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = axum::Router::new().fallback(fake_api).with_state(fake);
            let _ = axum::serve(listener, app).await;
        });
    });
    format!("http://{address}")
}

/// An API server with nothing in it.
fn empty_api_server() -> String {
    fake_api_server(Api::NoLease)
}

#[test]
fn run_answers_readyz_200_once_the_canary_list_has_synced_and_exits_on_sigterm() {
    let controller = Controller::start("synced", &empty_api_server());
    controller.wait_for_readyz(200);
    controller.signal("TERM");
    let status = controller.wait_for_exit("TERM");
    assert!(status.success(), "exit status after TERM: {status}");
}

#[test]
fn with_leader_election_readyz_answers_503_while_no_lease_read_succeeds() {
    let controller = Controller::start_with(
        "elect-unreachable",
        &unreachable_api_server(),
        &["--leader-elect"],
        free_port(),
    );
    controller.wait_for_log("leader election");
    // The ops server is bound before anything else: it answers by now.
    assert_eq!(controller.readyz(), Some(503));
    controller.signal("TERM");
    let status = controller.wait_for_exit("TERM");
    assert!(status.success(), "exit status after TERM: {status}");
}

#[test]
fn with_leader_election_the_leader_answers_readyz_200_once_its_canary_list_has_synced() {
    let controller = Controller::start_with(
        "elect-leader",
        &fake_api_server(Api::NoLease),
        &["--leader-elect"],
        free_port(),
    );
    controller.wait_for_log("became the leader");
    controller.wait_for_readyz(200);
    controller.signal("TERM");
    let status = controller.wait_for_exit("TERM");
    assert!(status.success(), "exit status after TERM: {status}");
}

#[test]
fn a_standby_replica_answers_readyz_200_once_the_lease_and_the_canary_list_have_answered() {
    let controller = Controller::start_with(
        "elect-standby",
        &fake_api_server(Api::LeaseHeldByOther),
        &["--leader-elect"],
        free_port(),
    );
    controller.wait_for_log("standing by for the Lease; ready");
    assert_eq!(controller.readyz(), Some(200));
    controller.signal("TERM");
    let status = controller.wait_for_exit("TERM");
    assert!(status.success(), "exit status after TERM: {status}");
}

#[test]
fn a_standby_replica_that_cannot_list_canaries_answers_readyz_503() {
    let controller = Controller::start_with(
        "elect-forbidden",
        &fake_api_server(Api::LeaseHeldByOtherCanariesForbidden),
        &["--leader-elect"],
        free_port(),
    );
    let line = controller.wait_for_log("standby replica not ready");
    assert!(line.contains("listing Canaries"), "{line}");
    assert_eq!(controller.readyz(), Some(503));
    controller.signal("TERM");
    let status = controller.wait_for_exit("TERM");
    assert!(status.success(), "exit status after TERM: {status}");
}

#[test]
fn an_ops_port_in_use_stops_the_controller_at_start_with_exit_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let controller = Controller::start_with("port-in-use", &empty_api_server(), &[], port);
    let line = controller.wait_for_log("ops server on");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.contains("in use"), "{line}");
    let status = controller.wait_for_exit("a port in use");
    assert_eq!(status.code(), Some(1), "{status}");
    drop(taken);
}

#[test]
fn text_logs_into_a_pipe_carry_no_colour_codes() {
    let controller = Controller::start_with(
        "text-logs",
        &unreachable_api_server(),
        &["--log-format", "text"],
        free_port(),
    );
    let line = controller.wait_for_log("starting");
    assert!(!line.contains('\x1b'), "{line:?}");
    controller.signal("TERM");
    let status = controller.wait_for_exit("TERM");
    assert!(status.success(), "exit status after TERM: {status}");
}
