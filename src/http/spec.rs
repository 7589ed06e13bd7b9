//! Finishing the OpenAPI document poem-openapi generates, so that every mainstream
//! generator takes it as it is, and the Swagger UI that serves it.
//!
//! One pass over the JSON, each rule tested below:
//! * **Absent is null.** Responses carry optional fields as `null` (never omitted), and
//!   requests accept `null` for them: every property not `required` is declared
//!   `nullable: true`. That is the one convention, for every type.
//! * **Plain references.** A documented field whose type is a schema of its own comes
//!   out as `allOf: [{$ref}, {description}]`, which several generators cannot read
//!   (openapi-python-client drops the model); it becomes the plain `$ref`.
//! * **One JSON media type.** `application/json; charset=utf-8` is declared as
//!   `application/json` (the response header keeps its charset).
//! * **Rate-limit headers.** Every response of an operation that declares 429 declares
//!   `RateLimit-Policy` and `RateLimit`.
//! * **Swagger's Authorize.** Operations declare `bearerAuth` (and those on an
//!   organization's data `apiKeyAuth` beside it), the schemes generated clients configure
//!   correctly. The OAuth2 password flow (`/v1/auth/token`, with the
//!   `scopes: {}` the format requires) is declared beside it for Swagger UI, whose
//!   page applies the token it obtains as the bearer token.

use serde_json::{Map, Value, json};

const JSON_UTF8: &str = "application/json; charset=utf-8";

/// The document as served and committed, from poem-openapi's output.
pub fn finish(raw: &str) -> String {
    let mut spec: Value = serde_json::from_str(raw).expect("poem-openapi emits valid JSON");
    finish_value(&mut spec);
    serde_json::to_string_pretty(&spec).expect("a JSON value serializes")
}

fn finish_value(spec: &mut Value) {
    if let Some(schemas) = spec
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for schema in schemas.values_mut() {
            finish_schema(schema);
        }
        // Bodies that refuse unknown fields (`deny_unknown_fields`) say so.
        if let Some(o) = schemas
            .get_mut("UpdateOrgSettings")
            .and_then(Value::as_object_mut)
        {
            o.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    if let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, ops) in paths.iter_mut() {
            let Some(ops) = ops.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                if path.starts_with("/v1/") {
                    add_consistency_header(method, op);
                }
                for content in [op.pointer_mut("/requestBody/content")]
                    .into_iter()
                    .flatten()
                {
                    normalize_media_types(content);
                }
                if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                    let limited = responses.contains_key("429");
                    for resp in responses.values_mut() {
                        if let Some(content) = resp.get_mut("content") {
                            normalize_media_types(content);
                        }
                        if limited {
                            add_rate_limit_headers(resp);
                        }
                    }
                }
                if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                    for p in params {
                        if let Some(schema) = p.get_mut("schema") {
                            finish_schema(schema);
                        }
                    }
                }
                if let Some(schema) =
                    op.pointer_mut("/requestBody/content/application~1json/schema")
                {
                    finish_schema(schema);
                }
                // A form takes exactly its fields (an unknown part is a 422), which
                // poem-openapi's schema type cannot say.
                if let Some(form) = op
                    .pointer_mut("/requestBody/content/multipart~1form-data/schema")
                    .and_then(Value::as_object_mut)
                {
                    form.insert("additionalProperties".into(), json!(false));
                }
            }
        }
    }
    let schemes = spec
        .as_object_mut()
        .expect("an object")
        .entry("components")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("components is an object")
        .entry("securitySchemes")
        .or_insert_with(|| json!({}));
    schemes["oauth2Password"] = json!({
        "type": "oauth2",
        "description": "For Swagger UI's Authorize dialog: sign in with your email (as \
            `username`) and password, leaving client id and secret empty. The token it gets \
            is applied as `bearerAuth`. Generated clients use `bearerAuth` directly.",
        "flows": {"password": {"tokenUrl": "/v1/auth/token", "scopes": {}}}
    });
}

