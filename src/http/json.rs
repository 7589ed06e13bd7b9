//! A JSON response payload written straight from `serde::Serialize`.
//!
//! `poem_openapi::payload::Json` serializes through an intermediate `serde_json::Value`
//! tree (one allocation per field and string, keys in a sorted map), which profiled as
//! the largest single cost of the list endpoint in the server. [`FastJson`] keeps the
//! same media type and schema (from the type's `poem_openapi::types::Type` impl) but
//! writes the bytes in one pass. Types that use it derive both `Object` and
//! `Serialize`, and a test holds the two encodings equal ([`assert_same_json`]).

use poem::{IntoResponse, Response};
use poem_openapi::{
    ApiResponse,
    payload::Payload,
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry},
    types::Type,
};
use serde::Serialize;

/// Response-only `application/json` payload; see the module docs.
pub struct FastJson<T>(pub T);

impl<T: Type> Payload for FastJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> IntoResponse for FastJson<T> {
    fn into_response(self) -> Response {
        // A page of 20 projects is ~5 KB: start big enough to rarely grow.
        let mut body = Vec::with_capacity(4096);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => Response::builder()
                .header(
                    poem::http::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                )
                .body(body),
            // Plain data cannot fail to serialize; poem::web::Json answers the same.
            Err(err) => Response::builder()
                .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                .body(err.to_string()),
        }
    }
}

/// One 200 response carrying payload `P`: the meta of a payload used as a whole response.
pub fn ok_meta<P: Payload>() -> MetaResponses {
    MetaResponses {
        responses: vec![MetaResponse {
            description: "",
            status: Some(200),
            status_range: None,
            content: vec![MetaMediaType {
                content_type: P::CONTENT_TYPE,
                schema: P::schema_ref(),
            }],
            headers: vec![],
        }],
    }
}

impl<T: Type + Serialize + Send> ApiResponse for FastJson<T> {
    fn meta() -> MetaResponses {
        ok_meta::<Self>()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// Timestamps exactly as `poem_openapi` writes `DateTime<Utc>` (`to_rfc3339()`:
/// `2026-01-01T00:00:00.123+00:00`, with 0, 3, 6 or 9 fraction digits), formatted by
/// hand into a stack buffer: chrono's formatter went through `core::fmt` and was half
/// the cost of encoding a page. Years outside 0..=9999 and leap seconds take chrono's
/// path.
pub fn rfc3339<S: serde::Serializer>(
    at: &chrono::DateTime<chrono::Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (at.year(), at.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return serializer.serialize_str(&at.to_rfc3339());
    }
    // 2026-01-01T00:00:00.123456789+00:00
    let mut buf = *b"0000-00-00T00:00:00.000000000+00:00";
    write_digits(&mut buf[0..4], year as u32);
    write_digits(&mut buf[5..7], at.month());
    write_digits(&mut buf[8..10], at.day());
    write_digits(&mut buf[11..13], at.hour());
    write_digits(&mut buf[14..16], at.minute());
    write_digits(&mut buf[17..19], at.second());
    let digits = match nanos {
        0 => 0,
        n if n % 1_000_000 == 0 => 3,
        n if n % 1_000 == 0 => 6,
        _ => 9,
    };
    let mut len = 19;
    if digits > 0 {
        write_digits(&mut buf[20..29], nanos);
        len = 20 + digits;
    }
    buf.copy_within(29..35, len);
    len += 6;
    let text = std::str::from_utf8(&buf[..len]).expect("ASCII digits and separators");
    serializer.serialize_str(text)
}

/// [`rfc3339`] for an optional timestamp (`null` when absent).
pub fn rfc3339_opt<S: serde::Serializer>(
    at: &Option<chrono::DateTime<chrono::Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// `value` as zero-padded decimal filling `out`.
fn write_digits(out: &mut [u8], mut value: u32) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Panics unless `value` encodes the same through serde as through `poem_openapi`.
#[cfg(test)]
pub fn assert_same_json<T: Serialize + poem_openapi::types::ToJSON>(value: &T) {
    let serde = serde_json::to_value(value).expect("serializes");
    assert_eq!(Some(serde), value.to_json());
}
