//! Throughput and memory benchmark on the reference mesh, and an M/M/c run matching the SimPy
//! model in `simulator/bench/mmc_simpy.py`. The CLI exposes [`bench()`] as `fledge-sim bench`.
//!
//! Wall-clock time is read here only to measure the simulator; it never enters a simulation.

use std::time::Instant;

use crate::engine::{MICROS, MILLIS, SECONDS, SimTime};
use crate::manifest;
use crate::mesh::{
    Behaviour, ClientConfig, Mesh, MeshConfig, MeshError, NetworkConfig, ProxyCost, ServiceConfig,
    ServiceTime, VersionConfig,
};

/// The reference mesh's manifests: outlier detection, retries and STRICT mTLS.
pub(crate) const REFERENCE_MANIFESTS: &str = r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: podinfo
spec:
  host: podinfo
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    tls:
      mode: ISTIO_MUTUAL
    connectionPool:
      tcp:
        maxConnections: 1000
      http:
        http1MaxPendingRequests: 1000
        http2MaxRequests: 1000
        maxRetries: 100
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
  subsets:
    - name: primary
      labels:
        version: primary
    - name: canary
      labels:
        version: canary
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: podinfo
spec:
  hosts:
    - podinfo
  http:
    - route:
        - destination:
            host: podinfo
            subset: primary
          weight: 90
        - destination:
            host: podinfo
            subset: canary
          weight: 10
      retries:
        attempts: 2
        perTryTimeout: 2s
        retryOn: 5xx,connect-failure,reset
"#;

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// Seed.
    pub seed: u64,
    /// Client request rate.
    pub rps: f64,
    /// Simulated duration.
    pub duration: SimTime,
    /// The outputs written while measuring (none by default).
    pub outputs: Written,
    /// Model every proxy's cost ([`reference_proxy_cost`]).
    pub sidecar_cost: bool,
}

/// The outputs a measured run writes, as `run --access-log`, `--traces` and `--sample`
/// (`BenchWritten` would repeat the module; the bench's options hold it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Written {
    /// The access log's file.
    pub access_log: Option<std::path::PathBuf>,
    /// The spans' file.
    pub traces: Option<std::path::PathBuf>,
    /// The fraction of requests written (each output's default when none).
    pub sample: Option<f64>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            rps: 1000.0,
            duration: 3600 * SECONDS,
            outputs: Written::default(),
            sidecar_cost: false,
        }
    }
}

/// Measured figures.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// Simulated seconds.
    pub simulated_seconds: f64,
    /// Client requests simulated.
    pub requests: u64,
    /// Events processed.
    pub events: u64,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// CPU seconds the simulating thread ran (its `/proc/thread-self/schedstat`), if readable: on
    /// a shared machine this, unlike the wall clock, does not count the time other processes had
    /// the CPU.
    pub cpu_seconds: Option<f64>,
    /// Simulated requests per wall second.
    pub requests_per_second: f64,
    /// Events per wall second.
    pub events_per_second: f64,
    /// Peak resident memory of the process in KiB (`VmHWM`), if readable.
    pub peak_rss_kib: Option<u64>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulated:  {:.0} s, {} requests, {} events",
            self.simulated_seconds, self.requests, self.events
        )?;
        writeln!(f, "wall:       {:.2} s", self.wall_seconds)?;
        if let Some(cpu) = self.cpu_seconds {
            writeln!(
                f,
                "cpu:        {cpu:.2} s ({:.0} requests/s, {:.1} ns an event)",
                self.requests as f64 / cpu.max(1e-9),
                cpu * 1e9 / self.events.max(1) as f64
            )?;
        }
        writeln!(f, "requests/s: {:.0}", self.requests_per_second)?;
        writeln!(f, "events/s:   {:.0}", self.events_per_second)?;
        match self.peak_rss_kib {
            Some(k) => write!(f, "peak RSS:   {:.1} MiB", k as f64 / 1024.0),
            None => write!(f, "peak RSS:   unavailable"),
        }
    }
}

/// CPU time the calling thread has run, in seconds: the first field of
/// `/proc/thread-self/schedstat` (nanoseconds on the CPU), if readable.
pub(crate) fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// Wall clock and thread CPU time at the start of a measurement.
struct Start {
    wall: Instant,
    cpu: Option<f64>,
}

impl Start {
    fn now() -> Self {
        Self {
            cpu: thread_cpu_seconds(),
            wall: Instant::now(),
        }
    }
}

/// Peak resident set size (`VmHWM` from /proc/self/status), in KiB.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The reference mesh: one client, one service with primary (9 pods) and canary (1 pod),
/// LEAST_REQUEST, outlier detection, retries and STRICT mTLS; the canary fails 1% of requests.
/// The sidecar cost `bench --sidecar-cost` models on every proxy: Istio's defaults with the
/// latency drawn (log-normal, median 0.45 ms, p99 1.5 ms per proxy).
pub(crate) fn reference_proxy_cost() -> ProxyCost {
    ProxyCost {
        latency: ServiceTime::LogNormal {
            p50: 450 * MICROS,
            p99: 1500 * MICROS,
        },
        ..ProxyCost::default()
    }
}

