//! A client for OpenAI-compatible chat-completions endpoints, streaming: it POSTs
//! `{base_url}/chat/completions` with `stream: true` and hands back the answer's pieces as
//! the server-sent events arrive.
//!
//! The endpoint is an org's setting, so it is untrusted: unless private networks are
//! allowed, the client connects to public addresses only (IP literals are checked before
//! the request, names by a resolver that drops private answers, which also stops DNS
//! rebinding), it follows no redirects and uses no proxy from the environment, every stage
//! has a deadline, and no error it returns carries the API key.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, LazyLock},
    time::Duration,
};

use regex::Regex;
use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    redirect,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::time::Instant;

/// The longest `llm_base_url` accepted.
pub const MAX_BASE_URL_LEN: usize = 2048;
/// An upstream error's reason is cut to this many characters.
const MAX_REASON_CHARS: usize = 300;
/// At most this much of an error body is read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// One server-sent event (or one line) may not be longer than this.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The deadlines of one call.
#[derive(Debug, Clone, Copy)]
pub struct LlmTimeouts {
    /// Opening the TCP (and TLS) connection.
    pub connect: Duration,
    /// From sending the request until the response headers.
    pub first_byte: Duration,
    /// The longest gap between two pieces of the stream.
    pub idle: Duration,
    /// The whole call, from sending to the end of the stream.
    pub total: Duration,
}

impl Default for LlmTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(30),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(300),
        }
    }
}

/// Where to send a chat: an OpenAI-compatible API.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// For example `https://api.openai.com/v1`: the client POSTs
    /// `{base_url}/chat/completions`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<SecretString>,
    pub model: String,
}

/// One message of the conversation.
#[derive(Debug, Clone)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// More of the answer's text (never empty).
    Delta(String),
    /// The tokens the call used, when the server reports them (usually once, after the
    /// finish reason; should one come more than once, the last counts).
    Usage {
        prompt_tokens: i64,
        completion_tokens: i64,
    },
    /// Why the model stopped (`stop`, `length`, ...).
    Finished { reason: String },
}

/// What went wrong. No message ever contains the API key or anything looking like a
/// bearer token: the texts are fit to show to the org's members.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the model endpoint did not answer in time ({stage})")]
    Timeout { stage: &'static str },
    #[error("the model endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error("the model endpoint is not allowed: {0}")]
    Refused(String),
    #[error("the model endpoint answered {status}: {reason}")]
    Upstream { status: u16, reason: String },
    #[error("the model endpoint's answer was not understood: {0}")]
    Protocol(String),
}

/// Checks an `llm_base_url` setting: http or https, a host, no user or password, no query
/// or fragment, at most 2048 characters. The error says what is wrong, for the user.
/// (Whether the host is a public address is decided when connecting.)
pub fn check_base_url(url: &str) -> Result<(), String> {
    parse_base_url(url).map(|_| ())
}

fn parse_base_url(url: &str) -> Result<Url, String> {
    if url.len() > MAX_BASE_URL_LEN {
        return Err(format!(
            "the URL is longer than {MAX_BASE_URL_LEN} characters"
        ));
    }
    let parsed = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("the URL must start with http:// or https://".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the URL may not contain a user name or password".into());
    }
    if parsed.query().is_some() {
        return Err("the URL may not contain a query (?...)".into());
    }
    if parsed.fragment().is_some() {
        return Err("the URL may not contain a fragment (#...)".into());
    }
    Ok(parsed)
}

/// `{base_url}/chat/completions`.
fn completions_url(base_url: &str) -> Result<Url, String> {
    let base = parse_base_url(base_url)?;
    let joined = format!("{}/chat/completions", base.as_str().trim_end_matches('/'));
    Url::parse(&joined).map_err(|e| format!("not a URL: {e}"))
}

/// Whether an address is one the client refuses unless private networks are allowed:
/// loopback, private (RFC 1918, fc00::/7), link-local (169.254/16 with the cloud metadata
/// service, fe80::/10), unspecified, CGNAT (100.64/10), and also "this network" (0/8),
/// broadcast, multicast and the deprecated site-local fec0::/10. IPv6 addresses that
/// embed an IPv4 address (mapped, compatible, NAT64) are judged by it.
pub fn is_private_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64)
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_private_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96).
    if (s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified())
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return is_private_v4(Ipv4Addr::new(a, b, c, d));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
}

/// Resolving a name found only private addresses (the error travels through reqwest's
/// error chain and becomes `LlmError::Refused`).
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to a private or local address")]
struct PrivateAddress {
    host: String,
}