/// Read-your-writes with read replicas (`crate::db::replicas`): a read takes the token
/// as an optional header; a write's success may answer one.
fn add_consistency_header(method: &str, op: &mut Value) {
    if method == "get" {
        let Some(op) = op.as_object_mut() else {
            return;
        };
        let params = op
            .entry("parameters")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("parameters is an array");
        params.push(json!({
            "name": "Palisade-Consistency",
            "in": "header",
            "required": false,
            "description": "The `Palisade-Consistency` token of your last write: the read then \
                sees it (it is served by a read replica only once the replica has replayed \
                it). Without it, with read replicas configured, a read may lag by up to \
                `REPLICA_MAX_LAG_MS`. Unreadable tokens send the read to the primary.",
            // Any text is valid: the server never refuses a read over its token.
            "schema": {"type": "string"}
        }));
        return;
    }
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    for (status, resp) in responses.iter_mut() {
        if !status.starts_with('2') {
            continue;
        }
        let Some(obj) = resp.as_object_mut() else {
            continue;
        };
        obj.entry("headers")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("headers is an object")
            .insert(
                "Palisade-Consistency".into(),
                json!({
                    "description": "With read replicas configured: this write's commit \
                        position. Send it as `Palisade-Consistency` on later reads to see \
                        the write.",
                    "required": false,
                    "schema": {"type": "string"}
                }),
            );
    }
}

/// The rate-limit headers (draft-ietf-httpapi-ratelimit-headers) on every response of a
/// rate-limited operation (one that declares 429). Not required: absent when the limit
/// is configured off.
fn add_rate_limit_headers(resp: &mut Value) {
    let Some(obj) = resp.as_object_mut() else {
        return;
    };
    let headers = obj
        .entry("headers")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("headers is an object");
    headers.insert(
        "RateLimit-Policy".into(),
        json!({
            "description": "The limit that applies: `\"<name>\";q=<requests>;w=<window seconds>`, \
                where name is `api_key`, `user` or `ip`.",
            "required": false,
            "schema": {"type": "string"}
        }),
    );
    headers.insert(
        "RateLimit".into(),
        json!({
            "description": "What is left of it: `\"<name>\";r=<requests remaining>;t=<seconds until \
                the window is full again>`.",
            "required": false,
            "schema": {"type": "string"}
        }),
    );
}

fn normalize_media_types(content: &mut Value) {
    let Some(map) = content.as_object_mut() else {
        return;
    };
    if let Some(v) = map.remove(JSON_UTF8) {
        map.entry("application/json").or_insert(v);
    }
}

/// A documented reference (`allOf` of one `$ref` plus annotations) as the bare `$ref`.
fn plain_reference(schema: &Value) -> Option<Value> {
    let obj = schema.as_object()?;
    let parts = obj.get("allOf")?.as_array()?;
    let reference = parts.iter().find(|p| p.get("$ref").is_some())?;
    let only_annotations = parts.iter().all(|p| {
        p.get("$ref").is_some()
            || p.as_object().is_some_and(|o| {
                o.keys().all(|k| {
                    matches!(
                        k.as_str(),
                        "description" | "title" | "readOnly" | "writeOnly"
                    )
                })
            })
    });
    let others_ok = obj.keys().all(|k| {
        matches!(
            k.as_str(),
            "allOf" | "description" | "title" | "readOnly" | "writeOnly"
        )
    });
    (only_annotations && others_ok && parts.iter().filter(|p| p.get("$ref").is_some()).count() == 1)
        .then(|| reference.clone())
}

fn finish_schema(schema: &mut Value) {
    if let Some(plain) = plain_reference(schema) {
        *schema = plain;
        return;
    }
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    // poem-openapi names integer widths (`uint32`); generators know only the bounds.
    if obj.get("type").and_then(Value::as_str) == Some("integer") {
        let format = obj.get("format").and_then(Value::as_str).map(str::to_owned);
        let (min, max) = crate::http::validate::integer_format_bounds(format.as_deref());
        for (key, bound) in [("minimum", min), ("maximum", max)] {
            if let Some(b) = bound
                && !obj.contains_key(key)
            {
                obj.insert(key.into(), json!(b as i64));
            }
        }
        let standard = match format.as_deref() {
            Some("uint8" | "uint16" | "int8" | "int16") => Some("int32"),
            Some("uint32" | "uint64") => Some("int64"),
            _ => None,
        };
        if let Some(f) = standard {
            obj.insert("format".into(), json!(f));
        }
    }
    let required: Vec<String> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
        for (name, prop) in props.iter_mut() {
            finish_schema(prop);
            if !required.contains(name) {
                make_nullable(prop);
            }
        }
    }
    if let Some(items) = obj.get_mut("items") {
        finish_schema(items);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(parts) = obj.get_mut(key).and_then(Value::as_array_mut) {
            for p in parts {
                finish_schema(p);
            }
        }
    }
}

