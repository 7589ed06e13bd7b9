//! The LLM client (src/llm) against a server that speaks OpenAI's chat-completions wire
//! format (tests/api/llm_fake.rs): the streamed answer reassembled, every failure mapped
//! to its error, the deadlines, cancelling by dropping the stream, the private-address
//! guard, and the key kept out of every error.

use std::time::Duration;

use palisade::llm::{Chunk, Endpoint, LlmClient, LlmError, LlmTimeouts, Message};
use serde_json::json;

use crate::llm_fake::{API_KEY, FakeLlm, MODEL, Mode};

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
    }
}

fn conversation() -> Vec<Message> {
    vec![
        msg("system", "You answer questions about the project."),
        msg("user", "hello"),
        msg("assistant", "Answer: hello"),
        msg(
            "user",
            "what is the status of the migration to the new cluster please",
        ),
    ]
}

/// The client the tests use: loopback allowed (the fake is on 127.0.0.1).
fn client(timeouts: LlmTimeouts) -> LlmClient {
    LlmClient::new(timeouts, true).unwrap()
}

fn short(first_byte_ms: u64, idle_ms: u64, total_ms: u64) -> LlmTimeouts {
    LlmTimeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_millis(first_byte_ms),
        idle: Duration::from_millis(idle_ms),
        total: Duration::from_millis(total_ms),
    }
}

/// Reads the stream to its end: the chunks, then the error that ended it if any.
async fn drain(stream: &mut palisade::llm::ChatStream) -> (Vec<Chunk>, Option<LlmError>) {
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(c) => chunks.push(c),
            Err(e) => {
                assert!(stream.next().await.is_none(), "nothing after an error");
                return (chunks, Some(e));
            }
        }
    }
    (chunks, None)
}

fn text(chunks: &[Chunk]) -> String {
    chunks
        .iter()
        .filter_map(|c| match c {
            Chunk::Delta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_streamed_answer_is_reassembled_with_its_usage() {
    let fake = FakeLlm::start().await;
    let llm = client(LlmTimeouts::default());
    let mut stream = llm
        .chat_stream(&fake.endpoint(), &conversation(), Some(256))
        .await
        .unwrap();
    let (chunks, err) = drain(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        text(&chunks),
        "Answer: what is the status of the migration to"
    );
    // One delta per word, none empty (the role chunk's empty content is skipped).
    let deltas = chunks
        .iter()
        .filter(|c| matches!(c, Chunk::Delta(_)))
        .count();
    assert_eq!(deltas, 9);
    assert_eq!(
        &chunks[9..],
        &[
            Chunk::Finished {
                reason: "stop".into()
            },
            Chunk::Usage {
                prompt_tokens: 6 + 1 + 2 + 12,
                completion_tokens: 9
            },
        ]
    );
    assert_eq!(fake.completed(), 1);
    assert_eq!(fake.cancelled(), 0);

    // What the model was sent, exactly.
    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].header("authorization"),
        Some(&*format!("Bearer {API_KEY}"))
    );
    assert_eq!(sent[0].header("accept"), Some("text/event-stream"));
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    assert_eq!(
        sent[0].body,
        json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You answer questions about the project."},
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "Answer: hello"},
                {"role": "user", "content": "what is the status of the migration to the new cluster please"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 256,
        })
    );
}