/// The system resolver, keeping public addresses only (unless private ones are allowed).
/// The connection goes to an address this returned, so a name cannot be checked as public
/// and then connect somewhere private (DNS rebinding).
struct GuardedResolver {
    allow_private_networks: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private_networks;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow || !is_private_address(a.ip()))
                .collect();
            if kept.is_empty() && !found.is_empty() {
                return Err(Box::new(PrivateAddress { host }) as _);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

static BEARER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\bbearer\s+[^\s,;]+").expect("a valid regex"));
static SK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\bsk-[A-Za-z0-9_\-]{4,}").expect("a valid regex"));

/// `text` without the API key, bearer tokens or `sk-...` keys, cut to 300 characters.
fn redact(text: &str, key: Option<&SecretString>) -> String {
    let mut out = text.to_owned();
    if let Some(key) = key
        .map(ExposeSecret::expose_secret)
        .filter(|k| !k.is_empty())
    {
        out = out.replace(key, "[redacted]");
    }
    let out = BEARER.replace_all(&out, "Bearer [redacted]");
    let out = SK.replace_all(&out, "[redacted]");
    out.chars().take(MAX_REASON_CHARS).collect()
}

/// The calls' HTTP client (cheap to clone: one connection pool).
#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    timeouts: LlmTimeouts,
    allow_private_networks: bool,
}

impl LlmClient {
    /// `allow_private_networks`: connect to loopback and private addresses too (a model
    /// served on the same host or network; also the tests).
    pub fn new(timeouts: LlmTimeouts, allow_private_networks: bool) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .no_proxy()
            .redirect(redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private_networks,
            }))
            .user_agent(concat!("palisade/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            timeouts,
            allow_private_networks,
        })
    }

    /// Sends the request (stream: true, stream_options.include_usage: true, model,
    /// messages, max_tokens when Some) and returns once the upstream answered 2xx with
    /// headers.
    pub async fn chat_stream(
        &self,
        ep: &Endpoint,
        messages: &[Message],
        max_tokens: Option<u32>,
    ) -> Result<ChatStream, LlmError> {
        let started = Instant::now();
        let deadline = started + self.timeouts.total;
        let url = completions_url(&ep.base_url).map_err(LlmError::Refused)?;
        if !self.allow_private_networks {
            let literal = url
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|h| h.parse::<IpAddr>().ok());
            if let Some(ip) = literal.filter(|ip| is_private_address(*ip)) {
                return Err(LlmError::Refused(format!(
                    "{ip} is a private or local address"
                )));
            }
        }
        let mut body = json!({
            "model": ep.model,
            "messages": messages
                .iter()
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect::<Vec<_>>(),
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let Some(max) = max_tokens {
            body["max_tokens"] = json!(max);
        }
        let mut req = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        if let Some(key) = &ep.api_key {
            req = req.bearer_auth(key.expose_secret());
        }
        let key = ep.api_key.as_ref();
        let (wait, stage) = stage_wait(self.timeouts.first_byte, "first_byte", deadline);
        let resp = match tokio::time::timeout(wait, req.send()).await {
            Err(_) => return Err(LlmError::Timeout { stage }),
            Ok(Err(e)) => return Err(send_error(&e, key)),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        if !status.is_success() {
            let reason = read_error(resp, deadline, self.timeouts.idle).await;
            let reason = match reason {
                Some(r) if !r.trim().is_empty() => r,
                _ => status
                    .canonical_reason()
                    .unwrap_or("no reason given")
                    .into(),
            };
            return Err(LlmError::Upstream {
                status: status.as_u16(),
                reason: redact(&reason, key),
            });
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("application/json") {
            return Err(LlmError::Protocol(
                "the endpoint answered JSON, not an event stream".into(),
            ));
        }
        Ok(ChatStream {
            resp,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            deadline,
            idle: self.timeouts.idle,
            key: ep.api_key.clone(),
            finished: false,
            eof: false,
            done: false,
        })
    }
}

/// How long to wait for a stage: its own timeout, or what is left of the total when
/// that is shorter (then a miss is the total's).
fn stage_wait(own: Duration, stage: &'static str, deadline: Instant) -> (Duration, &'static str) {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < own {
        (left, "total")
    } else {
        (own, stage)
    }
}

fn send_error(e: &reqwest::Error, key: Option<&SecretString>) -> LlmError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(private) = err.downcast_ref::<PrivateAddress>() {
            return LlmError::Refused(private.to_string());
        }
        source = err.source();
    }
    if e.is_connect() && e.is_timeout() {
        return LlmError::Timeout { stage: "connect" };
    }
    LlmError::Unreachable(redact(&error_chain(e), key))
}

