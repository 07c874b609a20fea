//! Just enough HTTP/1.1 for a scraper and a controller on loopback: one request per
//! connection (`Connection: close`), a body only with `Content-Length`. A std server rather
//! than a framework: the simulator depends on no async runtime, and this is all it serves.

use std::io::{self, BufRead, BufReader, Read, Write};

/// The largest request head read.
const MAX_HEAD: u64 = 16 * 1024;
/// The largest body accepted (routing objects are a few KiB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A request as the routes need it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The path without the query string.
    pub(crate) path: String,
    pub(crate) body: Vec<u8>,
}

/// A response: status, content type and body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn json(status: u16, body: &serde_json::Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: format!("{body}\n"),
        }
    }

    /// An error as JSON: `{"error": reason}`.
    pub(crate) fn error(status: u16, reason: impl Into<String>) -> Self {
        Response::json(status, &serde_json::json!({ "error": reason.into() }))
    }
}

/// Reads one request; an unusable one is the response to send instead.
pub(crate) fn read_request(stream: impl Read) -> Result<Request, Response> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut content_length = 0usize;
    let mut request_line = String::new();
    let limited =
        |e: io::Error| Response::error(400, format!("the request could not be read: {e}"));
    (&mut reader)
        .take(MAX_HEAD)
        .read_line(&mut request_line)
        .map_err(limited)?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::error(
            400,
            "a request line `METHOD PATH HTTP/1.1` was expected",
        ));
    };
    loop {
        head.clear();
        let n = (&mut reader)
            .take(MAX_HEAD)
            .read_line(&mut head)
            .map_err(limited)?;
        let line = head.trim_end();
        if n == 0 || line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Response::error(
                400,
                format!("a header line without `:`: {line:?}"),
            ));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| {
                Response::error(400, format!("Content-Length: `{value}` is not a length"))
            })?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Response::error(
                411,
                "a body with Transfer-Encoding is not supported: send it with Content-Length",
            ));
        }
    }
    if content_length > MAX_BODY {
        return Err(Response::error(
            413,
            format!("the body is larger than {MAX_BODY} bytes"),
        ));
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).map_err(limited)?;
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(Request {
        method: method.to_string(),
        path,
        body,
    })
}

/// Writes `response` and closes the exchange.
pub(crate) fn write_response(mut stream: impl Write, response: &Response) -> io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )?;
    stream.write_all(response.body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_a_body_is_read_to_its_content_length() {
        let raw =
            b"PUT /objects?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello, and more";
        let r = read_request(&raw[..]).unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/objects");
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn a_chunked_body_is_refused_with_the_reason() {
        let raw =
            b"POST /objects HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let e = read_request(&raw[..]).unwrap_err();
        assert_eq!(e.status, 411);
        assert!(e.body.contains("Content-Length"), "{}", e.body);
    }

    #[test]
    fn a_garbled_request_line_is_a_bad_request() {
        let e = read_request(&b"hello\r\n\r\n"[..]).unwrap_err();
        assert_eq!(e.status, 400);
    }
}
