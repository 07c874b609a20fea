//! The mesh's side of `--trace` (see [`crate::trace`]): the tracer it writes to when one is set,
//! and the names a trace line gives its pods, versions and clients.

use super::{ClientId, Mesh, PodId, RequestId, VersionId};
use crate::trace::Tracer;

/// Writes a trace line for the mesh when tracing is on; otherwise costs one test of an `Option`
/// (the fields are not even formatted). `trace!(self, "event", "key" => value, ...)`.
macro_rules! trace {
    ($mesh:expr, $event:literal $(, $key:literal => $val:expr)* $(,)?) => {
        if $mesh.trace.is_some() {
            let fields = [$(($key, ($val).to_string())),*];
            let now = $mesh.q.now();
            if let Some(t) = $mesh.trace.as_mut() {
                t.emit(now, $event, &fields);
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

    /// `<service>-<version>-<n>`, n the pod's place among its version's pods.
    pub(super) fn pod_name(&self, p: PodId) -> String {
        let v = self.pods[p].version;
        let n = self.versions[v].pods.iter().position(|&x| x == p);
        let ver = &self.versions[v];
        let service = &self.services[ver.service].name;
        format!("{service}-{}-{}", ver.name, n.unwrap_or(usize::MAX))
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
