//! Request validation: what the OpenAPI document declares is exactly what is enforced.
//!
//! * [`ValidJson<T>`] takes a JSON body, checks it against `T`'s schema -- the very schema
//!   the spec shows: types (a boolean is not a string), required fields, lengths, patterns,
//!   formats, enums, bounds -- and answers 422 `validation_failed` listing every invalid
//!   field, before `T` is built. A new request type is covered by declaring its schema.
//! * Constrained strings ([`Name`], [`Description`], [`Email`], ...) carry their limits in
//!   their schema, once, for every field that uses them.
//! * [`Validator`] collects the checks no schema can express (a password on the
//!   common-password list) in the same 422 shape.

use std::{
    any::TypeId,
    borrow::Cow,
    collections::HashMap,
    sync::{Arc, LazyLock, RwLock},
};

use poem::{Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    error::{ContentTypeError, ParseRequestPayloadError},
    registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use regex::Regex;
use serde_json::Value;

use super::problem::{ApiError, FieldError};

/// Whitespace (Unicode White_Space, what `str::trim` removes) and control characters, as
/// a regex class body that Rust, ECMAScript and Python read the same way.
macro_rules! blank_or_control {
    () => {
        r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}

/// One line of text: no control characters, and not blank.
pub const LINE_PATTERN: &str = concat!(
    r"^[^\x00-\x1f\x7f-\x9f]*[^",
    blank_or_control!(),
    r"][^\x00-\x1f\x7f-\x9f]*$"
);
/// No control characters at all (an identifier or credential on one line; blank allowed
/// where the minimum length allows it).
pub const NO_CONTROL_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";
/// Text that may span lines: no control characters but tab, line feed and carriage return.
pub const MULTILINE_PATTERN: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";
/// Text that may span lines, not blank: no control characters but tab, line feed and
/// carriage return, and at least one character that is not whitespace.
pub const TEXT_PATTERN: &str = concat!(
    r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^",
    blank_or_control!(),
    r"][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
);
/// name@example.com: a local part of 1-64 characters, a domain of dot-separated labels,
/// no spaces or control characters. Declared as this pattern alone, not `format: email`:
/// validators read that format differently (RFC 5322 or 5321, ASCII or not), and a
/// declared rule must be the one enforced, exactly.
pub const EMAIL_PATTERN: &str = concat!(
    r"^[^@",
    blank_or_control!(),
    r"]{1,64}@[^@.",
    blank_or_control!(),
    r"]+(\.[^@.",
    blank_or_control!(),
    r"]+)+$"
);
/// Lowercase letters, digits and inner dashes (the `orgs_slug_format` constraint).
pub const SLUG_PATTERN: &str = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// A secret's name (the `secrets_name_format` constraint).
pub const SECRET_NAME_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$";
/// The tokens Palisade emails (base64url).
pub const TOKEN_PATTERN: &str = r"^[A-Za-z0-9_-]+$";

struct StringRule {
    min: usize,
    max: usize,
    pattern: Option<&'static str>,
    format: Option<&'static str>,
    write_only: bool,
}

impl StringRule {
    fn schema(&self, description: &'static str) -> MetaSchema {
        MetaSchema {
            ty: "string",
            format: self.format,
            description: Some(description),
            min_length: Some(self.min),
            max_length: Some(self.max),
            pattern: self.pattern.map(str::to_owned),
            write_only: self.write_only,
            ..MetaSchema::ANY
        }
    }
}

/// Declares a request string type whose schema carries its limits. Its value is trimmed
/// of surrounding whitespace when `trim` (lengths and pattern apply to the value as sent).
macro_rules! constrained_string {
    ($(#[doc = $doc:literal])+ $name:ident { min: $min:expr, max: $max:expr, pattern: $pattern:expr,
      format: $format:expr, write_only: $wo:expr, trim: $trim:expr }) => {
        $(#[doc = $doc])+
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            const RULE: StringRule = StringRule {
                min: $min,
                max: $max,
                pattern: $pattern,
                format: $format,
                write_only: $wo,
            };
            const DESCRIPTION: &'static str = concat!($($doc, "\n"),+);

            /// The fewest and most characters this type takes.
            pub const MIN_CHARS: usize = $min;
            pub const MAX_CHARS: usize = $max;

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }

            /// True when `text` has this type's length and shape (as a request would be
            /// checked), for values that arrive outside a JSON body.
            pub fn accepts(text: &str) -> bool {
                check_string(text, &Self::RULE).is_none()
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new(
                    Self::RULE.schema(Self::DESCRIPTION.trim()),
                ))
            }

            fn as_raw_value(&self) -> Option<&Self> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
                Box::new(std::iter::once(self))
            }
        }

        impl ParseFromJSON for $name {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                match value {
                    Some(Value::String(s)) => {
                        let errors = check_string(&s, &Self::RULE);
                        if let Some(e) = errors {
                            return Err(ParseError::custom(e));
                        }
                        Ok(Self(if $trim { s.trim().to_owned() } else { s }))
                    }
                    other => Err(ParseError::expected_type(other.unwrap_or_default())),
                }
            }
        }

        impl ToJSON for $name {
            fn to_json(&self) -> Option<Value> {
                Some(Value::String(self.0.clone()))
            }
        }
    };
}

