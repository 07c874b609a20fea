//! The names a scenario gives Kubernetes objects, checked as the API server checks them
//! (apimachinery's validation): a service is a Service (a DNS-1035 label), a version names its
//! Deployment `<service>-<version>` and its pods' `version` label, and pod labels are label
//! keys (qualified names) and label values.

/// Why `name` is not a DNS-1035 label (a Service's name), if it is not one.
pub(super) fn dns1035_label(name: &str) -> Option<String> {
    let ok = name.len() <= 63
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name.bytes().last().is_some_and(is_lower_alnum)
        && name.bytes().all(|b| is_lower_alnum(b) || b == b'-');
    (!ok).then(|| {
        format!(
            "`{name}` is not a Service name (DNS-1035 label): at most 63 lower-case letters, digits and `-`, starting with a letter and ending with a letter or digit"
        )
    })
}

/// Why `name` cannot name a version, if it cannot: it is the `version` label's value and part
/// of the Deployment's name, so lower-case letters, digits, `-` and `.` (at most 63), starting
/// and ending with a letter or digit.
pub(super) fn version(name: &str) -> Option<String> {
    let ok = name.len() <= 63
        && name.bytes().next().is_some_and(is_lower_alnum)
        && name.bytes().last().is_some_and(is_lower_alnum)
        && name
            .bytes()
            .all(|b| is_lower_alnum(b) || b == b'-' || b == b'.');
    (!ok).then(|| {
        format!(
            "`{name}` cannot name a version (its Deployment `<service>-{name}` and its pods' `version` label): at most 63 lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit"
        )
    })
}

/// Why `key` is not a label key (a qualified name: an optional DNS-1123 subdomain prefix and
/// `/`, then a name), if it is not one.
pub(super) fn label_key(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|part| {
                part.bytes().next().is_some_and(is_lower_alnum)
                    && part.bytes().last().is_some_and(is_lower_alnum)
                    && part.bytes().all(|b| is_lower_alnum(b) || b == b'-')
            })
    });
    (!(prefix_ok && !name.is_empty() && label_name(name))).then(|| {
        format!(
            "`{key}` is not a label key: an optional DNS subdomain and `/`, then at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit"
        )
    })
}

/// Why `value` is not a label value, if it is not one.
pub(super) fn label_value(value: &str) -> Option<String> {
    (!label_name(value)).then(|| {
        format!(
            "`{value}` is not a label value: at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit"
        )
    })
}

/// A label value's form, also a label key's name part (empty allowed).
fn label_name(s: &str) -> bool {
    s.len() <= 63
        && (s.is_empty()
            || (s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))))
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_as_the_api_server_checks_them() {
        for ok in ["back", "reviews-v2", "a1", &"a".repeat(63)] {
            assert_eq!(dns1035_label(ok), None, "{ok}");
        }
        for bad in ["Back_1", "1back", "back-", "", "a.b", &"a".repeat(64)] {
            assert!(dns1035_label(bad).is_some(), "{bad}");
        }
        for ok in ["v1", "primary", "v2-mysql", "1.2.0", "2"] {
            assert_eq!(version(ok), None, "{ok}");
        }
        for bad in ["v 1", "V1", "v_1", "-v1", "v1.", ""] {
            assert!(version(bad).is_some(), "{bad}");
        }
        for ok in [
            "app",
            "version",
            "app.kubernetes.io/name",
            "Tier_2",
            "a-b.c",
        ] {
            assert_eq!(label_key(ok), None, "{ok}");
        }
        for bad in ["bad key!", "", "/x", "Example.com/x", "a/", "a/b/c", "-x"] {
            assert!(label_key(bad).is_some(), "{bad}");
        }
        for ok in ["x", "v1", "A_b-c.d", ""] {
            assert_eq!(label_value(ok), None, "{ok}");
        }
        for bad in ["a b", "x!", "-x", &"a".repeat(64)] {
            assert!(label_value(bad).is_some(), "{bad}");
        }
    }
}
