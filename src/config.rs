//! Settings come from the environment (12-factor), are validated once at start, and hold
//! secrets in [`SecretString`] so they never reach a log line through `Debug`.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};

use crate::limits::{Quota, RateLimits, TrustedProxies};

/// `PALISADE_ENV`: `development` (default) or `production`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// Where the database is.
#[derive(Debug, Clone)]
pub enum DatabaseSettings {
    /// No `DATABASE_URL`: a private PostgreSQL cluster under `<data_dir>/postgres`.
    Embedded,
    /// `DATABASE_URL` (request role), `DATABASE_AUTH_URL` (credential role) and
    /// `DATABASE_WORKER_URL` (worker role) -- the last two default to `DATABASE_URL` with
    /// the user `palisade_auth` / `palisade_worker` -- and optionally
    /// `DATABASE_OWNER_URL` (owner role, runs migrations and applies policies).
    External {
        runtime_url: SecretString,
        credentials_url: Option<SecretString>,
        jobs_url: Option<SecretString>,
        owner_url: Option<SecretString>,
    },
}

/// One HMAC key for access tokens, named by a key id (`kid` header).
#[derive(Debug, Clone)]
pub struct JwtKey {
    pub kid: String,
    pub secret: SecretString,
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Signs new tokens.
    pub signing: JwtKey,
    /// Older keys still accepted for verification, so the signing key can rotate
    /// without signing everybody out.
    pub previous: Vec<JwtKey>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    pub host: String,
    pub port: u16,
    /// `METRICS_ADDR` (e.g. `127.0.0.1:9090`): where `GET /metrics` is served, on its own
    /// listener. Unset: no metrics (nothing is recorded).
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub data_dir: PathBuf,
    pub database: DatabaseSettings,
    /// Request pool (`DATABASE_POOL_SIZE`).
    pub pool_size: usize,
    /// Credential pool (`DATABASE_AUTH_POOL_SIZE`): sign-ins, refreshes, registrations.
    pub credentials_pool_size: usize,
    pub pool_timeout: Duration,
    /// `DATABASE_REPLICA_URLS`: comma-separated connection strings of streaming
    /// replicas, as the request role; read-only requests go to them (see `db::replicas`).
    pub replica_urls: Vec<SecretString>,
    /// `REPLICA_MAX_LAG_MS`: a replica further behind the primary leaves the rotation.
    pub replica_max_lag: Duration,
    /// `DATABASE_STATEMENT_CACHE` (default on): cache prepared statements per connection.
    /// Off for PgBouncer in transaction mode (before its prepared statement support).
    pub statement_cache: bool,
    /// `None` in development until the data dir provides one (see `startup`).
    pub jwt_secret: Option<SecretString>,
    /// Seals data at rest (outbox bodies). `None` in development: generated under the data dir.
    pub master_key: Option<SecretString>,
    pub jwt: JwtSettingsTemplate,
    pub session_ttl: Duration,
    pub auth: AuthPolicy,
    /// `smtp://user:pass@host:587?tls=required` or `smtps://...`; without it emails are logged.
    pub smtp_url: Option<SecretString>,
    /// The From: address of outgoing email.
    pub smtp_from: String,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT_SECONDS`: after SIGTERM, how long in-flight requests may take
    /// to finish before the server stops anyway.
    pub shutdown_timeout: Duration,
    /// `MAX_CONNECTIONS`: API connections held open at once (keep-alive ones included);
    /// beyond it a new connection is answered 503 `too_many_connections` and closed.
    /// Lowered at startup to fit the process's open-files limit.
    pub max_connections: usize,
    pub password_hash_concurrency: usize,
    /// How long a sign-in waits for a hashing slot before 503.
    pub password_hash_wait: Duration,
    /// `RATE_LIMIT_API_KEY`, `RATE_LIMIT_USER`, `RATE_LIMIT_IP` (requests per
    /// `RATE_LIMIT_WINDOW_SECONDS`; `off` or 0 for none).
    pub rate_limits: RateLimits,
    /// `TRUSTED_PROXIES`: whose `X-Forwarded-For` names the client (none by default).
    pub trusted_proxies: TrustedProxies,
    /// `USAGE_METERING` (default on): count every request on an org's routes as an API
    /// call of that org (folded into the rate-limit statement).
    pub usage_metering: bool,
    /// `DEFAULT_PLAN`: the plan new organizations start on, written to `app.plans` at start
    /// (migrate/serve). Unset: the database's choice stands (`free` as migrated).
    pub default_plan: Option<String>,
    /// `S3_*`: the object store; `None` keeps objects under `<data_dir>/objects`
    /// (development only).
    pub s3: Option<crate::storage::S3Settings>,
    /// `AUDIT_RETENTION_DAYS`: a deleted organization's audit log is kept this long (then
    /// the worker purges it); default 365.
    pub audit_retention_days: u32,
    /// `LIVE_TAIL_MAX_SECONDS`: a live tail ends after this long; the client reconnects
    /// with `Last-Event-ID` (bounds how long a connection is held, as proxies and load
    /// balancers do anyway).
    pub live_tail_max: Duration,
    /// `DOCUMENT_MAX_BYTES`: the largest document upload (the plan's storage limit
    /// applies too).
    pub document_max_bytes: u64,
    /// `DOCUMENT_UPLOAD_TIMEOUT_SECONDS`: how long a document upload may take (it streams
    /// to the object store; other requests keep `REQUEST_TIMEOUT_SECONDS`).
    pub upload_timeout: Duration,
    /// `STRIPE_*`: billing through Stripe; `None` (no `STRIPE_SECRET_KEY`): the billing
    /// endpoints answer 503 `billing_not_configured` and everything else works.
    pub stripe: Option<crate::billing::stripe::StripeSettings>,
    /// `BILLING_GRACE_HOURS` (default 168, 7 days): how long a past_due subscription
    /// keeps its plan before the default plan's limits apply.
    pub billing_grace: Duration,
    /// `PALISADE_MASTER_KEY_PREVIOUS` (comma-separated): master keys that still unwrap
    /// data keys until `palisade keys rotate-master` has rewrapped them.
    pub master_key_previous: Vec<SecretString>,
    /// `LLM_*`: the assistant's server-wide model and how it reaches models.
    pub llm: LlmSettings,
}

/// The assistant's upstream settings.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// `LLM_BASE_URL` (e.g. `https://api.openai.com/v1`): the default OpenAI-compatible
    /// endpoint for orgs that configure none; `None`: such orgs get 409
    /// `assistant_not_configured`.
    pub base_url: Option<String>,
    /// `LLM_API_KEY`: the default endpoint's key.
    pub api_key: Option<SecretString>,
    /// `LLM_MODEL` (default `gpt-4o-mini`): the model when the org names none.
    pub model: String,
    /// `LLM_ALLOW_PRIVATE_NETWORKS` (default on in development, off in production): may
    /// an org's `llm_base_url` reach loopback, private and link-local addresses?
    pub allow_private_networks: bool,
    /// `LLM_TIMEOUT_SECONDS` (default 30): connect + first byte, and the longest gap
    /// between two streamed chunks.
    pub timeout: Duration,
    /// `LLM_MAX_OUTPUT_TOKENS` (default 1024): the cap on one answer.
    pub max_output_tokens: u32,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key: None,
            model: "gpt-4o-mini".into(),
            allow_private_networks: true,
            timeout: Duration::from_secs(30),
            max_output_tokens: 1024,
        }
    }
}

