//! `fledge-controller`: the controller that runs in the cluster (`run`, the default), the CRDs
//! it serves (`crd`), and the operator's commands (`status`, `promote`, `abort`, `resume`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use fledge_controller::alerts;
use fledge_controller::cluster::cli::{self, Request};
use fledge_controller::cluster::deadline;
use fledge_controller::cluster::lease::{LeaderElection, LeaseConfig, Timing};
use fledge_controller::cluster::providers::{LiveObserver, LiveRouting};
use fledge_controller::cluster::telemetry::{self, Metrics};
use fledge_controller::cluster::{self as cluster, Config, Context};
use fledge_controller::metrics::{Mesh, Prometheus};
use fledge_controller::routes::Provider;
use fledge_controller::spec::{AlertProvider, Canary, MetricTemplate};
use fledge_controller::webhook::Webhooks;
use k8s_openapi::api::coordination::v1::Lease;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The exit codes, as `--help` shows them.
const EXIT_CODES: &str = "Exit status: 0 done (or stopped by SIGTERM/Ctrl-C); 1 a failure while \
running (cluster unreachable, ops port in use, leadership lost, a command refused); 2 a \
configuration error (an unknown or malformed flag, or a flag value that is not usable).";

#[derive(Parser, Debug)]
#[command(
    name = "fledge-controller",
    version,
    about = "Progressive delivery for service meshes",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the controller (the default).
    #[command(after_help = EXIT_CODES)]
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions (Canary, MetricTemplate) as YAML.
    Crd,
    /// Show rollouts: one in detail, or a table.
    Status {
        #[command(flatten)]
        target: Target,
        /// List Canaries of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        name: Option<String>,
    },
    /// Approve a rollout waiting at a confirm gate.
    Promote(Named),
    /// Roll a rollout back now.
    Abort(Named),
    /// Clear `spec.suspend`.
    Resume(Named),
    /// Run one Canary against the live simulator (`fledge-sim serve`), no cluster needed.
    #[command(after_help = LOCAL_EXIT_CODES)]
    Local(LocalArgs),
}

/// The exit codes of `local`, as `--help` shows them.
const LOCAL_EXIT_CODES: &str = "Exit status: 0 the new revision was promoted; 1 it was rolled \
back; 2 bad input (a Canary file that does not load or validate, a flag value that is not \
usable, a mesh or a Prometheus that does not answer at the start).";

#[derive(clap::Args, Debug)]
struct LocalArgs {
    /// The Canary (YAML, Fledge's or Flagger's API group), with any MetricTemplates it names.
    #[arg(long)]
    canary: std::path::PathBuf,
    /// Prometheus base URL, as for `run --prometheus-address`.
    #[arg(long)]
    prometheus: String,
    /// The live simulator's base URL (`fledge-sim serve --listen`).
    #[arg(long)]
    mesh: String,
    /// Traffic provider if the Canary names none.
    #[arg(long, default_value = "istio")]
    provider: Provider,
    /// Whose series the built-in metrics of a Gateway API Canary read, as for `run`.
    #[arg(long, default_value = "contour")]
    gateway_api_metrics: Mesh,
    /// Timeout of one Prometheus query.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    prometheus_timeout_seconds: u64,
    /// Retries of a failed Prometheus query.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    prometheus_retries: u32,
    /// The longest wait between ticks while the rollout waits on workloads or gates
    /// (analysis ticks follow the Canary's interval).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    poll_seconds: u64,
}

#[derive(clap::Args, Debug)]
struct Target {
    /// Namespace (default: the kubeconfig's).
    #[arg(short, long)]
    namespace: Option<String>,
}

#[derive(clap::Args, Debug)]
struct Named {
    #[command(flatten)]
    target: Target,
    name: String,
}

