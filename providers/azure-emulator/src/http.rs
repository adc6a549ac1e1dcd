//! Transport-neutral request/response values and the ARM/NRP error body shapes.
//!
//! Handlers work on these plain values (not hyper types) so they can run entirely under
//! the state lock without touching the network, and so the error formats live in one place.

use bytes::Bytes;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// A fully read HTTP request.
#[derive(Clone, Debug)]
pub(crate) struct Req {
    /// Upper-case method.
    pub method: String,
    /// Raw path, without the query.
    pub path: String,
    /// Raw query string (without `?`), empty if none.
    pub raw_query: String,
    /// Percent-decoded, non-empty path segments.
    pub segments: Vec<String>,
    /// Percent-decoded query pairs in order.
    pub query: Vec<(String, String)>,
    /// Headers with lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// The TCP peer.
    pub peer: SocketAddr,
}

impl Req {
    /// Builds a request from its parts, decoding the path and query.
    pub fn new(
        method: &str,
        path_and_query: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        peer: SocketAddr,
    ) -> Self {
        let (path, raw_query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_and_query.to_string(), String::new()),
        };
        let segments = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let query = raw_query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (percent_decode(k), percent_decode(v)),
                None => (percent_decode(kv), String::new()),
            })
            .collect();
        Self {
            method: method.to_ascii_uppercase(),
            path,
            raw_query,
            segments,
            query,
            headers,
            body,
            peer,
        }
    }

    /// First header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// First query value by case-insensitive name (ARM treats parameter names that way).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as lossy UTF-8, for the request log.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Scheme and authority the client used, for absolute URLs in LRO headers.
    pub fn base_url(&self) -> String {
        match self.header("host") {
            Some(h) if !h.is_empty() => format!("http://{h}"),
            _ => "http://127.0.0.1".to_string(),
        }
    }
}

/// A response to be written back.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// A JSON response.
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![(
                "content-type".to_string(),
                "application/json; charset=utf-8".to_string(),
            )],
            body: body.to_string().into_bytes(),
        }
    }

    /// A response without a body.
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds (or replaces) a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }
}

/// An error raised by ARM itself (auth, throttling, routing): `{"error":{"code","message"}}`.
pub(crate) fn arm_error(status: u16, code: &str, message: impl Into<String>) -> Resp {
    Resp::json(
        status,
        &json!({"error": {"code": code, "message": message.into()}}),
    )
}

/// An error raised by the Network resource provider: same envelope plus `details`, which
/// NRP always includes (often empty).
pub(crate) fn nrp_error(status: u16, code: &str, message: impl Into<String>) -> Resp {
    nrp_error_details(status, code, message, Vec::new())
}

/// An NRP error with `details` entries of `(code, message)`.
pub(crate) fn nrp_error_details(
    status: u16,
    code: &str,
    message: impl Into<String>,
    details: Vec<(String, String)>,
) -> Resp {
    let details: Vec<Value> = details
        .into_iter()
        .map(|(c, m)| json!({"code": c, "message": m}))
        .collect();
    Resp::json(
        status,
        &json!({"error": {"code": code, "message": message.into(), "details": details}}),
    )
}

/// NRP's request-format error: `InvalidRequestFormat` / "Cannot parse the request." with
/// the specific problems as details (shape seen in public deployment error reports).
pub(crate) fn invalid_format(detail_code: &str, detail_message: impl Into<String>) -> Resp {
    nrp_error_details(
        400,
        "InvalidRequestFormat",
        "Cannot parse the request.",
        vec![(detail_code.to_string(), detail_message.into())],
    )
}

/// The request body as JSON, or the request-format error ARM returns for unparseable bodies.
pub(crate) fn json_body(body: &[u8]) -> Result<serde_json::Value, Resp> {
    serde_json::from_slice(body).map_err(|e| {
        invalid_format(
            "InvalidJson",
            format!("The request body is not valid JSON: {e}."),
        )
    })
}

/// Decodes `%xx` escapes and `+` (query form encoding); invalid escapes are kept verbatim.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_and_path() {
        assert_eq!(
            percent_decode("https%3A%2F%2Fmanagement.azure.com%2F"),
            "https://management.azure.com/"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("100%"), "100%");
        let r = Req::new(
            "get",
            "/a/b%20c?api-version=2024-05-01&x",
            vec![],
            Bytes::new(),
            "127.0.0.1:1".parse().expect("addr"),
        );
        assert_eq!(r.segments, vec!["a", "b c"]);
        assert_eq!(r.query("API-VERSION"), Some("2024-05-01"));
        assert_eq!(r.query("x"), Some(""));
    }
}
