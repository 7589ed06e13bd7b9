//! The body of `POST /v1/orgs/{org_id}/usage-events`, read for the ingest route.
//!
//! A batch is up to 1,000 events and is the server's heaviest body. [`ValidJson`](crate::http::validate::ValidJson) reads a
//! body three times -- into a `serde_json::Value` tree, against the schema, then into the
//! typed structs (which check each constrained string again) -- and for a batch that was
//! three quarters of the server's instructions (callgrind: 19.4 million per 1,000-event
//! batch). [`EventBatch`] first reads the body once, straight into the events, with checks
//! that accept only what the schema accepts: ids and subjects of printable ASCII within
//! their types' lengths, the meter key checked by `MeterKey` itself, a timestamp in strict
//! RFC 3339, a value within bounds. Anything else
//! -- a body that is not that shape, or merely unusual (a non-ASCII id, a duplicated field)
//! -- is read again by the schema path, which accepts it or answers its 422 exactly as for
//! every other route. So the fast reading never accepts what the schema refuses, and it
//! yields the same events (tests below compare the two on the same bodies).

use std::{borrow::Cow, fmt};

use chrono::{DateTime, Utc};
use poem::{Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    registry::{MetaRequest, Registry},
    types::Type,
};
use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, Visitor},
};
use serde_json::{Map, Value};

use super::usage::{MAX_BATCH, UsageEvent, UsageEventBatch};
use crate::http::validate::{EventId, MeterKey, RawJson, Subject, parse_checked};

/// One event of a batch, as the ingest route uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub meter: String,
    pub value: Option<f64>,
    pub subject: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub properties: Option<Map<String, Value>>,
}

impl From<UsageEvent> for Event {
    fn from(e: UsageEvent) -> Self {
        Self {
            id: e.id.into_inner(),
            meter: e.meter.into_inner(),
            value: e.value,
            subject: e.subject.map(|s| s.into_inner()),
            timestamp: e.timestamp,
            properties: e.properties.map(|p| p.into_iter().collect()),
        }
    }
}

/// A usage-event batch request body: the schema of [`UsageEventBatch`] in the OpenAPI
/// document, read as the module docs say.
pub struct EventBatch(pub Vec<Event>);

impl<'a> ApiExtractor<'a> for EventBatch {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        UsageEventBatch::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        RawJson::<UsageEventBatch>::request_meta()
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        param_opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let raw = RawJson::<UsageEventBatch>::from_request(request, body, param_opts).await?;
        read(&raw.0).map(Self)
    }
}

/// The events of a batch body, or the schema path's 400 / 422.
fn read(bytes: &[u8]) -> poem::Result<Vec<Event>> {
    if let Some(events) = read_fast(bytes) {
        return Ok(events);
    }
    let batch: UsageEventBatch = parse_checked(bytes)?;
    Ok(batch.events.into_iter().map(Event::from).collect())
}

/// A batch as the fast reading takes it. The `Deserialize` impls below are written out
/// rather than derived: a derived one also takes a struct written as a JSON array
/// (`[["e1", "tokens", ...]]`, fields by position), which the schema refuses.
struct WireBatch<'a> {
    events: Vec<WireEvent<'a>>,
}

struct WireEvent<'a> {
    id: Cow<'a, str>,
    meter: Cow<'a, str>,
    value: Option<f64>,
    subject: Option<Cow<'a, str>>,
    timestamp: Cow<'a, str>,
    properties: Option<Map<String, Value>>,
}

/// A JSON string, borrowed from the body when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Events,
    Id,
    Meter,
    Value,
    Subject,
    Timestamp,
    Properties,
    #[serde(other)]
    Other,
}

