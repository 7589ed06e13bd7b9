//! The assistant against a real HTTP server speaking OpenAI's streaming chat completions
//! (tests/api/llm_fake.rs): answers streamed through, retrieval that never crosses a
//! tenant or a restricted project (asserted on what the model was sent), upstream
//! failures, disconnects on either side, token quotas and budgets, private conversations.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fixtures::{Team, team},
    helpers::{Part, TestApp, limits, settings, spawn_app_with},
    llm_fake::{self, FakeLlm, Mode},
};

/// An app whose server-wide model is the fake.
async fn app_with(fake: &FakeLlm, tweak: impl FnOnce(&mut palisade::config::Settings)) -> TestApp {
    let mut s = settings();
    s.llm.base_url = Some(fake.base_url());
    s.llm.api_key = Some(llm_fake::API_KEY.to_owned().into());
    s.llm.model = llm_fake::MODEL.into();
    s.llm.timeout = Duration::from_secs(5);
    tweak(&mut s);
    spawn_app_with(s, limits()).await
}

/// A streamed answer: its status, and its events (type, data) until the stream ends.
struct Streamed {
    status: u16,
    events: Vec<(String, Value)>,
    body: Value,
}

impl Streamed {
    fn of(&self, kind: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v)
            .collect()
    }
    fn answer(&self) -> String {
        self.of("token")
            .iter()
            .map(|e| e["delta"].as_str().unwrap())
            .collect()
    }
    fn done(&self) -> &Value {
        let done = self.of("done");
        assert_eq!(done.len(), 1, "one done event: {:?}", self.events);
        done[0]
    }
}

fn parse_sse(text: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let (mut kind, mut data) = (String::from("message"), String::new());
        for line in block.lines() {
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            }
        }
        if !data.is_empty() {
            events.push((kind, serde_json::from_str(&data).unwrap()));
        }
    }
    events
}

fn chat_request(app: &TestApp, org: Uuid, auth: &Auth, body: &Value) -> reqwest::RequestBuilder {
    let req = app
        .http
        .post(format!("{}/v1/orgs/{org}/assistant/chat", app.base))
        .json(body);
    match auth {
        Auth::Token(t) => req.bearer_auth(t),
        Auth::Key(k) => req.header("x-api-key", *k),
    }
}

enum Auth<'a> {
    Token(&'a str),
    Key(&'a str),
}

/// Asks, and reads the whole stream (at most 20 s).
async fn ask(app: &TestApp, org: Uuid, auth: Auth<'_>, body: Value) -> Streamed {
    let resp = chat_request(app, org, &auth, &body).send().await.unwrap();
    let status = resp.status().as_u16();
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|ct| ct.to_str().unwrap().starts_with("text/event-stream"));
    if !sse {
        let body = resp.json().await.unwrap_or(Value::Null);
        return Streamed {
            status,
            events: Vec::new(),
            body,
        };
    }
    let text = tokio::time::timeout(Duration::from_secs(20), resp.text())
        .await
        .expect("the stream ends")
        .unwrap();
    Streamed {
        status,
        events: parse_sse(&text),
        body: Value::Null,
    }
}

async fn ask_as(app: &TestApp, org: Uuid, token: &str, message: &str) -> Streamed {
    ask(app, org, Auth::Token(token), json!({ "message": message })).await
}

