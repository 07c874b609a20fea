//! The Gateway API CRD's schema defaults, as the API server fills them in an HTTPRoute it
//! stores, for the fake API servers of the tests.

use serde_json::{Value, json};

/// What the HTTPRoute CRD's schema defaults in a stored route's matches: a rule without
/// matches gets one `/` path prefix match, a match without `path` that one, a path without type
/// `PathPrefix` (without value `/`), a header or query parameter without type `Exact`.
pub fn default_matches(spec: &mut Value) {
    for rule in spec["rules"].as_array_mut().into_iter().flatten() {
        if rule.get("matches").is_none() {
            rule["matches"] = json!([{}]);
        }
        for m in rule["matches"].as_array_mut().into_iter().flatten() {
            if m.get("path").is_none() {
                m["path"] = json!({});
            }
            if m["path"].get("type").is_none() {
                m["path"]["type"] = json!("PathPrefix");
            }
            if m["path"].get("value").is_none() {
                m["path"]["value"] = json!("/");
            }
            for list in ["headers", "queryParams"] {
                let conditions = m.get_mut(list).and_then(Value::as_array_mut);
                for c in conditions.into_iter().flatten() {
                    if c.get("type").is_none() {
                        c["type"] = json!("Exact");
                    }
                }
            }
        }
    }
}
