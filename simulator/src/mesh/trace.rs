//! The mesh's side of `--trace` (see [`crate::trace`]): the tracer it writes to when one is set,
//! and the names a trace line gives its pods, versions and clients.

use std::fmt;

use super::{CertId, ClientId, Mesh, PodId, RequestId, VersionId};
use crate::trace::Tracer;

/// A pod's name in a trace line; see [`Mesh::pod_name`].
pub(super) struct PodName<'a> {
    service: &'a str,
    version: &'a str,
    n: usize,
}

/// A certificate's workload in a trace line: a client's name, or `<service>-<version>`.
pub(super) struct Holder<'a>(&'a str, Option<&'a str>);

impl fmt::Display for Holder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(version) => write!(f, "{}-{version}", self.0),
            None => f.write_str(self.0),
        }
    }
}

impl fmt::Display for PodName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.service, self.version, self.n)
    }
}

/// Writes a trace line for the mesh when tracing is on; otherwise costs one test of an `Option`.
/// The values (any `Display`) are evaluated only when the filter may keep a line of this event
/// with these keys, and formatted only when it does. `trace!(self, "event", "key" => value, ...)`.
macro_rules! trace {
    ($mesh:expr, $event:literal $(, $key:literal => $val:expr)* $(,)?) => {
        if $mesh.trace.as_ref().is_some_and(|t| t.wants($event, &[$($key),*])) {
            let now = $mesh.q.now();
            // Taken out while the values borrow the mesh; put back at once.
            if let Some(mut t) = $mesh.trace.take() {
                t.emit(now, $event, &[$(($key, &$val as &dyn std::fmt::Display)),*]);
                $mesh.trace = Some(t);
            }
        }
    };
}
pub(super) use trace;

impl Mesh {
    /// Sets (or, with None, stops) the trace the mesh writes its events to.
    pub(crate) fn set_trace(&mut self, tracer: Option<Box<Tracer>>) {
        self.trace = tracer;
    }

    /// Takes the trace back (tracing stops).
    pub(crate) fn take_trace(&mut self) -> Option<Box<Tracer>> {
        self.trace.take()
    }

    /// The tracer, when tracing is on: for the harness's lines of the controller's decisions.
    pub(crate) fn tracer(&mut self) -> Option<&mut Tracer> {
        self.trace.as_deref_mut()
    }

    /// `<service>-<version>-<n>`, n the pod's place among its version's pods (formatted only
    /// if the line is written).
    pub(super) fn pod_name(&self, p: PodId) -> PodName<'_> {
        let v = self.pods[p].version;
        let ver = &self.versions[v];
        PodName {
            service: &self.services[ver.service].name,
            version: &ver.name,
            n: ver.pods.iter().position(|&x| x == p).unwrap_or(usize::MAX),
        }
    }

    /// The workload holding certificate `c` (clients first, then versions).
    pub(super) fn cert_holder(&self, c: CertId) -> Holder<'_> {
        let clients = self.own_certs;
        if c.0 < clients {
            return Holder(self.client_name(ClientId(c.0)), None);
        }
        let ver = &self.versions[VersionId(c.0 - clients)];
        Holder(&self.services[ver.service].name, Some(&ver.name))
    }

    pub(super) fn trace_version(&self, v: VersionId) -> &str {
        &self.versions[v].name
    }

    pub(super) fn client_name(&self, c: ClientId) -> &str {
        &self.telemetry.sources()[c.0 as usize].workload
    }

    /// A request's number for the trace (arrivals counted from 1).
    pub(super) fn req_no(&self, r: RequestId) -> u64 {
        self.reqs[r].number
    }
}
