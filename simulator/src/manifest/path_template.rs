//! AuthorizationPolicy path templates (Istio 1.22 on): in `paths` and `notPaths`, a segment
//! `{*}` stands for one path segment and `{**}` for any rest of the path. istiod hands such a
//! value to Envoy's URI template matcher (`*` and `**`), which compares the path without its
//! query string; a value without a template keeps the exact / prefix / suffix forms.
//!
//! What Istio accepts (its `CheckValidPathTemplate`, and Envoy's template parser for what
//! istiod passes on unchecked): templates are whole segments, `{**}` is the last operator
//! (literal segments may follow it), the other segments of a templated path are non-empty
//! RFC 3986 `pchar`s, `{` and `}` appear in no other form, and the path starts with `/`.

/// One segment before `{**}`: a literal or `{*}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    One,
}

/// A parsed template: the segments up to `{**}` (or all of them), and, with `{**}`, the text
/// that must end the path after it (`/bar` for `/foo/{**}/bar`, empty for `/foo/{**}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathTemplate {
    head: Vec<Segment>,
    any_then: Option<String>,
}

const ONE: &str = "{*}";
const ANY: &str = "{**}";

/// A path character a template's operators match and its literal segments may hold (RFC 3986
/// `pchar`, as Istio's validation lists it).
fn pchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~%!$&'()+,;:@=".contains(c)
}

/// Whether `path` holds a template operator.
pub(crate) fn is_template(path: &str) -> bool {
    path.contains(ONE) || path.contains(ANY)
}

/// Checks a `paths` value as Istio does: a braces-free path is fine (and not a template); one
/// with a template must be well formed. The error says what is wrong.
pub(crate) fn check(path: &str) -> Result<(), String> {
    let templated = is_template(path);
    let mut after_any = false;
    for seg in path.trim_matches('/').split('/') {
        if seg == ONE || seg == ANY {
            if after_any {
                return Err(format!(
                    "`{{**}}` as the last operator of the template ({path:?} has `{seg}` after it)"
                ));
            }
            after_any = seg == ANY;
            continue;
        }
        if seg.contains(['{', '}']) {
            return Err(format!(
                "`{{*}}` or `{{**}}` as a whole segment, and no other `{{` or `}}` ({path:?} has segment {seg:?})"
            ));
        }
        if templated && (seg.is_empty() || !seg.chars().all(pchar)) {
            return Err(format!(
                "the other segments of a path template non-empty and made of RFC 3986 path characters ({path:?} has segment {seg:?})"
            ));
        }
    }
    if templated && !path.starts_with('/') {
        return Err(format!(
            "a path template starting with `/` (Envoy rejects {path:?})"
        ));
    }
    Ok(())
}

impl PathTemplate {
    /// Parses a value [`check`] accepted and [`is_template`] says is one.
    pub(crate) fn new(path: &str) -> Self {
        let (head, any_then) = match path.split_once(ANY) {
            Some((head, rest)) => (head, Some(rest.to_string())),
            None => (path, None),
        };
        let mut head = head.strip_prefix('/').unwrap_or(head);
        if any_then.is_some() {
            // `/a/{**}`: the segments before are each followed by `/`.
            head = head.strip_suffix('/').unwrap_or(head);
        }
        let head = if head.is_empty() && any_then.is_some() {
            Vec::new()
        } else {
            head.split('/')
                .map(|s| match s {
                    ONE => Segment::One,
                    lit => Segment::Literal(lit.to_string()),
                })
                .collect()
        };
        PathTemplate { head, any_then }
    }

    /// Whether a path (without its query string) matches: the whole of it, as Envoy's
    /// template matcher does (`{*}` one or more path characters but no `/`, `{**}` any run of
    /// path characters and `/`, literal segments exactly).
    pub(crate) fn matches(&self, path: &str) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        for (i, seg) in self.head.iter().enumerate() {
            let last = i + 1 == self.head.len() && self.any_then.is_none();
            let end = rest.find('/').unwrap_or(rest.len());
            let (value, after) = rest.split_at(end);
            let ok = match seg {
                Segment::Literal(l) => value == l,
                Segment::One => !value.is_empty() && value.chars().all(pchar),
            };
            if !ok {
                return false;
            }
            rest = match (last, after.strip_prefix('/')) {
                (true, _) => after,
                (false, Some(r)) => r,
                (false, None) => return false,
            };
        }
        match &self.any_then {
            None => rest.is_empty(),
            Some(then) => rest
                .strip_suffix(then.as_str())
                .is_some_and(|any| any.chars().all(|c| c == '/' || pchar(c))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: &str) -> PathTemplate {
        check(p).expect("valid");
        assert!(is_template(p));
        PathTemplate::new(p)
    }

    #[test]
    fn one_matches_a_single_non_empty_segment() {
        let p = t("/pay/{*}");
        assert!(p.matches("/pay/card"));
        assert!(!p.matches("/pay/"));
        assert!(!p.matches("/pay"));
        assert!(!p.matches("/pay/card/7"));
        assert!(!p.matches("/payments/card"));
        let mid = t("/{*}/orders/{*}");
        assert!(mid.matches("/shop/orders/7"));
        assert!(!mid.matches("/shop/order/7"));
        assert!(!mid.matches("//orders/7"));
    }

    #[test]
    fn any_matches_any_rest_including_none_after_its_slash() {
        let p = t("/api/{**}");
        assert!(p.matches("/api/"));
        assert!(p.matches("/api/v1/users/7"));
        assert!(!p.matches("/api"));
        assert!(!p.matches("/apis/v1"));
        assert!(t("/{**}").matches("/"));
        let then = t("/files/{**}/meta");
        assert!(then.matches("/files/a/b/meta"));
        assert!(then.matches("/files//meta"));
        assert!(!then.matches("/files/meta"));
        assert!(!then.matches("/files/a/meta/x"));
        let both = t("/{*}/files/{**}");
        assert!(both.matches("/u1/files/x/y"));
        assert!(!both.matches("/files/x"));
    }

    #[test]
    fn a_trailing_slash_is_part_of_the_template() {
        let p = t("/pay/{*}/");
        assert!(p.matches("/pay/card/"));
        assert!(!p.matches("/pay/card"));
    }

    #[test]
    fn characters_outside_a_path_are_matched_by_no_operator() {
        assert!(!t("/q/{*}").matches("/q/a*b"));
        assert!(!t("/q/{**}").matches("/q/a b"));
    }

    #[test]
    fn templates_istio_refuses_are_refused() {
        for bad in [
            "/a/{**}/{*}",
            "/a/{**}/{**}",
            "/a/{*}.json",
            "/a/{x}",
            "/a{b}",
            "/a//{*}",
            "/a/*/{*}",
            "a/{*}",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        for good in [
            "/a/{**}/b",
            "/{*}/{*}/c/{**}",
            "/a/*",
            "*/b",
            "/a/b",
            "/x/{*}/",
        ] {
            assert!(check(good).is_ok(), "{good}");
        }
        assert!(!is_template("/a/*"));
    }
}