pub(crate) fn reference_mesh(
    seed: u64,
    rps: f64,
    proxy: Option<ProxyCost>,
) -> Result<Mesh, MeshError> {
    let behaviour = Behaviour {
        proxy: proxy.clone(),
        workers: 8,
        service_time: ServiceTime::LogNormal {
            p50: 5 * MILLIS,
            p99: 50 * MILLIS,
        },
        ..Behaviour::default()
    };
    let canary = Behaviour {
        error_rate: 0.01,
        ..behaviour.clone()
    };
    let cfg = MeshConfig {
        seed,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![
                VersionConfig::new("primary", 9, behaviour),
                VersionConfig::new("canary", 1, canary),
            ],
        )],
        clients: vec![ClientConfig::new("loadtester", "podinfo", rps)],
        proxy,
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg)?;
    let manifests = manifest::parse(REFERENCE_MANIFESTS).map_err(|e| MeshError::InvalidConfig {
        what: "reference manifests".into(),
        reason: e.to_string(),
    })?;
    mesh.apply_manifests(&manifests)?;
    Ok(mesh)
}

/// Runs the reference mesh for `opts.duration` and measures it.
pub fn bench(opts: &BenchOptions) -> Result<BenchReport, MeshError> {
    let proxy = opts.sidecar_cost.then(reference_proxy_cost);
    let mut mesh = reference_mesh(opts.seed, opts.rps, proxy)?;
    let w = &opts.outputs;
    let outputs = crate::observability::Outputs::open(
        opts.seed,
        w.access_log.as_deref(),
        w.traces.as_deref(),
        w.sample,
    )
    .map_err(|reason| MeshError::InvalidConfig {
        what: "outputs".into(),
        reason,
    })?;
    mesh.set_outputs(outputs);
    let start = Start::now();
    // Advance in slices so the harness pattern (run, read, adjust) is what gets measured.
    let step = 60 * SECONDS;
    let mut t = 0;
    while t < opts.duration {
        t = (t + step).min(opts.duration);
        mesh.run_until(t);
    }
    if let Some(mut o) = mesh.take_outputs() {
        o.finish().map_err(|reason| MeshError::InvalidConfig {
            what: "outputs".into(),
            reason,
        })?;
    }
    Ok(report(&mesh, start, opts.duration))
}

fn report(mesh: &Mesh, start: Start, duration: SimTime) -> BenchReport {
    let wall = start.wall.elapsed().as_secs_f64().max(1e-9);
    let cpu = thread_cpu_seconds()
        .zip(start.cpu)
        .map(|(end, begin)| end - begin);
    let stats = mesh.stats();
    BenchReport {
        simulated_seconds: duration as f64 / SECONDS as f64,
        requests: stats.requests,
        events: stats.events,
        wall_seconds: wall,
        cpu_seconds: cpu,
        requests_per_second: stats.requests as f64 / wall,
        events_per_second: stats.events as f64 / wall,
        peak_rss_kib: peak_rss_kib(),
    }
}

/// An M/M/c queue as a mesh: one pod with `c` workers, Poisson arrivals at `load * c * mu`,
/// exponential service with rate `mu` per second, no network or sidecar latency, plaintext.
pub fn mmc_mesh(seed: u64, c: u32, load: f64, mu: f64) -> Result<Mesh, MeshError> {
    let mean = (SECONDS as f64 / mu) as SimTime;
    let cfg = MeshConfig {
        seed,
        services: vec![ServiceConfig::new(
            "mmc",
            vec![VersionConfig::new(
                "primary",
                1,
                Behaviour {
                    workers: c,
                    service_time: ServiceTime::Exponential { mean },
                    ..Behaviour::default()
                },
            )],
        )],
        clients: vec![ClientConfig {
            sidecar: false,
            ..ClientConfig::new("arrivals", "mmc", load * f64::from(c) * mu)
        }],
        network: NetworkConfig {
            one_way: 0,
            sidecar_latency: 0,
            handshake_cpu: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    Mesh::new(cfg)
}

/// Runs M/M/c for `duration` and measures it (the Rust side of the SimPy comparison).
pub fn bench_mmc(
    seed: u64,
    c: u32,
    load: f64,
    mu: f64,
    duration: SimTime,
) -> Result<BenchReport, MeshError> {
    let mut mesh = mmc_mesh(seed, c, load, mu)?;
    let start = Start::now();
    mesh.run_until(duration);
    Ok(report(&mesh, start, duration))
}