/// Stores a field's value, refusing a second one (the schema path would keep the last).
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(name));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for WireBatch<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireBatch<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a batch object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut events = None;
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Events => once(&mut events, map.next_value()?, "events")?,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(WireBatch {
                    events: events.ok_or_else(|| de::Error::missing_field("events"))?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for WireEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireEvent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut id, mut meter, mut timestamp) = (None, None, None);
                let (mut value, mut subject, mut properties) = (None, None, None);
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Id => once(&mut id, map.next_value::<Text>()?.0, "id")?,
                        Field::Meter => once(&mut meter, map.next_value::<Text>()?.0, "meter")?,
                        Field::Value => {
                            once(&mut value, map.next_value::<Option<f64>>()?, "value")?
                        }
                        Field::Subject => once(
                            &mut subject,
                            map.next_value::<Option<Text>>()?.map(|t| t.0),
                            "subject",
                        )?,
                        Field::Timestamp => {
                            once(&mut timestamp, map.next_value::<Text>()?.0, "timestamp")?
                        }
                        Field::Properties => {
                            once(&mut properties, map.next_value()?, "properties")?
                        }
                        Field::Events | Field::Other => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(WireEvent {
                    id: id.ok_or_else(|| de::Error::missing_field("id"))?,
                    meter: meter.ok_or_else(|| de::Error::missing_field("meter"))?,
                    value: value.flatten(),
                    subject: subject.flatten(),
                    timestamp: timestamp.ok_or_else(|| de::Error::missing_field("timestamp"))?,
                    properties: properties.flatten(),
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// The events when the body is a batch the schema surely accepts, else `None`.
fn read_fast(bytes: &[u8]) -> Option<Vec<Event>> {
    let batch: WireBatch<'_> = serde_json::from_slice(bytes).ok()?;
    if batch.events.is_empty() || batch.events.len() > MAX_BATCH {
        return None;
    }
    // The meter key is checked by `MeterKey` itself, once per run of events naming the same
    // meter (a batch names one or a few).
    let mut meter_checked: Option<Cow<'_, str>> = None;
    let mut events = Vec::with_capacity(batch.events.len());
    for e in batch.events {
        if meter_checked.as_deref() != Some(&*e.meter) {
            if !MeterKey::accepts(&e.meter) {
                return None;
            }
            meter_checked = Some(e.meter.clone());
        }
        let ok = plain_text(&e.id, EventId::MIN_CHARS, EventId::MAX_CHARS)
            && e.id.bytes().any(|b| b != b' ')
            && e.value.is_none_or(|v| (-1e15..=1e15).contains(&v))
            && e.subject
                .as_deref()
                .is_none_or(|s| plain_text(s, Subject::MIN_CHARS, Subject::MAX_CHARS));
        if !ok {
            return None;
        }
        events.push(Event {
            id: e.id.into_owned(),
            meter: e.meter.into_owned(),
            value: e.value,
            subject: e.subject.map(Cow::into_owned),
            timestamp: timestamp(&e.timestamp)?,
            properties: e.properties,
        });
    }
    Some(events)
}

/// Printable ASCII (space to `~`), `min` to `max` bytes: within the schema's "no control
/// characters" rule (`NO_CONTROL_PATTERN`) and the type's length bounds whatever the text
/// (ASCII has as many characters as bytes). With a character besides spaces, also within
/// the one-line rule (`LINE_PATTERN`).
fn plain_text(text: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.len()) && text.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A timestamp the schema's `date-time` check (strict RFC 3339) accepts, in UTC.
fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(overrides: Value) -> Value {
        let mut e = json!({
            "id": "evt-1", "meter": "tokens", "value": 12.5, "subject": "customer 7",
            "timestamp": "2026-12-01T10:00:00Z",
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() && k.starts_with('-') {
                e.as_object_mut().unwrap().remove(&k[1..]);
            } else {
                e[k] = v.clone();
            }
        }
        e
    }

    fn body(events: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "events": events })).unwrap()
    }

    /// Both readings of one body: the fast one's events (if it took the body), and the
    /// schema path's (or its status).
    fn both(bytes: &[u8]) -> (Option<Vec<Event>>, Result<Vec<Event>, u16>) {
        let fast = read_fast(bytes);
        let slow = parse_checked::<UsageEventBatch>(bytes)
            .map(|b| b.events.into_iter().map(Event::from).collect())
            .map_err(|e| e.status().as_u16());
        (fast, slow)
    }

    #[test]
    fn the_fast_reading_takes_common_batches_and_yields_what_the_schema_path_yields() {
        let bodies = [
            body(vec![event(json!({}))]),
            body(vec![event(json!({"-value": null, "-subject": null}))]),
            body(vec![event(json!({"value": null, "subject": null, "properties": null}))]),
            body(vec![event(json!({"value": 3, "properties": {"a": 1.25, "b": "x", "c": [1, {"d": null}]}}))]),
            body(vec![event(json!({"value": -1e15})), event(json!({"value": 1e15, "id": "e2"}))]),
            body(vec![event(json!({})), event(json!({"id": "e2", "meter": "bytes"})), event(json!({"id": "e3"}))]),
            body(vec![event(json!({"timestamp": "2026-12-01T10:00:00.123456+02:00"}))]),
            body(vec![event(json!({"timestamp": "2026-12-01t10:00:00z"}))]),
            body(vec![event(json!({"timestamp": "2026-12-01 10:00:00-00:30"}))]),
            body(vec![event(json!({"id": "x".repeat(128), "subject": "s".repeat(256), "meter": format!("m{}", "._-9".repeat(15))}))]),
            body(vec![event(json!({"id": " a ", "subject": "", "extra": {"ignored": true}}))]),
            // 1,000 events, the largest batch.
            body((0..1000).map(|i| event(json!({"id": format!("e{i}")}))).collect()),
            // Escapes in strings (owned, not borrowed).
            br#"{"events":[{"id":"a\/b\"c","meter":"tokens","subject":"\u0041","timestamp":"2026-12-01T10:00:00Z"}],"other":1}"#.to_vec(),
        ];
        for b in &bodies {
            let (fast, slow) = both(b);
            let fast = fast.unwrap_or_else(|| {
                panic!("the fast reading refused {}", String::from_utf8_lossy(b))
            });
            assert_eq!(Ok(fast), slow, "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn whatever_the_fast_reading_refuses_goes_to_the_schema_path_and_never_the_other_way() {
        // (body, the schema path's answer: accepted, or this status)
        let cases: Vec<(Vec<u8>, Result<(), u16>)> = vec![
            (body(vec![]), Err(422)),
            (body((0..1001).map(|i| event(json!({"id": format!("e{i}")}))).collect()), Err(422)),
            (body(vec![event(json!({"id": ""}))]), Err(422)),
            (body(vec![event(json!({"id": "   "}))]), Err(422)),
            (body(vec![event(json!({"id": "x".repeat(129)}))]), Err(422)),
            (body(vec![event(json!({"id": "a\nb"}))]), Err(422)),
            (body(vec![event(json!({"id": "a\u{85}b"}))]), Err(422)),
            // Not ASCII but one line: the schema accepts it; the fast reading leaves it.
            (body(vec![event(json!({"id": "événement-1"}))]), Ok(())),
            (body(vec![event(json!({"subject": "Zoë"}))]), Ok(())),
            (body(vec![event(json!({"subject": "a\tb"}))]), Err(422)),
            (body(vec![event(json!({"subject": "s".repeat(257)}))]), Err(422)),
            (body(vec![event(json!({"meter": "Tokens"}))]), Err(422)),
            // The meter is checked again whenever it changes within a batch.
            (body(vec![event(json!({})), event(json!({"id": "e2", "meter": "Tokens"}))]), Err(422)),
            (body(vec![event(json!({})), event(json!({"id": "e2", "meter": "bytes"})), event(json!({"id": "e3", "meter": "-x"}))]), Err(422)),
            (body(vec![event(json!({"meter": "9tokens"}))]), Err(422)),
            (body(vec![event(json!({"meter": format!("m{}", "x".repeat(64))}))]), Err(422)),
            (body(vec![event(json!({"value": 1e15 + 2.0}))]), Err(422)),
            (body(vec![event(json!({"value": "5"}))]), Err(422)),
            (body(vec![event(json!({"timestamp": "2026-12-01T10:00:00"}))]), Err(422)),
            (body(vec![event(json!({"timestamp": "2026-02-30T10:00:00Z"}))]), Err(422)),
            (body(vec![event(json!({"timestamp": null}))]), Err(422)),
            (body(vec![event(json!({"-id": null}))]), Err(422)),
            (body(vec![event(json!({"properties": [1]}))]), Err(422)),
            (body(vec![json!("not an event")]), Err(422)),
            // A struct written as an array (which derived serde impls take): not an object.
            (br#"[[{"id":"e1","meter":"tokens","timestamp":"2026-12-01T10:00:00Z"}]]"#.to_vec(), Err(422)),
            (br#"{"events":[["e1","tokens",5,null,"2026-12-01T10:00:00Z",null]]}"#.to_vec(), Err(422)),
            (br#"{"events":{"0":{"id":"e1","meter":"tokens","timestamp":"2026-12-01T10:00:00Z"}}}"#.to_vec(), Err(422)),
            (br#"{"events":[{"id":"e1","meter":"tokens","timestamp":"2026-12-01T10:00:00Z","properties":{"a":1},"properties":null}]}"#.to_vec(), Ok(())),
            (br#"{"events":[{"id":"a","id":"b","meter":"tokens","timestamp":"2026-12-01T10:00:00Z"}]}"#.to_vec(), Ok(())),
            (br#"{"events":[{"id":"a","meter":"tokens","value":1e400,"timestamp":"2026-12-01T10:00:00Z"}]}"#.to_vec(), Err(400)),
            (b"{\"events\": [".to_vec(), Err(400)),
            (b"".to_vec(), Err(400)),
        ];
        for (b, expected) in &cases {
            let (fast, slow) = both(b);
            let text = String::from_utf8_lossy(b);
            assert!(fast.is_none(), "the fast reading took {text}");
            assert_eq!(
                slow.as_ref().map(|_| ()).map_err(|s| *s),
                *expected,
                "{text}"
            );
            // And `read` answers as the schema path does.
            assert_eq!(
                read(b).map(|_| ()).map_err(|e| e.status().as_u16()),
                *expected,
                "{text}"
            );
        }
    }
}
