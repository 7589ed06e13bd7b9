//! Conversation events: a batch is stored as one NDJSON segment object (one event per
//! line, compact JSON), indexed by a `conversation_segments` row with its sequence range,
//! size and SHA-256. Sequence numbers are not in the object: event `first_seq + i` is
//! line `i`, so the object can be written before PostgreSQL allocates the range.

use std::borrow::Cow;

use bytes::Bytes;
use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde::Serialize;
use serde_json::{Value, value::RawValue};
use sha2::{Digest, Sha256};

/// Largest event, in bytes of compact JSON.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Most events in one append.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// Largest append body (the route's own body limit).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// One event: any JSON object, kept as its compact text (never re-encoded on read).
#[derive(Debug, Clone)]
pub struct Event {
    raw: Box<RawValue>,
    /// What its `usage` member adds to the conversation.
    pub usage: Usage,
}

impl Event {
    pub fn as_str(&self) -> &str {
        self.raw.get()
    }

    /// A stored event read back (its usage was counted when it was appended).
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Self {
            raw,
            usage: Usage::default(),
        }
    }

    /// The usage the event carries in `usage` (`cost`, `prompt_tokens`,
    /// `completion_tokens`), zero when absent.
    pub fn usage(value: &serde_json::Map<String, Value>) -> Usage {
        let usage = value.get("usage").and_then(Value::as_object);
        let num = |k: &str| usage.and_then(|u| u.get(k));
        Usage {
            // Negative or non-numeric amounts count as zero: counters only grow.
            cost: num("cost").and_then(Value::as_f64).unwrap_or(0.0).max(0.0),
            prompt_tokens: num("prompt_tokens")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .max(0),
            completion_tokens: num("completion_tokens")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .max(0),
        }
    }
}

/// Counters an event adds to its conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cost: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Self) {
        self.cost += o.cost;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl Type for Event {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "ConversationEvent".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(
                "An event: any JSON object (at most 256 KB). A `usage` member with `cost`, \
                 `prompt_tokens` and `completion_tokens` adds to the conversation's counters.",
            ),
            additional_properties: Some(Box::new(MetaSchemaRef::Inline(Box::new(MetaSchema::ANY)))),
            ..MetaSchema::new("object")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ParseFromJSON for Event {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::Object(map)) => {
                let usage = Event::usage(&map);
                let v = Value::Object(map);
                // The size cap is checked by the handler (a 422 naming the event).
                let text = serde_json::to_string(&v).map_err(ParseError::custom)?;
                RawValue::from_string(text)
                    .map(|raw| Event { raw, usage })
                    .map_err(ParseError::custom)
            }
            _ => Err(ParseError::custom("an event is a JSON object")),
        }
    }
}

impl ToJSON for Event {
    fn to_json(&self) -> Option<Value> {
        serde_json::from_str(self.as_str()).ok()
    }
}

/// A batch encoded as its segment object.
pub struct Segment {
    pub body: Bytes,
    pub sha256: [u8; 32],
    pub count: i64,
}

/// The NDJSON object for `events` (compact JSON has no raw newlines).
pub fn encode(events: &[Event]) -> Segment {
    let mut body = Vec::with_capacity(events.iter().map(|e| e.as_str().len() + 1).sum());
    for e in events {
        body.extend_from_slice(e.as_str().as_bytes());
        body.push(b'\n');
    }
    let sha256 = Sha256::digest(&body).into();
    Segment {
        body: body.into(),
        sha256,
        count: events.len() as i64,
    }
}

/// Why a stored segment cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment {key}: SHA-256 mismatch (stored {expected}, read {actual}, {bytes} bytes)")]
    Checksum {
        key: String,
        expected: String,
        actual: String,
        bytes: usize,
    },
    #[error("segment {key}: {lines} lines for {expected} events")]
    Lines {
        key: String,
        lines: usize,
        expected: i64,
    },
}

/// The events of a segment read back, checked against its index row.
pub fn decode(
    key: &str,
    body: &Bytes,
    sha256: &[u8],
    count: i64,
) -> Result<Vec<Bytes>, SegmentError> {
    let actual: [u8; 32] = Sha256::digest(body).into();
    if actual.as_slice() != sha256 {
        return Err(SegmentError::Checksum {
            key: key.to_owned(),
            expected: hex::encode(sha256),
            actual: hex::encode(actual),
            bytes: body.len(),
        });
    }
    let mut lines = Vec::with_capacity(count as usize);
    let mut start = 0;
    for (i, b) in body.iter().enumerate() {
        if *b == b'\n' {
            lines.push(body.slice(start..i));
            start = i + 1;
        }
    }
    if lines.len() as i64 != count || start != body.len() {
        return Err(SegmentError::Lines {
            key: key.to_owned(),
            lines: lines.len(),
            expected: count,
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(v: Value) -> Event {
        Event::parse_from_json(Some(v)).unwrap()
    }

    #[test]
    fn segments_round_trip_and_detect_corruption() {
        let events = vec![
            event(serde_json::json!({"a": "line\nbreak", "n": 1})),
            event(serde_json::json!({"usage": {"cost": 0.5, "prompt_tokens": 3}})),
        ];
        let seg = encode(&events);
        let lines = decode("k", &seg.body, &seg.sha256, 2).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(&lines[0][..], events[0].as_str().as_bytes());
        let mut bad = seg.body.to_vec();
        bad[3] ^= 1;
        assert!(matches!(
            decode("k", &Bytes::from(bad), &seg.sha256, 2),
            Err(SegmentError::Checksum { .. })
        ));
        assert!(matches!(
            decode("k", &seg.body, &seg.sha256, 3),
            Err(SegmentError::Lines { .. })
        ));
    }

    #[test]
    fn events_are_objects_within_the_size_cap() {
        assert!(Event::parse_from_json(Some(serde_json::json!([1]))).is_err());
        assert!(Event::parse_from_json(Some(serde_json::json!("x"))).is_err());
        let big = "x".repeat(MAX_EVENT_BYTES);
        let e = Event::parse_from_json(Some(serde_json::json!({ "b": big }))).unwrap();
        assert!(e.as_str().len() > MAX_EVENT_BYTES);
        let v = serde_json::json!({"usage": {"cost": 0.25, "prompt_tokens": 10, "completion_tokens": 5}});
        let u = Event::usage(v.as_object().unwrap());
        assert_eq!(
            u,
            Usage {
                cost: 0.25,
                prompt_tokens: 10,
                completion_tokens: 5
            }
        );
    }
}
