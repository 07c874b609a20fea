//! Envoy response flags, as a bit set.

/// Upstream overflow (circuit breaker).
pub const UO: u16 = 1 << 0;
/// Upstream connection failure.
pub const UF: u16 = 1 << 1;
/// Upstream connection termination (reset).
pub const UC: u16 = 1 << 2;
/// No healthy upstream.
pub const UH: u16 = 1 << 3;
/// Upstream request timeout.
pub const UT: u16 = 1 << 4;
/// Retry limit exceeded (upstream retry overflow or attempts exhausted).
pub const URX: u16 = 1 << 5;
/// Delay injected by fault injection.
pub const DI: u16 = 1 << 6;
/// Abort injected by fault injection.
pub const FI: u16 = 1 << 7;
/// No route configured.
pub(crate) const NR: u16 = 1 << 8;
/// Upstream remote reset.
pub(crate) const UR: u16 = 1 << 9;
/// Downstream connection termination: the server sidecar saw its client reset the stream
/// before it answered (reported with response code 0).
pub const DC: u16 = 1 << 10;
/// No cluster: the route names a cluster Envoy does not have (a subset no DestinationRule
/// defines), with 503.
pub const NC: u16 = 1 << 11;
/// Names in Envoy's `%RESPONSE_FLAGS%` order: the order of its `CoreResponseFlag` bits
/// (envoy `envoy/stream_info/stream_info.h`, rendered by `source/common/stream_info/utility.cc`).
pub(crate) const NAMES: [(u16, &str); 12] = [
    (UH, "UH"),
    (UT, "UT"),
    (UR, "UR"),
    (UF, "UF"),
    (UC, "UC"),
    (UO, "UO"),
    (NR, "NR"),
    (DI, "DI"),
    (FI, "FI"),
    (DC, "DC"),
    (URX, "URX"),
    (NC, "NC"),
];

/// Renders flags like Envoy's `%RESPONSE_FLAGS%` (`-` when empty).
pub(crate) fn render(f: u16) -> String {
    if f == 0 {
        return "-".to_string();
    }
    let mut out = String::new();
    for (bit, name) in NAMES {
        if f & bit != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Envoy joins the flags with commas in the order of its `CoreResponseFlag` bits (envoy
    /// `envoy/stream_info/stream_info.h`: UH, UT, UR, UF, UC, UO, NR, DI, FI, ..., DC, URX).
    #[test]
    fn flags_render_in_envoy_order() {
        let cases = [
            (0, "-"),
            (URX | UF, "UF,URX"),
            (UT | UH, "UH,UT"),
            (UC | UR, "UR,UC"),
            (URX | UO | UC, "UC,UO,URX"),
            (FI | DI, "DI,FI"),
            (NR | UO, "UO,NR"),
            (URX | FI | UT, "UT,FI,URX"),
            (URX | DC | FI, "FI,DC,URX"),
        ];
        for (f, want) in cases {
            assert_eq!(render(f), want, "{f:#x}");
        }
    }
}
