//! A fake OpenAI-compatible model for the tests: a real HTTP server on a loopback port that
//! speaks `POST /v1/chat/completions` as OpenAI does -- Bearer keys, OpenAI's error shape,
//! and with `stream: true` server-sent events (`data: {chunk}\n\n` ..., a usage chunk when
//! `stream_options.include_usage`, then `data: [DONE]\n\n`), else one JSON completion.
//!
//! Deterministic: the answer is `"Answer: "` and the first 8 words of the last user
//! message, one chunk per word; prompt_tokens counts the whitespace-separated words of all
//! messages, completion_tokens the chunks sent. Tests switch its behaviour with
//! [`FakeLlm::set_mode`], read what it was sent with [`FakeLlm::requests`], and count
//! answers streamed to the end ([`FakeLlm::completed`]) and streams the client dropped
//! before the end ([`FakeLlm::cancelled`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use poem::{
    Body, EndpointExt, Request, Response, Route,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    web::Data,
};
use serde_json::{Value, json};

/// The key the fake requires as `Authorization: Bearer ...`.
pub const API_KEY: &str = "sk-fake-llm-7c1d0e5a9b3f4c2d";
/// The model name tests send.
pub const MODEL: &str = "fake-model-1";

/// How the fake answers the next requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Waits this long before each word.
    Slow {
        per_chunk: Duration,
    },
    /// Answers `status` with OpenAI's error JSON.
    Error {
        status: u16,
        message: String,
    },
    /// Breaks the connection after this many words, without `[DONE]`.
    Disconnect {
        after_chunks: usize,
    },
    /// Never sends the response headers.
    Hang,
    /// No usage chunk, even when asked for.
    NoUsage,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Clone)]
pub struct FakeLlm {
    base: String,
    mode: Arc<Mutex<Mode>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    completed: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
}

fn openai_error(status: StatusCode, message: &str, code: Option<&str>) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(
            json!({"error": {"message": message, "type": "invalid_request_error",
                             "param": null, "code": code}})
            .to_string(),
        )
}

/// The deterministic answer to `messages`, word by word (the first without, the others
/// with a leading space, so the words concatenate to the answer).
pub fn answer_words(messages: &[Value]) -> Vec<String> {
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    std::iter::once("Answer:".to_owned())
        .chain(
            last_user
                .split_whitespace()
                .take(8)
                .map(|w| format!(" {w}")),
        )
        .collect()
}

/// The answer as one string.
pub fn answer(messages: &[Value]) -> String {
    answer_words(messages).concat()
}

/// prompt_tokens: the whitespace-separated words of all messages.
pub fn prompt_tokens(messages: &[Value]) -> usize {
    messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .map(|c| c.split_whitespace().count())
        .sum()
}

/// How a streamed answer ended, seen from the fake.
#[derive(PartialEq)]
enum End {
    Running,
    Done,
    Broken,
}