#[derive(Parser, Debug)]
struct RunArgs {
    /// Prometheus base URL.
    #[arg(
        long,
        env = "FLEDGE_PROMETHEUS_ADDRESS",
        default_value = "http://prometheus.istio-system:9090"
    )]
    prometheus_address: String,
    /// Timeout of one Prometheus query.
    #[arg(
        long,
        env = "FLEDGE_PROMETHEUS_TIMEOUT_SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=300)
    )]
    prometheus_timeout_seconds: u64,
    /// Retries of a failed Prometheus query.
    #[arg(
        long,
        env = "FLEDGE_PROMETHEUS_RETRIES",
        default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(0..=10)
    )]
    prometheus_retries: u32,
    /// Traffic provider of Canaries that name none.
    #[arg(long, env = "FLEDGE_PROVIDER", default_value = "istio")]
    provider: Provider,
    /// Whose series the built-in metrics of Gateway API Canaries read: contour (the gateway
    /// Envoy's clusters), istio or linkerd (the mesh behind the gateway, or GAMMA).
    #[arg(long, env = "FLEDGE_GATEWAY_API_METRICS", default_value = "contour")]
    gateway_api_metrics: Mesh,
    /// Namespaces to watch (comma-separated or repeated); all when empty.
    #[arg(long = "namespace", env = "FLEDGE_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Log filter (`info`, `debug`, `fledge_controller=debug,kube=info`).
    #[arg(long, env = "FLEDGE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log as JSON lines (the default) or as text.
    #[arg(long, env = "FLEDGE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    /// Also reconcile Flagger's own Canaries (flagger.app/v1beta1), taking them over in place
    /// between rollouts; scale Flagger down first (README: "Moving from Flagger").
    #[arg(long, env = "FLEDGE_FLAGGER_CANARIES", value_parser = clap::builder::FalseyValueParser::new())]
    flagger_canaries: bool,
    /// Address of the ops server (/metrics, /healthz, /readyz).
    #[arg(long, env = "FLEDGE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Elect a leader among replicas with a Lease.
    #[arg(long, env = "FLEDGE_LEADER_ELECT", value_parser = clap::builder::FalseyValueParser::new())]
    leader_elect: bool,
    #[arg(long, env = "FLEDGE_LEASE_NAME", default_value = "fledge-leader")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "fledge-system")]
    lease_namespace: String,
    /// Seconds after which a Lease not renewed passes to another replica.
    #[arg(long, env = "FLEDGE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds the leader keeps trying to renew before it stops leading; shorter than the
    /// lease duration (default: two thirds of it).
    #[arg(long, env = "FLEDGE_LEASE_RENEW_DEADLINE_SECONDS")]
    lease_renew_deadline_seconds: Option<f64>,
    /// Seconds between tries to take or renew the Lease (default: two fifteenths of the lease
    /// duration).
    #[arg(long, env = "FLEDGE_LEASE_RETRY_PERIOD_SECONDS")]
    lease_retry_period_seconds: Option<f64>,
    /// Controller-wide alerts (Flagger's -slack-url, -msteams-url, ...).
    #[command(flatten)]
    alerts: alerts::AlertFlags,
}

impl RunArgs {
    /// The election's timing; the defaults keep Kubernetes' proportions (15 s, 10 s, 2 s).
    fn lease_timing(&self) -> Result<Timing> {
        // Checked first: with it 0, the derived retry period is 0 too, and that error would
        // name a flag the user did not write.
        if self.lease_duration_seconds == 0 {
            bail!("--lease-duration-seconds 0: the lease duration must be at least 1 second");
        }
        let lease = Duration::from_secs(self.lease_duration_seconds);
        let seconds = |flag: &str, value: Option<f64>, default: Duration| match value {
            None => Ok(default),
            Some(s) => Duration::try_from_secs_f64(s)
                .with_context(|| format!("--{flag} {s}: expected a number of seconds")),
        };
        let renew = seconds(
            "lease-renew-deadline-seconds",
            self.lease_renew_deadline_seconds,
            lease.mul_f64(2.0 / 3.0),
        )?;
        let retry = seconds(
            "lease-retry-period-seconds",
            self.lease_retry_period_seconds,
            lease.mul_f64(2.0 / 15.0),
        )?;
        Timing::new(lease, renew, retry).context(
            "--lease-duration-seconds, --lease-renew-deadline-seconds and \
             --lease-retry-period-seconds",
        )
    }
}

/// Why the controller stopped: a configuration error exits 2, as clap's usage errors do; any
/// other failure exits 1.
enum Failure {
    Config(anyhow::Error),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// One `error: ...` line with the causes (`{:#}`), not main's Debug print with a backtrace.
fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Local(args)) = &cli.command {
        return local(args);
    }
    let (code, e) = match execute(cli) {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Config(e)) => (2, e),
        Err(Failure::Runtime(e)) => (1, e),
    };
    eprintln!("error: {e:#}");
    ExitCode::from(code)
}

