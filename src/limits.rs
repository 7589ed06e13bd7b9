//! Rate limits: shared by every replica, kept in PostgreSQL.
//!
//! Each request takes one token from its subject's bucket -- the API key, the user in the
//! org of the route, or the client IP on the unauthenticated endpoints -- with one
//! statement (`app.rate_limit_*()`, policies/functions_rate_limits.sql) that the request
//! kernel pipelines in front of the request's transaction: the same round trip. The
//! algorithm is GCRA on the database clock, one row per subject in an UNLOGGED table, so
//! two replicas cannot admit more than the limit between them.
//!
//! The limiter statement runs in its own implicit transaction, not in the request's: its
//! row lock is held for that one statement, so a hot key hammered by many clients queues
//! on a few microseconds of lock, not on whole requests.
//!
//! What the statement decided travels to the response through a task-local
//! ([`scope`]), which the HTTP middleware turns into the `RateLimit-Policy` and
//! `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers). A refusal is also
//! remembered in-process until the bucket admits again ([`DenyCache`]): a client that
//! keeps hammering past its limit costs no database work until then. Remembering only
//! refusals is safe -- every replica's admissions only push the next free slot later.

use std::{
    cell::RefCell,
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use poem::http::{HeaderMap, HeaderValue};

/// Which limit a bucket belongs to (the policy name in the headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Per API key.
    ApiKey,
    /// Per user, per org (or outside any org).
    User,
    /// Per client IP, on the unauthenticated endpoints.
    Ip,
}

impl Scope {
    pub fn policy_name(self) -> &'static str {
        match self {
            Scope::ApiKey => "api_key",
            Scope::User => "user",
            Scope::Ip => "ip",
        }
    }
}

/// `quota` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub quota: u32,
    pub window: Duration,
}

impl Quota {
    /// As the limiter functions take it: requests and window seconds.
    pub fn sql_args(self) -> (i32, i32) {
        (
            i32::try_from(self.quota).unwrap_or(i32::MAX),
            i32::try_from(self.window.as_secs().max(1)).unwrap_or(i32::MAX),
        )
    }
}

/// The configured limits (`RATE_LIMIT_*`); `None` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    pub api_key: Option<Quota>,
    pub user: Option<Quota>,
    pub ip: Option<Quota>,
}

impl Default for RateLimits {
    fn default() -> Self {
        let per_minute = |quota| {
            Some(Quota {
                quota,
                window: Duration::from_secs(60),
            })
        };
        Self {
            api_key: per_minute(600),
            user: per_minute(1200),
            ip: per_minute(60),
        }
    }
}

impl RateLimits {
    pub fn get(&self, scope: Scope) -> Option<Quota> {
        match scope {
            Scope::ApiKey => self.api_key,
            Scope::User => self.user,
            Scope::Ip => self.ip,
        }
    }
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub scope: Scope,
    pub quota: Quota,
    pub admitted: bool,
    /// Requests left in the window after this one.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u32,
    /// Seconds until a request would be admitted (refusals only).
    pub retry_after_secs: u32,
}

impl Decision {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let name = self.scope.policy_name();
        let policy = format!(
            "\"{name}\";q={};w={}",
            self.quota.quota,
            self.quota.window.as_secs()
        );
        let state = format!("\"{name}\";r={};t={}", self.remaining, self.reset_secs);
        if let (Ok(p), Ok(s)) = (
            HeaderValue::from_str(&policy),
            HeaderValue::from_str(&state),
        ) {
            headers.insert("ratelimit-policy", p);
            headers.insert("ratelimit", s);
        }
    }
}

/// What one request carries for its limits: the client's address, and the decision once
/// a limiter statement has run.
#[derive(Debug, Default, Clone)]
pub struct RequestLimits {
    peer: Option<IpAddr>,
    forwarded_for: String,
    decision: Option<Decision>,
    /// For the audit log (see [`audit_meta`]).
    user_agent: Option<String>,
    request_id: String,
}

tokio::task_local! {
    static REQUEST: RefCell<RequestLimits>;
}

