//! Who reported a sample, and the labels of its source and destination workloads.

/// Which proxy reported a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reporter {
    /// The client-side sidecar: one sample per request after retries.
    Source,
    /// The server-side sidecar: one sample per attempt that reached the pod.
    Destination,
}

impl Reporter {
    pub(super) fn label(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Labels of a source workload (a client).
#[derive(Clone, Debug)]
pub(crate) struct SourceLabels {
    /// Workload (Deployment) name.
    pub(crate) workload: String,
    /// Namespace.
    pub(crate) namespace: String,
    /// Whether it has a sidecar: without one, what it saw is kept for the run's figures but no
    /// proxy reports it, so no series of it is exposed.
    pub(crate) sidecar: bool,
}

/// Labels of a destination workload (one version of a service).
#[derive(Clone, Debug)]
pub(crate) struct DestLabels {
    /// Workload (Deployment) name, e.g. `podinfo-primary`.
    pub(crate) workload: String,
    /// Namespace.
    pub(crate) namespace: String,
    /// Service FQDN, e.g. `podinfo.test.svc.cluster.local`.
    pub(crate) service: String,
    /// Version / subset name.
    pub(crate) version: String,
    /// False for the `unknown` destination of a service: the requests no upstream pod
    /// answered (no route, fault abort, no healthy upstream).
    pub(crate) peer: bool,
}

impl DestLabels {
    /// The destination Istio's stats filter reports when the request reached no upstream
    /// peer: every workload label `unknown`, the service still named.
    pub(crate) fn unknown(service: String) -> Self {
        let unknown = || "unknown".to_string();
        Self {
            workload: unknown(),
            namespace: unknown(),
            service,
            version: unknown(),
            peer: false,
        }
    }
}