#[tokio::test]
async fn max_tokens_is_sent_only_when_set_and_a_trailing_slash_is_fine() {
    let fake = FakeLlm::start().await;
    let llm = client(LlmTimeouts::default());
    let ep = Endpoint {
        base_url: format!("{}/", fake.base_url()),
        ..fake.endpoint()
    };
    let mut stream = llm
        .chat_stream(&ep, &[msg("user", "hi")], None)
        .await
        .unwrap();
    assert_eq!(text(&drain(&mut stream).await.0), "Answer: hi");
    let body = &fake.requests()[0].body;
    assert!(body.get("max_tokens").is_none(), "{body}");
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn an_answer_without_usage_ends_at_done() {
    let fake = FakeLlm::start().await;
    fake.set_mode(Mode::NoUsage);
    let llm = client(LlmTimeouts::default());
    let mut stream = llm
        .chat_stream(&fake.endpoint(), &[msg("user", "a b c")], None)
        .await
        .unwrap();
    let (chunks, err) = drain(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text(&chunks), "Answer: a b c");
    assert!(!chunks.iter().any(|c| matches!(c, Chunk::Usage { .. })));
    assert_eq!(
        chunks.last(),
        Some(&Chunk::Finished {
            reason: "stop".into()
        })
    );
}

#[tokio::test]
async fn upstream_errors_carry_the_status_and_openai_message() {
    let fake = FakeLlm::start().await;
    let llm = client(LlmTimeouts::default());
    fake.set_mode(Mode::Error {
        status: 429,
        message: "Rate limit reached for fake-model-1 in organization org-x.".into(),
    });
    let err = llm
        .chat_stream(&fake.endpoint(), &conversation(), None)
        .await
        .err()
        .unwrap();
    match &err {
        LlmError::Upstream { status, reason } => {
            assert_eq!(*status, 429);
            assert_eq!(
                reason,
                "Rate limit reached for fake-model-1 in organization org-x."
            );
        }
        other => panic!("{other:?}"),
    }

    // No message: the status text.
    fake.set_mode(Mode::Error {
        status: 503,
        message: String::new(),
    });
    let err = llm
        .chat_stream(&fake.endpoint(), &conversation(), None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, LlmError::Upstream { status: 503, reason } if reason == "Service Unavailable"),
        "{err:?}"
    );

    // A long message is cut to 300 characters.
    fake.set_mode(Mode::Error {
        status: 400,
        message: "x".repeat(5000),
    });
    let err = llm
        .chat_stream(&fake.endpoint(), &conversation(), None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, LlmError::Upstream { status: 400, reason } if reason.len() == 300),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_key_is_sent_as_bearer_and_never_shown_in_an_error() {
    let fake = FakeLlm::start().await;
    let llm = client(LlmTimeouts::default());

    // A wrong key: the fake echoes it in its 401 (as OpenAI does, partly).
    let wrong = "sk-wrong-key-for-this-test-99887766";
    let ep = Endpoint {
        api_key: Some(wrong.to_owned().into()),
        ..fake.endpoint()
    };
    let err = llm
        .chat_stream(&ep, &conversation(), None)
        .await
        .err()
        .unwrap();
    let shown = err.to_string();
    assert!(
        matches!(err, LlmError::Upstream { status: 401, .. }),
        "{err:?}"
    );
    assert!(shown.contains("Incorrect API key provided"), "{shown}");
    assert!(
        !shown.contains("wrong-key") && !shown.contains("99887766"),
        "{shown}"
    );
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some(&*format!("Bearer {wrong}"))
    );

    // A key that does not look like one, echoed in an error message with a bearer header.
    let odd_key = "plain-secret-value-123";
    fake.set_mode(Mode::Error {
        status: 500,
        message: format!("upstream saw key {odd_key} and header Authorization: Bearer {odd_key}"),
    });
    let ep = Endpoint {
        api_key: Some(odd_key.to_owned().into()),
        ..fake.endpoint()
    };
    let err = llm
        .chat_stream(&ep, &conversation(), None)
        .await
        .err()
        .unwrap();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(odd_key), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");

    // No key: no Authorization header at all.
    fake.set_mode(Mode::Normal);
    let ep = Endpoint {
        api_key: None,
        ..fake.endpoint()
    };
    let err = llm
        .chat_stream(&ep, &conversation(), None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, LlmError::Upstream { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(
        fake.requests().last().unwrap().header("authorization"),
        None
    );
}

#[tokio::test]
async fn a_connection_broken_mid_answer_is_an_error_after_the_words_received() {
    let fake = FakeLlm::start().await;
    fake.set_mode(Mode::Disconnect { after_chunks: 2 });
    let llm = client(LlmTimeouts::default());
    let mut stream = llm
        .chat_stream(&fake.endpoint(), &conversation(), None)
        .await
        .unwrap();
    let (chunks, err) = drain(&mut stream).await;
    assert_eq!(text(&chunks), "Answer: what");
    assert!(matches!(err, Some(LlmError::Unreachable(_))), "{err:?}");
    assert_eq!(fake.completed(), 0);
    assert_eq!(fake.cancelled(), 0, "a break is not a cancel");

    // Only that connection broke.
    fake.set_mode(Mode::Normal);
    let mut stream = llm
        .chat_stream(&fake.endpoint(), &[msg("user", "again")], None)
        .await
        .unwrap();
    assert_eq!(text(&drain(&mut stream).await.0), "Answer: again");
}

#[tokio::test]
async fn headers_that_never_come_time_out_at_first_byte() {
    let fake = FakeLlm::start().await;
    fake.set_mode(Mode::Hang);
    let llm = client(short(300, 5000, 10_000));
    let started = std::time::Instant::now();
    let err = llm
        .chat_stream(&fake.endpoint(), &conversation(), None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            LlmError::Timeout {
                stage: "first_byte"
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_silent_stream_times_out_at_idle_and_a_long_one_at_total() {
    let fake = FakeLlm::start().await;
    fake.set_mode(Mode::Slow {
        per_chunk: Duration::from_millis(700),
    });
    let llm = client(short(2000, 200, 10_000));
    let mut stream = llm
        .chat_stream(&fake.endpoint(), &conversation(), None)
        .await
        .unwrap();
    let (chunks, err) = drain(&mut stream).await;
    assert!(chunks.is_empty(), "{chunks:?}");
    assert!(
        matches!(err, Some(LlmError::Timeout { stage: "idle" })),
        "{err:?}"
    );

    // Each word in time, the whole answer not.
    fake.set_mode(Mode::Slow {
        per_chunk: Duration::from_millis(100),
    });
    let llm = client(short(2000, 1000, 450));
    let started = std::time::Instant::now();
    let mut stream = llm
        .chat_stream(&fake.endpoint(), &conversation(), None)
        .await
        .unwrap();
    let (chunks, err) = drain(&mut stream).await;
    assert!(
        matches!(err, Some(LlmError::Timeout { stage: "total" })),
        "{err:?}"
    );
    assert!(chunks.len() < 9, "not the whole answer: {chunks:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_connect_that_hangs_times_out_at_connect() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    // neither succeeds nor fails.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let mut full = false;
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => held.push(s),
            _ => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "the accept queue never filled");
    let llm = LlmClient::new(
        LlmTimeouts {
            connect: Duration::from_millis(300),
            ..short(5000, 5000, 10_000)
        },
        true,
    )
    .unwrap();
    let ep = Endpoint {
        base_url: format!("http://{addr}/v1"),
        api_key: None,
        model: MODEL.into(),
    };
    let err = llm
        .chat_stream(&ep, &conversation(), None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, LlmError::Timeout { stage: "connect" }),
        "{err:?}"
    );
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_upstream_call() {
    let fake = FakeLlm::start().await;
    fake.set_mode(Mode::Slow {
        per_chunk: Duration::from_millis(50),
    });
    let llm = client(LlmTimeouts::default());
    let mut stream = llm
        .chat_stream(&fake.endpoint(), &conversation(), None)
        .await
        .unwrap();
    for want in ["Answer:", " what"] {
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            Chunk::Delta(want.into())
        );
    }
    assert_eq!(fake.cancelled(), 0);
    drop(stream);
    assert_eq!(fake.wait_cancelled(1).await, 1);
    assert_eq!(fake.completed(), 0);
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let fake = FakeLlm::start().await;
    let guarded = LlmClient::new(LlmTimeouts::default(), false).unwrap();
    let err = guarded
        .chat_stream(&fake.endpoint(), &conversation(), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, LlmError::Refused(_)), "{err:?}");

    // Through a name: the resolver drops the loopback answers.
    let port = fake.base_url().split(':').nth(2).unwrap().to_owned();
    let ep = Endpoint {
        base_url: format!("http://localhost:{port}"),
        ..fake.endpoint()
    };
    let err = guarded
        .chat_stream(&ep, &conversation(), None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, LlmError::Refused(m) if m.contains("localhost")),
        "{err:?}"
    );
    assert!(fake.requests().is_empty(), "nothing reached the fake");

    // Allowed, the same name reaches it.
    let mut stream = client(LlmTimeouts::default())
        .chat_stream(&ep, &[msg("user", "via name")], None)
        .await
        .unwrap();
    assert_eq!(text(&drain(&mut stream).await.0), "Answer: via name");
}

#[tokio::test]
async fn the_fake_answers_json_when_not_streaming() {
    let fake = FakeLlm::start().await;
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", fake.base_url()))
        .bearer_auth(API_KEY)
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "x y"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Answer: x y");
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(fake.completed(), 1);
}

/// Serves `answer` (status, content type, body) to every POST /v1/chat/completions on a
/// loopback port; the endpoint to use.
async fn serve_fixed(status: u16, content_type: &'static str, body: &'static str) -> Endpoint {
    use poem::listener::{Acceptor, Listener, TcpListener};
    let app = poem::Route::new().at(
        "/v1/chat/completions",
        poem::post(poem::endpoint::make_sync(move |_| {
            poem::Response::builder()
                .status(poem::http::StatusCode::from_u16(status).unwrap())
                .content_type(content_type)
                .header("location", "http://127.0.0.1:9/v1/chat/completions")
                .body(body)
        })),
    );
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    Endpoint {
        base_url: format!("http://{addr}/v1"),
        api_key: Some(API_KEY.to_owned().into()),
        model: MODEL.into(),
    }
}

#[tokio::test]
async fn answers_that_are_not_an_event_stream_of_chunks_are_protocol_errors() {
    let llm = client(LlmTimeouts::default());
    // A server that ignores `stream: true` and answers one JSON document.
    let ep = serve_fixed(200, "application/json", r#"{"object":"chat.completion"}"#).await;
    let err = llm
        .chat_stream(&ep, &conversation(), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, LlmError::Protocol(_)), "{err:?}");

    // An event that is not JSON, after a good one.
    let ep = serve_fixed(
        200,
        "text/event-stream",
        "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\ndata: {oops\n\n",
    )
    .await;
    let mut stream = llm.chat_stream(&ep, &conversation(), None).await.unwrap();
    let (chunks, err) = drain(&mut stream).await;
    assert_eq!(chunks, vec![Chunk::Delta("ok".into())]);
    assert!(matches!(err, Some(LlmError::Protocol(_))), "{err:?}");

    // An end without [DONE] or a finish reason.
    let ep = serve_fixed(
        200,
        "text/event-stream",
        "data: {\"choices\":[{\"delta\":{\"content\":\"cut\"}}]}\n\n",
    )
    .await;
    let mut stream = llm.chat_stream(&ep, &conversation(), None).await.unwrap();
    let (chunks, err) = drain(&mut stream).await;
    assert_eq!(chunks, vec![Chunk::Delta("cut".into())]);
    assert!(matches!(err, Some(LlmError::Protocol(_))), "{err:?}");
}

#[tokio::test]
async fn a_finished_answer_may_end_without_done() {
    // Some servers stop after the finish reason; the last event lacks its blank line too.
    let ep = serve_fixed(
        200,
        "text/event-stream",
        "data: {\"choices\":[{\"delta\":{\"content\":\"last\"},\"finish_reason\":\"length\"}]}",
    )
    .await;
    let mut stream = client(LlmTimeouts::default())
        .chat_stream(&ep, &conversation(), None)
        .await
        .unwrap();
    let (chunks, err) = drain(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        chunks,
        vec![
            Chunk::Delta("last".into()),
            Chunk::Finished {
                reason: "length".into()
            }
        ]
    );
}

#[tokio::test]
async fn an_error_page_that_is_not_openai_json_shows_the_status_text() {
    let ep = serve_fixed(
        502,
        "text/html",
        "<html><body>Bad gateway at proxy-7 (Authorization: Bearer tok)</body></html>",
    )
    .await;
    let err = client(LlmTimeouts::default())
        .chat_stream(&ep, &conversation(), None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, LlmError::Upstream { status: 502, reason } if reason == "Bad Gateway"),
        "{err:?}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    // The redirect points at 127.0.0.1:9 (discard): following it would be a connection
    // error, not the 307.
    let ep = serve_fixed(307, "text/plain", "").await;
    let err = client(LlmTimeouts::default())
        .chat_stream(&ep, &conversation(), None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, LlmError::Upstream { status: 307, reason } if reason == "Temporary Redirect"),
        "{err:?}"
    );
}