fn make_nullable(prop: &mut Value) {
    match prop.as_object_mut() {
        // OpenAPI 3.0 ignores siblings of $ref: a nullable reference is an allOf.
        Some(obj) if obj.contains_key("$ref") => {
            let reference = std::mem::take(obj);
            let mut wrapped = Map::new();
            wrapped.insert("allOf".into(), json!([Value::Object(reference)]));
            wrapped.insert("nullable".into(), json!(true));
            *obj = wrapped;
        }
        Some(obj) => {
            obj.insert("nullable".into(), json!(true));
        }
        None => {}
    }
}

/// Swagger UI for `spec`, from poem-openapi's page for `raw` (same assets), with the
/// finished document and a response hook that applies the access token of a successful
/// sign-in, refresh or OAuth2 "Authorize" as the bearer token of every later call.
pub fn swagger_html(poem_html: &str, raw: &str, spec: &str) -> String {
    const HOOK: &str = r#"
    function palisadeApplyToken(res) {
        try {
            var path = new URL(res.url, window.location.href).pathname;
            if (res.ok && /\/v1\/auth\/(login|token|refresh)$/.test(path)) {
                var body = res.body || (typeof res.text === "string" ? JSON.parse(res.text) : null);
                if (body && body.access_token && window.ui) {
                    window.ui.preauthorizeApiKey("bearerAuth", body.access_token);
                }
            }
        } catch (e) {}
        return res;
    }
    window.ui = SwaggerUIBundle({
        persistAuthorization: true,
        responseInterceptor: palisadeApplyToken,"#;
    poem_html
        .replacen(raw, spec, 1)
        .replacen("SwaggerUIBundle({", HOOK.trim_start(), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(v: Value) -> Value {
        let mut v = v;
        finish_value(&mut v);
        v
    }

    #[test]
    fn optional_properties_become_nullable_and_required_ones_do_not() {
        let v = finished(json!({"components": {"schemas": {"P": {
            "type": "object", "required": ["id"],
            "properties": {"id": {"type": "string"}, "description": {"type": "string"},
                           "role": {"$ref": "#/components/schemas/Role"}}
        }}}}));
        let props = &v["components"]["schemas"]["P"]["properties"];
        assert_eq!(props["id"].get("nullable"), None);
        assert_eq!(props["description"]["nullable"], true);
        assert_eq!(
            props["role"],
            json!({"allOf": [{"$ref": "#/components/schemas/Role"}], "nullable": true})
        );
    }

    #[test]
    fn integer_widths_become_bounds() {
        let v = finished(json!({"components": {"schemas": {"Q": {
            "type": "object", "required": ["n"],
            "properties": {"n": {"type": "integer", "format": "uint32", "maximum": 100.0}}
        }}}}));
        assert_eq!(
            v["components"]["schemas"]["Q"]["properties"]["n"],
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": 100.0})
        );
    }

    #[test]
    fn documented_references_become_plain_references() {
        let v = finished(json!({"components": {"schemas": {"M": {
            "type": "object", "required": ["role"],
            "properties": {"role": {"allOf": [{"$ref": "#/components/schemas/Role"}, {"description": "The role."}]}}
        }}}}));
        assert_eq!(
            v["components"]["schemas"]["M"]["properties"]["role"],
            json!({"$ref": "#/components/schemas/Role"})
        );
    }

    #[test]
    fn media_types_and_the_oauth2_scheme() {
        let v = finished(
            json!({"paths": {"/x": {"get": {"responses": {"200": {"content": {
            "application/json; charset=utf-8": {"schema": {"type": "string"}}}}}}}}}),
        );
        assert!(
            v.pointer("/paths/~1x/get/responses/200/content/application~1json")
                .is_some()
        );
        assert_eq!(
            v.pointer("/components/securitySchemes/oauth2Password/flows/password/scopes"),
            Some(&json!({}))
        );
    }

    #[test]
    fn swagger_page_gets_the_finished_spec_and_the_token_hook() {
        let page = swagger_html(
            "let spec = RAW;\nSwaggerUIBundle({ dom_id: '#ui' })",
            "RAW",
            "{\"openapi\":1}",
        );
        assert!(page.contains("let spec = {\"openapi\":1};"));
        assert!(page.contains("preauthorizeApiKey(\"bearerAuth\""));
        assert!(page.contains("window.ui = SwaggerUIBundle({"));
    }
}