/// JWT settings before the signing secret is resolved.
#[derive(Debug, Clone)]
pub struct JwtSettingsTemplate {
    pub kid: String,
    pub previous: Vec<JwtKey>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
}

impl JwtSettingsTemplate {
    pub fn with_secret(&self, secret: SecretString) -> JwtSettings {
        JwtSettings {
            signing: JwtKey {
                kid: self.kid.clone(),
                secret,
            },
            previous: self.previous.clone(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            access_ttl: self.access_ttl,
        }
    }
}

/// Sign-in rules.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// A rotated refresh token replayed within this window returns the same successor
    /// (concurrent tabs); after it, the replay revokes the session.
    pub refresh_reuse_grace: Duration,
    /// Failed password checks are counted over this window...
    pub throttle_window: Duration,
    /// ...and at most this many per account are evaluated in it...
    pub max_failures_per_account: i32,
    /// ...and this many per client IP.
    pub max_failures_per_ip: i32,
    pub email_verification_ttl: Duration,
    pub password_reset_ttl: Duration,
    /// How long an invitation (or a resent one) stays valid.
    pub invitation_ttl: Duration,
    /// Base URL of the front end that email links point to.
    pub app_url: String,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            refresh_reuse_grace: Duration::from_secs(10),
            throttle_window: Duration::from_secs(15 * 60),
            max_failures_per_account: 10,
            max_failures_per_ip: 100,
            email_verification_ttl: Duration::from_secs(24 * 3600),
            password_reset_ttl: Duration::from_secs(3600),
            invitation_ttl: Duration::from_secs(7 * 24 * 3600),
            app_url: "http://localhost:3000".into(),
        }
    }
}