/// An error and its causes, without the URL (`a: b: c`).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = match e.downcast_ref::<reqwest::Error>() {
        Some(r) if r.is_connect() => "connection failed".to_owned(),
        Some(r) if r.is_body() || r.is_decode() => "the connection broke".to_owned(),
        Some(_) => "request failed".to_owned(),
        None => e.to_string(),
    };
    let mut source = e.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = err.source();
    }
    out
}

/// The reason in an error answer: OpenAI's `error.message` (or a string `error`, or
/// `message`); None for any other body (an HTML page of a proxy is not shown).
async fn read_error(
    mut resp: reqwest::Response,
    deadline: Instant,
    idle: Duration,
) -> Option<String> {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        let (wait, _) = stage_wait(idle, "idle", deadline);
        match tokio::time::timeout(wait, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
            Ok(Ok(None)) => break,
            _ => return None,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        let message = v["error"]["message"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .or_else(|| v["message"].as_str());
        return message.map(str::to_owned);
    }
    None
}

/// A streamed answer. Dropping it closes the upstream connection, which cancels the call.
pub struct ChatStream {
    resp: reqwest::Response,
    parser: SseParser,
    pending: VecDeque<Chunk>,
    deadline: Instant,
    idle: Duration,
    key: Option<SecretString>,
    /// A `finish_reason` arrived (an end without `[DONE]` is then accepted).
    finished: bool,
    /// The response body ended (what is left in the parser is all there is).
    eof: bool,
    /// `[DONE]`, the end, or an error: nothing more comes.
    done: bool,
}

impl ChatStream {
    /// The next piece of the answer; None after `[DONE]` (or after an error).
    pub async fn next(&mut self) -> Option<Result<Chunk, LlmError>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(Ok(chunk));
            }
            if self.done {
                return None;
            }
            match self.parser.next_event() {
                Ok(Some(data)) => {
                    if let Err(e) = self.on_data(&data) {
                        return Some(Err(self.fail(e)));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Some(Err(self.fail(e))),
            }
            if self.eof {
                // Lenient with servers that stop after the finish reason without [DONE].
                self.done = true;
                return (!self.finished)
                    .then(|| Err(LlmError::Protocol("the stream ended before [DONE]".into())));
            }
            let (wait, stage) = stage_wait(self.idle, "idle", self.deadline);
            match tokio::time::timeout(wait, self.resp.chunk()).await {
                Err(_) => return Some(Err(self.fail(LlmError::Timeout { stage }))),
                Ok(Err(e)) => {
                    let e = LlmError::Unreachable(redact(&error_chain(&e), self.key.as_ref()));
                    return Some(Err(self.fail(e)));
                }
                Ok(Ok(Some(bytes))) => self.parser.feed(&bytes),
                Ok(Ok(None)) => {
                    self.parser.finish();
                    self.eof = true;
                }
            }
        }
    }

    fn fail(&mut self, e: LlmError) -> LlmError {
        self.done = true;
        self.pending.clear();
        e
    }

    /// One event's data: `[DONE]` or a chat.completion.chunk.
    fn on_data(&mut self, data: &str) -> Result<(), LlmError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunks = parse_chunk(data, self.key.as_ref())?;
        self.finished |= chunks.iter().any(|c| matches!(c, Chunk::Finished { .. }));
        self.pending.extend(chunks);
        Ok(())
    }
}

/// The pieces in one `chat.completion.chunk`: its text, its finish reason, its usage.
fn parse_chunk(data: &str, key: Option<&SecretString>) -> Result<Vec<Chunk>, LlmError> {
    let v: Value = serde_json::from_str(data)
        .map_err(|e| LlmError::Protocol(format!("an event is not JSON ({e})")))?;
    if !v.is_object() {
        return Err(LlmError::Protocol("an event is not a JSON object".into()));
    }
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let message = err["message"]
            .as_str()
            .or_else(|| err.as_str())
            .unwrap_or("an error without a message");
        return Err(LlmError::Protocol(format!(
            "the stream reported an error: {}",
            redact(message, key)
        )));
    }
    let mut out = Vec::new();
    let choice = &v["choices"][0];
    if let Some(text) = choice["delta"]["content"]
        .as_str()
        .filter(|t| !t.is_empty())
    {
        out.push(Chunk::Delta(text.to_owned()));
    }
    if let Some(reason) = choice["finish_reason"].as_str() {
        out.push(Chunk::Finished {
            reason: reason.to_owned(),
        });
    }
    let usage = &v["usage"];
    if usage.is_object() {
        let count = |field: &str| {
            usage[field]
                .as_i64()
                .ok_or_else(|| LlmError::Protocol(format!("usage.{field} is not a number")))
        };
        out.push(Chunk::Usage {
            prompt_tokens: count("prompt_tokens")?,
            completion_tokens: count("completion_tokens")?,
        });
    }
    Ok(out)
}

