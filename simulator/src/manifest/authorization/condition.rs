//! A rule's `when` conditions: not evaluated (see the parent module), but checked as Istio's
//! validation checks them, so a policy a cluster refuses is refused here too.

use super::{Reading, strings};
use crate::manifest::ManifestError;
use crate::manifest::reader::{Doc, Node, get, join};

/// Attributes taken as they are.
const KEYS: [&str; 12] = [
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.serviceAccount",
    "source.principal",
    "source.trustDomain",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];
/// Attributes written `PREFIX[NAME]`.
const MAP_KEYS: [&str; 3] = [
    "request.headers",
    "request.auth.claims",
    "experimental.envoy.filters.",
];
/// Attributes about the caller's identity, which Istio refuses in a CUSTOM policy.
const NOT_WITH_CUSTOM: [&str; 4] = [
    "source.namespace",
    "source.serviceAccount",
    "source.trustDomain",
    "source.principal",
];

/// Checks one `when` entry: a known key, and values or notValues, none empty.
pub(super) fn check(
    doc: &mut Doc<'_>,
    n: Node<'_>,
    path: &str,
    reading: Reading,
) -> Result<(), ManifestError> {
    let m = doc.obj(n, path, &["key", "values", "notValues"])?;
    let kp = join(path, "key");
    let key = get(m, "key").map(|k| doc.str(k, &kp)).transpose()?;
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| doc.missing(&kp))?;
    let values = strings(doc, m, path, "values", reading)?;
    let not_values = strings(doc, m, path, "notValues", reading)?;
    if values.is_none() && not_values.is_none() {
        return Err(doc.wrong(
            &join(path, "values"),
            &format!(
                "`values` or `notValues` for key {key} (Istio refuses a condition with neither)"
            ),
        ));
    }
    attribute(&key).map_err(|e| doc.wrong(&kp, &e))?;
    if reading.custom
        && (NOT_WITH_CUSTOM.contains(&key.as_str()) || key.starts_with("request.auth."))
    {
        return Err(doc.wrong(
            &kp,
            &format!("a key other than {key}: Istio does not support it with action CUSTOM"),
        ));
    }
    Ok(())
}

/// Whether Istio knows the attribute `key`; the error says what it expects.
fn attribute(key: &str) -> Result<(), String> {
    if KEYS.contains(&key) {
        return Ok(());
    }
    if MAP_KEYS.iter().any(|p| key.starts_with(p)) {
        let open = key.find('[').unwrap_or(0);
        return match key.ends_with(']') && open > 0 && open + 2 < key.len() {
            true => Ok(()),
            false => Err(format!("a key of the form `name[entry]`, not {key:?}")),
        };
    }
    Err(match key {
        "destination.namespace" => {
            "a key other than destination.namespace, which the policy's namespace replaces".into()
        }
        k if k.starts_with("destination.labels") => {
            format!("a key other than {k}, which the workload selector replaces")
        }
        "destination.name" | "destination.user" => {
            format!("a key other than {key}, which only v1alpha1 policies had")
        }
        _ => format!("an attribute Istio knows (`{key}` is none)"),
    })
}

#[cfg(test)]
mod tests {
    use super::attribute;

    #[test]
    fn attributes_are_istios() {
        for ok in [
            "source.ip",
            "request.headers[x-user]",
            "request.auth.claims[groups]",
        ] {
            assert!(attribute(ok).is_ok(), "{ok}");
        }
        for bad in [
            "request.headers",
            "request.headers[]",
            "destination.labels[app]",
            "source.user",
        ] {
            assert!(attribute(bad).is_err(), "{bad}");
        }
    }
}