/// Minimum length of an HMAC secret in production (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Passwords that must never guard a production database.
const DEFAULT_PASSWORDS: &[&str] = &[
    "",
    "postgres",
    "password",
    "palisade",
    "changeme",
    "secret",
    "admin",
    "minioadmin",
];

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={v:?} is not valid: {e}")),
    }
}

impl Settings {
    /// Development defaults: embedded database, port 8080, a generated JWT secret.
    pub fn development() -> Self {
        Settings {
            environment: Environment::Development,
            host: "127.0.0.1".into(),
            port: 8080,
            metrics_addr: None,
            data_dir: PathBuf::from(".data"),
            database: DatabaseSettings::Embedded,
            // Measured on 2 cores (benches/README-performance.md): 8 and 16 serve the same
            // rate, 8 with a lower p99; 32 doubles p99. About 4 per database core.
            pool_size: 8,
            credentials_pool_size: 4,
            pool_timeout: Duration::from_secs(5),
            replica_urls: Vec::new(),
            replica_max_lag: Duration::from_secs(1),
            statement_cache: true,
            jwt_secret: None,
            master_key: None,
            jwt: JwtSettingsTemplate {
                kid: "primary".into(),
                previous: Vec::new(),
                issuer: "palisade".into(),
                audience: "palisade-api".into(),
                access_ttl: Duration::from_secs(15 * 60),
            },
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            auth: AuthPolicy::default(),
            smtp_url: None,
            smtp_from: "Palisade <no-reply@localhost>".into(),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            password_hash_concurrency: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(1),
            password_hash_wait: Duration::from_secs(2),
            rate_limits: RateLimits::default(),
            trusted_proxies: TrustedProxies::default(),
            usage_metering: true,
            default_plan: None,
            s3: None,
            live_tail_max: Duration::from_secs(3600),
            audit_retention_days: 365,
            document_max_bytes: 25 * 1024 * 1024,
            upload_timeout: Duration::from_secs(300),
            stripe: None,
            billing_grace: Duration::from_secs(7 * 24 * 3600),
            master_key_previous: Vec::new(),
            llm: LlmSettings::default(),
        }
    }