constrained_string! {
    /// 1-100 characters on one line, not blank; surrounding spaces are trimmed.
    Name { min: 1, max: 100, pattern: Some(LINE_PATTERN), format: None, write_only: false, trim: true }
}
constrained_string! {
    /// Up to 2000 characters; line breaks and tabs allowed, other control characters not.
    Description { min: 0, max: 2000, pattern: Some(MULTILINE_PATTERN), format: None, write_only: false, trim: true }
}
constrained_string! {
    /// 1-200 characters on one line, not blank; surrounding spaces are trimmed.
    LongLine { min: 1, max: 200, pattern: Some(LINE_PATTERN), format: None, write_only: false, trim: true }
}
constrained_string! {
    /// 1-50 characters on one line, not blank; surrounding spaces are trimmed.
    Label { min: 1, max: 50, pattern: Some(LINE_PATTERN), format: None, write_only: false, trim: true }
}
constrained_string! {
    /// An email address like name@example.com (at most 254 characters); stored lowercased.
    Email { min: 3, max: 254, pattern: Some(EMAIL_PATTERN), format: None, write_only: false, trim: false }
}
constrained_string! {
    /// 1-63 lowercase letters, digits and inner dashes, unique across all organizations.
    Slug { min: 1, max: 63, pattern: Some(SLUG_PATTERN), format: None, write_only: false, trim: false }
}
constrained_string! {
    /// A new password: 10-128 characters, any Unicode, not one of the most common passwords.
    NewPassword { min: 10, max: 128, pattern: None, format: Some("password"), write_only: true, trim: false }
}
constrained_string! {
    /// The account's password.
    Password { min: 1, max: 1024, pattern: None, format: Some("password"), write_only: true, trim: false }
}
constrained_string! {
    /// A token from an emailed link, or a refresh token (base64url).
    Token { min: 1, max: 256, pattern: Some(TOKEN_PATTERN), format: None, write_only: true, trim: false }
}

constrained_string! {
    /// 1-32000 characters, not blank; line breaks and tabs allowed, other control characters not.
    Question { min: 1, max: 32000, pattern: Some(TEXT_PATTERN), format: None, write_only: false, trim: false }
}

constrained_string! {
    /// An idempotency key: 1-128 characters on one line, not blank.
    EventId { min: 1, max: 128, pattern: Some(LINE_PATTERN), format: None, write_only: false, trim: false }
}
constrained_string! {
    /// Up to 256 characters, no control characters.
    Subject { min: 0, max: 256, pattern: Some(NO_CONTROL_PATTERN), format: None, write_only: false, trim: false }
}
constrained_string! {
    /// A meter's key: a lowercase letter, then up to 63 lowercase letters, digits, `_`, `.`, `-`.
    MeterKey { min: 1, max: 64, pattern: Some(r"^[a-z][a-z0-9_.\-]{0,63}$"), format: None, write_only: false, trim: false }
}

