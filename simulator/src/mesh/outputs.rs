//! The mesh's side of `run --access-log` and `--traces` (see [`crate::observability`]): what it
//! tells the outputs when a request or one of its attempts ends. Off, a hook costs the test of
//! an `Option` at its call site; on, a record is built only for the requests sampled.

use super::headers::{METHOD, PATH};
use super::{AttemptId, ClientId, Mesh, RequestId, RuleId};
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
        if o.wants(r.number) {
            o.request(Exchange {
                number: r.number,
                try_no: 0,
                start: r.start,
                end: self.now(),
                code,
                flags,
                client: self.client_name(r.client),
                service: &self.services[self.clients[r.client].service].name,
                version: peer.then(|| self.trace_version(r.version)),
                upstream: None,
                method: self.header_sets.value(r.call.headers, METHOD),
                path: self.header_sets.value(r.call.headers, PATH),
                route: self.rules[r.rule].name.as_deref(),
            });
        }
        self.outputs = Some(o);
    }

    /// A request of client `c` (carrying header set `headers`) that its proxy answered at once
    /// with `code` and `flags`: no route took it (`NR`), or its route, `rule`, names no
    /// cluster (`NC`). It takes no time and reached no pod.
    #[cold]
    pub(super) fn output_unrouted(
        &mut self,
        c: ClientId,
        code: u16,
        flags: u16,
        headers: u32,
        rule: Option<RuleId>,
    ) {
        let Some(mut o) = self.outputs.take() else {
            return;
        };
        // `send` counted it: requests are numbered from 1.
        let number = self.stats.requests;
        if o.wants(number) {
            let now = self.now();
            o.request(Exchange {
                number,
                try_no: 0,
                start: now,
                end: now,
                code,
                flags,
                client: self.client_name(c),
                service: &self.services[self.clients[c].service].name,
                version: None,
                upstream: None,
                method: self.header_sets.value(headers, METHOD),
                path: self.header_sets.value(headers, PATH),
                route: rule.and_then(|r| self.rules[r].name.as_deref()),
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
            && o.wants(at.number)
        {
            let r = self.reqs[req];
            let client = r.client;
            let version = self.pods[at.pod].version;
            o.attempt(Exchange {
                number: at.number,
                try_no: at.try_no,
                start: at.sent,
                end: self.now(),
                code,
                flags,
                client: self.client_name(client),
                service: &self.services[self.clients[client].service].name,
                version: Some(self.trace_version(version)),
                upstream: Some(self.pod_name(at.pod).to_string()),
                method: self.header_sets.value(at.headers, METHOD),
                path: self.header_sets.value(at.headers, PATH),
                route: self.rules[r.rule].name.as_deref(),
            });
        }
        self.outputs = Some(o);
    }
}