    /// Reads the environment (see README "Configuration") and validates it.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut s = Settings::development();
        s.environment = match var("PALISADE_ENV").as_deref() {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => bail!("PALISADE_ENV={other:?}: expected development or production"),
        };
        if let Some(host) = var("HOST") {
            s.host = host;
        }
        s.port = parse_var("PORT", s.port)?;
        if let Some(dir) = var("PALISADE_DATA_DIR") {
            s.data_dir = PathBuf::from(dir);
        }
        s.database = match var("DATABASE_URL") {
            None => DatabaseSettings::Embedded,
            Some(url) => DatabaseSettings::External {
                runtime_url: url.into(),
                credentials_url: var("DATABASE_AUTH_URL").map(Into::into),
                jobs_url: var("DATABASE_WORKER_URL").map(Into::into),
                owner_url: var("DATABASE_OWNER_URL").map(Into::into),
            },
        };
        s.metrics_addr = match var("METRICS_ADDR") {
            None => None,
            Some(v) => Some(v.trim().parse().map_err(|e| {
                anyhow::anyhow!("METRICS_ADDR={v:?} is not a socket address (host:port): {e}")
            })?),
        };
        s.pool_size = parse_var("DATABASE_POOL_SIZE", s.pool_size)?;
        s.credentials_pool_size = parse_var("DATABASE_AUTH_POOL_SIZE", s.credentials_pool_size)?;
        s.pool_timeout = Duration::from_millis(parse_var("DATABASE_POOL_TIMEOUT_MS", 5000u64)?);
        s.replica_urls = var("DATABASE_REPLICA_URLS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(|u| SecretString::from(u.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        s.replica_max_lag = Duration::from_millis(parse_var("REPLICA_MAX_LAG_MS", 1000u64)?.max(1));
        s.statement_cache = match var("DATABASE_STATEMENT_CACHE").as_deref().map(str::trim) {
            None | Some("on" | "true" | "1") => true,
            Some("off" | "false" | "0") => false,
            Some(other) => bail!("DATABASE_STATEMENT_CACHE={other:?}: expected on or off"),
        };
        s.jwt_secret = var("JWT_SECRET").map(Into::into);
        s.master_key = var("PALISADE_MASTER_KEY").map(Into::into);
        if let Some(kid) = var("JWT_KEY_ID") {
            s.jwt.kid = kid;
        }
        if let Some(list) = var("JWT_PREVIOUS_KEYS") {
            s.jwt.previous = parse_key_list(&list)?;
        }
        if let Some(iss) = var("JWT_ISSUER") {
            s.jwt.issuer = iss;
        }
        if let Some(aud) = var("JWT_AUDIENCE") {
            s.jwt.audience = aud;
        }
        s.jwt.access_ttl = Duration::from_secs(parse_var("ACCESS_TOKEN_TTL_SECONDS", 900u64)?);
        s.auth.refresh_reuse_grace =
            Duration::from_secs(parse_var("REFRESH_REUSE_GRACE_SECONDS", 10u64)?);
        s.auth.invitation_ttl = Duration::from_secs(
            parse_var("INVITATION_TTL_SECONDS", s.auth.invitation_ttl.as_secs())?.max(60),
        );
        s.smtp_url = var("SMTP_URL").map(Into::into);
        if let Some(from) = var("SMTP_FROM") {
            s.smtp_from = from;
        }
        if let Some(url) = var("APP_URL") {
            s.auth.app_url = url.trim_end_matches('/').to_owned();
        }
        s.max_body_bytes = parse_var("MAX_BODY_BYTES", s.max_body_bytes)?;
        s.request_timeout =
            Duration::from_secs(parse_var("REQUEST_TIMEOUT_SECONDS", 30u64)?.max(1));
        s.shutdown_timeout = Duration::from_secs(parse_var(
            "SHUTDOWN_TIMEOUT_SECONDS",
            s.shutdown_timeout.as_secs(),
        )?);
        s.max_connections = parse_var("MAX_CONNECTIONS", s.max_connections)?.max(1);
        s.password_hash_concurrency =
            parse_var("PASSWORD_HASH_CONCURRENCY", s.password_hash_concurrency)?.max(1);
        let window = Duration::from_secs(parse_var("RATE_LIMIT_WINDOW_SECONDS", 60u64)?.max(1));
        let quota = |name: &str, default: Option<Quota>| -> anyhow::Result<Option<Quota>> {
            let n = match var(name).as_deref().map(str::trim) {
                None => return Ok(default.map(|q| Quota { window, ..q })),
                Some("off" | "none") => 0,
                Some(v) => v.parse::<u32>().map_err(|e| {
                    anyhow::anyhow!("{name}={v:?}: expected a number of requests or off ({e})")
                })?,
            };
            Ok((n > 0).then_some(Quota { quota: n, window }))
        };
        s.rate_limits = RateLimits {
            api_key: quota("RATE_LIMIT_API_KEY", s.rate_limits.api_key)?,
            user: quota("RATE_LIMIT_USER", s.rate_limits.user)?,
            ip: quota("RATE_LIMIT_IP", s.rate_limits.ip)?,
        };
        if let Some(list) = var("TRUSTED_PROXIES") {
            s.trusted_proxies = TrustedProxies::parse(&list)?;
        }
        s.usage_metering = match var("USAGE_METERING").as_deref().map(str::trim) {
            None | Some("on" | "true" | "1") => true,
            Some("off" | "false" | "0") => false,
            Some(other) => bail!("USAGE_METERING={other:?}: expected on or off"),
        };
        if let Some(plan) = var("DEFAULT_PLAN") {
            let plan = plan.trim().to_owned();
            if !plan
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                || plan.is_empty()
            {
                bail!("DEFAULT_PLAN={plan:?}: expected a plan id such as free, pro or enterprise");
            }
            s.default_plan = Some(plan);
        }
        s.s3 = match var("S3_BUCKET") {
            None => None,
            Some(bucket) => Some(crate::storage::S3Settings {
                endpoint: var("S3_ENDPOINT"),
                bucket,
                region: var("S3_REGION").unwrap_or_else(|| "us-east-1".into()),
                access_key_id: var("S3_ACCESS_KEY_ID")
                    .context("S3_BUCKET is set: S3_ACCESS_KEY_ID is needed too")?
                    .into(),
                secret_access_key: var("S3_SECRET_ACCESS_KEY")
                    .context("S3_BUCKET is set: S3_SECRET_ACCESS_KEY is needed too")?
                    .into(),
                path_style: match var("S3_PATH_STYLE").as_deref().map(str::trim) {
                    None | Some("on" | "true" | "1") => true,
                    Some("off" | "false" | "0") => false,
                    Some(other) => bail!("S3_PATH_STYLE={other:?}: expected on or off"),
                },
                request_timeout: Duration::from_secs(
                    parse_var("S3_TIMEOUT_SECONDS", 30u64)?.max(1),
                ),
            }),
        };
        s.audit_retention_days =
            parse_var("AUDIT_RETENTION_DAYS", s.audit_retention_days)?.clamp(1, 36_500);
        s.live_tail_max = Duration::from_secs(
            parse_var("LIVE_TAIL_MAX_SECONDS", s.live_tail_max.as_secs())?.max(1),
        );
        s.document_max_bytes = parse_var("DOCUMENT_MAX_BYTES", s.document_max_bytes)?.max(1);
        s.upload_timeout = Duration::from_secs(
            parse_var(
                "DOCUMENT_UPLOAD_TIMEOUT_SECONDS",
                s.upload_timeout.as_secs(),
            )?
            .max(1),
        );
        s.stripe = match var("STRIPE_SECRET_KEY") {
            None => None,
            Some(key) => Some(crate::billing::stripe::StripeSettings {
                secret_key: key.into(),
                webhook_secrets: var("STRIPE_WEBHOOK_SECRET")
                    .map(|list| {
                        list.split(',')
                            .map(str::trim)
                            .filter(|v| !v.is_empty())
                            .map(|v| SecretString::from(v.to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                api_base: var("STRIPE_API_BASE")
                    .unwrap_or_else(|| crate::billing::stripe::DEFAULT_API_BASE.to_owned())
                    .trim_end_matches('/')
                    .to_owned(),
                prices: crate::billing::stripe::parse_prices(
                    &var("STRIPE_PRICE_IDS").unwrap_or_default(),
                )?,
                timeout: Duration::from_secs(parse_var("STRIPE_TIMEOUT_SECONDS", 10u64)?.max(1)),
            }),
        };
        s.billing_grace = Duration::from_secs(
            parse_var("BILLING_GRACE_HOURS", s.billing_grace.as_secs() / 3600)? * 3600,
        );
        s.master_key_previous = var("PALISADE_MASTER_KEY_PREVIOUS")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| SecretString::from(k.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        s.llm.base_url = var("LLM_BASE_URL").map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = &s.llm.base_url {
            crate::llm::check_base_url(url).map_err(|e| anyhow::anyhow!("LLM_BASE_URL: {e}"))?;
        }
        s.llm.api_key = var("LLM_API_KEY").map(Into::into);
        if let Some(model) = var("LLM_MODEL") {
            s.llm.model = model;
        }
        s.llm.allow_private_networks =
            match var("LLM_ALLOW_PRIVATE_NETWORKS").as_deref().map(str::trim) {
                None => s.environment != Environment::Production,
                Some("on" | "true" | "1") => true,
                Some("off" | "false" | "0") => false,
                Some(other) => bail!("LLM_ALLOW_PRIVATE_NETWORKS={other:?}: expected on or off"),
            };
        s.llm.timeout = Duration::from_secs(parse_var("LLM_TIMEOUT_SECONDS", 30u64)?.max(1));
        s.llm.max_output_tokens = parse_var("LLM_MAX_OUTPUT_TOKENS", 1024u32)?.clamp(16, 100_000);
        s.validate()?;
        Ok(s)
    }

    /// Where objects are kept.
    pub fn storage(&self) -> crate::storage::StorageSettings {
        match &self.s3 {
            Some(s3) => crate::storage::StorageSettings::S3(s3.clone()),
            None => crate::storage::StorageSettings::Local(self.data_dir.join("objects")),
        }
    }

    /// Production refuses weak or default secrets and the embedded database.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.pool_size == 0 || self.credentials_pool_size == 0 {
            bail!("DATABASE_POOL_SIZE and DATABASE_AUTH_POOL_SIZE must be at least 1");
        }
        if self.environment != Environment::Production {
            return Ok(());
        }
        if self.s3.is_none() {
            bail!(
                "production needs an object store: S3_BUCKET, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY \
                 (and S3_ENDPOINT for MinIO or another S3-compatible server); the local directory \
                 store is for development only"
            );
        }
        match &self.jwt_secret {
            None => bail!("production needs JWT_SECRET (at least {MIN_SECRET_BYTES} bytes)"),
            Some(secret) => check_secret_strength("JWT_SECRET", secret)?,
        }
        match &self.master_key {
            None => {
                bail!("production needs PALISADE_MASTER_KEY (at least {MIN_SECRET_BYTES} bytes)")
            }
            Some(key) => check_secret_strength("PALISADE_MASTER_KEY", key)?,
        }
        for key in &self.jwt.previous {
            check_secret_strength(&format!("JWT_PREVIOUS_KEYS[{}]", key.kid), &key.secret)?;
        }
        match &self.database {
            DatabaseSettings::Embedded => {
                bail!("production needs DATABASE_URL; the embedded database is for development")
            }
            DatabaseSettings::External {
                runtime_url,
                credentials_url,
                jobs_url,
                owner_url,
            } => {
                check_db_password("DATABASE_URL", runtime_url)?;
                for (name, url) in [
                    ("DATABASE_AUTH_URL", credentials_url),
                    ("DATABASE_WORKER_URL", jobs_url),
                    ("DATABASE_OWNER_URL", owner_url),
                ] {
                    if let Some(url) = url {
                        check_db_password(name, url)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Settings {
    /// `JWT_SECRET`, or in development one generated once under the data directory.
    pub fn jwt_secret(&self) -> anyhow::Result<SecretString> {
        self.secret_or_generated(&self.jwt_secret, "jwt-secret")
    }

    /// `PALISADE_MASTER_KEY`, or in development one generated once under the data directory.
    pub fn master_key(&self) -> anyhow::Result<SecretString> {
        self.secret_or_generated(&self.master_key, "master-key")
    }

    fn secret_or_generated(
        &self,
        configured: &Option<SecretString>,
        file: &str,
    ) -> anyhow::Result<SecretString> {
        match configured {
            Some(secret) => Ok(secret.clone()),
            None => dev_secret(&self.data_dir, file),
        }
    }
}

/// A development secret: generated once, kept in `<data_dir>/<name>` (mode 0600).
fn dev_secret(data_dir: &std::path::Path, name: &str) -> anyhow::Result<SecretString> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(name);
    if let Ok(existing) = std::fs::read_to_string(&path)
        && existing.trim().len() >= MIN_SECRET_BYTES
    {
        return Ok(existing.trim().to_owned().into());
    }
    let secret = format!(
        "{}{}",
        crate::crypto::tokens::generate(),
        crate::crypto::tokens::generate()
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut file, secret.as_bytes())?;
    tracing::info!(path = %path.display(), "generated a development secret");
    Ok(secret.into())
}

fn check_secret_strength(name: &str, secret: &SecretString) -> anyhow::Result<()> {
    let s = secret.expose_secret();
    let distinct = s.bytes().collect::<std::collections::BTreeSet<_>>().len();
    if s.len() < MIN_SECRET_BYTES || distinct < 8 {
        bail!(
            "{name} is too weak: use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -base64 48`)"
        );
    }
    Ok(())
}

fn check_db_password(name: &str, url: &SecretString) -> anyhow::Result<()> {
    let config: tokio_postgres::Config = url
        .expose_secret()
        .parse()
        .with_context(|| format!("{name} is not a valid PostgreSQL connection string"))?;
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    if DEFAULT_PASSWORDS.contains(&password.as_str()) {
        bail!("{name} uses a default or empty password; refusing to start in production");
    }
    Ok(())
}

/// `kid=secret,kid2=secret2`
fn parse_key_list(list: &str) -> anyhow::Result<Vec<JwtKey>> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            let (kid, secret) = pair
                .split_once('=')
                .context("JWT_PREVIOUS_KEYS must look like kid=secret,kid2=secret2")?;
            Ok(JwtKey {
                kid: kid.trim().to_owned(),
                secret: secret.trim().to_owned().into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn production() -> Settings {
        let mut s = Settings::development();
        s.environment = Environment::Production;
        s.jwt_secret = Some(
            "Zq3v8Lr1Xw7Tn5Kp2Yd9Fb4Hc6Jm0Ga8Se1Ru7Wi3Ox"
                .to_owned()
                .into(),
        );
        s.master_key = Some(
            "Mk4v8Lr1Xw7Tn5Kp2Yd9Fb4Hc6Jm0Ga8Se1Ru7Wi3Oy"
                .to_owned()
                .into(),
        );
        s.database = DatabaseSettings::External {
            runtime_url: "postgres://app:Xf83kd0Qm2@db/palisade".to_owned().into(),
            credentials_url: None,
            jobs_url: None,
            owner_url: None,
        };
        s.s3 = Some(crate::storage::S3Settings {
            endpoint: Some("http://minio:9000".into()),
            bucket: "palisade".into(),
            region: "us-east-1".into(),
            access_key_id: "palisade".to_owned().into(),
            secret_access_key: "Sk4v8Lr1Xw7Tn5Kp2Yd9Fb4Hc6Jm0Ga8".to_owned().into(),
            path_style: true,
            request_timeout: Duration::from_secs(30),
        });
        s
    }

    #[test]
    fn production_accepts_strong_settings() {
        production().validate().unwrap();
    }

    #[test]
    fn production_refuses_the_local_object_store() {
        let mut s = production();
        s.s3 = None;
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("object store") && err.contains("S3_BUCKET"),
            "{err}"
        );
        s.environment = Environment::Development;
        s.validate().unwrap();
    }

    #[test]
    fn production_refuses_missing_or_weak_jwt_secret() {
        let mut s = production();
        s.jwt_secret = None;
        assert!(s.validate().is_err());
        s.jwt_secret = Some("short-secret".to_owned().into());
        assert!(s.validate().unwrap_err().to_string().contains("too weak"));
        s.jwt_secret = Some("a".repeat(64).into());
        assert!(
            s.validate().is_err(),
            "64 times the same byte is not random"
        );
    }

    #[test]
    fn production_refuses_default_db_password_and_embedded_db() {
        let mut s = production();
        s.database = DatabaseSettings::External {
            runtime_url: "postgres://app:postgres@db/palisade".to_owned().into(),
            credentials_url: None,
            jobs_url: None,
            owner_url: None,
        };
        assert!(s.validate().unwrap_err().to_string().contains("default"));
        s.database = DatabaseSettings::Embedded;
        assert!(s.validate().is_err());
    }

    #[test]
    fn previous_keys_parse() {
        let keys = parse_key_list("old=abc, older=def").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].kid, "older");
        assert!(parse_key_list("nokid").is_err());
    }
}
