//! Serving a stored object as a download: `ETag` (the object's SHA-256), conditional
//! `If-None-Match` (304), single `Range` requests (206, `If-Range`), 416 past the end,
//! and headers that keep an uploaded HTML or SVG file from running in the API's origin
//! (`Content-Disposition: attachment`, `nosniff`, a sandboxing CSP).
//!
//! `Range`, `If-Range` and `If-None-Match` are read from the request rather than declared
//! as parameters: they are HTTP's own, and every HTTP client library sends them.

use poem::{
    Body, IntoResponse, Response,
    http::{HeaderMap, HeaderValue, StatusCode, header},
};
use poem_openapi::{
    ApiResponse,
    registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef},
};

use super::problem::{ApiError, ProblemJson};
use crate::storage::ByteRange;

/// What a request for an object of `size` bytes gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Full,
    Partial(ByteRange),
    NotModified,
    Unsatisfiable,
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// One `bytes=` range of an object of `size` bytes: `Some(Ok)` a satisfiable range,
/// `Some(Err)` unsatisfiable, `None` no usable Range (absent, another unit, several
/// ranges or bad syntax: RFC 9110 lets the server answer the whole object).
fn parse_range(value: &str, size: u64) -> Option<Result<ByteRange, ()>> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // A suffix: the last N bytes.
        if !digits(last) {
            return None;
        }
        let n: u64 = last.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        let n = n.min(size);
        return Some(Ok(ByteRange {
            start: size - n,
            end: size - 1,
        }));
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return None;
    }
    let start: u64 = first.parse().ok()?;
    let end: Option<u64> = if last.is_empty() {
        None
    } else {
        Some(last.parse().ok()?)
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    if start >= size {
        return Some(Err(()));
    }
    Some(Ok(ByteRange {
        start,
        end: end.map_or(size - 1, |e| e.min(size - 1)),
    }))
}

/// Decides how to answer a GET of an object of `size` bytes tagged `etag` (quoted).
pub fn decide(headers: &HeaderMap, size: u64, etag: &str) -> Served {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if header(header::IF_NONE_MATCH).is_some_and(|list| etag_matches(list, etag)) {
        return Served::NotModified;
    }
    let Some(range) = header(header::RANGE) else {
        return Served::Full;
    };
    // If-Range: the range only applies to the representation the client has.
    if header(header::IF_RANGE).is_some_and(|v| v.trim() != etag) {
        return Served::Full;
    }
    match parse_range(range, size) {
        None => Served::Full,
        Some(Ok(r)) => Served::Partial(r),
        Some(Err(())) => Served::Unsatisfiable,
    }
}

/// A quoted strong entity tag from a SHA-256.
pub fn etag_of(sha256: &[u8]) -> String {
    format!("\"{}\"", hex::encode(sha256))
}

/// `attachment` with an ASCII fallback name and the exact UTF-8 one (RFC 6266 / 8187).
fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// An object download (200 or 206), a 304, or a 416.
pub struct Download {
    served: Served,
    size: u64,
    etag: String,
    content_type: String,
    filename: String,
    body: Body,
}

impl Download {
    /// `body` holds the bytes `served` names (nothing for 304 and 416).
    pub fn new(
        served: Served,
        size: u64,
        etag: String,
        content_type: &str,
        filename: &str,
        body: Body,
    ) -> Self {
        // Only a well-formed media type is echoed; anything else is served as bytes.
        let content_type = content_type
            .parse::<mime::Mime>()
            .ok()
            .filter(|_| content_type.len() <= 255)
            .map_or_else(|| "application/octet-stream".to_owned(), |m| m.to_string());
        Self {
            served,
            size,
            etag,
            content_type,
            filename: filename.to_owned(),
            body,
        }
    }
}

impl IntoResponse for Download {
    fn into_response(self) -> Response {
        let set = |resp: &mut Response, name, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                resp.headers_mut().insert(name, v);
            }
        };
        let (status, length) = match self.served {
            Served::Full => (StatusCode::OK, self.size),
            Served::Partial(r) => (StatusCode::PARTIAL_CONTENT, r.len()),
            Served::NotModified => {
                let mut resp = Response::builder()
                    .status(StatusCode::NOT_MODIFIED)
                    .finish();
                set(&mut resp, header::ETAG, &self.etag);
                return resp;
            }
            Served::Unsatisfiable => {
                let mut resp = ProblemJson::from(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!(
                        "the range starts past the end of the {}-byte object",
                        self.size
                    ),
                ))
                .into_response();
                set(
                    &mut resp,
                    header::CONTENT_RANGE,
                    &format!("bytes */{}", self.size),
                );
                return resp;
            }
        };
        let mut resp = Response::builder().status(status).body(self.body);
        set(&mut resp, header::CONTENT_TYPE, &self.content_type);
        set(&mut resp, header::CONTENT_LENGTH, &length.to_string());
        set(&mut resp, header::ETAG, &self.etag);
        set(&mut resp, header::ACCEPT_RANGES, "bytes");
        set(
            &mut resp,
            header::CONTENT_DISPOSITION,
            &content_disposition(&self.filename),
        );
        set(&mut resp, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(
            &mut resp,
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        );
        set(&mut resp, header::CACHE_CONTROL, "private, no-cache");
        if let Served::Partial(r) = self.served {
            set(
                &mut resp,
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{}", r.start, r.end, self.size),
            );
        }
        resp
    }
}

