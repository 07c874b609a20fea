//! The one reader behind every manifest kind: a YAML value as the JSON Kubernetes reads, typed
//! fields that name their path when they are of the wrong type and warn when unknown, and the
//! quantity grammar of the Kubernetes APIs. Durations are read in the controller's grammar
//! ([`parse_nanos`]), the one the Canary's are.

use std::collections::BTreeMap;

use fledge_controller::spec::{
    GATEWAY_DURATION, ISTIO_DURATION, is_gateway_duration, is_istio_duration, parse_nanos,
};
use serde_json::Value;

use super::ManifestError;
use crate::engine::SimTime;

/// Parses a Kubernetes quantity such as `900m`, `1`, `0.5` or `10` into thousandths.
pub(crate) fn parse_quantity_milli(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<u64>().ok();
    }
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * 1000.0).round() as u64)
}

pub(super) struct Doc<'w> {
    pub(super) index: usize,
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) warnings: &'w mut Vec<String>,
}

/// Whom a security policy applies to (see [`Doc::policy_scope`]).
pub(super) enum Scope {
    /// The workloads of its namespace its `spec.selector.matchLabels` picks; none: all.
    Workloads(Option<BTreeMap<String, String>>),
    /// A gateway or service by `targetRef(s)`: not simulated.
    Target,
}

#[derive(Clone, Copy)]
pub(super) struct Node<'a> {
    pub(super) v: &'a Value,
}