fn execute(cli: Cli) -> Result<(), Failure> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        None => runtime.block_on(run(RunArgs::parse_from(["fledge-controller"]))),
        Some(Cmd::Run(args)) => runtime.block_on(run(*args)),
        Some(Cmd::Crd) => {
            print!("{}", crds()?);
            Ok(())
        }
        Some(Cmd::Status {
            target,
            all_namespaces,
            name,
        }) => runtime.block_on(async {
            let client = client().await?;
            let ns = target.namespace.as_deref();
            let out = cli::status(client, ns, name.as_deref(), all_namespaces)
                .await
                .map_err(anyhow::Error::from)?;
            print!("{out}");
            Ok(())
        }),
        Some(Cmd::Promote(n)) => Ok(runtime.block_on(send(n, Request::Promote))?),
        Some(Cmd::Abort(n)) => Ok(runtime.block_on(send(n, Request::Abort))?),
        Some(Cmd::Resume(n)) => Ok(runtime.block_on(send(n, Request::Resume))?),
        Some(Cmd::Local(args)) => Err(Failure::Runtime(anyhow::anyhow!(
            "local {:?} is run by main",
            args.canary
        ))),
    }
}

/// `local`: 0 promoted, 1 rolled back, 2 bad input (said on one `error:` line).
fn local(args: &LocalArgs) -> ExitCode {
    use fledge_controller::local::{self, Local, MeshApi, Outcome};
    let bad_input = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    };
    let file = match local::read_canary(&args.canary) {
        Ok(file) => file,
        Err(e) => return bad_input(e),
    };
    for w in &file.warnings {
        eprintln!("warning: {w}");
    }
    let prometheus = match Prometheus::new(
        &args.prometheus,
        Duration::from_secs(args.prometheus_timeout_seconds),
        args.prometheus_retries,
    ) {
        Ok(p) => p,
        Err(e) => return bad_input(format!("--prometheus {}: {e}", args.prometheus)),
    };
    let mesh = match MeshApi::new(&args.mesh) {
        Ok(m) => m,
        Err(e) => return bad_input(format!("--mesh: {e}")),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        if let Err(e) = local::wait_for_prometheus(&prometheus, local::START_WAIT).await {
            return bad_input(e);
        }
        let observer = LiveObserver::new(prometheus, Webhooks::new())
            .with_gateway_api_metrics(args.gateway_api_metrics);
        let poll = Duration::from_secs(args.poll_seconds);
        let controller = match Local::new(file, args.provider, observer, mesh, poll).await {
            Ok(c) => c,
            Err(e) => return bad_input(e),
        };
        match controller.run(&mut std::io::stdout()).await {
            Outcome::Promoted => ExitCode::SUCCESS,
            Outcome::RolledBack => ExitCode::FAILURE,
        }
    })
}

/// The CRDs as one multi-document YAML text.
fn crds() -> Result<String> {
    let mut out = String::new();
    for crd in [Canary::crd(), MetricTemplate::crd(), AlertProvider::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd).context("serialising a CRD")?);
    }
    Ok(out)
}

async fn client() -> Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("connecting to the cluster (kubeconfig or in-cluster config)")
}

async fn send(named: Named, request: Request) -> Result<()> {
    let client = client().await?;
    let out = cli::send(
        client,
        named.target.namespace.as_deref(),
        &named.name,
        request,
    )
    .await?;
    println!("{out}");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when the
/// future is first polled: a signal that arrives once the controller has said "starting" must
/// stop it gracefully, not kill it with the default action.
fn terminated() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            return Box::pin(async move {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            });
        }
    }
    Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// The flags' values checked before anything is started: each error is a configuration error.
fn configure(args: &RunArgs) -> Result<(Prometheus, Option<Timing>, alerts::Settings)> {
    telemetry::init_logs(&args.log_level, args.log_format == "json").context("--log-level")?;
    let prometheus = Prometheus::new(
        &args.prometheus_address,
        Duration::from_secs(args.prometheus_timeout_seconds),
        args.prometheus_retries,
    )
    .with_context(|| format!("--prometheus-address {}", args.prometheus_address))?;
    let lease_timing = match args.leader_elect {
        true => Some(args.lease_timing()?),
        false => None,
    };
    let alert_settings = args.alerts.settings(&|var| std::env::var(var).ok())?;
    Ok((prometheus, lease_timing, alert_settings))
}

