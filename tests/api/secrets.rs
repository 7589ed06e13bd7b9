//! Named secrets and the envelope encryption under them (issue 15 §2), through the API
//! and the database: scopes and who sees what, write-only values, ciphertexts bound to
//! their rows, the rotations of `palisade keys`, and a canary that must never surface in
//! a response, the server's log or a dump of the database.

use palisade::{
    db::{self, Access},
    http::security::Principal,
    secrets::{self, KeyError, MasterKeys, SecretSlot},
};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fixtures::team,
    helpers::{Signup, TestApp, cluster, limits, settings, spawn_app, spawn_app_with},
};

/// Creates an API key through the API; returns its secret.
pub async fn create_key(app: &TestApp, who: &Signup, org: Uuid, body: Value) -> String {
    let resp = app
        .post(&format!("/v1/orgs/{org}/api-keys"), &who.token, body)
        .await;
    resp.assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `secrets::open` of a slot in a request transaction of `who` in `org`, with `keys`:
/// the value, `None` (no row the caller can see), or the error (`"tampered"` for
/// [`KeyError::Tampered`]).
pub async fn open_with(
    app: &TestApp,
    keys: &MasterKeys,
    who: &Signup,
    org: Uuid,
    user_id: Option<Uuid>,
    kind: &str,
    name: &str,
) -> Result<Option<String>, String> {
    let session_id = app.state.jwt.verify(&who.token).unwrap().sid;
    let principal = Principal::User {
        user_id: who.user_id,
        session_id,
    };
    app.state
        .in_org(&principal, org, Access::ReadOnly, async |tx| {
            let slot = SecretSlot {
                org_id: org,
                user_id,
                kind,
                name,
            };
            Ok(secrets::open(tx, keys, &slot).await.map_err(|e| match e {
                KeyError::Tampered { .. } => "tampered".to_owned(),
                other => other.to_string(),
            }))
        })
        .await
        .expect("the request transaction")
}

pub async fn open_as(
    app: &TestApp,
    who: &Signup,
    org: Uuid,
    user_id: Option<Uuid>,
    kind: &str,
    name: &str,
) -> Result<Option<String>, String> {
    open_with(app, &app.state.master_keys, who, org, user_id, kind, name).await
}

fn secrets_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/secrets")
}

fn names(page: &Value) -> Vec<(String, String)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["scope"].as_str().unwrap().to_owned(),
                s["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pair(scope: &str, name: &str) -> (String, String) {
    (scope.to_owned(), name.to_owned())
}

