//! What the end-to-end tests with a real Prometheus share: the processes of a case (the live
//! simulator, Prometheus, the standalone controller), killed when the case ends however it
//! ends, and with the test process when it is killed; the workspace's binaries as this build
//! made them; bounded waits; one HTTP exchange at a time.

// Real processes on the wall clock: bounded waits and the timestamps Prometheus is asked at.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest any one wait may take before the case fails.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A port free on 127.0.0.1 when asked.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `prometheus` on PATH; `None` (a case skipped, loudly) when it is missing outside CI.
/// `target` is the test target the skipped line says to run.
pub fn prometheus_binary(target: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let how = format!(
            "install it with `apt-get install prometheus` (Debian's 2.42 is what CI runs), then `cargo test -p fledge-simulator --test {target}`"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the end-to-end tests need `prometheus` on PATH and CI=true requires them: {how}"
        );
        // Straight to stderr: the test harness hides what `eprintln!` prints in a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED end-to-end tests with a real Prometheus: no `prometheus` on PATH; {how}\n"
        );
    }
    found
}

/// Spawns `command` so that its process dies with the test process, however that ends: `Drop`
/// covers a case that ends or panics, not a test binary killed by a CI timeout.
///
/// On Linux the child asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`).
/// The kernel's "parent" is the spawning thread: the cases spawn from libtest's thread of the
/// test, which ends only after the case's [`Processes`] is dropped (it is a local of the test),
/// so the signal never comes early. The children stay in the test process's own process group
/// (no `setpgid`): Ctrl-C, sent to the terminal's foreground group, reaches them directly, and
/// so does a `kill -- -PGID` of the group cargo runs the test binary in.
fn spawn(command: &mut Command) -> std::io::Result<Child> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The test process died before the request took effect: nothing will signal.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(std::io::Error::other("the test process is gone"));
                }
                Ok(())
            });
        }
    }
    command.spawn()
}

struct Process {
    name: &'static str,
    child: Child,
    /// A process whose exit is its result (the controller), not a failure of the case.
    ends: bool,
}

/// The processes of one case and its temporary directory, all gone when it is dropped (also
/// when the case panics).
pub struct Processes {
    pub dir: PathBuf,
    children: Vec<Process>,
}

impl Processes {
    pub fn new(case: &str) -> Self {
        let unique = format!(
            "fledge-e2e-{}-{}",
            std::process::id(),
            case.replace(['/', '.'], "-")
        );
        let dir = std::env::temp_dir().join(unique);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Processes {
            dir,
            children: Vec::new(),
        }
    }

    /// Starts `fledge-sim serve` on `listen` (`127.0.0.1:0` for any free port) at `speed` and
    /// returns the port it printed.
    pub fn start_simulator(
        &mut self,
        binary: &Path,
        scenario: &Path,
        listen: &str,
        speed: u32,
    ) -> u16 {
        let mut child = spawn(
            Command::new(binary)
                .arg("serve")
                .arg(scenario)
                .args(["--listen", listen, "--speed", &speed.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .expect("fledge-sim starts");
        let stdout = child.stdout.take().expect("piped");
        self.children.push(Process {
            name: "fledge-sim",
            child,
            ends: false,
        });
        let line = lines_of(stdout)
            .recv_timeout(PATIENCE)
            .expect("fledge-sim prints its address");
        let port = line
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok());
        port.unwrap_or_else(|| panic!("no address in fledge-sim's first line: {line:?}"))
    }

    /// Starts Prometheus scraping `target` every second; returns its address once ready.
    pub fn start_prometheus(&mut self, binary: &Path, target: &str) -> String {
        let port = free_port();
        let config = self.dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: fledge-sim\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("the configuration is written");
        let log = std::fs::File::create(self.dir.join("prometheus.log")).expect("a log file");
        let child = spawn(
            Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    self.dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log),
        )
        .expect("prometheus starts");
        self.children.push(Process {
            name: "prometheus",
            child,
            ends: false,
        });
        let address = format!("127.0.0.1:{port}");
        wait_for(self, "Prometheus to be ready", || {
            http(&address, "GET", "/-/ready", "").0 == 200
        });
        address
    }

    /// Starts a process whose exit ends its part of the case; returns its stdout line by line.
    pub fn start_ending(
        &mut self,
        name: &'static str,
        command: &mut Command,
    ) -> mpsc::Receiver<String> {
        let mut child = spawn(command.stdout(Stdio::piped()).stderr(Stdio::inherit()))
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let stdout = child.stdout.take().expect("piped");
        self.children.push(Process {
            name,
            child,
            ends: true,
        });
        lines_of(stdout)
    }

    /// The exit status of `name`, once it has exited.
    pub fn exited(&mut self, name: &str) -> Option<ExitStatus> {
        let p = self.children.iter_mut().find(|p| p.name == name)?;
        p.child.try_wait().ok().flatten()
    }

    /// The process id of `name`, while it is one of the case's.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.child.id())
    }

    /// Kills `name` now (a failure the case injects).
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|p| p.name == name) {
            let mut p = self.children.remove(i);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Panics if a process has exited that should not have: the case cannot go on, and its
    /// log says why.
    pub fn check_alive(&mut self) {
        for p in self.children.iter_mut().filter(|p| !p.ends) {
            if let Ok(Some(status)) = p.child.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                panic!(
                    "{} exited ({status}); Prometheus' log ends: {tail:?}",
                    p.name
                );
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.children {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lines of a child's output, read on a thread of their own.
pub fn lines_of(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Polls `done` every 200 ms until it holds; fails the case after [`PATIENCE`] or when a
/// process has exited.
pub fn wait_for(procs: &mut Processes, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if done() {
            return;
        }
        procs.check_alive();
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.0 exchange (the server closes; no chunked answers): status and body; status 0
/// when nothing answered.
pub fn http(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(addr) = address.parse() else {
        return (0, String::new());
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut answer = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut answer).is_err()
    {
        return (0, String::new());
    }
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The executable `bin` of the workspace's package `package`, built once per test process by
/// cargo (this package's own binaries too: `CARGO_BIN_EXE_*` is the shared uplifted path, which
/// a build of another checkout sharing the target directory may replace while the tests run).
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "-q", "-p", package, "--bin", bin])
        .arg("--message-format=json")
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo build -p {package} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let executable = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo names the {bin} executable"));
    super::built_copy(&executable, bin).unwrap_or(executable)
}