async fn run(mut args: RunArgs) -> Result<(), Failure> {
    let (prometheus, lease_timing, alert_settings) = configure(&args).map_err(Failure::Config)?;
    // Next: a port in use stops the controller here, with the address, not unnoticed later.
    let listener = telemetry::bind(args.listen).await.context("--listen")?;
    // FLEDGE_NAMESPACES="" (the chart's default) means every namespace.
    args.namespaces.retain(|ns| !ns.trim().is_empty());
    let client = deadline::bounded(client().await?, deadline::API_CALL_TIMEOUT);
    let metrics = Arc::new(Metrics::new());
    metrics.set_info(env!("CARGO_PKG_VERSION"), &args.provider.to_string());
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(LiveRouting::new(client.clone())),
        Arc::new(
            LiveObserver::new(prometheus, Webhooks::new())
                .with_gateway_api_metrics(args.gateway_api_metrics),
        ),
        Config {
            default_provider: args.provider,
            flagger_canaries: args.flagger_canaries,
            ..Config::default()
        },
        metrics.clone(),
        alert_settings,
    ));

    // One shutdown signal for the ops server, the controller and the lease.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let signal_tx = stop_tx.clone();
    let termination = terminated();
    tokio::spawn(async move {
        termination.await;
        info!("termination requested");
        let _ = signal_tx.send(true);
    });
    let server = tokio::spawn(telemetry::serve_on(listener, metrics.clone(), stopped()));
    info!(listen = %args.listen, provider = %args.provider, namespaces = ?args.namespaces,
          flagger_canaries = args.flagger_canaries, "starting");

    let election = lease_timing.map(|timing| {
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "fledge-controller".into());
        LeaderElection::new(
            client.clone(),
            LeaseConfig {
                name: args.lease_name.clone(),
                namespace: args.lease_namespace.clone(),
                identity,
                timing,
            },
        )
    });
    let mut lost = false;
    if let (Some(election), Some(timing)) = (&election, lease_timing) {
        let standby = Standby {
            client: client.clone(),
            lease_name: args.lease_name.clone(),
            lease_namespace: args.lease_namespace.clone(),
            namespaces: args.namespaces.clone(),
            timing,
        };
        let renewed = tokio::select! {
            renewed = election.acquire() => renewed,
            never = standby.ready(&metrics) => match never {},
            _ = stopped() => return Ok(finish(server, None).await?),
        };
        // The leader is ready again once its watches have synced.
        metrics.set_ready(false);
        let lost_tx = stop_tx.clone();
        let controller = cluster::run(ctx, &args.namespaces, stopped());
        tokio::select! {
            _ = controller => {},
            why = election.keep(renewed) => {
                error!(reason = ?why, "leadership lost; stopping");
                lost = true;
                let _ = lost_tx.send(true);
            }
        }
    } else {
        cluster::run(ctx, &args.namespaces, stopped()).await;
    }
    let _ = stop_tx.send(true);
    finish(server, election.filter(|_| !lost)).await?;
    if lost {
        return Err(anyhow::anyhow!("leadership lost").into());
    }
    Ok(())
}

/// What a replica waiting for the Lease must reach to be ready.
struct Standby {
    client: kube::Client,
    lease_name: String,
    lease_namespace: String,
    namespaces: Vec<String>,
    timing: Timing,
}

impl Standby {
    /// Marks a standby replica ready once the API server has answered a read of the Lease and
    /// a list of the Canaries it would watch (as a leader is ready once its watches have
    /// synced), retrying every retry period; then stays pending.
    async fn ready(&self, metrics: &Metrics) -> std::convert::Infallible {
        loop {
            match self.answers().await {
                Ok(()) => {
                    metrics.set_ready(true);
                    info!(lease = %self.lease_name, "standing by for the Lease; ready");
                    return std::future::pending().await;
                }
                Err(e) => warn!(error = %format!("{e:#}"), "standby replica not ready"),
            }
            tokio::time::sleep(self.timing.retry_period()).await;
        }
    }

    async fn answers(&self) -> Result<()> {
        let within = self.timing.call_timeout();
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.lease_namespace);
        tokio::time::timeout(within, leases.get_opt(&self.lease_name))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {within:?}"))?
            .with_context(|| {
                format!("reading Lease {}/{}", self.lease_namespace, self.lease_name)
            })?;
        let scopes: Vec<Api<Canary>> = match self.namespaces.as_slice() {
            [] => vec![Api::all(self.client.clone())],
            some => some
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect(),
        };
        for canaries in scopes {
            tokio::time::timeout(within, canaries.list(&ListParams::default().limit(1)))
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {within:?}"))?
                .context("listing Canaries")?;
        }
        Ok(())
    }
}

