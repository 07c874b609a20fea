//! The Kubernetes shell around the rollout core: it reads each Canary's recorded state, gathers
//! what the core wants to see (workload readiness, metrics, webhook answers), calls
//! [`crate::rollout::advance`] and carries out the returned actions on the cluster.
//!
//! - [`reconciler`]: the kube-runtime reconcile loop, the finalizer and the operator commands;
//! - [`workloads`]: the primary Deployment, the generated Services, the HPA, scaling, revisions;
//! - [`scaled_objects`]: a KEDA ScaledObject as the target's autoscaler, copied for the primary;
//! - [`status`]: the Canary's status and its `Promoted` condition;
//! - [`providers`]: the narrow seams to traffic routers, metrics and webhooks;
//! - [`lease`]: leader election with a `coordination.k8s.io` Lease;
//! - [`deadline`]: a deadline on every API call but watches;
//! - [`telemetry`]: Prometheus metrics, the ops HTTP server and JSON logs;
//! - [`flagger`]: Flagger's own Canaries, taken over in place under `--flagger-canaries`;
//! - [`cli`]: `status`, `promote`, `abort` and `resume` for people.

mod canaries;
pub mod cli;
pub mod config_copies;
mod daemonsets;
pub mod deadline;
pub mod flagger;
pub mod lease;
pub mod providers;
pub mod reconciler;
pub mod scaled_objects;
pub mod selectors;
pub mod services;
pub mod status;
pub mod telemetry;
pub mod workloads;

pub use providers::{HookCall, Observer, Routing};
pub use reconciler::{
    Config, Context, error_policy, flagger_error_policy, reconcile, reconcile_flagger, run,
};

/// The finalizer that holds a deleted Canary until its routing and the user's objects have been
/// restored; added only once there is something to clean up.
pub const FINALIZER: &str = "fledge.dev/finalizer";
/// The annotation through which an operator sends a command (`promote` or `abort`).
pub const COMMAND_ANNOTATION: &str = "fledge.dev/command";
/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "fledge";

/// Everything that can go wrong in the cluster shell. Bad input from a user (a missing target, a
/// Deployment without a selector, an invalid spec) is not an error: it becomes an Event and a
/// status message. These variants are failures of the cluster or of a provider, retried with
/// backoff by [`error_policy`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an object from the API server failed.
    #[error("reading {kind} {name}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Writing (creating, patching, deleting) an object failed.
    #[error("writing {kind} {name}: {source}")]
    Write {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The Canary's status changed under us and still differs after a fresh read.
    #[error("status of Canary {name} was changed by someone else; will retry")]
    StatusConflict { name: String },
    /// An object the controller builds could not be serialised (a bug, reported not panicked).
    #[error("serialising {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The traffic router failed.
    #[error("routing with {provider}: {message}")]
    Route { provider: String, message: String },
    /// Publishing a Kubernetes Event failed.
    #[error("publishing an event: {0}")]
    PublishEvent(#[source] kube::Error),
    /// The object has no name or namespace (the API server never sends such a Canary).
    #[error("Canary without {0}")]
    Unnamed(&'static str),
    /// A Canary read back from the API no longer reads as a Canary (edited meanwhile).
    #[error("Canary {name} cannot be read: {message}")]
    Unreadable { name: String, message: String },
    /// The log filter given is not an `EnvFilter` directive.
    #[error("log level `{filter}`: {message}")]
    LogFilter { filter: String, message: String },
    /// The ops HTTP server could not start.
    #[error("ops server on {address}: {source}")]
    Serve {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A short label for the `fledge_reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Write { .. } => "write",
            Error::StatusConflict { .. } => "status_conflict",
            Error::Serialize { .. } => "serialize",
            Error::Route { .. } => "route",
            Error::PublishEvent(_) => "event",
            Error::Unnamed(_) => "unnamed",
            Error::Unreadable { .. } => "unreadable",
            Error::LogFilter { .. } => "log_filter",
            Error::Serve { .. } => "serve",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a reflector's store holds its first complete list.
fn synced<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}

/// Resolves once `shutdown` has, if `store` has not synced by then. kube-runtime's graceful
/// shutdown waits for the store before it lets the controller end, and a store never syncs
/// while the API server cannot be reached: without this a stop request would wait forever.
/// Nothing has been reconciled before the store syncs, so there is nothing to wait for.
pub(crate) async fn stop_if_unsynced<K>(
    store: kube::runtime::reflector::Store<K>,
    shutdown: impl std::future::Future<Output = ()>,
) where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    shutdown.await;
    if synced(&store) {
        // The graceful shutdown ends the controller once its reconciles finish.
        std::future::pending::<()>().await;
    }
}

/// Whether every store has got its first complete list (waits for them).
pub(crate) async fn synced_all<K>(stores: Vec<kube::runtime::reflector::Store<K>>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let all = futures::future::join_all(stores.iter().map(|s| s.wait_until_ready())).await;
    all.iter().all(Result::is_ok)
}
