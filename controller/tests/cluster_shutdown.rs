//! `fledge-controller run` as a process: `/readyz` says 503 until the Canary watches have
//! synced and 200 after, and SIGTERM or SIGINT stops it whether or not the API server can be
//! reached. Every wait here is a hang guard (the test fails instead of hanging), not a timing
//! assertion.
#![cfg(all(feature = "cluster", unix))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Uri;
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
        let config = kubeconfig(name, api_server);
        let ops = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_fledge-controller"));
        command
            .args(["run", "--listen", &ops.to_string(), "--log-level", "info"])
            .env("KUBECONFIG", &config)
            .env("HOME", config.parent().expect("a directory"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, _) in std::env::vars() {
            if key.starts_with("FLEDGE_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().expect("fledge-controller starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Controller { child, ops, logs }
    }

    /// Waits for a log line containing `text`.
    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + HANG_GUARD;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no log line with `{text}` (hang guard)");
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

/// An API server with nothing in it: every list is empty, every watch stays open and quiet.
async fn empty_api(uri: Uri) -> Response {
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

/// Serves [`empty_api`] on 127.0.0.1 from a thread of its own while the test runs.
fn empty_api_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = axum::Router::new().fallback(empty_api);
            let _ = axum::serve(listener, app).await;
        });
    });
    format!("http://{address}")
}

#[test]
fn run_answers_readyz_200_once_the_canary_list_has_synced_and_exits_on_sigterm() {
    let controller = Controller::start("synced", &empty_api_server());
    controller.wait_for_readyz(200);
    controller.signal("TERM");
    let status = controller.wait_for_exit("TERM");
    assert!(status.success(), "exit status after TERM: {status}");
}