async fn finish(
    server: tokio::task::JoinHandle<Result<(), cluster::Error>>,
    election: Option<LeaderElection>,
) -> Result<()> {
    if let Some(election) = election
        && let Err(e) = election.release().await
    {
        error!(error = %e, "releasing the lease");
    }
    server.await.context("ops server task")??;
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(flags: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["fledge-controller", "run"].iter().chain(flags)).unwrap();
        let Some(Cmd::Run(args)) = cli.command else {
            panic!("not run");
        };
        *args
    }

    #[test]
    fn the_alert_flags_are_flags_of_run() {
        let args = run_args(&[
            "--slack-url",
            "https://hooks.example/s",
            "--event-webhook",
            "http://events.example/e",
        ]);
        let alerts = &args.alerts;
        assert_eq!(alerts.slack_url.as_deref(), Some("https://hooks.example/s"));
        assert_eq!(
            alerts.event_webhook.as_deref(),
            Some("http://events.example/e")
        );
        assert_eq!(alerts.slack_user, "flagger");
    }

    #[test]
    fn no_subcommand_runs_the_controller_and_subcommands_take_their_flags() {
        assert!(
            Cli::try_parse_from(["fledge-controller"])
                .unwrap()
                .command
                .is_none()
        );
        let cli = Cli::try_parse_from([
            "fledge-controller",
            "run",
            "--namespace",
            "a,b",
            "--leader-elect",
            "--provider",
            "linkerd",
        ])
        .unwrap();
        let Some(Cmd::Run(args)) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.namespaces, ["a", "b"]);
        assert!(args.leader_elect);
        assert_eq!(args.provider.to_string(), "smi:v1alpha2");
        assert_eq!(args.gateway_api_metrics, Mesh::GatewayApi);
        let cli = Cli::try_parse_from([
            "fledge-controller",
            "run",
            "--gateway-api-metrics",
            "linkerd",
        ])
        .unwrap();
        let Some(Cmd::Run(args)) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.gateway_api_metrics, Mesh::Linkerd);
        let refused = Cli::try_parse_from([
            "fledge-controller",
            "run",
            "--gateway-api-metrics",
            "envoy-gateway",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("use istio, linkerd or contour"),
            "{refused}"
        );
        let cli =
            Cli::try_parse_from(["fledge-controller", "status", "-n", "test", "podinfo"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Cmd::Status { name: Some(n), .. }) if n == "podinfo"
        ));
    }

    #[test]
    fn the_lease_timing_keeps_kubernetes_proportions_and_refuses_a_deadline_not_under_the_lease() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["fledge-controller", "run", "--leader-elect"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Some(Cmd::Run(args)) => args,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(args(&[]).lease_timing().unwrap(), Timing::default());
        let timing = args(&["--lease-duration-seconds", "30"])
            .lease_timing()
            .unwrap();
        assert_eq!(timing.renew_deadline(), Duration::from_secs(20));
        assert_eq!(timing.retry_period(), Duration::from_secs(4));
        let err = args(&["--lease-renew-deadline-seconds", "15"])
            .lease_timing()
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("--lease-renew-deadline-seconds"), "{text}");
        assert!(
            text.contains("must be longer than the renew deadline"),
            "{text}"
        );
        assert!(
            args(&["--lease-retry-period-seconds=-1"])
                .lease_timing()
                .is_err()
        );
        assert!(
            args(&["--lease-retry-period-seconds", "NaN"])
                .lease_timing()
                .is_err()
        );
    }

    #[test]
    fn waits_and_retries_that_could_hold_a_rollout_forever_are_refused_naming_the_flag() {
        let local = |flag: &str, value: &str| {
            Cli::try_parse_from([
                "fledge-controller",
                "local",
                "--canary",
                "c.yaml",
                "--prometheus",
                "http://127.0.0.1:9090",
                "--mesh",
                "http://127.0.0.1:9464",
                flag,
                value,
            ])
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        for (flag, bad, good) in [
            ("--poll-seconds", "0", "3600"),
            ("--poll-seconds", "18446744073709551615", "1"),
            ("--prometheus-retries", "4294967295", "10"),
            ("--prometheus-timeout-seconds", "0", "300"),
        ] {
            let e = local(flag, bad).unwrap_err();
            assert!(e.contains(flag), "{flag} {bad}: {e}");
            assert_eq!(local(flag, good), Ok(()), "{flag} {good}");
        }
        let run = Cli::try_parse_from(["fledge-controller", "run", "--prometheus-retries", "11"]);
        assert!(run.is_err_and(|e| e.to_string().contains("--prometheus-retries")));
    }

    #[test]
    fn the_crd_output_holds_both_resources() {
        let text = crds().unwrap();
        assert!(text.contains("name: canaries.fledge.dev"));
        assert!(text.contains("name: metrictemplates.fledge.dev"));
    }
}