#[tokio::test]
async fn secrets_in_both_scopes_are_write_only_and_a_members_own_are_theirs_alone() {
    let app = spawn_app().await;
    let t = team(&app, "Vault").await;
    let org = t.org_id;
    let path = secrets_path(org);
    let mut seen = String::new();

    // Org-wide: signed-in admins and owners create; members may not.
    let created = app
        .post(
            &path,
            &t.admin.token,
            json!({"name": "DEPLOY_TOKEN", "value": "v-org-deploy", "description": "CI",
                   "scope": "org"}),
        )
        .await;
    let body = created.assert_status(201).clone();
    seen.push_str(&body.to_string());
    assert_eq!(body["name"], "DEPLOY_TOKEN");
    assert_eq!(body["scope"], "org");
    assert_eq!(body["description"], "CI");
    assert_eq!(body["created_by"], t.admin.user_id.to_string());
    assert!(body.get("value").is_none() && body.get("ciphertext").is_none());
    app.post(
        &path,
        &t.member.token,
        json!({"name": "MEMBER_ORG", "value": "v-x", "scope": "org"}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.post(
        &path,
        &t.admin.token,
        json!({"name": "DEPLOY_TOKEN", "value": "v-again", "scope": "org"}),
    )
    .await
    .assert_problem(409, "secret_exists");

    // Own secrets: any member (a viewer too), default scope user; a name may repeat
    // across scopes and members.
    for (who, value) in [
        (&t.member, "v-member-own"),
        (&t.viewer, "v-viewer-own"),
        (&t.owner, "v-owner-own"),
    ] {
        let r = app
            .post(
                &path,
                &who.token,
                json!({"name": "MY_TOKEN", "value": value}),
            )
            .await;
        assert_eq!(r.assert_status(201)["scope"], "user");
        seen.push_str(&r.body.to_string());
    }
    app.post(
        &path,
        &t.member.token,
        json!({"name": "MY_TOKEN", "value": "v-dup"}),
    )
    .await
    .assert_problem(409, "secret_exists");
    app.post(
        &path,
        &t.member.token,
        json!({"name": "DEPLOY_TOKEN", "value": "v-member-deploy"}),
    )
    .await
    .assert_status(201);

    // Each sees the org's and their own, org first, by name.
    let list = app
        .get(&path, &t.member.token)
        .await
        .assert_status(200)
        .clone();
    seen.push_str(&list.to_string());
    assert_eq!(
        names(&list),
        vec![
            pair("org", "DEPLOY_TOKEN"),
            pair("user", "DEPLOY_TOKEN"),
            pair("user", "MY_TOKEN")
        ]
    );
    let list = app
        .get(&path, &t.admin.token)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(names(&list), vec![pair("org", "DEPLOY_TOKEN")]);
    let list = app
        .get(&format!("{path}?scope=user"), &t.owner.token)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(names(&list), vec![pair("user", "MY_TOKEN")]);
    // Pages of one follow the same order.
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=1&cursor={c}"),
            None => format!("{path}?limit=1"),
        };
        let page = app
            .get(&url, &t.member.token)
            .await
            .assert_status(200)
            .clone();
        paged.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged.len(), 3);
    assert_eq!(paged[2], pair("user", "MY_TOKEN"));
    app.get(&format!("{path}?cursor=bm9wZQ"), &t.member.token)
        .await
        .assert_problem(400, "invalid_cursor");

    // An API key lists the org's (never a member's own) and changes nothing.
    let key = create_key(&app, &t.owner, org, json!({"name": "ci", "role": "admin"})).await;
    let list = app.get(&path, &key).await.assert_status(200).clone();
    assert_eq!(names(&list), vec![pair("org", "DEPLOY_TOKEN")]);
    app.post(&path, &key, json!({"name": "K", "value": "v"}))
        .await
        .assert_problem(403, "api_key_not_allowed");
    app.delete(&format!("{path}/DEPLOY_TOKEN?scope=org"), &key)
        .await
        .assert_problem(403, "api_key_not_allowed");

    // A member's own secret does not exist for the admin or the owner.
    for who in [&t.admin, &t.owner] {
        for scope in ["user", "org"] {
            let url = format!("{path}/MY_TOKEN?scope={scope}");
            if who.user_id == t.owner.user_id && scope == "user" {
                continue; // the owner has a MY_TOKEN of their own
            }
            app.patch(&url, &who.token, json!({"value": "hijack"}))
                .await
                .assert_problem(404, "not_found");
            app.delete(&url, &who.token)
                .await
                .assert_problem(404, "not_found");
        }
    }
    assert_eq!(
        open_as(
            &app,
            &t.owner,
            org,
            Some(t.member.user_id),
            "secret",
            "MY_TOKEN"
        )
        .await,
        Ok(None),
        "the owner's transaction does not see the member's row"
    );
    assert_eq!(
        open_as(
            &app,
            &t.member,
            org,
            Some(t.member.user_id),
            "secret",
            "MY_TOKEN"
        )
        .await,
        Ok(Some("v-member-own".to_owned()))
    );

    // Updates: the owner of a user secret; admins for org ones.
    app.patch(
        &format!("{path}/DEPLOY_TOKEN?scope=org"),
        &t.member.token,
        json!({"value": "v-member-overwrite"}),
    )
    .await
    .assert_problem(403, "forbidden");
    let before = list["items"][0]["value_updated_at"].clone();
    let r = app
        .patch(
            &format!("{path}/DEPLOY_TOKEN?scope=org"),
            &t.owner.token,
            json!({"value": "v-org-deploy-2"}),
        )
        .await;
    let updated = r.assert_status(200).clone();
    seen.push_str(&updated.to_string());
    assert_ne!(updated["value_updated_at"], before);
    assert_eq!(updated["description"], "CI", "absent: unchanged");
    assert_eq!(
        open_as(&app, &t.member, org, None, "secret", "DEPLOY_TOKEN").await,
        Ok(Some("v-org-deploy-2".to_owned()))
    );
    let r = app
        .patch(
            &format!("{path}/DEPLOY_TOKEN?scope=org"),
            &t.admin.token,
            json!({"description": null}),
        )
        .await;
    assert_eq!(r.assert_status(200)["description"], Value::Null);
    assert_eq!(
        r.body["value_updated_at"], updated["value_updated_at"],
        "a description change leaves the value's time"
    );
    let r = app
        .patch(
            &format!("{path}/MY_TOKEN"),
            &t.member.token,
            json!({"value": "v-member-own-2", "description": "mine"}),
        )
        .await;
    assert_eq!(r.assert_status(200)["description"], "mine");
    seen.push_str(&r.body.to_string());
    app.patch(
        &format!("{path}/NOPE"),
        &t.member.token,
        json!({"description": "x"}),
    )
    .await
    .assert_problem(404, "not_found");

    // Validation.
    for bad in [
        json!({"name": "1BAD", "value": "v"}),
        json!({"name": "has-dash", "value": "v"}),
        json!({"name": "N".repeat(129), "value": "v"}),
        json!({"name": "EMPTY", "value": ""}),
        json!({"name": "DESC", "value": "v", "description": "d".repeat(501)}),
        json!({"name": "SCOPE", "value": "v", "scope": "team"}),
    ] {
        app.post(&path, &t.owner.token, bad.clone())
            .await
            .assert_problem(422, "validation_failed");
    }

    // Deletes.
    app.delete(&format!("{path}/MY_TOKEN"), &t.member.token)
        .await
        .assert_status(204);
    app.delete(&format!("{path}/MY_TOKEN"), &t.member.token)
        .await
        .assert_problem(404, "not_found");
    app.delete(&format!("{path}/DEPLOY_TOKEN?scope=org"), &t.member.token)
        .await
        .assert_problem(403, "forbidden");
    app.delete(&format!("{path}/DEPLOY_TOKEN?scope=org"), &t.admin.token)
        .await
        .assert_status(204);
    assert_eq!(
        open_as(
            &app,
            &t.viewer,
            org,
            Some(t.viewer.user_id),
            "secret",
            "MY_TOKEN"
        )
        .await,
        Ok(Some("v-viewer-own".to_owned())),
        "another member's delete left the viewer's alone"
    );

    // Strangers: no such org.
    let stranger = app.signup("Stranger").await;
    app.get(&path, &stranger.token)
        .await
        .assert_problem(404, "not_found");
    app.post(&path, &stranger.token, json!({"name": "X", "value": "v"}))
        .await
        .assert_problem(404, "not_found");

    // No response carried a value.
    for value in [
        "v-org-deploy",
        "v-member-own",
        "v-viewer-own",
        "v-owner-own",
    ] {
        assert!(!seen.contains(value), "{value} in a response");
    }
}

