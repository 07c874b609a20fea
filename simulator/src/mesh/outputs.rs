//! The mesh's side of `run --access-log` and `--traces` (see [`crate::observability`]): what it
//! tells the outputs when a request or one of its attempts ends. Off, a hook costs the test of
//! an `Option` at its call site; on, a record is built only for the requests sampled.

use super::headers::{METHOD, PATH};
use super::request::Call;
use super::{AttemptId, ClientId, ClusterId, Mesh, RequestId, RuleId};
use crate::observability::{Exchange, Outputs};

impl Mesh {
    /// Sets (or, with None, stops) the outputs.
    pub(crate) fn set_outputs(&mut self, outputs: Option<Box<Outputs>>) {
        self.outputs = outputs;
    }

    pub(crate) fn take_outputs(&mut self) -> Option<Box<Outputs>> {
        self.outputs.take()
    }

    /// Request `req` ends with `code` and `flags`; `peer`: an upstream host answered (else the
    /// destination is `unknown`, as in the request's telemetry).
    #[cold]
    pub(super) fn output_request(&mut self, req: RequestId, code: u16, flags: u16, peer: bool) {
        let Some(mut o) = self.outputs.take() else {
            return;
        };
        let r = self.reqs[req];
        let root = self.trace_root(r.number, r.call.parent);
        if o.wants(r.number, root) {
            o.request(Exchange {
                number: r.number,
                root,
                caller: self.caller_span(r.call.parent),
                try_no: 0,
                start: r.start,
                end: self.now(),
                code,
                flags,
                client: self.client_name(r.client),
                service: &self.services[self.clients[r.client].service].name,
                version: peer.then(|| self.trace_version(r.version)),
                upstream: None,
                cluster: r.cluster.map(|ci| self.cluster_name(ci)),
                method: self.header_sets.value(r.call.headers, METHOD),
                path: self.header_sets.value(r.call.headers, PATH),
                route: self.rules[r.rule].name.as_deref(),
                client_proxy: self.clients[r.client].sidecar,
                server_proxy: false,
            });
        }
        self.outputs = Some(o);
    }

    /// A request of client `c` (a call of `call.parent`, carrying header set `call.headers`)
    /// that its proxy answered at once with `code` and `flags`: no route took it (`NR`), or
    /// its route, `rule`, names no cluster (`NC`). It takes no time and reached no pod.
    #[cold]
    pub(super) fn output_unrouted(
        &mut self,
        c: ClientId,
        code: u16,
        flags: u16,
        call: Call,
        rule: Option<RuleId>,
    ) {
        let Some(mut o) = self.outputs.take() else {
            return;
        };
        // `send` counted it: requests are numbered from 1.
        let number = self.stats.requests;
        let root = self.trace_root(number, call.parent);
        if o.wants(number, root) {
            let now = self.now();
            let headers = call.headers;
            o.request(Exchange {
                number,
                root,
                caller: self.caller_span(call.parent),
                try_no: 0,
                start: now,
                end: now,
                code,
                flags,
                client: self.client_name(c),
                service: &self.services[self.clients[c].service].name,
                version: None,
                upstream: None,
                cluster: None,
                method: self.header_sets.value(headers, METHOD),
                path: self.header_sets.value(headers, PATH),
                route: rule.and_then(|r| self.rules[r].name.as_deref()),
                client_proxy: self.clients[c].sidecar,
                server_proxy: false,
            });
        }
        self.outputs = Some(o);
    }

    /// Attempt `a` ends with `code` and `flags` (mirrored copies are nobody's request: none).
    #[cold]
    pub(super) fn output_attempt(&mut self, a: AttemptId, code: u16, flags: u16) {
        let Some(mut o) = self.outputs.take() else {
            return;
        };
        let at = self.atts[a];
        if let Some(req) = at.req
            && o.wants(at.number, at.root)
        {
            let r = self.reqs[req];
            let client = r.client;
            let version = self.pods[at.pod].version;
            o.attempt(Exchange {
                number: at.number,
                root: at.root,
                caller: self.caller_span(r.call.parent),
                try_no: at.try_no,
                start: at.sent,
                end: self.now(),
                code,
                flags,
                client: self.client_name(client),
                service: &self.services[self.clients[client].service].name,
                version: Some(self.trace_version(version)),
                upstream: Some(self.pod_name(at.pod).to_string()),
                cluster: Some(self.cluster_name(at.cluster)),
                method: self.header_sets.value(at.headers, METHOD),
                path: self.header_sets.value(at.headers, PATH),
                route: self.rules[r.rule].name.as_deref(),
                client_proxy: self.clients[client].sidecar,
                server_proxy: self.versions[version].sidecar,
            });
        }
        self.outputs = Some(o);
    }
}

impl Mesh {
    /// Envoy's name for cluster `ci`, as `%UPSTREAM_CLUSTER%` logs it (istiod's
    /// `outbound|port|subset|host`): the subset of the DestinationRule that selects its pods,
    /// none for the cluster over the whole Service, the version's own Service as the host when
    /// that is what the routes name (the controller's `-primary` and `-canary`). The port is
    /// the service's target port, the only one the simulator knows.
    fn cluster_name(&self, ci: ClusterId) -> String {
        let cl = &self.clusters[ci];
        let c = &self.clients[cl.client];
        let s = c.service;
        let svc = &self.services[s];
        let (host, subset) = if cl.whole {
            (svc.name.clone(), "")
        } else if c.direct.is_some() || svc.host_routed.contains(&cl.version) {
            (
                format!("{}-{}", svc.name, self.versions[cl.version].name),
                "",
            )
        } else {
            let subset = self
                .subset_labels
                .iter()
                .filter(|(sv, _, _)| *sv == s)
                .find(|(_, name, _)| self.subset_cluster(cl.client, s, name) == Some(ci))
                .map_or(self.versions[cl.version].name.as_str(), |(_, name, _)| name);
            (svc.name.clone(), subset)
        };
        format!(
            "outbound|{}|{subset}|{host}.{}.svc.cluster.local",
            svc.target_port, svc.namespace
        )
    }
}
