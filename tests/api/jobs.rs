//! The background worker's retention: exactly the rows nobody needs any more go.

use crate::helpers::{PASSWORD, spawn_app};

#[tokio::test]
async fn retention_deletes_exactly_the_expired_rows() {
    let app = spawn_app().await;
    let old = app.signup("Old").await;
    let fresh = app.signup("Fresh").await;
    // A failed sign-in and a reset request (fresh rows of their tables).
    app.login(&fresh.email, "not the password")
        .await
        .assert_status(401);
    app.request(
        reqwest::Method::POST,
        "/v1/auth/password-reset/request",
        None,
        Some(serde_json::json!({"email": "nobody@example.com"})),
    )
    .await
    .assert_status(202);
    let su = app.sql_superuser().await;
    // Age one row of each kind past its retention, as if time had passed.
    su.batch_execute(&format!(
        "set session_replication_role = replica; -- the revocation trigger is not the point here
         update app.sessions set revoked_at = now() - interval '31 days'
          where user_id = '{old}';
         insert into app.email_outbox (to_email, template, subject, body_sealed, sent_at, created_at)
         values ('gone@example.com', 'verify_email', 's', '\\x', now() - interval '31 days', now() - interval '31 days'),
                ('kept@example.com', 'verify_email', 's', '\\x', now() - interval '29 days', now() - interval '29 days');
         insert into app.user_tokens (user_id, purpose, token_hash, expires_at, used_at)
         values ('{old}', 'password_reset', sha256('a'::bytea), now() - interval '2 days', null),
                ('{old}', 'password_reset', sha256('b'::bytea), now() + interval '1 hour', now() - interval '25 hours');
         insert into app.login_attempts (account_key, created_at) values ('\\x01', now() - interval '2 days');
         insert into app.password_reset_requests (email, created_at) values ('stale@example.com', now() - interval '2 days');
         delete from app.rate_limits;
         insert into app.rate_limits (bucket, tat) values ('ip:192.0.2.1', now() - interval '1 second'),
                                                          ('ip:192.0.2.2', now() + interval '1 hour');
         set session_replication_role = origin;",
        old = old.user_id,
    ))
    .await
    .unwrap();
    let count = |sql: &'static str| {
        let su = &su;
        async move { su.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let before = (
        count("select count(*) from app.sessions").await,
        count("select count(*) from app.email_outbox").await,
        count("select count(*) from app.user_tokens").await,
        count("select count(*) from app.login_attempts").await,
        count("select count(*) from app.password_reset_requests").await,
    );
    let mut purged = palisade::jobs::purge_expired(&app.state).await.unwrap();
    purged.sort();
    assert_eq!(
        purged,
        [
            ("email_outbox".to_owned(), 1),
            ("login_attempts".to_owned(), 1),
            ("password_reset_requests".to_owned(), 1),
            ("rate_limits".to_owned(), 1),
            ("sessions".to_owned(), 1),
            ("user_tokens".to_owned(), 2),
        ]
    );
    let after = (
        count("select count(*) from app.sessions").await,
        count("select count(*) from app.email_outbox").await,
        count("select count(*) from app.user_tokens").await,
        count("select count(*) from app.login_attempts").await,
        count("select count(*) from app.password_reset_requests").await,
    );
    assert_eq!(
        after,
        (
            before.0 - 1,
            before.1 - 1,
            before.2 - 2,
            before.3 - 1,
            before.4 - 1
        )
    );
    // What is still in use stays: the fresh user signs in and is who they were.
    assert_eq!(
        count("select count(*) from app.email_outbox where to_email = 'kept@example.com'").await,
        1
    );
    // A bucket still refilling keeps its state.
    assert_eq!(
        count("select count(*) from app.rate_limits where bucket = 'ip:192.0.2.2'").await,
        1
    );
    app.login(&fresh.email, PASSWORD).await.assert_status(200);
    app.get("/v1/auth/me", &fresh.token)
        .await
        .assert_status(200);
    // The old user's ended session took its refresh tokens with it.
    assert_eq!(
        su.query_one(
            "select count(*) from app.refresh_tokens t join app.sessions s on s.id = t.session_id
              where s.user_id = $1",
            &[&old.user_id],
        )
        .await
        .unwrap()
        .get::<_, i64>(0),
        0
    );
    // A second pass finds nothing -- but the full rate-limit buckets of the requests
    // made since (the test's limits are generous: a bucket is full again at once).
    let second = palisade::jobs::purge_expired(&app.state).await.unwrap();
    assert!(
        second.iter().all(|(table, _)| table == "rate_limits"),
        "{second:?}"
    );
}