/// Sets a column of app.secrets as the superuser, triggers off (arranging tampering).
async fn tamper(app: &TestApp, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) {
    let su = app.sql_superuser().await;
    su.batch_execute("set session_replication_role = replica")
        .await
        .unwrap();
    assert!(su.execute(sql, params).await.unwrap() >= 1, "{sql}");
}

#[tokio::test]
async fn a_ciphertext_opens_only_in_its_own_row() {
    let app = spawn_app().await;
    let owner = app.signup("Envelope").await;
    let org = owner.org_id;
    for (name, value) in [("ALPHA", "alpha-value"), ("BETA", "beta-value")] {
        app.post(
            &secrets_path(org),
            &owner.token,
            json!({"name": name, "value": value, "scope": "org"}),
        )
        .await
        .assert_status(201);
    }
    let other = app.signup("Other").await;
    app.post(
        &secrets_path(other.org_id),
        &other.token,
        json!({"name": "ALPHA", "value": "other-alpha", "scope": "org"}),
    )
    .await
    .assert_status(201);
    assert_eq!(
        open_as(&app, &owner, org, None, "secret", "ALPHA").await,
        Ok(Some("alpha-value".to_owned()))
    );

    // Swapping two rows' ciphertexts: neither opens.
    tamper(
        &app,
        "update app.secrets s set ciphertext = o.ciphertext
           from app.secrets o
          where s.org_id = $1 and o.org_id = $1 and s.kind = 'secret' and o.kind = 'secret'
            and s.name <> o.name and s.name in ('ALPHA', 'BETA') and o.name in ('ALPHA', 'BETA')",
        &[&org],
    )
    .await;
    for name in ["ALPHA", "BETA"] {
        assert_eq!(
            open_as(&app, &owner, org, None, "secret", name).await,
            Err("tampered".to_owned()),
            "{name}"
        );
    }

    // Another org's ciphertext copied into a row: does not open either (nor leaks).
    tamper(
        &app,
        "update app.secrets s set ciphertext = o.ciphertext
           from app.secrets o
          where s.org_id = $1 and o.org_id = $2 and s.name = 'ALPHA' and o.name = 'ALPHA'",
        &[&other.org_id, &org],
    )
    .await;
    assert_eq!(
        open_as(&app, &other, other.org_id, None, "secret", "ALPHA").await,
        Err("tampered".to_owned())
    );
    // A flipped bit, too.
    let su = app.sql_superuser().await;
    let sealed: Vec<u8> = su
        .query_one(
            "select ciphertext from app.secrets where org_id = $1 and name = 'BETA'",
            &[&org],
        )
        .await
        .unwrap()
        .get(0);
    let mut flipped = sealed.clone();
    *flipped.last_mut().unwrap() ^= 1;
    tamper(
        &app,
        "update app.secrets set ciphertext = $2 where org_id = $1 and name = 'ALPHA'",
        &[&org, &flipped],
    )
    .await;
    assert_eq!(
        open_as(&app, &owner, org, None, "secret", "ALPHA").await,
        Err("tampered".to_owned())
    );
}