constrained_string! {
    /// A secret's name: a letter or `_`, then up to 127 letters, digits or `_` (like an
    /// environment variable).
    SecretName { min: 1, max: 128, pattern: Some(SECRET_NAME_PATTERN), format: None, write_only: false, trim: false }
}
constrained_string! {
    /// A secret's value: 1-65536 characters (and at most 65,536 bytes of UTF-8). Write-only:
    /// it is stored sealed and never returned.
    SecretValue { min: 1, max: 65536, pattern: None, format: Some("password"), write_only: true, trim: false }
}
constrained_string! {
    /// A credential (an API key): 1-4096 characters on one line, no control characters
    /// (a NUL or line break in a key is a paste error, and its last four characters are
    /// shown back). Write-only: stored sealed, never returned; reads show only whether it is
    /// set and its last four characters.
    Credential { min: 1, max: 4096, pattern: Some(NO_CONTROL_PATTERN), format: Some("password"), write_only: true, trim: false }
}
constrained_string! {
    /// Up to 500 characters; line breaks and tabs allowed, other control characters not.
    ShortDescription { min: 0, max: 500, pattern: Some(MULTILINE_PATTERN), format: None, write_only: false, trim: true }
}

impl Email {
    /// The address as stored: lowercased.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A JSON request body checked against its schema before it is parsed: see the module docs.
pub struct ValidJson<T>(pub T);

impl<T> std::ops::Deref for ValidJson<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The request body failed its schema: 422 `validation_failed` with every field.
#[derive(Debug, thiserror::Error)]
#[error("the request body does not match its schema")]
pub struct SchemaViolation(pub Vec<FieldError>);

impl poem::error::ResponseError for SchemaViolation {
    fn status(&self) -> poem::http::StatusCode {
        poem::http::StatusCode::UNPROCESSABLE_ENTITY
    }
}

fn is_json(content_type: &str) -> bool {
    content_type.parse::<mime::Mime>().is_ok_and(|m| {
        m.type_() == "application"
            && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
    })
}

/// 415 unless the request's `Content-Type` is one `accepts` takes.
pub fn require_content_type(request: &Request, accepts: fn(&str) -> bool) -> poem::Result<()> {
    match request.content_type() {
        Some(ct) if accepts(ct) => Ok(()),
        Some(ct) => Err(ContentTypeError::NotSupported {
            content_type: ct.to_owned(),
        }
        .into()),
        None => Err(ContentTypeError::ExpectContentType.into()),
    }
}

impl<'a, T: ParseFromJSON + ToJSON + 'static> ApiExtractor<'a> for ValidJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        json_request::<T>()
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        param_opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let RawJson(bytes, _) = RawJson::<T>::from_request(request, body, param_opts).await?;
        parse_checked(&bytes).map(ValidJson)
    }
}

/// A JSON body as `T`, checked against `T`'s schema first: what [`ValidJson`] does with
/// the bytes it read (400 for a body that is not JSON, 422 listing every field that breaks
/// the schema).
pub fn parse_checked<T: ParseFromJSON + Type + 'static>(bytes: &[u8]) -> poem::Result<T> {
    if bytes.is_empty() {
        return Err(ParseRequestPayloadError {
            reason: "the request body is empty; send a JSON object".into(),
        }
        .into());
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ParseRequestPayloadError {
        reason: format!("not valid JSON ({e})"),
    })?;
    let errors = check_against_schema::<T>(&value);
    if !errors.is_empty() {
        return Err(SchemaViolation(errors).into());
    }
    T::parse_from_json(Some(value)).map_err(|e| {
        ParseRequestPayloadError {
            reason: e.into_message(),
        }
        .into()
    })
}

/// A required `application/json` request body of `T`'s schema.
fn json_request<T: Type>() -> Option<MetaRequest> {
    Some(MetaRequest {
        description: None,
        content: vec![MetaMediaType {
            content_type: "application/json",
            schema: T::schema_ref(),
        }],
        required: true,
    })
}

/// `T`'s schemas, registered once per type.
fn registry_of<T: Type + 'static>() -> Arc<Registry> {
    static CACHE: LazyLock<RwLock<HashMap<TypeId, Arc<Registry>>>> =
        LazyLock::new(Default::default);
    let id = TypeId::of::<T>();
    if let Some(r) = CACHE.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return Arc::clone(r);
    }
    let mut registry = Registry::new();
    T::register(&mut registry);
    let registry = Arc::new(registry);
    CACHE
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, Arc::clone(&registry));
    registry
}

/// Every way `value` breaks `T`'s schema.
pub fn check_against_schema<T: Type + 'static>(value: &Value) -> Vec<FieldError> {
    let registry = registry_of::<T>();
    let mut errors = Vec::new();
    check(value, &T::schema_ref(), &registry, &Path::Body, &mut errors);
    errors
}