/// Runs `fut` (one request from `peer`, with these `X-Forwarded-For` headers) with a slot
/// for its limiter decision; returns the decision with the output.
pub async fn scope<F: Future>(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    request_id: &str,
    fut: F,
) -> (F::Output, Option<Decision>) {
    let slot = RefCell::new(RequestLimits {
        peer,
        forwarded_for: forwarded_for(headers),
        decision: None,
        user_agent: headers
            .get(poem::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(USER_AGENT_MAX_CHARS).collect()),
        request_id: request_id.to_owned(),
    });
    REQUEST
        .scope(slot, async {
            let out = fut.await;
            let decision = REQUEST.with(|r| r.borrow().decision);
            (out, decision)
        })
        .await
}

/// Records the decision for the response headers (a no-op outside [`scope`]).
pub fn record(decision: Decision) {
    let _ = REQUEST.try_with(|r| r.borrow_mut().decision = Some(decision));
}

/// The current request's slot, to carry into work the request leaves running after its
/// handler returns (a streamed response body), so that work is the same request: counted
/// once, however many transactions it runs.
pub fn current() -> Option<RequestLimits> {
    REQUEST.try_with(|r| r.borrow().clone()).ok()
}

/// Runs `fut` as part of the request whose slot `current()` returned.
pub async fn within<F: Future>(slot: Option<RequestLimits>, fut: F) -> F::Output {
    match slot {
        Some(slot) => REQUEST.scope(RefCell::new(slot), fut).await,
        None => fut.await,
    }
}

/// True once this request has been counted (one request takes one token, however many
/// transactions it runs).
pub fn counted() -> bool {
    REQUEST
        .try_with(|r| r.borrow().decision.is_some())
        .unwrap_or(false)
}

/// The client's address of the current request (see [`TrustedProxies::client_ip`]).
pub fn client_ip(trusted: &TrustedProxies) -> Option<IpAddr> {
    REQUEST
        .try_with(|r| {
            let r = r.borrow();
            trusted.client_ip(r.peer, &r.forwarded_for)
        })
        .ok()
        .flatten()
}

/// The longest user agent the audit log keeps (characters).
const USER_AGENT_MAX_CHARS: usize = 512;

/// The current request's audit context, as the JSON object the audit log's `context`
/// column holds: the client address (as [`client_ip`] resolves it), the user agent and
/// the request id (the `X-Request-Id` answered). `None` outside a request.
pub fn audit_meta(trusted: &TrustedProxies) -> Option<String> {
    REQUEST
        .try_with(|r| {
            let r = r.borrow();
            let mut meta = serde_json::Map::new();
            if let Some(ip) = trusted.client_ip(r.peer, &r.forwarded_for) {
                meta.insert("ip".into(), ip.to_string().into());
            }
            if let Some(ua) = &r.user_agent {
                meta.insert("user_agent".into(), ua.clone().into());
            }
            meta.insert("request_id".into(), r.request_id.clone().into());
            serde_json::Value::Object(meta).to_string()
        })
        .ok()
}