async fn ciphertexts(app: &TestApp, org: Uuid) -> Vec<(String, Vec<u8>, i32)> {
    let su = app.sql_superuser().await;
    su.query(
        "select kind || ':' || name || ':' || coalesce(user_id::text, 'org'), ciphertext, key_version
           from app.secrets where org_id = $1 order by 1",
        &[&org],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn rotations_reseal_under_a_new_data_key_and_rewrap_under_a_new_master_key() {
    let s = settings();
    let old_master: SecretString = s.master_key.clone().unwrap();
    let app = spawn_app_with(s, limits()).await;
    let t = team(&app, "Rotate").await;
    let org = t.org_id;
    app.post(
        &secrets_path(org),
        &t.owner.token,
        json!({"name": "ORG_SECRET", "value": "org-secret-value", "scope": "org"}),
    )
    .await
    .assert_status(201);
    app.post(
        &secrets_path(org),
        &t.member.token,
        json!({"name": "OWN", "value": "member-own-value"}),
    )
    .await
    .assert_status(201);
    app.patch(
        &format!("/v1/orgs/{org}/settings"),
        &t.owner.token,
        json!({"llm_api_key": "sk-rotate-me"}),
    )
    .await
    .assert_status(200);
    // Another org, untouched by rotate-org.
    let other = app.signup("Bystander").await;
    app.post(
        &secrets_path(other.org_id),
        &other.token,
        json!({"name": "THEIRS", "value": "theirs"}),
    )
    .await
    .assert_status(201);
    let before = ciphertexts(&app, org).await;
    let other_before = ciphertexts(&app, other.org_id).await;
    assert_eq!(before.len(), 3);
    assert!(before.iter().all(|(_, _, v)| *v == 1));

    let owner_db = app.sql_as(db::OWNER_ROLE).await;
    let keys = &app.state.master_keys;
    let report = secrets::rotate_org(&owner_db, keys, org).await.unwrap();
    assert_eq!((report.version, report.resealed, report.retired), (2, 3, 1));
    let after = ciphertexts(&app, org).await;
    for ((name, old, _), (name2, new, version)) in before.iter().zip(&after) {
        assert_eq!(name, name2);
        assert_ne!(old, new, "{name} sealed again");
        assert_eq!(*version, 2, "{name}");
    }
    assert_eq!(ciphertexts(&app, other.org_id).await, other_before);
    let su = app.sql_superuser().await;
    let versions: Vec<(i32, bool)> = su
        .query(
            "select version, retired_at is not null from app.org_data_keys where org_id = $1
              order by version",
            &[&org],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(versions, vec![(1, true), (2, false)]);
    let check_values = async |keys: &MasterKeys| {
        assert_eq!(
            open_with(&app, keys, &t.member, org, None, "secret", "ORG_SECRET").await,
            Ok(Some("org-secret-value".to_owned()))
        );
        assert_eq!(
            open_with(
                &app,
                keys,
                &t.member,
                org,
                Some(t.member.user_id),
                "secret",
                "OWN"
            )
            .await,
            Ok(Some("member-own-value".to_owned()))
        );
        assert_eq!(
            open_with(&app, keys, &t.viewer, org, None, "setting", "llm_api_key").await,
            Ok(Some("sk-rotate-me".to_owned()))
        );
    };
    check_values(keys).await;
    // New secrets use the new version.
    app.post(
        &secrets_path(org),
        &t.admin.token,
        json!({"name": "AFTER", "value": "after", "scope": "org"}),
    )
    .await
    .assert_status(201);
    assert!(ciphertexts(&app, org).await.iter().all(|(_, _, v)| *v == 2));
    let status = secrets::key_status(&owner_db, keys).await.unwrap();
    assert!(status.secrets_on_retired_versions.is_empty());
    assert_eq!(status.master_keys.len(), 1);
    assert_eq!(status.master_keys[0].configured, "current");
    assert!(matches!(
        secrets::rotate_org(&owner_db, keys, Uuid::new_v4()).await,
        Err(KeyError::NoSuchOrg(_))
    ));

    // A new master key, the old one as previous: every data key is rewrapped.
    let new_master = SecretString::from(format!("a new master key {}", Uuid::new_v4()));
    let both = MasterKeys::new(&new_master, std::slice::from_ref(&old_master));
    let only_new = MasterKeys::new(&new_master, &[]);
    let wraps_before: Vec<Vec<u8>> = su
        .query(
            "select wrapped_key from app.org_data_keys order by org_id, version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let secrets_before = ciphertexts(&app, org).await;
    let report = secrets::rotate_master(&owner_db, &both).await.unwrap();
    assert_eq!(report.rewrapped as usize, wraps_before.len());
    assert_eq!(report.unchanged, 0);
    assert_eq!(report.master_key_id, only_new.current_id());
    let rows = su
        .query(
            "select wrapped_key, master_key_id, rewrapped_at is not null from app.org_data_keys
              order by org_id, version",
            &[],
        )
        .await
        .unwrap();
    for (row, old) in rows.iter().zip(&wraps_before) {
        assert_ne!(&row.get::<_, Vec<u8>>(0), old);
        assert_eq!(row.get::<_, String>(1), only_new.current_id());
        assert!(row.get::<_, bool>(2));
    }
    assert_eq!(
        ciphertexts(&app, org).await,
        secrets_before,
        "secrets untouched"
    );
    // Opening now works with the new key alone, and no longer with the old alone.
    check_values(&only_new).await;
    let old_only = open_as(&app, &t.member, org, None, "secret", "ORG_SECRET").await;
    assert!(
        old_only.as_ref().is_err_and(|e| e.contains("cannot open")),
        "{old_only:?}"
    );
    // Again: nothing left to rewrap.
    let again = secrets::rotate_master(&owner_db, &both).await.unwrap();
    assert_eq!(again.rewrapped, 0);
    // A master key that opens nothing: an error naming the org and version, no change.
    let stranger_keys = MasterKeys::new(
        &SecretString::from("an unrelated master key of 32+ bytes".to_owned()),
        &[],
    );
    match secrets::rotate_master(&owner_db, &stranger_keys).await {
        Err(e @ KeyError::Unopenable { .. }) => {
            let text = e.to_string();
            assert!(text.contains("v1 of org"), "{text}");
        }
        other => panic!("expected Unopenable, got {other:?}"),
    }
    check_values(&only_new).await;
}

#[tokio::test]
async fn a_canary_secret_never_reaches_a_response_the_log_or_a_database_dump() {
    // Every event of every level, from the whole process (other tests' lines too: none
    // of them knows the canary).
    let capturing = crate::helpers::start_log_capture();

    let app = spawn_app().await;
    let t = team(&app, "Canary").await;
    let org = t.org_id;
    let canary = format!("CANARY{}", Uuid::new_v4().simple());
    let mut responses = String::new();
    let settings_path = format!("/v1/orgs/{org}/settings");
    for resp in [
        app.patch(
            &settings_path,
            &t.owner.token,
            json!({"llm_api_key": canary}),
        )
        .await,
        app.post(
            &secrets_path(org),
            &t.owner.token,
            json!({"name": "CANARY_SECRET", "value": canary, "scope": "org"}),
        )
        .await,
        app.post(
            &secrets_path(org),
            &t.member.token,
            json!({"name": "CANARY_OWN", "value": canary}),
        )
        .await,
        app.request(
            reqwest::Method::PUT,
            &format!("/v1/orgs/{org}/members/me/llm-key"),
            Some(&t.member.token),
            Some(json!({"api_key": canary})),
        )
        .await,
        app.get(&settings_path, &t.viewer.token).await,
        app.get(&secrets_path(org), &t.member.token).await,
        app.patch(
            &format!("{}/CANARY_SECRET?scope=org", secrets_path(org)),
            &t.admin.token,
            json!({"description": "rotated soon", "value": canary}),
        )
        .await,
        // Refusals and errors log too: a duplicate, a member's write, bad fields.
        app.post(
            &secrets_path(org),
            &t.owner.token,
            json!({"name": "CANARY_SECRET", "value": canary, "scope": "org"}),
        )
        .await,
        app.patch(
            &settings_path,
            &t.member.token,
            json!({"llm_api_key": canary}),
        )
        .await,
        app.patch(
            &settings_path,
            &t.owner.token,
            json!({"llm_api_key": canary, "llm_base_url": "ftp://x.example"}),
        )
        .await,
        app.get(&settings_path, &t.owner.token).await,
    ] {
        assert!(resp.status.as_u16() < 500, "{}", resp.body);
        responses.push_str(&resp.body.to_string());
    }
    assert!(
        !responses.contains(&canary),
        "a response carried the canary"
    );
    assert!(responses.contains("CANARY_SECRET") && responses.contains("\"last4\""));

    // Still there, server-side.
    assert_eq!(
        open_as(&app, &t.member, org, None, "setting", "llm_api_key").await,
        Ok(Some(canary.clone()))
    );
    assert_eq!(
        open_as(&app, &t.member, org, None, "secret", "CANARY_SECRET").await,
        Ok(Some(canary.clone()))
    );

    // The log saw the requests, never the value.
    let log = crate::helpers::stop_log_capture();
    assert!(
        capturing,
        "the log capture is installed (run without PALISADE_TEST_LOG=1)"
    );
    assert!(
        log.contains("/secrets") && log.contains("/settings"),
        "the log was captured"
    );
    assert!(!log.contains(&canary), "the canary is in the server's log");

    // Nor does PostgreSQL hold it anywhere: a full dump of the test database.
    let bin = palisade::db::embedded::find_bin_dir().expect("PostgreSQL binaries");
    let config = cluster().pg_config(palisade::db::embedded::SUPERUSER, &app.db_name);
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
    };
    let out = std::process::Command::new(bin.join("pg_dump"))
        .args([
            "--host",
            &host,
            "--port",
            &config.get_ports()[0].to_string(),
        ])
        .args([
            "--username",
            palisade::db::embedded::SUPERUSER,
            "--dbname",
            &app.db_name,
        ])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        dump.contains("CANARY_SECRET"),
        "the dump has the secrets' rows"
    );
    assert!(!dump.contains(&canary), "the canary is in the database");
    assert!(!dump.contains(&canary.to_lowercase()));
}

/// `palisade <args>` (the real binary) against the test's database as the schema owner,
/// with these master keys.
async fn palisade_keys(
    app: &TestApp,
    master: &str,
    previous: Option<&str>,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let socket = cluster().socket_dir().display().to_string();
    let url = |role: &str| format!("postgresql://{role}@/{}?host={socket}", app.db_name);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"));
    command
        .args(args)
        .env("DATABASE_URL", url(db::RUNTIME_LOGIN_ROLE))
        .env("DATABASE_OWNER_URL", url(db::OWNER_ROLE))
        .env("PALISADE_DATA_DIR", &app.data_dir.0)
        .env("PALISADE_MASTER_KEY", master)
        .env("RUST_LOG", "warn");
    match previous {
        Some(p) => command.env("PALISADE_MASTER_KEY_PREVIOUS", p),
        None => command.env_remove("PALISADE_MASTER_KEY_PREVIOUS"),
    };
    for var in [
        "DATABASE_AUTH_URL",
        "DATABASE_WORKER_URL",
        "PALISADE_ENV",
        "LOG_FORMAT",
    ] {
        command.env_remove(var);
    }
    let out = command.output().await.expect("run the palisade binary");
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn keys_commands_through_the_binary() {
    use secrecy::ExposeSecret;
    let s = settings();
    let old = s.master_key.as_ref().unwrap().expose_secret().to_owned();
    let app = spawn_app_with(s, limits()).await;
    let owner = app.signup("Cli").await;
    let org = owner.org_id;
    app.post(
        &secrets_path(org),
        &owner.token,
        json!({"name": "CLI_SECRET", "value": "cli-value", "scope": "org"}),
    )
    .await
    .assert_status(201);
    let json_of = |run: &(Option<i32>, String, String)| -> Value {
        assert_eq!(run.0, Some(0), "stderr: {}", run.2);
        serde_json::from_str(&run.1).unwrap()
    };

    let status =
        json_of(&palisade_keys(&app, &old, None, &["keys", "status", "--format", "json"]).await);
    assert_eq!(status["master_keys"][0]["configured"], "current");
    assert_eq!(status["master_keys"][0]["data_keys"], 1);

    let org_arg = org.to_string();
    let rotated = json_of(
        &palisade_keys(
            &app,
            &old,
            None,
            &["keys", "rotate-org", &org_arg, "--format", "json"],
        )
        .await,
    );
    assert_eq!(rotated["version"], 2);
    assert_eq!(rotated["resealed"], 1);
    assert_eq!(rotated["retired"], 1);
    let missing = Uuid::new_v4().to_string();
    let run = palisade_keys(&app, &old, None, &["keys", "rotate-org", &missing]).await;
    assert_eq!(run.0, Some(1), "{}", run.2);

    // A new master key without the old one: refused, naming the org, nothing changed.
    let new = format!("a brand new master key {}", Uuid::new_v4());
    let run = palisade_keys(&app, &new, None, &["keys", "rotate-master"]).await;
    assert_eq!(run.0, Some(1), "{}", run.2);
    assert!(run.2.contains(&org_arg), "{}", run.2);
    let status =
        json_of(&palisade_keys(&app, &new, None, &["keys", "status", "--format", "json"]).await);
    assert_eq!(status["master_keys"][0]["configured"], "unknown");

    // With the old one as previous: rewrapped; then the new key alone opens everything.
    let run = palisade_keys(&app, &new, Some(&old), &["keys", "rotate-master"]).await;
    assert_eq!(run.0, Some(0), "{}", run.2);
    assert!(run.1.contains("rewrapped 2 data key(s)"), "{}", run.1);
    assert!(!run.1.contains(&old) && !run.2.contains(&old));
    let status =
        json_of(&palisade_keys(&app, &new, None, &["keys", "status", "--format", "json"]).await);
    assert_eq!(status["master_keys"][0]["configured"], "current");
    assert_eq!(status["master_keys"][0]["data_keys"], 2);
    let only_new = MasterKeys::new(&SecretString::from(new), &[]);
    assert_eq!(
        open_with(&app, &only_new, &owner, org, None, "secret", "CLI_SECRET").await,
        Ok(Some("cli-value".to_owned()))
    );
}
