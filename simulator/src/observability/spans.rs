//! Spans as JSON lines, in the shape of OpenTelemetry's OTLP/JSON spans made flat: per request a
//! CLIENT span of the client's proxy, and per attempt a SERVER span of the pod's, its child. A
//! call between services is a request of the caller's proxy in the caller's trace: its CLIENT
//! span's parent is the SERVER span of the caller's attempt that made it, so one request at
//! the edge is one tree, as a tracer shows it when the applications propagate the trace
//! context (Envoy's sidecars each report their side).
//! Ids are hex (32 digits for the trace, 16 for a span); times are nanoseconds from the run's
//! start (the Unix epoch); `kind` and `status.code` are OTLP's enum names, the status
//! `STATUS_CODE_ERROR` for no response (code 0), a 5xx, and on a CLIENT span a 4xx, else unset,
//! as OpenTelemetry's HTTP conventions set it. Only proxies that exist report: a client
//! without a sidecar has no CLIENT spans, and the SERVER spans of its requests' attempts have
//! the caller's span as parent (none at the edge); a pod without a sidecar has no SERVER spans.
//! Every span names the service and the version that answered.

use serde_json::json;

use super::{Exchange, Ids};
use crate::telemetry::flags;

pub(super) fn line(e: &Exchange<'_>, ids: &Ids) -> String {
    let request = e.try_no == 0;
    // OpenTelemetry's HTTP conventions: a client span is an error from 400, a server span
    // from 500 (a 4xx is the client's mistake, not the server's).
    let error = e.code == 0 || e.code >= if request { 400 } else { 500 };
    let span = json!({
        "traceId": format!("{:032x}", ids.trace),
        "spanId": format!("{:016x}", ids.span(e.try_no)),
        "parentSpanId": match (request || !e.client_proxy, e.caller) {
            (false, _) => format!("{:016x}", ids.span(0)),
            (true, Some(caller)) => format!("{:016x}", ids.span_of(caller)),
            (true, None) => String::new(),
        },
        "name": format!("{}:{}", e.service, if request { "request" } else { "attempt" }),
        "kind": if request { "SPAN_KIND_CLIENT" } else { "SPAN_KIND_SERVER" },
        "service": if request { e.client } else { e.service },
        "startTimeUnixNano": e.start,
        "endTimeUnixNano": e.end,
        "status": { "code": if error { "STATUS_CODE_ERROR" } else { "STATUS_CODE_UNSET" } },
        "attributes": {
            "client": e.client,
            "destination.service": e.service,
            "destination.version": e.version,
            "upstream_host": e.upstream,
            "http.status_code": e.code,
            "response_flags": flags::render(e.flags),
            "attempt": e.try_no,
        },
    });
    format!("{span}\n")
}