async fn upload_ready(app: &TestApp, org: Uuid, token: &str, parts: &[Part<'_>]) -> String {
    let id = app.upload(org, token, parts).await.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.process_documents().await;
    id
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.sql_superuser()
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

fn system_prompt(r: &llm_fake::Recorded) -> String {
    r.body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_answer_streams_through_and_is_stored_with_its_citations_and_usage() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |_| {}).await;
    let t = team(&app, "Answers").await;
    let doc = upload_ready(
        &app,
        t.org_id,
        &t.member.token,
        &[Part::file(
            "handbook.txt",
            Some("text/plain"),
            b"Employees get twenty-five holidays a year. The office closes in August.",
        )],
    )
    .await;
    let question = "How many holidays do employees get?";
    let r = ask_as(&app, t.org_id, &t.member.token, question).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    let messages = sent[0].body["messages"].as_array().unwrap().clone();
    assert_eq!(r.answer(), llm_fake::answer(&messages));
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {}", llm_fake::API_KEY).as_str())
    );
    assert_eq!(sent[0].body["model"], llm_fake::MODEL);
    assert_eq!(sent[0].body["stream"], true);
    assert!(system_prompt(&sent[0]).contains("twenty-five holidays"));
    assert_eq!(messages.last().unwrap()["content"], question);
    let start = r.of("start");
    assert_eq!(start.len(), 1);
    assert_eq!(start[0]["citations"][0]["document_id"], doc.as_str());
    let done = r.done();
    assert_eq!(done["status"], "complete");
    assert_eq!(done["message_seq"], 2);
    let prompt_tokens = llm_fake::prompt_tokens(&messages) as i64;
    let completion_tokens = llm_fake::answer_words(&messages).len() as i64;
    assert_eq!(done["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(done["usage"]["completion_tokens"], completion_tokens);
    assert_eq!(done["usage"]["estimated"], false);
    // Stored: the question and the answer (history needs a plan with it).
    app.set_plan(t.org_id, "pro").await;
    let conversation = done["conversation_id"].as_str().unwrap();
    let base = format!("/v1/orgs/{}/assistant/conversations", t.org_id);
    let msgs = app
        .get(&format!("{base}/{conversation}/messages"), &t.member.token)
        .await;
    let items = msgs.assert_status(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["role"], "user");
    assert_eq!(items[0]["content"], question);
    assert_eq!(items[1]["role"], "assistant");
    assert_eq!(items[1]["content"], r.answer().as_str());
    assert_eq!(items[1]["status"], "complete");
    assert_eq!(items[1]["citations"][0]["document_id"], doc.as_str());
    assert_eq!(items[1]["prompt_tokens"], prompt_tokens);
    let conv = app
        .get(&format!("{base}/{conversation}"), &t.member.token)
        .await;
    assert_eq!(conv.assert_status(200)["message_count"], 2);
    assert_eq!(conv.body["title"], question);
    // Metered: the org's llm_tokens this period.
    let usage = app
        .get(&format!("/v1/orgs/{}/usage", t.org_id), &t.member.token)
        .await;
    let tokens = usage.assert_status(200)["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["meter"] == "llm_tokens")
        .cloned()
        .expect("llm_tokens is reported");
    assert_eq!(
        tokens["used"].as_f64().unwrap() as i64,
        prompt_tokens + completion_tokens
    );
    // A follow-up carries the conversation so far.
    let again = ask(
        &app,
        t.org_id,
        Auth::Token(&t.member.token),
        json!({"conversation_id": conversation, "message": "And in August?"}),
    )
    .await;
    assert_eq!(again.done()["message_seq"], 4);
    let second = &fake.requests()[1].body["messages"];
    let roles: Vec<&str> = second
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(second[1]["content"], question);
}

#[tokio::test]
async fn retrieval_never_reaches_another_org_or_a_restricted_project() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |_| {}).await;
    let a = team(&app, "Alpha").await;
    let b = team(&app, "Beta").await;
    // The same distinctive words in every document; a canary names each one.
    let words = "zephyr quartz lantern";
    let text = |canary: &str| format!("{canary} {words} {words}");
    let (open_a, restricted_a, in_b) = (
        text("CANARY-A-OPEN"),
        text("CANARY-A-VAULT"),
        text("CANARY-B"),
    );
    upload_ready(
        &app,
        a.org_id,
        &a.member.token,
        &[Part::file("a.txt", None, open_a.as_bytes())],
    )
    .await;
    upload_ready(
        &app,
        b.org_id,
        &b.owner.token,
        &[Part::file("b.txt", None, in_b.as_bytes())],
    )
    .await;
    let vault = app
        .post(
            &format!("/v1/orgs/{}/projects", a.org_id),
            &a.admin.token,
            json!({"name": "Vault", "access": "restricted"}),
        )
        .await;
    let vault = vault.assert_status(201)["id"].as_str().unwrap().to_owned();
    upload_ready(
        &app,
        a.org_id,
        &a.admin.token,
        &[
            Part::text("project_id", &vault),
            Part::file("v.txt", None, restricted_a.as_bytes()),
        ],
    )
    .await;
    let key = app
        .post(
            &format!("/v1/orgs/{}/api-keys", a.org_id),
            &a.admin.token,
            json!({"name": "bot", "role": "viewer"}),
        )
        .await;
    let key = key.assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Every role of A, and its key: A's open document, never B's; the vault only for
    // org admins (the project's members; owner and admin here).
    for (role, user) in a.by_role() {
        let r = ask_as(&app, a.org_id, &user.token, "zephyr quartz lantern?").await;
        assert_eq!(r.status, 200, "{role}");
        let prompt = system_prompt(fake.requests().last().unwrap());
        assert!(prompt.contains("CANARY-A-OPEN"), "{role}: {prompt}");
        let sees_vault = matches!(role, "owner" | "admin");
        assert_eq!(prompt.contains("CANARY-A-VAULT"), sees_vault, "{role}");
    }
    let r = ask(
        &app,
        a.org_id,
        Auth::Key(&key),
        json!({"message": "zephyr quartz lantern?"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!system_prompt(fake.requests().last().unwrap()).contains("CANARY-A-VAULT"));
    // Narrowed to a document of the other org: it does not exist for A.
    let b_doc: Uuid = app
        .sql_superuser()
        .await
        .query_one(
            "select id from app.documents where org_id = $1",
            &[&b.org_id],
        )
        .await
        .unwrap()
        .get(0);
    let narrowed = ask(
        &app,
        a.org_id,
        Auth::Token(&a.owner.token),
        json!({"message": "zephyr", "document_ids": [b_doc]}),
    )
    .await;
    assert_eq!(narrowed.status, 404, "{:?}", narrowed.body);
    // B sees its own, never A's.
    let r = ask_as(&app, b.org_id, &b.viewer.token, "zephyr quartz lantern?").await;
    assert_eq!(r.status, 200);
    let prompt = system_prompt(fake.requests().last().unwrap());
    assert!(prompt.contains("CANARY-B"));
    // Across everything the model was ever sent: no chunk crossed from B to A or A to B.
    let requests = fake.requests();
    assert_eq!(requests.len(), 6);
    for (i, req) in requests.iter().enumerate() {
        let all = req.body["messages"].to_string();
        let for_b = i == 5;
        assert_eq!(all.contains("CANARY-B"), for_b, "request {i}");
        if for_b {
            assert!(!all.contains("CANARY-A"), "request {i}");
        }
    }
}

#[tokio::test]
async fn upstream_failures_are_problems_and_store_nothing() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |s| s.llm.timeout = Duration::from_secs(1)).await;
    let t = team(&app, "Failing").await;
    fake.set_mode(Mode::Error {
        status: 500,
        message: "the model is on fire".into(),
    });
    let r = ask_as(&app, t.org_id, &t.member.token, "hello?").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.body["code"], "upstream_error");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("500") && detail.contains("the model is on fire"),
        "{detail}"
    );
    assert!(!r.body.to_string().contains(llm_fake::API_KEY));
    fake.set_mode(Mode::Error {
        status: 401,
        message: format!("Incorrect API key provided: {}", llm_fake::API_KEY),
    });
    let r = ask_as(&app, t.org_id, &t.member.token, "hello?").await;
    assert_eq!(r.status, 502);
    assert!(
        !r.body.to_string().contains(llm_fake::API_KEY),
        "{}",
        r.body
    );
    fake.set_mode(Mode::Hang);
    let r = ask_as(&app, t.org_id, &t.member.token, "hello?").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body["code"], "upstream_timeout");
    assert_eq!(
        count(&app, "select count(*) from app.assistant_conversations").await,
        0
    );
    assert_eq!(
        count(&app, "select count(*) from app.assistant_messages").await,
        0
    );
}

