//! Words for HTTP failures, shared by the Prometheus client and the webhooks.

/// How much of an error body a reason quotes.
const EXCERPT: usize = 200;

/// An error and its causes on one line: reqwest's own message hides "connection refused".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The start of a response body, trimmed, for a reason.
pub(crate) fn excerpt(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(EXCERPT) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_string(),
    }
}
