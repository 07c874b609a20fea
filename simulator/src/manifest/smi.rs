//! SMI's TrafficSplit (what Linkerd reads through its SMI extension): an apex service and
//! weighted backends, weights as Kubernetes quantities.

use serde_json::Value;

use super::ManifestError;
use super::reader::{Doc, Node, get, idx, join, parse_quantity_milli};

/// An SMI TrafficSplit.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficSplit {
    /// `metadata.name`.
    pub(crate) name: String,
    /// `metadata.namespace`.
    pub(crate) namespace: Option<String>,
    /// `spec.service` (the apex service).
    pub(crate) service: String,
    /// Backends with weights in thousandths (`900m` is 900, `1` is 1000).
    pub backends: Vec<(String, u64)>,
}

pub(super) fn traffic_split(
    doc: &mut Doc<'_>,
    spec: Node<'_>,
    name: String,
    namespace: Option<String>,
) -> Result<TrafficSplit, ManifestError> {
    let s = doc.obj(spec, "spec", &["service", "backends", "matches"])?;
    let service = doc.str(
        get(s, "service").ok_or_else(|| doc.missing("spec.service"))?,
        "spec.service",
    )?;
    let mut backends = Vec::new();
    if let Some(b) = get(s, "backends") {
        for (i, v) in doc.list(b, "spec.backends")?.iter().enumerate() {
            let p = idx("spec.backends", i);
            let bm = doc.obj(Node { v }, &p, &["service", "weight"])?;
            let svc = doc.str(
                get(bm, "service").ok_or_else(|| doc.missing(&join(&p, "service")))?,
                &join(&p, "service"),
            )?;
            let wp = join(&p, "weight");
            let weight = match get(bm, "weight").map(|n| n.v) {
                None => 0,
                Some(Value::Number(n)) => n
                    .as_f64()
                    .filter(|x| *x >= 0.0)
                    .map(|x| (x * 1000.0).round() as u64)
                    .ok_or_else(|| doc.wrong(&wp, "a quantity such as `900m` or `1`"))?,
                Some(Value::String(q)) => parse_quantity_milli(q)
                    .ok_or_else(|| doc.wrong(&wp, "a quantity such as `900m` or `1`"))?,
                Some(_) => return Err(doc.wrong(&wp, "a quantity such as `900m` or `1`")),
            };
            backends.push((svc, weight));
        }
    }
    Ok(TrafficSplit {
        name,
        namespace,
        service,
        backends,
    })
}