impl Doc<'_> {
    pub(super) fn wrong(&self, field: &str, expected: &str) -> ManifestError {
        ManifestError::WrongType {
            doc: self.index,
            kind: self.kind.clone(),
            name: self.name.clone(),
            field: field.to_string(),
            expected: expected.to_string(),
        }
    }

    pub(super) fn missing(&self, field: &str) -> ManifestError {
        ManifestError::Missing {
            doc: self.index,
            kind: self.kind.clone(),
            name: self.name.clone(),
            field: field.to_string(),
        }
    }

    pub(super) fn warn(&mut self, msg: String) {
        self.warnings.push(format!(
            "document {} ({} {:?}): {msg}",
            self.index + 1,
            self.kind,
            self.name
        ));
    }

    /// Checks `n` is a mapping and warns about keys outside `known`.
    pub(super) fn obj<'a>(
        &mut self,
        n: Node<'a>,
        path: &str,
        known: &[&str],
    ) -> Result<&'a serde_json::Map<String, Value>, ManifestError> {
        let m =
            n.v.as_object()
                .ok_or_else(|| self.wrong(path, "a mapping"))?;
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                let p = join(path, k);
                self.warn(format!("unknown field `{p}` ignored"));
            }
        }
        Ok(m)
    }

    pub(super) fn str(&self, n: Node<'_>, path: &str) -> Result<String, ManifestError> {
        match n.v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.wrong(path, "a string")),
        }
    }

    pub(super) fn u32(&self, n: Node<'_>, path: &str) -> Result<u32, ManifestError> {
        n.v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| self.wrong(path, "a non-negative integer"))
    }

    pub(super) fn f64(&self, n: Node<'_>, path: &str) -> Result<f64, ManifestError> {
        n.v.as_f64().ok_or_else(|| self.wrong(path, "a number"))
    }

    pub(super) fn bool(&self, n: Node<'_>, path: &str) -> Result<bool, ManifestError> {
        n.v.as_bool().ok_or_else(|| self.wrong(path, "a boolean"))
    }

    pub(super) fn duration(&self, n: Node<'_>, path: &str) -> Result<SimTime, ManifestError> {
        match n.v {
            Value::String(s) => {
                parse_nanos(s).map_err(|_| self.wrong(path, "a duration such as `10s` or `250ms`"))
            }
            _ => Err(self.wrong(path, "a duration such as `10s` or `250ms`")),
        }
    }

    /// A duration Istio's validation accepts (`ValidateDuration` in its `agent` validation): at
    /// least 1ms, in whole milliseconds. An outlier-detection interval of 0 would never tick.
    pub(super) fn istio_duration(&self, n: Node<'_>, path: &str) -> Result<SimTime, ManifestError> {
        let d = self.duration(n, path)?;
        if !is_istio_duration(d) {
            return Err(self.wrong(path, ISTIO_DURATION));
        }
        Ok(d)
    }

    /// A Gateway API duration (GEP-2257: `^([0-9]{1,5}(h|m|s|ms)){1,4}$`): narrower than Go's,
    /// no fractions and no `us`/`ns`, as the API server's schema for HTTPRoute timeouts says.
    pub(super) fn gateway_duration(
        &self,
        n: Node<'_>,
        path: &str,
    ) -> Result<SimTime, ManifestError> {
        match n.v {
            Value::String(s) if is_gateway_duration(s) => self.duration(n, path),
            _ => Err(self.wrong(path, GATEWAY_DURATION)),
        }
    }

    pub(super) fn list<'a>(
        &self,
        n: Node<'a>,
        path: &str,
    ) -> Result<&'a Vec<Value>, ManifestError> {
        n.v.as_array().ok_or_else(|| self.wrong(path, "a list"))
    }

    /// A workload policy's `spec.selector.matchLabels` (PeerAuthentication,
    /// AuthorizationPolicy, RequestAuthentication): `None` without a selector, the whole
    /// namespace; an empty one selects every workload too (Istio warns of it). Istio refuses
    /// an empty key and `*` in a key or value.
    pub(super) fn workload_selector(
        &mut self,
        spec: &serde_json::Map<String, Value>,
    ) -> Result<Option<BTreeMap<String, String>>, ManifestError> {
        let Some(sel) = get(spec, "selector") else {
            return Ok(None);
        };
        let path = "spec.selector.matchLabels";
        let sm = self.obj(sel, "spec.selector", &["matchLabels"])?;
        let labels = get(sm, "matchLabels")
            .map(|l| self.labels(l, path))
            .transpose()?
            .unwrap_or_default();
        for (k, v) in &labels {
            if k.is_empty() || k.contains('*') {
                return Err(self.wrong(path, "label keys, neither empty nor with a wildcard `*`"));
            }
            if v.contains('*') {
                return Err(self.wrong(&join(path, k), "a label value without a wildcard `*`"));
            }
        }
        if labels.is_empty() {
            self.warn(
                "spec.selector has no labels: it selects every workload of the namespace".into(),
            );
        }
        Ok(Some(labels))
    }

    /// Whom a security policy that may name targets (AuthorizationPolicy,
    /// RequestAuthentication) applies to: workloads by selector, or by `spec.targetRef(s)` a
    /// gateway or a service, which is not simulated (warned about; the caller ignores the
    /// policy). Istio refuses a policy with both a selector and a target.
    pub(super) fn policy_scope(
        &mut self,
        spec: &serde_json::Map<String, Value>,
    ) -> Result<Scope, ManifestError> {
        let refs = get(spec, "targetRefs")
            .map(|n| self.list(n, "spec.targetRefs"))
            .transpose()?;
        // An empty `targetRefs` reaches istiod as none (see authorization.rs `given_list`).
        let bound = get(spec, "targetRef").is_some() || refs.is_some_and(|r| !r.is_empty());
        let selector = self.workload_selector(spec)?;
        if !bound {
            return Ok(Scope::Workloads(selector));
        }
        if selector.is_some() {
            return Err(self.wrong(
                "spec.selector",
                "a selector or a target, not both (Istio refuses a policy with `selector` and `targetRef(s)`)",
            ));
        }
        self.warn(
            "spec.targetRef(s): a policy bound to a gateway or service is not simulated; policy ignored"
                .into(),
        );
        Ok(Scope::Target)
    }

    pub(super) fn labels(
        &mut self,
        n: Node<'_>,
        path: &str,
    ) -> Result<BTreeMap<String, String>, ManifestError> {
        let m =
            n.v.as_object()
                .ok_or_else(|| self.wrong(path, "a mapping of strings"))?;
        let mut out = BTreeMap::new();
        for (k, v) in m {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(x) => x.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(self.wrong(&join(path, k), "a string")),
            };
            out.insert(k.clone(), s);
        }
        Ok(out)
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(super) fn get<'a>(m: &'a serde_json::Map<String, Value>, key: &str) -> Option<Node<'a>> {
    m.get(key).filter(|v| !v.is_null()).map(|v| Node { v })
}

/// A YAML value as the JSON Kubernetes reads: mapping keys become strings, tags are dropped,
/// and a number JSON cannot hold (`.nan`, `.inf`) is a type error at its path.
pub(super) fn to_json(v: serde_norway::Value, path: &str) -> Result<Value, (String, &'static str)> {
    use serde_norway::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| (path.to_string(), "a finite number"))?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &idx(path, i)))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    _ => return Err((path.to_string(), "a mapping with string keys")),
                };
                let value = to_json(v, &join(path, &key))?;
                out.insert(key, value);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => to_json(t.value, path)?,
    })
}
