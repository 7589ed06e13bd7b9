//! Organization settings and members' LLM keys (issue 15 §1), through the API, against
//! real PostgreSQL: who reads and changes them, validation that stores nothing, and
//! secret settings that are sealed, shown only as hints, and open server-side.

use serde_json::{Value, json};
use uuid::Uuid;

use palisade::http::middleware::HttpLimits;

use crate::{
    fixtures::team,
    helpers::{Signup, TestApp, spawn_app, spawn_app_with},
    secrets::{create_key, open_as},
};

fn settings_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/settings")
}

async fn get_settings(app: &TestApp, org: Uuid, token: &str) -> Value {
    app.get(&settings_path(org), token)
        .await
        .assert_status(200)
        .clone()
}

#[tokio::test]
async fn every_member_and_key_reads_settings_and_only_signed_in_admins_change_them() {
    let app = spawn_app().await;
    let t = team(&app, "Settings").await;
    let org = t.org_id;

    let initial = get_settings(&app, org, &t.viewer.token).await;
    assert_eq!(initial["org_id"], org.to_string());
    assert_eq!(initial["confirmation_mode"], false);
    assert_eq!(initial["enable_default_condenser"], true);
    assert_eq!(initial["search_language"], "simple");
    assert_eq!(initial["llm_base_url"], Value::Null);
    assert_eq!(initial["billing_margin"], 0.0);
    for name in ["llm_api_key", "search_api_key", "sandbox_api_key"] {
        assert_eq!(
            initial[name],
            json!({"set": false, "last4": null}),
            "{name}"
        );
    }
    for (role, who) in t.by_role() {
        let body = get_settings(&app, org, &who.token).await;
        assert_eq!(body, initial, "{role} reads the same settings");
    }

    // Members and viewers may not change anything, a secret setting included.
    for who in [&t.member, &t.viewer] {
        app.patch(&settings_path(org), &who.token, json!({"agent": "Nope"}))
            .await
            .assert_problem(403, "forbidden");
        app.patch(
            &settings_path(org),
            &who.token,
            json!({"llm_api_key": "sk-member-should-not-store"}),
        )
        .await
        .assert_problem(403, "forbidden");
    }

    // An API key (even an admin one) reads, but never changes settings.
    let key = create_key(&app, &t.owner, org, json!({"name": "ci", "role": "admin"})).await;
    assert_eq!(get_settings(&app, org, &key).await, initial);
    app.patch(&settings_path(org), &key, json!({"llm_model": "gpt-x"}))
        .await
        .assert_problem(403, "api_key_not_allowed");
    app.patch(
        &settings_path(org),
        &key,
        json!({"llm_api_key": "sk-from-a-key"}),
    )
    .await
    .assert_problem(403, "api_key_not_allowed");
    assert_eq!(get_settings(&app, org, &t.owner.token).await, initial);

    // An admin changes them all at once.
    let change = json!({
        "agent": "CodeActAgent",
        "max_iterations": 250,
        "security_analyzer": "invariant",
        "confirmation_mode": true,
        "llm_model": "anthropic/claude",
        "llm_base_url": "https://llm.example.com/v1",
        "llm_input_price_per_mtok": 3.0,
        "llm_output_price_per_mtok": 15.5,
        "mcp_config": {"servers": [{"name": "fs", "command": "mcp-fs"}]},
        "max_budget_per_task": 2.5,
        "conversation_expiration": 3600,
        "enable_default_condenser": false,
        "billing_margin": 0.2,
        "search_language": "english",
        "llm_api_key": "sk-org-key-ABCD1234",
        "search_api_key": "srch-xy",
    });
    let updated = app
        .patch(&settings_path(org), &t.admin.token, change.clone())
        .await
        .assert_status(200)
        .clone();
    for (field, value) in change.as_object().unwrap() {
        if field.ends_with("_api_key") {
            continue;
        }
        assert_eq!(&updated[field], value, "{field}");
    }
    assert_eq!(
        updated["llm_api_key"],
        json!({"set": true, "last4": "1234"})
    );
    assert_eq!(
        updated["search_api_key"],
        json!({"set": true, "last4": "h-xy"})
    );
    assert_eq!(
        updated["sandbox_api_key"],
        json!({"set": false, "last4": null})
    );
    assert!(!updated.to_string().contains("sk-org-key"));
    assert_eq!(get_settings(&app, org, &t.member.token).await, updated);

    // The key is sealed where the assistant will look for it, and opens to its value.
    let opened = open_as(&app, &t.member, org, None, "setting", "llm_api_key").await;
    assert_eq!(opened, Ok(Some("sk-org-key-ABCD1234".to_owned())));

    // Only a secret field: still a change by an admin; null deletes, resets clear.
    let again = app
        .patch(
            &settings_path(org),
            &t.owner.token,
            json!({"search_api_key": null, "llm_base_url": null, "max_iterations": null,
                   "sandbox_api_key": "sbx-9876"}),
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(
        again["search_api_key"],
        json!({"set": false, "last4": null})
    );
    assert_eq!(
        again["sandbox_api_key"],
        json!({"set": true, "last4": "9876"})
    );
    assert_eq!(again["llm_base_url"], Value::Null);
    assert_eq!(again["max_iterations"], Value::Null);
    assert_eq!(again["agent"], "CodeActAgent", "absent fields stay");
    assert_eq!(
        open_as(&app, &t.member, org, None, "setting", "search_api_key").await,
        Ok(None)
    );

    // Another org's settings do not exist for a stranger.
    let stranger = app.signup("Stranger").await;
    app.get(&settings_path(org), &stranger.token)
        .await
        .assert_problem(404, "not_found");
    app.patch(&settings_path(org), &stranger.token, json!({"agent": "x"}))
        .await
        .assert_problem(404, "not_found");
    let other_key = create_key(&app, &stranger, stranger.org_id, json!({"name": "k"})).await;
    app.get(&settings_path(org), &other_key)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn invalid_settings_are_refused_and_store_nothing() {
    // A body limit above the setting's 64 KiB, so the setting's own limit is what answers.
    let limits = HttpLimits {
        max_body_bytes: 256 * 1024,
        ..crate::helpers::limits()
    };
    let app = spawn_app_with(crate::helpers::settings(), limits).await;
    let owner = app.signup("Valid").await;
    let org = owner.org_id;
    let before = get_settings(&app, org, &owner.token).await;
    let big = "x".repeat(70_000);
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"agent": "ok", "not_a_setting": 1}), 400, ""),
        (
            json!({"llm_base_url": "ftp://example.com/x"}),
            422,
            "llm_base_url",
        ),
        (
            json!({"llm_base_url": "https://user:pw@example.com"}),
            422,
            "llm_base_url",
        ),
        (
            json!({"llm_base_url": "https://example.com/?k=1"}),
            422,
            "llm_base_url",
        ),
        (json!({"llm_base_url": "http://"}), 422, "llm_base_url"),
        (
            json!({"llm_base_url": "not a url at all"}),
            422,
            "llm_base_url",
        ),
        (json!({"max_iterations": 0}), 422, "max_iterations"),
        (json!({"max_iterations": 10001}), 422, "max_iterations"),
        (
            json!({"conversation_expiration": 59}),
            422,
            "conversation_expiration",
        ),
        (json!({"billing_margin": 10.5}), 422, "billing_margin"),
        (json!({"billing_margin": -0.1}), 422, "billing_margin"),
        (
            json!({"llm_input_price_per_mtok": 10001}),
            422,
            "llm_input_price_per_mtok",
        ),
        (
            json!({"max_budget_per_task": 0}),
            422,
            "max_budget_per_task",
        ),
        (
            json!({"security_analyzer": "magic"}),
            422,
            "security_analyzer",
        ),
        (
            json!({"search_language": "klingon"}),
            422,
            "search_language",
        ),
        (json!({"mcp_config": [1, 2]}), 422, "mcp_config"),
        (json!({"mcp_config": "servers"}), 422, "mcp_config"),
        // JSON allows U+0000; PostgreSQL's jsonb cannot store it (schemathesis found it as a
        // 422 with no field).
        (
            json!({"mcp_config": {"servers": [{"name": "a\u{0}b"}]}}),
            422,
            "mcp_config",
        ),
        (json!({"mcp_config": {"k\u{0}": 1}}), 422, "mcp_config"),
        (json!({"llm_api_key": ""}), 422, "llm_api_key"),
        (json!({"llm_api_key": "k".repeat(4097)}), 422, "llm_api_key"),
        (json!({"agent": "   "}), 422, "agent"),
        // Valid fields alongside an invalid one: nothing of it is stored.
        (
            json!({"agent": "Stored?", "llm_api_key": "sk-not-stored", "max_iterations": -1}),
            422,
            "max_iterations",
        ),
    ];
    for (body, status, field) in cases {
        let resp = app
            .patch(&settings_path(org), &owner.token, body.clone())
            .await;
        let code = if status == 400 {
            "invalid_body"
        } else {
            "validation_failed"
        };
        resp.assert_problem(status, code);
        if !field.is_empty() {
            let fields: Vec<&str> = resp.body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert_eq!(fields, vec![field], "{body}");
        } else {
            assert!(
                resp.body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("not_a_setting")
            );
        }
    }
    // Larger than the 64 KiB the setting allows: the field's own 422.
    let resp = app
        .patch(
            &settings_path(org),
            &owner.token,
            json!({"mcp_config": {"blob": big}}),
        )
        .await;
    resp.assert_problem(422, "validation_failed");
    assert_eq!(resp.body["errors"][0]["field"], "mcp_config");
    // Just over 64 KiB once serialized.
    let mut config = serde_json::Map::new();
    for i in 0..70 {
        config.insert(format!("k{i:03}"), json!("y".repeat(935)));
    }
    let body = json!({"mcp_config": config});
    assert!(serde_json::to_vec(&body["mcp_config"]).unwrap().len() > 65_536);
    let resp = app.patch(&settings_path(org), &owner.token, body).await;
    resp.assert_problem(422, "validation_failed");
    assert_eq!(resp.body["errors"][0]["field"], "mcp_config");

    assert_eq!(get_settings(&app, org, &owner.token).await, before);
    let su = app.sql_superuser().await;
    let sealed: i64 = su
        .query_one(
            "select count(*) from app.secrets where org_id = $1",
            &[&org],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sealed, 0, "no secret stored by a refused request");
}