/// Server-sent events, as the HTML standard parses them, for the `data` field only:
/// lines end in `\r\n`, `\n` or `\r`; `:` starts a comment; one space after the colon
/// is dropped; several `data` lines join with `\n`; a blank line ends the event. Bytes
/// arrive in any pieces.
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
    /// The current event's data lines, joined.
    data: Option<String>,
    /// The stream ended: a last line without its line end counts.
    ended: bool,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn finish(&mut self) {
        self.ended = true;
    }

    /// The next complete line, without its end.
    fn next_line(&mut self) -> Result<Option<String>, LlmError> {
        let Some(end) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') else {
            if self.buf.len() > MAX_EVENT_BYTES {
                return Err(LlmError::Protocol("a line is too long".into()));
            }
            if self.ended && !self.buf.is_empty() {
                let line = std::mem::take(&mut self.buf);
                return utf8(line).map(Some);
            }
            return Ok(None);
        };
        let skip = match self.buf[end] {
            b'\r' if end + 1 == self.buf.len() && !self.ended => return Ok(None), // \n may follow
            b'\r' if self.buf.get(end + 1) == Some(&b'\n') => 2,
            _ => 1,
        };
        let line: Vec<u8> = self.buf.drain(..end + skip).take(end).collect();
        utf8(line).map(Some)
    }

    /// The data of the next complete event (events without data are skipped).
    fn next_event(&mut self) -> Result<Option<String>, LlmError> {
        while let Some(line) = self.next_line()? {
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    return Ok(Some(data));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            if field == "data" {
                let data = match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data
                    }
                    empty => empty.insert(String::new()),
                };
                data.push_str(value);
                if data.len() > MAX_EVENT_BYTES {
                    return Err(LlmError::Protocol("an event is too long".into()));
                }
            }
        }
        // At the end of the stream, an event without its blank line still counts.
        if self.ended && self.buf.is_empty() {
            return Ok(self.data.take());
        }
        Ok(None)
    }
}