#[tokio::test]
async fn answers_cut_short_on_either_side_are_stored_as_partial() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |_| {}).await;
    let t = team(&app, "Partial").await;
    app.set_plan(t.org_id, "pro").await;
    // The upstream breaks after three words: an error event, then done, partial.
    fake.set_mode(Mode::Disconnect { after_chunks: 3 });
    let r = ask_as(
        &app,
        t.org_id,
        &t.member.token,
        "one two three four five six",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.of("error").len(), 1, "{:?}", r.events);
    assert_eq!(r.of("error")[0]["error"]["code"], "upstream_error");
    let done = r.done();
    assert_eq!(done["status"], "partial");
    assert_eq!(done["usage"]["estimated"], true);
    assert_eq!(r.answer(), "Answer: one two");
    let conversation = done["conversation_id"].as_str().unwrap().to_owned();
    let stored: (String, String) = {
        let row = app
            .sql_superuser()
            .await
            .query_one(
                "select content, status from app.assistant_messages where role = 'assistant'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(stored, ("Answer: one two".to_owned(), "partial".to_owned()));
    // The client goes away mid-answer: the upstream call is cancelled and what came is
    // stored as partial.
    fake.set_mode(Mode::Slow {
        per_chunk: Duration::from_millis(300),
    });
    let resp = chat_request(
        &app,
        t.org_id,
        &Auth::Token(&t.member.token),
        &json!({"conversation_id": conversation, "message": "a b c d e f g h"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: token") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body);
    assert!(
        fake.wait_cancelled(1).await >= 1,
        "the upstream call was cancelled"
    );
    let mut status = String::new();
    for _ in 0..100 {
        let rows = app
            .sql_superuser()
            .await
            .query(
                "select status, error from app.assistant_messages where seq = 4",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            status = row.get(0);
            let error: String = row.get(1);
            assert!(error.contains("disconnected"), "{error}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "partial");
    assert!(fake.completed() <= 1, "the slow answer never completed");
}

#[tokio::test]
async fn out_of_tokens_or_budget_refuses_before_calling_the_model() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |_| {}).await;
    let t = team(&app, "Quota").await;
    app.set_plan(t.org_id, "free").await;
    let su = app.sql_superuser().await;
    // Tokens: the free plan allows 30 this period; one turn uses more.
    su.execute(
        "update app.plan_limits set included = 30 where plan_id = 'free' and meter = 'llm_tokens'",
        &[],
    )
    .await
    .unwrap();
    let first = ask_as(
        &app,
        t.org_id,
        &t.member.token,
        "how are you today my friend?",
    )
    .await;
    assert_eq!(first.done()["status"], "complete");
    let refused = ask_as(&app, t.org_id, &t.member.token, "and now?").await;
    assert_eq!(refused.status, 402);
    assert_eq!(refused.body["code"], "plan_limit_reached");
    assert_eq!(refused.body["meter"], "llm_tokens");
    assert_eq!(refused.body["limit"], 30);
    assert_eq!(fake.requests().len(), 1, "nothing sent to the model");
    // Budget: a conversation that spent max_budget_per_task gets no more answers.
    su.execute(
        "update app.plan_limits set included = null where plan_id = 'free' and meter = 'llm_tokens'",
        &[],
    )
    .await
    .unwrap();
    su.execute(
        "update app.org_settings set max_budget_per_task = 0.0001,
                llm_input_price_per_mtok = 1000, llm_output_price_per_mtok = 1000
          where org_id = $1",
        &[&t.org_id],
    )
    .await
    .unwrap();
    let r = ask_as(
        &app,
        t.org_id,
        &t.member.token,
        "one question that costs money",
    )
    .await;
    let done = r.done();
    assert!(done["usage"]["cost"].as_f64().unwrap() >= 0.0001, "{done}");
    // The answer was capped by what the budget pays for: 0.0001 USD at 1000 USD/Mtok.
    assert_eq!(fake.requests().last().unwrap().body["max_tokens"], 1);
    let conversation = done["conversation_id"].clone();
    let refused = ask(
        &app,
        t.org_id,
        Auth::Token(&t.member.token),
        json!({"conversation_id": conversation, "message": "more?"}),
    )
    .await;
    assert_eq!(refused.status, 402);
    assert_eq!(refused.body["code"], "budget_exhausted");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn bad_questions_are_refused_and_store_nothing() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |_| {}).await;
    let t = team(&app, "Bad").await;
    let other = team(&app, "Other").await;
    let bodies = [
        json!({"message": ""}),
        json!({"message": "   \n  "}),
        json!({"message": "x".repeat(32001)}),
        json!({"message": "ok", "document_ids": ["not-a-uuid"]}),
        json!({}),
        json!({"message": 42}),
    ];
    for body in bodies {
        let r = ask(&app, t.org_id, Auth::Token(&t.member.token), body.clone()).await;
        assert!(
            r.status == 400 || r.status == 422,
            "{body}: {} {:?}",
            r.status,
            r.body
        );
        assert!(r.body["code"].is_string(), "{body}: problem+json");
    }
    // Another member's conversation, another org's: 404.
    let theirs = ask_as(&app, t.org_id, &t.admin.token, "mine").await;
    let theirs = theirs.done()["conversation_id"].clone();
    let r = ask(
        &app,
        t.org_id,
        Auth::Token(&t.member.token),
        json!({"conversation_id": theirs, "message": "let me in"}),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = ask_as(&app, t.org_id, &other.owner.token, "not my org").await;
    assert_eq!(r.status, 404);
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(
        count(&app, "select count(*) from app.assistant_messages").await,
        2
    );
}

#[tokio::test]
async fn conversations_are_private_to_whoever_started_them() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |_| {}).await;
    let t: Team = team(&app, "Private").await;
    let base = format!("/v1/orgs/{}/assistant/conversations", t.org_id);
    // Without conversation_history (free plan): listing is refused.
    app.set_plan(t.org_id, "free").await;
    app.get(&base, &t.member.token)
        .await
        .assert_problem(403, "plan_feature_unavailable");
    app.set_plan(t.org_id, "pro").await;
    let mine = ask_as(&app, t.org_id, &t.member.token, "private thoughts").await;
    let mine = mine.done()["conversation_id"].as_str().unwrap().to_owned();
    ask_as(&app, t.org_id, &t.owner.token, "owner thoughts")
        .await
        .done();
    let listed = app.get(&base, &t.member.token).await;
    let ids: Vec<&str> = listed.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.as_str()]);
    // The owner and an admin cannot read or delete it.
    for who in [&t.owner, &t.admin] {
        app.get(&format!("{base}/{mine}"), &who.token)
            .await
            .assert_problem(404, "not_found");
        app.get(&format!("{base}/{mine}/messages"), &who.token)
            .await
            .assert_problem(404, "not_found");
        app.request(
            Method::DELETE,
            &format!("{base}/{mine}"),
            Some(&who.token),
            None,
        )
        .await
        .assert_problem(404, "not_found");
    }
    // The audit log records that it exists, never its title (the first question).
    let logged = count(
        &app,
        &format!(
            "select count(*) from app.audit_log where org_id = '{}' and action like 'assistant_conversation.%'
                and targets::text not like '%private thoughts%' and metadata::text not like '%private thoughts%'",
            t.org_id
        ),
    )
    .await;
    assert!(logged >= 2, "{logged}");
    assert_eq!(
        count(
            &app,
            &format!(
                "select count(*) from app.audit_log where org_id = '{}' and (targets::text || metadata::text) like '%private thoughts%'",
                t.org_id
            ),
        )
        .await,
        0
    );
    app.request(
        Method::DELETE,
        &format!("{base}/{mine}"),
        Some(&t.member.token),
        None,
    )
    .await
    .assert_status(204);
    assert_eq!(
        count(
            &app,
            &format!(
                "select count(*) from app.assistant_messages where conversation_id = '{mine}'"
            )
        )
        .await,
        0
    );
}

#[tokio::test]
async fn without_a_model_the_assistant_says_so() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |s| s.llm.base_url = None).await;
    let t = team(&app, "Unconfigured").await;
    let r = ask_as(&app, t.org_id, &t.member.token, "anyone there?").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["code"], "assistant_not_configured");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn idle_conversations_expire_with_their_orgs_setting() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |_| {}).await;
    let t = team(&app, "Expiring").await;
    let other = team(&app, "Keeping").await;
    let old = ask_as(&app, t.org_id, &t.member.token, "an old question").await;
    let old = old.done()["conversation_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    let fresh = ask_as(&app, t.org_id, &t.member.token, "a fresh question").await;
    let fresh = fresh.done()["conversation_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    let kept = ask_as(&app, other.org_id, &other.member.token, "no expiry here").await;
    let kept = kept.done()["conversation_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    let su = app.sql_superuser().await;
    su.execute(
        "update app.org_settings set conversation_expiration = 3600 where org_id = $1",
        &[&t.org_id],
    )
    .await
    .unwrap();
    su.execute(
        "update app.assistant_conversations set last_message_at = now() - interval '2 hours'
          where id = any($1)",
        &[&vec![old, kept]],
    )
    .await
    .unwrap();
    let purged = palisade::jobs::purge_expired(&app.state).await.unwrap();
    assert!(
        purged.contains(&("assistant_conversations".to_owned(), 1)),
        "{purged:?}"
    );
    let left: Vec<Uuid> = su
        .query(
            "select id from app.assistant_conversations order by created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [fresh, kept]);
    assert_eq!(
        count(
            &app,
            &format!("select count(*) from app.assistant_messages where conversation_id = '{old}'")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app,
            &format!(
                "select count(*) from app.audit_log where org_id = '{}' and action = 'assistant_conversation.deleted'
                    and actor_type = 'system'",
                t.org_id
            ),
        )
        .await,
        1
    );
}

#[tokio::test]
async fn an_org_chosen_model_gets_no_server_key_and_no_private_address() {
    let fake = FakeLlm::start().await;
    // Production's default: orgs' models may not be on private networks; the server's
    // own (LLM_BASE_URL, the operator's choice) may.
    let app = app_with(&fake, |s| s.llm.allow_private_networks = false).await;
    let t = team(&app, "Chooser").await;
    let served = ask_as(&app, t.org_id, &t.member.token, "via the server's model").await;
    assert_eq!(served.done()["status"], "complete");
    assert_eq!(fake.requests().len(), 1);
    let su = app.sql_superuser().await;
    su.execute(
        "update app.org_settings set llm_base_url = $2 where org_id = $1",
        &[&t.org_id, &fake.base_url()],
    )
    .await
    .unwrap();
    let refused = ask_as(&app, t.org_id, &t.member.token, "via the org's model").await;
    assert_eq!(refused.status, 502, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "upstream_error");
    assert_eq!(
        fake.requests().len(),
        1,
        "nothing reached a private address"
    );
    // Allowed to reach it, the org's model is sent no key: the server's key goes only to
    // the server's model, and this org has none of its own.
    let open = app_with(&fake, |_| {}).await;
    let t = team(&open, "Keyless").await;
    open.sql_superuser()
        .await
        .execute(
            "update app.org_settings set llm_base_url = $2 where org_id = $1",
            &[&t.org_id, &fake.base_url()],
        )
        .await
        .unwrap();
    let r = ask_as(&open, t.org_id, &t.member.token, "who pays?").await;
    assert_eq!(r.status, 502, "the fake refuses a request without its key");
    let sent = fake.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].header("authorization"), None);
}

#[tokio::test]
async fn the_callers_key_then_the_orgs_then_the_servers() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |_| {}).await;
    let t = team(&app, "Keys").await;
    let settings = format!("/v1/orgs/{}/settings", t.org_id);
    let last_key = || {
        fake.requests()
            .last()
            .and_then(|r| r.header("authorization").map(str::to_owned))
    };
    // No org or member key: the server's, to the server's model.
    assert_eq!(
        ask_as(&app, t.org_id, &t.member.token, "one").await.status,
        200
    );
    assert_eq!(last_key(), Some(format!("Bearer {}", llm_fake::API_KEY)));
    // The org's key wins over the server's (the fake refuses it: 502, its reason passed on).
    app.patch(
        &settings,
        &t.admin.token,
        json!({"llm_api_key": "sk-org-key-1234"}),
    )
    .await
    .assert_status(200);
    let r = ask_as(&app, t.org_id, &t.member.token, "two").await;
    assert_eq!(r.status, 502);
    assert!(
        !r.body.to_string().contains("sk-org-key-1234"),
        "{}",
        r.body
    );
    assert_eq!(last_key().as_deref(), Some("Bearer sk-org-key-1234"));
    // A member's own key wins over the org's -- for that member only.
    app.request(
        Method::PUT,
        &format!("/v1/orgs/{}/members/me/llm-key", t.org_id),
        Some(&t.member.token),
        Some(json!({"api_key": llm_fake::API_KEY})),
    )
    .await
    .assert_status(200);
    assert_eq!(
        ask_as(&app, t.org_id, &t.member.token, "three")
            .await
            .status,
        200
    );
    assert_eq!(last_key(), Some(format!("Bearer {}", llm_fake::API_KEY)));
    assert_eq!(
        ask_as(&app, t.org_id, &t.viewer.token, "four").await.status,
        502
    );
    assert_eq!(last_key().as_deref(), Some("Bearer sk-org-key-1234"));
    // The org's key cleared: the viewer is back on the server's.
    app.patch(&settings, &t.admin.token, json!({"llm_api_key": null}))
        .await
        .assert_status(200);
    assert_eq!(
        ask_as(&app, t.org_id, &t.viewer.token, "five").await.status,
        200
    );
    assert_eq!(last_key(), Some(format!("Bearer {}", llm_fake::API_KEY)));
    // The org's own model (and model name), with the org's key.
    app.patch(
        &settings,
        &t.admin.token,
        json!({"llm_base_url": fake.base_url(), "llm_model": "org-model", "llm_api_key": llm_fake::API_KEY}),
    )
    .await
    .assert_status(200);
    assert_eq!(
        ask_as(&app, t.org_id, &t.viewer.token, "six").await.status,
        200
    );
    assert_eq!(fake.requests().last().unwrap().body["model"], "org-model");
}