fn string_header(name: &str, description: &str, required: bool) -> MetaHeader {
    MetaHeader {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        required,
        deprecated: false,
        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
    }
}

fn bytes_content() -> Vec<MetaMediaType> {
    let binary = || {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("binary"),
            ..MetaSchema::new("string")
        }))
    };
    // Served with the type it was uploaded with: `*/*` says so to checkers;
    // `application/octet-stream` comes first for generators that take the first one.
    vec![
        MetaMediaType {
            content_type: "application/octet-stream",
            schema: binary(),
        },
        MetaMediaType {
            content_type: "*/*",
            schema: binary(),
        },
    ]
}

impl ApiResponse for Download {
    fn meta() -> MetaResponses {
        let common = || {
            vec![
                string_header(
                    "ETag",
                    "The object's SHA-256, quoted: send it as `If-None-Match` (304) or `If-Range`.",
                    true,
                ),
                string_header("Accept-Ranges", "`bytes`: single ranges are served.", true),
                string_header(
                    "Content-Disposition",
                    "`attachment`, with the uploaded file name.",
                    true,
                ),
            ]
        };
        let mut partial = common();
        partial.push(string_header(
            "Content-Range",
            "`bytes first-last/size`.",
            true,
        ));
        let problem = <ProblemJson as poem_openapi::payload::Payload>::schema_ref;
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "The whole object, with its uploaded `Content-Type`.",
                    status: Some(200),
                    status_range: None,
                    content: bytes_content(),
                    headers: common(),
                },
                MetaResponse {
                    description: "The requested byte range (`Range: bytes=first-last`, \
                                  `bytes=first-` or `bytes=-suffix`; one range per request).",
                    status: Some(206),
                    status_range: None,
                    content: bytes_content(),
                    headers: partial,
                },
                MetaResponse {
                    description: "`If-None-Match` named the current `ETag`.",
                    status: Some(304),
                    status_range: None,
                    content: vec![],
                    headers: vec![string_header("ETag", "The object's SHA-256, quoted.", true)],
                },
                MetaResponse {
                    description: "The range starts past the end (`range_not_satisfiable`); \
                                  `Content-Range: bytes */size` gives the size.",
                    status: Some(416),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: super::problem::PROBLEM_CONTENT_TYPE,
                        schema: problem(),
                    }],
                    headers: vec![string_header("Content-Range", "`bytes */size`.", true)],
                },
            ],
        }
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <ProblemJson as poem_openapi::payload::Payload>::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |s, e| Served::Partial(ByteRange { start: s, end: e });
        let tag = "\"abc\"";
        let d = |pairs: &[(&'static str, &'static str)]| decide(&headers(pairs), 100, tag);
        assert_eq!(d(&[]), Served::Full);
        assert_eq!(d(&[("range", "bytes=0-9")]), r(0, 9));
        assert_eq!(d(&[("range", "bytes=90-")]), r(90, 99));
        assert_eq!(d(&[("range", "bytes=90-500")]), r(90, 99));
        assert_eq!(d(&[("range", "bytes=-10")]), r(90, 99));
        assert_eq!(d(&[("range", "bytes=-1000")]), r(0, 99));
        assert_eq!(d(&[("range", "bytes=100-")]), Served::Unsatisfiable);
        assert_eq!(d(&[("range", "bytes=-0")]), Served::Unsatisfiable);
        // Not usable: the whole object.
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
        ] {
            assert_eq!(d(&[("range", ignored)]), Served::Full, "{ignored}");
        }
        assert_eq!(
            d(&[("if-none-match", "\"x\", \"abc\"")]),
            Served::NotModified
        );
        assert_eq!(d(&[("if-none-match", "W/\"abc\"")]), Served::NotModified);
        assert_eq!(d(&[("if-none-match", "\"x\"")]), Served::Full);
        assert_eq!(
            d(&[("range", "bytes=0-9"), ("if-range", "\"abc\"")]),
            r(0, 9)
        );
        assert_eq!(
            d(&[("range", "bytes=0-9"), ("if-range", "\"old\"")]),
            Served::Full
        );
    }

    #[test]
    fn file_names_are_quoted_safely() {
        assert_eq!(
            content_disposition("a \"b\".txt"),
            "attachment; filename=\"a _b_.txt\"; filename*=UTF-8''a%20%22b%22.txt"
        );
        assert_eq!(
            content_disposition("résumé.md"),
            "attachment; filename=\"r_sum_.md\"; filename*=UTF-8''r%C3%A9sum%C3%A9.md"
        );
    }
}