fn field_error(path: &str, code: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: if path.is_empty() {
            "(body)".into()
        } else {
            path.to_owned()
        },
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Where in the body a value sits, rendered only for an error: a valid 1,000-event batch
/// has 6,000 fields, and writing each one's path out ahead was a tenth of the server's CPU
/// when ingesting (perf).
#[derive(Clone, Copy)]
enum Path<'a> {
    Body,
    Field(&'a Path<'a>, &'a str),
    Item(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Body => Ok(()),
            Path::Field(Path::Body, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Item(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// [`field_error`] at a [`Path`] (the body itself is `(body)`).
fn error_at(path: &Path<'_>, code: &str, message: impl Into<String>) -> FieldError {
    field_error(&path.to_string(), code, message)
}

fn resolve<'r>(schema: &'r MetaSchemaRef, registry: &'r Registry) -> Option<&'r MetaSchema> {
    match schema {
        MetaSchemaRef::Inline(s) => Some(s),
        MetaSchemaRef::Reference(name) => registry.schemas.get(name),
    }
}

/// The compiled pattern, compiled once per process. Returned by reference, never cloned: a
/// clone of a `Regex` gets a fresh search cache, and building that cache for every string
/// checked was half the server's CPU when ingesting 1,000-event batches (perf). Patterns
/// come from the types' schemas, a fixed set, so the compiled ones are kept for good.
fn regex(pattern: &str) -> Option<&'static Regex> {
    static CACHE: LazyLock<RwLock<HashMap<String, &'static Regex>>> =
        LazyLock::new(Default::default);
    if let Some(r) = CACHE.read().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return Some(r);
    }
    let compiled: &'static Regex = Box::leak(Box::new(Regex::new(pattern).ok()?));
    CACHE
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(pattern.to_owned())
        .or_insert(compiled);
    Some(compiled)
}

/// The length of `text` in characters as far as bounds `min` and `max` can tell: a text
/// has no more characters than bytes, so one within `max` bytes and either empty, or
/// non-empty against a `min` of at most 1, or shorter than `min` in bytes, is judged by its
/// byte length without counting (the common case: every id and name of a valid batch).
fn char_len(text: &str, min: usize, max: usize) -> usize {
    if text.len() <= max && (min <= 1 || text.len() < min) {
        text.len()
    } else {
        text.chars().count()
    }
}

/// The error code and message for a text outside `min..=max` characters, if it is.
fn length_error(text: &str, min: usize, max: usize) -> Option<(&'static str, String)> {
    let len = char_len(text, min, max);
    if len < min {
        Some(if min == 1 {
            ("required", "must not be empty".into())
        } else {
            ("too_short", format!("must be at least {min} characters"))
        })
    } else if len > max {
        Some(("too_long", format!("must be at most {max} characters")))
    } else {
        None
    }
}

/// The message for a string that breaks `rule`, if it does.
fn check_string(s: &str, rule: &StringRule) -> Option<String> {
    if let Some((_, message)) = length_error(s, rule.min, rule.max) {
        return Some(message);
    }
    if let Some(p) = rule.pattern
        && !regex(p).is_some_and(|r| r.is_match(s))
    {
        return Some("has characters or a shape this field does not allow".into());
    }
    None
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check(
    value: &Value,
    schema: &MetaSchemaRef,
    registry: &Registry,
    path: &Path<'_>,
    errors: &mut Vec<FieldError>,
) {
    let Some(s) = resolve(schema, registry) else {
        return;
    };
    for part in &s.all_of {
        check(value, part, registry, path, errors);
    }
    if value.is_null() {
        if !s.nullable && !s.ty.is_empty() {
            errors.push(error_at(
                path,
                "invalid_type",
                format!("must be {}, not null", expected(s)),
            ));
        }
        return;
    }
    match s.ty {
        "object" => {
            let Some(map) = value.as_object() else {
                errors.push(error_at(
                    path,
                    "invalid_type",
                    format!("must be an object, not {}", type_name(value)),
                ));
                return;
            };
            // In declared order, so errors read like the schema.
            for (name, prop) in &s.properties {
                let required = s.required.contains(name);
                match map.get(*name) {
                    None if required => errors.push(error_at(
                        &Path::Field(path, name),
                        "required",
                        "is required",
                    )),
                    None => {}
                    // An optional field may be null (the spec declares it nullable).
                    Some(v) if v.is_null() && !required => {}
                    Some(v) => check(v, prop, registry, &Path::Field(path, name), errors),
                }
            }
        }
        "string" => {
            let Some(text) = value.as_str() else {
                errors.push(error_at(
                    path,
                    "invalid_type",
                    format!("must be a string, not {}", type_name(value)),
                ));
                return;
            };
            let (min, max) = (
                s.min_length.unwrap_or(0),
                s.max_length.unwrap_or(usize::MAX),
            );
            if let Some((code, message)) = length_error(text, min, max) {
                errors.push(error_at(path, code, message));
            } else if let Some(p) = &s.pattern
                && !regex(p).is_some_and(|r| r.is_match(text))
            {
                let message = match s.format {
                    _ if p == EMAIL_PATTERN => "must be an email address like name@example.com",
                    _ if p == LINE_PATTERN => {
                        "must be one line of text, not blank, without control characters"
                    }
                    _ if p == MULTILINE_PATTERN => {
                        "must not contain control characters other than line breaks and tabs"
                    }
                    _ if p == SLUG_PATTERN => {
                        "must be lowercase letters, digits or dashes, not starting or ending with a dash"
                    }
                    _ if p == SECRET_NAME_PATTERN => {
                        "must be a letter or `_`, then up to 127 letters, digits or `_`"
                    }
                    _ => "does not have the expected form",
                };
                errors.push(error_at(path, "invalid_format", message));
            } else if let Some(f) = s.format {
                let ok = match f {
                    "uuid" => text.parse::<uuid::Uuid>().is_ok(),
                    "date-time" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                    _ => true,
                };
                if !ok {
                    errors.push(error_at(
                        path,
                        "invalid_format",
                        format!("must be a valid {f}"),
                    ));
                }
            }
            if !s.enum_items.is_empty() && !s.enum_items.iter().any(|e| e.as_str() == Some(text)) {
                let allowed: Vec<String> = s
                    .enum_items
                    .iter()
                    .filter_map(|e| e.as_str().map(|v| format!("`{v}`")))
                    .collect();
                errors.push(error_at(
                    path,
                    "invalid_value",
                    format!("must be one of {}", allowed.join(", ")),
                ));
            }
        }
        "integer" | "number" => {
            let Some(n) = value.as_f64().filter(|_| value.is_number()) else {
                errors.push(error_at(
                    path,
                    "invalid_type",
                    format!("must be {}, not {}", expected(s), type_name(value)),
                ));
                return;
            };
            if s.ty == "integer" && !(value.is_i64() || value.is_u64()) {
                errors.push(error_at(path, "invalid_type", "must be a whole number"));
                return;
            }
            let (format_min, format_max) = integer_format_bounds(s.format);
            let (min, max) = (s.minimum.or(format_min), s.maximum.or(format_max));
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                errors.push(error_at(
                    path,
                    "out_of_range",
                    format!(
                        "must be between {} and {}",
                        min.map_or("-inf".into(), |m| m.to_string()),
                        max.map_or("inf".into(), |m| m.to_string())
                    ),
                ));
            }
        }
        "boolean" if !value.is_boolean() => {
            errors.push(error_at(
                path,
                "invalid_type",
                format!("must be a boolean, not {}", type_name(value)),
            ));
        }
        "array" => {
            let Some(items) = value.as_array() else {
                errors.push(error_at(
                    path,
                    "invalid_type",
                    format!("must be an array, not {}", type_name(value)),
                ));
                return;
            };
            if s.min_items.is_some_and(|m| items.len() < m)
                || s.max_items.is_some_and(|m| items.len() > m)
            {
                errors.push(error_at(
                    path,
                    "invalid_length",
                    "has too few or too many items",
                ));
            }
            if let Some(item_schema) = &s.items {
                for (i, item) in items.iter().enumerate() {
                    check(item, item_schema, registry, &Path::Item(path, i), errors);
                }
            }
        }
        _ => {}
    }
}

/// The range an integer `format` (as poem-openapi names Rust's integer types) implies;
/// the finished spec declares it as minimum/maximum (`super::spec`).
pub fn integer_format_bounds(format: Option<&str>) -> (Option<f64>, Option<f64>) {
    match format {
        Some("uint8") => (Some(0.0), Some(u8::MAX as f64)),
        Some("uint16") => (Some(0.0), Some(u16::MAX as f64)),
        Some("uint32") => (Some(0.0), Some(u32::MAX as f64)),
        Some("uint64") => (Some(0.0), Some(u64::MAX as f64)),
        Some("int8") => (Some(i8::MIN as f64), Some(i8::MAX as f64)),
        Some("int16") => (Some(i16::MIN as f64), Some(i16::MAX as f64)),
        Some("int32") => (Some(i32::MIN as f64), Some(i32::MAX as f64)),
        _ => (None, None),
    }
}

fn expected(s: &MetaSchema) -> &'static str {
    match s.ty {
        "object" => "an object",
        "string" => "a string",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "a boolean",
        "array" => "an array",
        _ => "a value",
    }
}

/// True when a key or string anywhere in `value` holds U+0000, which PostgreSQL cannot
/// store in `jsonb` (or `text`): JSON allows it, so no schema of free-form JSON rules it out.
pub fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => entries_have_nul(map),
        _ => false,
    }
}

