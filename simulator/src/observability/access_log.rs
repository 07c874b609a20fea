//! The access log: a line per request in the field order of Envoy's default format, with the
//! route name last as Istio's format ends:
//!
//! ```text
//! [START_TIME] "METHOD PATH PROTOCOL" CODE FLAGS BYTES_RECEIVED BYTES_SENT DURATION
//!   UPSTREAM_SERVICE_TIME "X-FORWARDED-FOR" "USER-AGENT" "X-REQUEST-ID" "AUTHORITY"
//!   "UPSTREAM_HOST" UPSTREAM_CLUSTER ROUTE_NAME
//! ```
//!
//! (one line). What the simulation does not model is `-`, as Envoy writes an unset value:
//! bodies (bytes), forwarding headers, the user agent and the upstream's own time. The route
//! name is the VirtualService route's `name` (`-` when it has none; Istio names a service's
//! default route `default`). The authority is the service called, the upstream host the pod
//! that answered (`<service>-<version>-<n>`, which names the version), `-` when none did; the
//! upstream cluster Envoy's cluster name, `outbound|port|subset|host`, whose subset names the
//! version routed to (`-` when the proxy answered without one). A call carries its caller's
//! `x-request-id`, as an application propagating the trace context does.

use super::{Exchange, Ids, timestamp};
use crate::engine::MILLIS;
use crate::telemetry::flags;

pub(super) fn line(e: &Exchange<'_>, ids: &Ids) -> String {
    format!(
        "[{}] \"{} {} HTTP/1.1\" {} {} - - {} - \"-\" \"-\" \"{}\" \"{}\" \"{}\" {} {}\n",
        timestamp(e.start),
        e.method,
        e.path,
        e.code,
        flags::render(e.flags),
        (e.end - e.start) / MILLIS,
        ids.request_id(),
        e.service,
        e.upstream.as_deref().unwrap_or("-"),
        e.cluster.as_deref().unwrap_or("-"),
        e.route.unwrap_or("-"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_envoys_default_format_with_the_route_name_last() {
        let e = Exchange {
            number: 7,
            root: 7,
            caller: None,
            try_no: 0,
            start: 61 * crate::engine::SECONDS + 250 * MILLIS,
            end: 61 * crate::engine::SECONDS + 290 * MILLIS + 999_999,
            code: 503,
            flags: flags::UO,
            client: "frontend",
            service: "podinfo",
            version: Some("primary"),
            upstream: Some("podinfo-primary-2".into()),
            cluster: Some("outbound|80||podinfo-primary.test.svc.cluster.local".into()),
            method: "POST",
            path: "/api/echo",
            route: Some("default"),
            client_proxy: true,
            server_proxy: true,
        };
        let ids = Ids::of(1, 7, 7);
        assert_eq!(
            line(&e, &ids),
            format!(
                "[1970-01-01T00:01:01.250Z] \"POST /api/echo HTTP/1.1\" 503 UO - - 40 - \"-\" \"-\" \"{}\" \"podinfo\" \"podinfo-primary-2\" outbound|80||podinfo-primary.test.svc.cluster.local default\n",
                ids.request_id()
            )
        );
    }
}
