//! `fledge-controller`: the controller that runs in the cluster (`run`, the default), the CRDs
//! it serves (`crd`), and the operator's commands (`status`, `promote`, `abort`, `resume`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use fledge_controller::cluster::cli::{self, Request};
use fledge_controller::cluster::lease::{LeaderElection, LeaseConfig};
use fledge_controller::cluster::providers::{LiveObserver, LiveRouting};
use fledge_controller::cluster::telemetry::{self, Metrics};
use fledge_controller::cluster::{self as cluster, Config, Context};
use fledge_controller::metrics::Prometheus;
use fledge_controller::routes::Provider;
use fledge_controller::spec::{Canary, MetricTemplate};
use fledge_controller::webhook::Webhooks;
use kube::CustomResourceExt;
use tokio::sync::watch;
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    name = "fledge-controller",
    version,
    about = "Progressive delivery for service meshes"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the controller (the default).
    Run(RunArgs),
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
    #[arg(long, env = "FLEDGE_PROMETHEUS_TIMEOUT_SECONDS", default_value_t = 5)]
    prometheus_timeout_seconds: u64,
    /// Retries of a failed Prometheus query.
    #[arg(long, env = "FLEDGE_PROMETHEUS_RETRIES", default_value_t = 2)]
    prometheus_retries: u32,
    /// Traffic provider of Canaries that name none.
    #[arg(long, env = "FLEDGE_PROVIDER", default_value = "istio")]
    provider: Provider,
    /// Namespaces to watch (comma-separated or repeated); all when empty.
    #[arg(long = "namespace", env = "FLEDGE_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Log filter (`info`, `debug`, `fledge_controller=debug,kube=info`).
    #[arg(long, env = "FLEDGE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log as JSON lines (the default) or as text.
    #[arg(long, env = "FLEDGE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        None => runtime.block_on(run(RunArgs::parse_from(["fledge-controller"]))),
        Some(Cmd::Run(args)) => runtime.block_on(run(args)),
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
            let out = cli::status(client, ns, name.as_deref(), all_namespaces).await?;
            print!("{out}");
            Ok(())
        }),
        Some(Cmd::Promote(n)) => runtime.block_on(send(n, Request::Promote)),
        Some(Cmd::Abort(n)) => runtime.block_on(send(n, Request::Abort)),
        Some(Cmd::Resume(n)) => runtime.block_on(send(n, Request::Resume)),
    }
}

/// Both CRDs as one multi-document YAML text.
fn crds() -> Result<String> {
    let mut out = String::new();
    for crd in [Canary::crd(), MetricTemplate::crd()] {
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

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = ctrl_c => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn run(mut args: RunArgs) -> Result<()> {
    telemetry::init_logs(&args.log_level, args.log_format == "json").context("--log-level")?;
    // FLEDGE_NAMESPACES="" (the chart's default) means every namespace.
    args.namespaces.retain(|ns| !ns.trim().is_empty());
    let prometheus = Prometheus::new(
        &args.prometheus_address,
        Duration::from_secs(args.prometheus_timeout_seconds),
        args.prometheus_retries,
    )
    .with_context(|| format!("--prometheus-address {}", args.prometheus_address))?;
    let client = client().await?;
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(LiveRouting::new(client.clone())),
        Arc::new(LiveObserver::new(prometheus, Webhooks::new())),
        Config {
            default_provider: args.provider,
            ..Config::default()
        },
        metrics.clone(),
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
    tokio::spawn(async move {
        terminated().await;
        info!("termination requested");
        let _ = signal_tx.send(true);
    });
    let server = tokio::spawn(telemetry::serve(args.listen, metrics.clone(), stopped()));
    info!(listen = %args.listen, provider = %args.provider, namespaces = ?args.namespaces, "starting");

    let election = args.leader_elect.then(|| {
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "fledge-controller".into());
        LeaderElection::new(
            client.clone(),
            LeaseConfig {
                name: args.lease_name.clone(),
                namespace: args.lease_namespace.clone(),
                identity,
                duration: Duration::from_secs(args.lease_duration_seconds),
                renew: Duration::from_secs((args.lease_duration_seconds / 3).max(1)),
            },
        )
    });
    let mut lost = false;
    if let Some(election) = &election {
        // A standby replica is ready (it serves metrics) while it waits for the Lease.
        metrics.set_ready(true);
        tokio::select! {
            _ = election.acquire() => {},
            _ = stopped() => return finish(server, None).await,
        }
        // The leader is ready again once its watches have synced.
        metrics.set_ready(false);
        let lost_tx = stop_tx.clone();
        let controller = cluster::run(ctx, &args.namespaces, stopped());
        tokio::select! {
            _ = controller => {},
            _ = election.keep() => {
                error!("leadership lost; stopping");
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
        bail!("leadership lost");
    }
    Ok(())
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
        let cli =
            Cli::try_parse_from(["fledge-controller", "status", "-n", "test", "podinfo"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Cmd::Status { name: Some(n), .. }) if n == "podinfo"
        ));
    }

    #[test]
    fn the_crd_output_holds_both_resources() {
        let text = crds().unwrap();
        assert!(text.contains("name: canaries.fledge.dev"));
        assert!(text.contains("name: metrictemplates.fledge.dev"));
    }
}
