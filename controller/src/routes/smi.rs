//! SMI: a `TrafficSplit` named like the apex service, with the primary and canary services as
//! weighted backends. Linkerd (with its SMI extension) reads `split.smi-spec.io/v1alpha2`, the
//! default here; `v1alpha1` writes weights as quantities (`900m` for 90%), `v1alpha2` and
//! `v1alpha3` as integers. A TrafficSplit can neither mirror nor match requests.

use serde_json::{Value, json};

use super::{RouteError, Routes, object_metadata, percentages, service_names};
use crate::spec::Canary;

pub const GROUP: &str = "split.smi-spec.io";

/// The TrafficSplit API versions Fledge writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmiVersion {
    V1Alpha1,
    V1Alpha2,
    V1Alpha3,
}

impl SmiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            SmiVersion::V1Alpha1 => "v1alpha1",
            SmiVersion::V1Alpha2 => "v1alpha2",
            SmiVersion::V1Alpha3 => "v1alpha3",
        }
    }
}

/// The TrafficSplit for `routes`, exactly as applied.
pub fn traffic_split(
    canary: &Canary,
    routes: &Routes,
    version: SmiVersion,
) -> Result<Value, RouteError> {
    super::check_weights(routes)?;
    if routes.mirror.is_some() {
        return Err(RouteError::Unsupported {
            provider: "SMI TrafficSplit",
            feature: "traffic mirroring (use istio or gatewayapi)",
        });
    }
    if routes.matched {
        return Err(RouteError::Unsupported {
            provider: "SMI TrafficSplit",
            feature: "A/B routing on request matches (use istio or gatewayapi)",
        });
    }
    let names = service_names(canary);
    let weight = |w: u8| match version {
        // A quantity: 1000m is the whole.
        SmiVersion::V1Alpha1 => json!(format!("{}m", u32::from(w) * 10)),
        SmiVersion::V1Alpha2 | SmiVersion::V1Alpha3 => json!(w),
    };
    Ok(json!({
        "apiVersion": format!("{GROUP}/{}", version.as_str()),
        "kind": "TrafficSplit",
        "metadata": object_metadata(canary, &names.apex),
        "spec": {
            "service": names.apex,
            "backends": [
                { "service": names.primary, "weight": weight(routes.primary) },
                { "service": names.canary, "weight": weight(routes.canary) },
            ],
        }
    }))
}

/// Reads the split from a TrafficSplit's `spec`. Weights are relative, so whatever units a
/// hand edit used come back as percentages.
pub fn read_routes(canary: &Canary, spec: &Value) -> Result<Routes, String> {
    let names = service_names(canary);
    let backends = spec["backends"].as_array().ok_or("it has no backends")?;
    let (mut primary, mut canary_weight) = (0.0, 0.0);
    let mut seen_canary = false;
    for b in backends {
        let service = b["service"].as_str().unwrap_or_default();
        let weight = quantity(&b["weight"]).ok_or_else(|| {
            format!(
                "weight {} of backend {service} is not a number",
                b["weight"]
            )
        })?;
        if service == names.primary {
            primary += weight;
        } else if service == names.canary {
            canary_weight += weight;
            seen_canary = true;
        } else if weight > 0.0 {
            return Err(format!("it also sends traffic to {service}"));
        }
    }
    if !seen_canary {
        return Err(format!("no backend is {}", names.canary));
    }
    let (primary, canary) = percentages(primary, canary_weight)
        .ok_or_else(|| format!("weights {primary} and {canary_weight} cannot be split"))?;
    Ok(Routes {
        primary,
        canary,
        mirror: None,
        matched: false,
    })
}

/// A weight as SMI writes it: a number, or a quantity string such as `900m` or `1`.
fn quantity(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => match s.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
            None => s.parse::<f64>().ok()?,
        },
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some(n)
}