async fn put_llm_key(
    app: &TestApp,
    who: &Signup,
    org: Uuid,
    key: &str,
) -> crate::helpers::TestResponse {
    app.request(
        reqwest::Method::PUT,
        &format!("/v1/orgs/{org}/members/me/llm-key"),
        Some(&who.token),
        Some(json!({"api_key": key})),
    )
    .await
}

#[tokio::test]
async fn members_keep_their_own_llm_key_that_no_one_else_reaches() {
    let app = spawn_app().await;
    let t = team(&app, "Keys").await;
    let org = t.org_id;
    let path = format!("/v1/orgs/{org}/members/me/llm-key");

    // A viewer has one too (any role); it shows as a hint only.
    let resp = put_llm_key(&app, &t.viewer, org, "sk-viewer-0042").await;
    assert_eq!(
        resp.assert_status(200),
        &json!({"set": true, "last4": "0042"})
    );
    // A control character (a NUL, a line break) is a paste error, refused with the field
    // named; the last four characters it would have shown are never stored. (Before the
    // schema said so, a NUL in the hint reached PostgreSQL: a 422 naming no field.)
    for bad in ["sk-ab\u{0}cd", "sk-abcd\n", "sk-\u{85}abcd"] {
        let resp = put_llm_key(&app, &t.member, org, bad).await;
        resp.assert_problem(422, "validation_failed");
        assert_eq!(resp.body["errors"][0]["field"], "api_key", "{bad:?}");
        let resp = app
            .request(
                reqwest::Method::PATCH,
                &format!("/v1/orgs/{org}/settings"),
                Some(&t.owner.token),
                Some(json!({"llm_api_key": bad})),
            )
            .await;
        resp.assert_problem(422, "validation_failed");
        assert_eq!(resp.body["errors"][0]["field"], "llm_api_key", "{bad:?}");
    }
    let resp = put_llm_key(&app, &t.member, org, "sk-member-1111").await;
    assert_eq!(
        resp.assert_status(200),
        &json!({"set": true, "last4": "1111"})
    );
    // Replacing it.
    put_llm_key(&app, &t.member, org, "sk-member-2222")
        .await
        .assert_status(200);

    assert_eq!(
        open_as(
            &app,
            &t.member,
            org,
            Some(t.member.user_id),
            "setting",
            "llm_api_key"
        )
        .await,
        Ok(Some("sk-member-2222".to_owned()))
    );
    // The owner cannot open the member's key: their row does not exist for the owner.
    assert_eq!(
        open_as(
            &app,
            &t.owner,
            org,
            Some(t.member.user_id),
            "setting",
            "llm_api_key"
        )
        .await,
        Ok(None)
    );
    // Nor is the org's key set by it.
    let s = get_settings(&app, org, &t.owner.token).await;
    assert_eq!(s["llm_api_key"]["set"], false);

    // API keys: refused; strangers: 404.
    let key = create_key(&app, &t.owner, org, json!({"name": "ci"})).await;
    let resp = app
        .request(
            reqwest::Method::PUT,
            &path,
            Some(&key),
            Some(json!({"api_key": "sk-key"})),
        )
        .await;
    resp.assert_problem(403, "api_key_not_allowed");
    app.delete(&path, &key)
        .await
        .assert_problem(403, "api_key_not_allowed");
    let stranger = app.signup("Stranger").await;
    put_llm_key(&app, &stranger, org, "sk-stranger")
        .await
        .assert_problem(404, "not_found");
    put_llm_key(&app, &t.member, org, "")
        .await
        .assert_problem(422, "validation_failed");

    // Deleting is idempotent (no key is what was asked for); the viewer's stays.
    app.delete(&path, &t.member.token).await.assert_status(204);
    app.delete(&path, &t.member.token).await.assert_status(204);
    app.delete(&path, &t.admin.token).await.assert_status(204);
    assert_eq!(
        open_as(
            &app,
            &t.viewer,
            org,
            Some(t.viewer.user_id),
            "setting",
            "llm_api_key"
        )
        .await,
        Ok(Some("sk-viewer-0042".to_owned()))
    );
}

/// JSON a client may send comes back as sent: numbers at the ends of the f64 range and a
/// long integer go into `jsonb` (which keeps them as exact decimals, printing 1.8e308 as
/// a 309-digit integer) and must be read back, not fail the read with a 500 -- as
/// schemathesis found with `-1.7976931348623157e+308` in `mcp_config`.
#[tokio::test]
async fn extreme_numbers_in_mcp_config_round_trip() {
    let app = spawn_app().await;
    let owner = app.signup("Numbers").await;
    let org = owner.org_id;
    let config = json!({
        "server": {
            "min": -1.7976931348623157e308,
            "max": 1.7976931348623157e308,
            "tiny": -1.1754943508222875e-38,
            "smallest": 5e-324,
            // An integral float comes back as the integer jsonb prints (the same
            // number; serde_json's Value would call 5.9e16 and 59...016 different).
            "big": 59226565021249016i64,
            "int": -1919380
        }
    });
    let patched = app
        .patch(
            &settings_path(org),
            &owner.token,
            json!({"mcp_config": config}),
        )
        .await;
    assert_eq!(patched.assert_status(200)["mcp_config"], config);
    let read = get_settings(&app, org, &owner.token).await;
    assert_eq!(read["mcp_config"], config);
}