/// The question's rare word decides what is retrieved, however many chunks share its
/// common words: 300 chunks full of "the", "data" and "is" (each word in more than the
/// 250 candidates `app.search_chunks` ranks), one sentence about a quokka. Ranking every
/// chunk that holds any word of the question, as retrieval did before, cited five of the
/// records -- `ts_rank` counts each repeat of a common word -- and the quokka never
/// reached the prompt.
#[tokio::test]
async fn a_rare_word_of_the_question_finds_its_chunk_among_hundreds_of_common_ones() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake, |_| {}).await;
    let t = team(&app, "Burrows").await;
    let common: String = (0..20_000)
        .map(|i| format!("The data of record {i} is the data we keep.\n"))
        .collect();
    upload_ready(
        &app,
        t.org_id,
        &t.member.token,
        &[Part::file("records.txt", None, common.as_bytes())],
    )
    .await;
    let quokka = upload_ready(
        &app,
        t.org_id,
        &t.member.token,
        &[Part::file(
            "quokka.txt",
            None,
            b"The quokka data is kept in a burrow under the old fig tree.",
        )],
    )
    .await;
    let chunks = count(
        &app,
        &format!(
            "select count(*) from app.document_chunks c
              where c.org_id = '{}' and c.search @@ 'data & the & is'::tsquery",
            t.org_id
        ),
    )
    .await;
    assert!(chunks > 300, "{chunks} chunks hold the common words");
    let r = ask_as(&app, t.org_id, &t.viewer.token, "Where is the quokka data?").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let citations = r.of("start")[0]["citations"].as_array().unwrap().clone();
    assert_eq!(citations.len(), 1, "{citations:?}");
    assert_eq!(citations[0]["document_id"], quokka.as_str());
    assert!(system_prompt(fake.requests().last().unwrap()).contains("old fig tree"));
    // Every word common (each in more than 250 chunks): the chunks holding all of the
    // rarest, ranked -- five of the records, none without "record".
    let r = ask_as(
        &app,
        t.org_id,
        &t.viewer.token,
        "Is the data of record what we keep?",
    )
    .await;
    let citations = r.of("start")[0]["citations"].as_array().unwrap().clone();
    assert_eq!(citations.len(), 5, "{citations:?}");
    assert!(
        citations
            .iter()
            .all(|c| c["document_id"] != quokka.as_str())
    );
    // A word too long for the index (2,040 bytes: with its org prefix, past the 2,047 a
    // tsquery word may hold), in a chunk and in the question: not a 500, the other words
    // still find the chunk.
    let long = "é".repeat(1020);
    upload_ready(
        &app,
        t.org_id,
        &t.member.token,
        &[Part::file(
            "long.txt",
            None,
            format!("The wombat wrote {long} once.").as_bytes(),
        )],
    )
    .await;
    let r = ask_as(
        &app,
        t.org_id,
        &t.viewer.token,
        &format!("Did the wombat write {long}?"),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(system_prompt(fake.requests().last().unwrap()).contains("The wombat wrote"));
    // No word of the question in any chunk: nothing retrieved, the model told so.
    let r = ask_as(&app, t.org_id, &t.viewer.token, "Zebras?").await;
    assert_eq!(r.of("start")[0]["citations"], json!([]));
    assert!(system_prompt(fake.requests().last().unwrap()).contains("No passage"));
}