fn utf8(line: Vec<u8>) -> Result<String, LlmError> {
    String::from_utf8(line).map_err(|_| LlmError::Protocol("the stream is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event's data when `stream` arrives cut into `size`-byte pieces.
    fn events_in_pieces(stream: &str, size: usize) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for piece in stream.as_bytes().chunks(size) {
            p.feed(piece);
            while let Some(data) = p.next_event().unwrap() {
                out.push(data);
            }
        }
        p.finish();
        while let Some(data) = p.next_event().unwrap() {
            out.push(data);
        }
        out
    }

    #[test]
    fn events_are_the_same_however_the_bytes_are_cut() {
        let stream = ": keep-alive comment\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\nid: 7\ndata:{\"b\":\"é\"}\n\ndata: one\ndata:  two\n\ndata: three\r\rdata: [DONE]\n\n";
        let want = vec![
            "{\"a\":1}".to_owned(),
            "{\"b\":\"é\"}".to_owned(),
            "one\n two".to_owned(),
            "three".to_owned(),
            "[DONE]".to_owned(),
        ];
        for size in 1..=stream.len() {
            assert_eq!(events_in_pieces(stream, size), want, "pieces of {size}");
        }
    }

    #[test]
    fn a_lone_cr_at_a_piece_end_waits_for_a_possible_lf() {
        let mut p = SseParser::default();
        p.feed(b"data: a\r");
        assert_eq!(p.next_event().unwrap(), None);
        p.feed(b"\n\r");
        assert_eq!(p.next_event().unwrap(), None);
        p.feed(b"\n");
        assert_eq!(p.next_event().unwrap().as_deref(), Some("a"));
        assert_eq!(p.next_event().unwrap(), None);
    }

    #[test]
    fn the_last_event_counts_without_its_blank_line() {
        assert_eq!(events_in_pieces("data: [DONE]", 3), vec!["[DONE]"]);
        assert_eq!(events_in_pieces("data: x\n", 100), vec!["x"]);
        assert!(events_in_pieces(": only a comment\n\n", 2).is_empty());
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = SseParser::default();
        p.feed(&vec![b'a'; MAX_EVENT_BYTES + 1]);
        assert!(matches!(p.next_event(), Err(LlmError::Protocol(_))));
    }

    #[test]
    fn chunks_carry_text_finish_and_usage() {
        let c = |s: &str| parse_chunk(s, None).unwrap();
        assert_eq!(
            c(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#),
            vec![]
        );
        assert_eq!(
            c(r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#),
            vec![Chunk::Delta("Hi".into())]
        );
        assert_eq!(
            c(r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}"#),
            vec![Chunk::Finished {
                reason: "stop".into()
            }]
        );
        assert_eq!(
            c(
                r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#
            ),
            vec![Chunk::Usage {
                prompt_tokens: 12,
                completion_tokens: 3
            }]
        );
        assert!(matches!(
            parse_chunk("{not json", None),
            Err(LlmError::Protocol(_))
        ));
        assert!(matches!(
            parse_chunk("[1]", None),
            Err(LlmError::Protocol(_))
        ));
        assert!(matches!(
            parse_chunk(r#"{"usage":{"prompt_tokens":"x"}}"#, None),
            Err(LlmError::Protocol(_))
        ));
        let key: SecretString = "sk-live-abcdef123456".to_owned().into();
        let err = parse_chunk(
            r#"{"error":{"message":"bad key sk-live-abcdef123456"}}"#,
            Some(&key),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("abcdef123456"), "{err}");
    }

    #[test]
    fn redaction_removes_keys_and_tokens_and_cuts() {
        let key: SecretString = "my-custom-key-0123456789".to_owned().into();
        let r = redact(
            "Incorrect API key provided: my-custom-key-0123456789. Header was Authorization: \
             Bearer abc.def.ghi, other sk-proj-ZZZZ9999yyyy and BEARER\tzzz",
            Some(&key),
        );
        for secret in ["my-custom-key", "abc.def.ghi", "ZZZZ9999", "zzz"] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(r.contains("Incorrect API key provided: [redacted]"), "{r}");
        assert!(r.contains("Bearer [redacted]"), "{r}");

        let long = "é".repeat(1000);
        assert_eq!(redact(&long, None).chars().count(), MAX_REASON_CHARS);

        // The key is removed before the cut, so no piece of it is left at the end.
        let r = redact(
            &format!("{}my-custom-key-0123456789", "x".repeat(295)),
            Some(&key),
        );
        assert_eq!(r, format!("{}[reda", "x".repeat(295)));
    }

    #[test]
    fn base_urls_are_checked() {
        for ok in [
            "https://api.openai.com/v1",
            "http://127.0.0.1:9/v1",
            "http://[::1]:8080/v1/",
            "https://llm.example.com",
        ] {
            assert_eq!(check_base_url(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("ftp://example.com/v1", "http"),
            ("file:///etc/passwd", "http"),
            ("https://user:pw@example.com/v1", "user name"),
            ("https://user@example.com/v1", "user name"),
            ("https://example.com/v1?x=1", "query"),
            ("https://example.com/v1#x", "fragment"),
            ("example.com/v1", "not a URL"),
            ("", "not a URL"),
            ("data:text/plain,hi", "http"),
        ] {
            let err = check_base_url(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_BASE_URL_LEN));
        assert!(check_base_url(&long).unwrap_err().contains("2048"));
        assert_eq!(
            completions_url("http://h:1/v1/").unwrap().as_str(),
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(
            completions_url("http://h:1").unwrap().as_str(),
            "http://h:1/chat/completions"
        );
    }

    #[test]
    fn private_and_local_addresses_are_told_apart() {
        for private in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(is_private_address(ip), "{private} counts as private");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "fbff::1",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(!is_private_address(ip), "{public} counts as public");
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_private_answers() {
        let guarded = GuardedResolver {
            allow_private_networks: false,
        };
        let err = match guarded.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        assert!(err.downcast_ref::<PrivateAddress>().is_some(), "{err}");
        let open = GuardedResolver {
            allow_private_networks: true,
        };
        let addrs: Vec<_> = open
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }

    #[tokio::test]
    async fn literal_private_hosts_are_refused_before_connecting() {
        let client = LlmClient::new(LlmTimeouts::default(), false).unwrap();
        for base in [
            "http://127.0.0.1:9/v1",
            "http://[::1]:9/v1",
            "http://169.254.169.254/v1",
            "http://2130706433/v1",
            "http://[::ffff:7f00:1]/v1",
        ] {
            let ep = Endpoint {
                base_url: base.into(),
                api_key: None,
                model: "m".into(),
            };
            let err = client.chat_stream(&ep, &[], None).await.err().unwrap();
            assert!(matches!(err, LlmError::Refused(_)), "{base}: {err}");
        }
    }
}