/// Lives inside the body stream: dropped before `[DONE]` (and not broken on purpose),
/// the client went away -- a cancel.
struct Guard {
    end: End,
    completed: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.end == End::Running {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

struct StreamState {
    events: std::vec::IntoIter<String>,
    /// Words sent so far (Slow waits before each word, Disconnect breaks after some).
    words_sent: usize,
    /// Which events are words, and the next event's index.
    word_indexes: std::ops::Range<usize>,
    index: usize,
    mode: Mode,
    guard: Guard,
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

async fn handle(req: &Request, body: Vec<u8>, fake: &FakeLlm) -> Response {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    fake.requests.lock().unwrap().push(Recorded {
        headers,
        body: json.clone(),
    });
    if req.method() != poem::http::Method::POST || req.uri().path() != "/v1/chat/completions" {
        return openai_error(StatusCode::NOT_FOUND, "Unknown request URL", None);
    }
    let auth = req.header("authorization").unwrap_or("");
    if auth != format!("Bearer {API_KEY}") {
        // OpenAI names the key it was given (this fake does so in full: the client must
        // keep it out of its errors).
        let given = auth.strip_prefix("Bearer ").unwrap_or("");
        let message = if given.is_empty() {
            "You didn't provide an API key.".to_owned()
        } else {
            format!("Incorrect API key provided: {given}.")
        };
        return openai_error(StatusCode::UNAUTHORIZED, &message, Some("invalid_api_key"));
    }
    let (Some(model), Some(messages)) = (json["model"].as_str(), json["messages"].as_array())
    else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "'model' and 'messages' are required",
            None,
        );
    };
    let mode = fake.mode.lock().unwrap().clone();
    match &mode {
        Mode::Error { status, message } => {
            return openai_error(StatusCode::from_u16(*status).unwrap(), message, None);
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        _ => {}
    }
    let words = answer_words(messages);
    let usage = json!({
        "prompt_tokens": prompt_tokens(messages),
        "completion_tokens": words.len(),
        "total_tokens": prompt_tokens(messages) + words.len(),
    });
    let created = chrono::Utc::now().timestamp();
    let id = format!("chatcmpl-fake{}", fake.requests.lock().unwrap().len());
    if json["stream"] != true {
        fake.completed.fetch_add(1, Ordering::SeqCst);
        return Response::builder().content_type("application/json").body(
            json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": words.concat()}}],
                "usage": usage,
            })
            .to_string(),
        );
    }
    let include_usage = json["stream_options"]["include_usage"] == true && mode != Mode::NoUsage;
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        sse(&c)
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    events.extend(
        words
            .iter()
            .map(|w| chunk(json!({"content": w}), Value::Null)),
    );
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        events.push(sse(&json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_fake", "choices": [], "usage": usage,
        })));
    }
    events.push("data: [DONE]\n\n".to_owned());
    let state = StreamState {
        word_indexes: 1..1 + words.len(),
        events: events.into_iter(),
        words_sent: 0,
        index: 0,
        mode,
        guard: Guard {
            end: End::Running,
            completed: fake.completed.clone(),
            cancelled: fake.cancelled.clone(),
        },
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        let event = s.events.next()?;
        let is_word = s.word_indexes.contains(&s.index);
        s.index += 1;
        if is_word {
            match s.mode {
                Mode::Slow { per_chunk } => tokio::time::sleep(per_chunk).await,
                Mode::Disconnect { after_chunks } if s.words_sent == after_chunks => {
                    s.guard.end = End::Broken;
                    // An error from the body would end it cleanly (hyper writes the last
                    // chunk), so unwind the connection's task instead: its socket closes
                    // in the middle of the chunked body. `resume_unwind` skips the panic
                    // hook, so nothing is printed.
                    // First a pause, for the server to flush what was sent so far.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    drop(s);
                    std::panic::resume_unwind(Box::new("the fake breaks the connection"));
                }
                _ => {}
            }
            s.words_sent += 1;
        }
        if event.starts_with("data: [DONE]") {
            s.guard.end = End::Done;
            s.guard.completed.fetch_add(1, Ordering::SeqCst);
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(event)), s))
    });
    Response::builder()
        .content_type("text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_bytes_stream(stream))
}

#[poem::handler]
async fn endpoint(req: &Request, body: Vec<u8>, fake: Data<&FakeLlm>) -> Response {
    handle(req, body, &fake).await
}

impl FakeLlm {
    /// Starts the fake on a loopback port, in Normal mode.
    pub async fn start() -> Self {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let fake = FakeLlm {
            base: format!("http://{addr}"),
            mode: Arc::new(Mutex::new(Mode::Normal)),
            requests: Arc::default(),
            completed: Arc::default(),
            cancelled: Arc::default(),
        };
        let app = Route::new().at("/*path", endpoint).data(fake.clone());
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
        fake
    }

    /// `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.base)
    }

    /// An endpoint setting pointing at this fake, with the right key.
    pub fn endpoint(&self) -> palisade::llm::Endpoint {
        palisade::llm::Endpoint {
            base_url: self.base_url(),
            api_key: Some(API_KEY.to_owned().into()),
            model: MODEL.to_owned(),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Answers sent to the end (`[DONE]`, or a non-streaming answer).
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }

    /// Streams the client dropped before the end.
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Waits (up to 5 s) until `cancelled()` reaches `n`; returns it.
    pub async fn wait_cancelled(&self, n: usize) -> usize {
        for _ in 0..100 {
            if self.cancelled() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.cancelled()
    }
}

#[test]
fn the_answer_is_a_function_of_the_last_user_message() {
    let messages = vec![
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": "first question"}),
        json!({"role": "assistant", "content": "Answer: first question"}),
        json!({"role": "user", "content": " one two  three four five six seven eight nine ten"}),
    ];
    assert_eq!(
        answer(&messages),
        "Answer: one two three four five six seven eight"
    );
    assert_eq!(answer_words(&messages).len(), 9);
    assert_eq!(prompt_tokens(&messages), 2 + 2 + 3 + 10);
}