/// `app.search_terms` (how many of an org's chunks hold each lexeme; '' counts the
/// chunks) is what candidate selection trusts: it stays equal to a count over the chunks
/// through processing, reprocessing's replacement, a document's deletion and an org's.
/// The definer behind it answers nothing without a verified context.
#[tokio::test]
async fn the_word_counts_retrieval_trusts_stay_exact() {
    let app = spawn_app_with(settings(), limits()).await;
    let a = team(&app, "Counted").await;
    let b = team(&app, "Tallied").await;
    let mut docs = Vec::new();
    for (org, token, text) in [
        (a.org_id, &a.member.token, "alpha beta gamma. Alpha again."),
        (a.org_id, &a.member.token, "beta delta, and epsilon"),
        (b.org_id, &b.member.token, "alpha zeta"),
    ] {
        docs.push(
            upload_ready(
                &app,
                org,
                token,
                &[Part::file("t.txt", None, text.as_bytes())],
            )
            .await,
        );
    }
    let su = app.sql_superuser().await;
    let drift = "with counted as (
            select c.org_id, l.lexeme, count(*)::integer as chunks from app.document_chunks c,
                   unnest(tsvector_to_array(c.search)) l(lexeme) group by 1, 2
            union all
            select org_id, '', count(*)::integer from app.document_chunks group by 1)
        select count(*) from (
            (select org_id, lexeme, chunks from app.search_terms except all select * from counted)
            union all
            (select * from counted except all select org_id, lexeme, chunks from app.search_terms)) d";
    let counted = "select coalesce(sum(chunks), 0) from app.search_terms where lexeme = 'beta'";
    let check = async |what: &str, beta: i64| {
        let off: i64 = su.query_one(drift, &[]).await.unwrap().get(0);
        assert_eq!(off, 0, "{what}: app.search_terms differs from the chunks");
        let n: i64 = su.query_one(counted, &[]).await.unwrap().get(0);
        assert_eq!(n, beta, "{what}: chunks holding beta");
    };
    check("processed", 2).await;
    // Reprocessing replaces a document's chunks (delete, then insert).
    su.execute(
        "update app.documents set status = 'processing' where id = $1::text::uuid",
        &[&docs[0]],
    )
    .await
    .unwrap();
    su.execute(
        "select app.finish_document($1::text::uuid, null, array['beta beta', 'omega'], 13)",
        &[&docs[0]],
    )
    .await
    .unwrap();
    check("reprocessed", 2).await;
    app.delete(
        &format!("/v1/orgs/{}/documents/{}", a.org_id, docs[1]),
        &a.member.token,
    )
    .await
    .assert_status(204);
    check("a document deleted", 1).await;
    app.delete(&format!("/v1/orgs/{}", a.org_id), &a.owner.token)
        .await
        .assert_status(204);
    check("an org deleted", 0).await;
    let left: i64 = su
        .query_one(
            "select count(*) from app.search_terms where org_id = $1",
            &[&a.org_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "a deleted org's counts are gone");
    // The candidates' definer, as the request role with no context: nothing.
    let runtime = app.sql_runtime().await;
    let seen: i64 = runtime
        .query_one(
            "select count(*) from app.search_chunks('alpha zeta', null, 5)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    let denied = runtime
        .query_one("select count(*) from app.search_terms", &[])
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
}