/// [`json_has_nul`] for the entries of a JSON object (a `serde_json::Map`, or the
/// `BTreeMap` a free-form object field is read into).
pub fn entries_have_nul<'a>(
    entries: impl IntoIterator<Item = (&'a String, &'a serde_json::Value)>,
) -> bool {
    entries
        .into_iter()
        .any(|(k, v)| k.contains('\0') || json_has_nul(v))
}

/// Checks a schema cannot express, reported like schema violations (422 with every field).
#[derive(Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: &str, code: &str, message: impl Into<String>) {
        self.errors.push(field_error(field, code, message));
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }
}

/// A JSON body taken as its raw bytes, unparsed: for a body whose bytes themselves are
/// checked before it is read (a signed webhook: the signature covers the exact bytes).
/// The spec shows `T`'s schema; the handler parses after verifying.
pub struct RawJson<T>(pub bytes::Bytes, std::marker::PhantomData<T>);

impl<'a, T: Type + 'static> ApiExtractor<'a> for RawJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        json_request::<T>()
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        require_content_type(request, is_json)?;
        let bytes = body.take()?.into_bytes().await?;
        Ok(Self(bytes, std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::Object;
    use serde_json::json;

    use super::*;

    #[derive(Object, Debug)]
    struct Sample {
        name: Name,
        description: Option<Description>,
        email: Email,
        count: Option<u32>,
        flag: Option<bool>,
    }

    fn errors(value: Value) -> Vec<(String, String)> {
        check_against_schema::<Sample>(&value)
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect()
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.into(), b.into())
    }

    #[derive(Object, Debug)]
    struct Batch {
        samples: Vec<Sample>,
    }

    #[test]
    fn an_error_names_its_field_through_objects_and_arrays() {
        let found: Vec<(String, String)> = check_against_schema::<Batch>(&json!({"samples": [
            {"name": "ok", "email": "a@example.com"},
            {"name": "", "email": "a@example.com", "count": -1},
            {"name": "ok"},
        ]}))
        .into_iter()
        .map(|e| (e.field, e.code))
        .collect();
        assert_eq!(
            found,
            [
                pair("samples[1].name", "required"),
                pair("samples[1].count", "out_of_range"),
                pair("samples[2].email", "required"),
            ]
        );
        let at_body: Vec<String> = check_against_schema::<Batch>(&json!([]))
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(at_body, ["(body)"]);
    }

    #[test]
    fn lengths_are_counted_in_characters_where_bytes_cannot_tell() {
        // Within the bounds by bytes: the byte length stands in.
        assert_eq!(char_len("abc", 1, 10), 3);
        assert_eq!(char_len("", 1, 10), 0);
        assert_eq!(char_len("ab", 3, 10), 2);
        // "é" is two bytes: over max in bytes but not in characters, and at min in bytes
        // but not in characters -- counted.
        assert_eq!(char_len("ééé", 1, 3), 3);
        assert_eq!(char_len("éé", 4, 10), 2);
        let rule = StringRule {
            min: 3,
            max: 3,
            pattern: None,
            format: None,
            write_only: false,
        };
        assert_eq!(check_string("ééé", &rule), None);
        assert!(check_string("éé", &rule).is_some());
        assert!(check_string("éééé", &rule).is_some());
    }

    #[test]
    fn accepts_valid_bodies_and_nulls_for_optional_fields() {
        assert!(errors(json!({"name": "Apollo", "email": "a@example.com"})).is_empty());
        assert!(errors(json!({"name": " Apollo ", "description": null, "email": "A@B.CO", "count": 3, "flag": true})).is_empty());
        assert!(
            errors(
                json!({"name": "x", "description": "line\nbreak\ttab", "email": "ü@ex.ample.org"})
            )
            .is_empty()
        );
        assert!(errors(json!({"name": "x", "email": "Ada@Example.COM"})).is_empty());
        assert_eq!(
            errors(json!({"name": "x", "email": " ada@example.com"})),
            [pair("email", "invalid_format")]
        );
    }

    #[test]
    fn reports_every_bad_field_with_a_code() {
        assert_eq!(
            errors(
                json!({"name": false, "description": "bad\u{0}nul", "email": "nope", "count": -1, "flag": "yes"})
            ),
            [
                pair("name", "invalid_type"),
                pair("description", "invalid_format"),
                pair("email", "invalid_format"),
                pair("count", "out_of_range"),
                pair("flag", "invalid_type"),
            ]
        );
        assert_eq!(
            errors(json!({})),
            [pair("name", "required"), pair("email", "required")]
        );
        assert_eq!(
            errors(json!({"name": null, "email": "a@b.co"})),
            [pair("name", "invalid_type")]
        );
        assert_eq!(errors(json!([1])), [pair("(body)", "invalid_type")]);
        assert_eq!(
            errors(json!({"name": 7, "email": 1234567890})),
            [pair("name", "invalid_type"), pair("email", "invalid_type")]
        );
        assert_eq!(
            errors(json!({"name": "x", "email": "a@b.co", "count": 1.5})),
            [pair("count", "invalid_type")]
        );
    }

    #[test]
    fn strings_follow_their_declared_rules() {
        let long = "x".repeat(101);
        assert_eq!(
            errors(json!({"name": long, "email": "a@b.co"})),
            [pair("name", "too_long")]
        );
        assert_eq!(
            errors(json!({"name": "   ", "email": "a@b.co"})),
            [pair("name", "invalid_format")]
        );
        assert_eq!(
            errors(json!({"name": "", "email": "a@b.co"})),
            [pair("name", "required")]
        );
        assert_eq!(
            errors(json!({"name": "a\nb", "email": "a@b.co"})),
            [pair("name", "invalid_format")]
        );
        assert_eq!(
            errors(json!({"name": "\u{2003}", "email": "a@b.co"})),
            [pair("name", "invalid_format")]
        );
        for bad in [
            "a@b",
            "a@.b.co",
            "a@b.co.",
            "a b@c.co",
            "@b.co",
            "a@@b.co",
            "a@b..co",
            "a\u{0}@b.co",
        ] {
            assert_eq!(
                errors(json!({"name": "x", "email": bad})),
                [pair("email", "invalid_format")],
                "{bad:?}"
            );
        }
        let local = "l".repeat(65);
        assert_eq!(
            errors(json!({"name": "x", "email": format!("{local}@b.co")})),
            [pair("email", "invalid_format")]
        );
    }

    #[test]
    fn patterns_compile_and_agree_with_their_meaning() {
        for p in [
            LINE_PATTERN,
            MULTILINE_PATTERN,
            EMAIL_PATTERN,
            SLUG_PATTERN,
            TOKEN_PATTERN,
        ] {
            assert!(Regex::new(p).is_ok(), "{p}");
        }
        let slug = Regex::new(SLUG_PATTERN).unwrap();
        assert!(
            slug.is_match("acme-inc")
                && slug.is_match("a")
                && !slug.is_match("-a")
                && !slug.is_match("A")
        );
        assert!(!slug.is_match(&"a".repeat(64)) && slug.is_match(&"a".repeat(63)));
    }

    #[test]
    fn constrained_types_parse_strictly_and_trim() {
        let n = Name::parse_from_json(Some(json!("  Ada  "))).unwrap();
        assert_eq!(n.as_str(), "Ada");
        assert!(Name::parse_from_json(Some(json!(true))).is_err());
        assert!(Name::parse_from_json(Some(json!("a\u{7}"))).is_err());
        assert_eq!(
            Email::parse_from_json(Some(json!("Ada@Example.com")))
                .unwrap()
                .normalized(),
            "ada@example.com"
        );
    }
}