/// Every `X-Forwarded-For` header of a request, joined by commas (their order).
pub fn forwarded_for(headers: &HeaderMap) -> String {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

/// A bucket's identity for the in-process [`DenyCache`]: a hash of the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subject(u64);

impl Subject {
    pub fn of(scope: Scope, parts: impl Hash) -> Self {
        let mut h = DefaultHasher::new();
        scope.hash(&mut h);
        parts.hash(&mut h);
        Self(h.finish())
    }
}

/// Refusals remembered until their bucket admits again, per process.
#[derive(Debug, Default)]
pub struct DenyCache {
    until: Mutex<HashMap<Subject, (Instant, Decision)>>,
}

/// Entries kept at most; past it, expired ones are dropped (and if all are live, all).
const DENY_CACHE_MAX: usize = 10_000;

impl DenyCache {
    /// The refusal still in force for `subject`, with its seconds updated.
    pub fn check(&self, subject: Subject) -> Option<Decision> {
        let map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let (until, decision) = map.get(&subject)?;
        let now = Instant::now();
        let left = until.checked_duration_since(now)?;
        // The refusal was remembered `retry_after - 1` seconds before `until`: both of its
        // countdowns have run for the time since.
        let held = Duration::from_secs(u64::from(decision.retry_after_secs) - 1);
        let elapsed = held.saturating_sub(left).as_secs();
        let left_secs = |s: u32| u32::try_from(u64::from(s).saturating_sub(elapsed)).unwrap_or(0);
        Some(Decision {
            retry_after_secs: left_secs(decision.retry_after_secs).max(1),
            reset_secs: left_secs(decision.reset_secs).max(1),
            ..*decision
        })
    }

    /// Remembers a refusal for its `retry_after_secs`.
    pub fn remember(&self, subject: Subject, decision: Decision) {
        if decision.admitted || decision.retry_after_secs == 0 {
            return;
        }
        let mut map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= DENY_CACHE_MAX {
            let now = Instant::now();
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= DENY_CACHE_MAX {
                map.clear();
            }
        }
        // Retry-After is rounded up to whole seconds; remember a second less, so the
        // database decides again by the moment it would admit.
        let hold = Duration::from_secs(u64::from(decision.retry_after_secs) - 1);
        if !hold.is_zero() {
            map.insert(subject, (Instant::now() + hold, decision));
        }
    }
}

/// Networks whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`): a load balancer's
/// addresses. Empty by default: the peer address is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// `10.0.0.0/8, 192.168.1.7, fd00::/8`.
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| anyhow::anyhow!("TRUSTED_PROXIES: {item:?} is not an address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len =
                match len {
                    None => max,
                    Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| {
                        anyhow::anyhow!("TRUSTED_PROXIES: bad prefix in {item:?}")
                    })?,
                };
            nets.push((addr, len));
        }
        Ok(Self(nets))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|(net, len)| in_network(ip, *net, *len))
    }

    /// The client's address: the peer, unless the peer is a trusted proxy; then the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy (entries further
    /// left were written by the client and prove nothing).
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: &str) -> Option<IpAddr> {
        let peer = peer?;
        if !self.contains(peer) {
            return Some(peer);
        }
        let mut client = peer;
        for hop in forwarded_for.split(',').map(str::trim).rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.contains(ip) => client = ip,
                Ok(ip) => return Some(ip),
                Err(_) => break,
            }
        }
        Some(client)
    }
}

fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> String {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        h.append("x-forwarded-for", HeaderValue::from_static("10.9.9.8"));
        forwarded_for(&h)
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let none = TrustedProxies::default();
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            none.client_ip(Some(peer), &headers("1.2.3.4")),
            Some(peer),
            "a client cannot choose its own address"
        );
        let lb = TrustedProxies::parse("10.0.0.0/8, fd00::/8").unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        // The client wrote 6.6.6.6 itself; the load balancer appended what it saw.
        assert_eq!(
            lb.client_ip(Some(proxy), &headers("6.6.6.6, 198.51.100.7, 10.9.9.9")),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(lb.client_ip(Some(proxy), ""), Some(proxy));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("nope").is_err());
    }

    #[test]
    fn headers_follow_the_draft() {
        let d = Decision {
            scope: Scope::ApiKey,
            quota: Quota {
                quota: 600,
                window: Duration::from_secs(60),
            },
            admitted: true,
            remaining: 598,
            reset_secs: 1,
            retry_after_secs: 0,
        };
        let mut h = HeaderMap::new();
        d.write_headers(&mut h);
        assert_eq!(h["ratelimit-policy"], "\"api_key\";q=600;w=60");
        assert_eq!(h["ratelimit"], "\"api_key\";r=598;t=1");
    }

    #[test]
    fn the_deny_cache_holds_a_refusal_until_it_lapses() {
        let cache = DenyCache::default();
        let subject = Subject::of(Scope::User, ("u", "o"));
        let refused = Decision {
            scope: Scope::User,
            quota: Quota {
                quota: 1,
                window: Duration::from_secs(60),
            },
            admitted: false,
            remaining: 0,
            reset_secs: 60,
            retry_after_secs: 30,
        };
        assert!(cache.check(subject).is_none());
        cache.remember(subject, refused);
        let held = cache.check(subject).expect("held");
        assert!(!held.admitted && held.retry_after_secs <= 30);
        assert!(
            cache
                .check(Subject::of(Scope::User, ("u", "other")))
                .is_none()
        );
        // A refusal with under a second to go is not held.
        let other = Subject::of(Scope::Ip, "x");
        cache.remember(
            other,
            Decision {
                retry_after_secs: 1,
                ..refused
            },
        );
        assert!(cache.check(other).is_none());
    }
}
