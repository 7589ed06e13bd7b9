//! The application state every handler receives (`Data<&State>`), and how it is built
//! from settings and a ready database.

use std::{sync::Arc, time::Duration};

use secrecy::ExposeSecret;

use crate::{
    auth::{jwt::JwtKeys, password::Passwords},
    config::{AuthPolicy, Settings},
    crypto::{Purpose, Sealer, SessionProofs},
    db::{Connections, Db, PoolOptions},
    email::sender::Mailer,
    limits::{DenyCache, RateLimits, TrustedProxies},
};

pub struct AppState {
    pub db: Db,
    pub jwt: JwtKeys,
    pub passwords: Passwords,
    /// Proves sessions to `app.set_request_context()`.
    pub proofs: SessionProofs,
    /// Seals queued email bodies (they carry one-time tokens).
    pub outbox: Sealer,
    /// Seals a rotated refresh token's successor for its grace window.
    pub refresh_successors: Sealer,
    /// Where the worker delivers email.
    pub mailer: Mailer,
    /// Absolute lifetime of a sign-in session.
    pub session_ttl: Duration,
    /// Refresh grace, throttling, token lifetimes, email links.
    pub auth: AuthPolicy,
    /// Requests per window, per API key, per user in an org, per client IP.
    pub rate_limits: RateLimits,
    /// Refusals remembered until their bucket admits again.
    pub refusals: DenyCache,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Count requests on an org's routes as its API calls (`USAGE_METERING`).
    pub usage_metering: bool,
    /// Event segments and document bytes (`S3_*`, or `<data_dir>/objects`).
    pub storage: crate::storage::Storage,
    /// Wake-ups of live tails (LISTEN palisade_events / palisade_access).
    pub tails: crate::workspace::tail::Tails,
    /// How long one live tail connection lasts.
    pub live_tail_max: Duration,
    /// `AUDIT_RETENTION_DAYS`.
    pub audit_retention_days: u32,
    /// The largest document upload (`DOCUMENT_MAX_BYTES`).
    pub document_max_bytes: u64,
    /// Stripe (`STRIPE_*`); `None`: billing answers 503 `billing_not_configured`.
    pub stripe: Option<Box<crate::billing::stripe::Stripe>>,
    /// `BILLING_GRACE_HOURS`.
    pub billing_grace: Duration,
    /// The master keys that wrap the orgs' data keys (secrets.rs).
    pub master_keys: crate::secrets::MasterKeys,
    /// The assistant's HTTP client for the models orgs choose (`llm_base_url`): refuses
    /// private networks unless `LLM_ALLOW_PRIVATE_NETWORKS`.
    pub llm: crate::llm::LlmClient,
    /// The client for the server's own `LLM_BASE_URL`, which the operator chose: any address.
    pub llm_server: crate::llm::LlmClient,
    /// `LLM_*`.
    pub llm_settings: crate::config::LlmSettings,
}

pub type State = Arc<AppState>;

fn llm_timeouts(llm: &crate::config::LlmSettings) -> crate::llm::LlmTimeouts {
    crate::llm::LlmTimeouts {
        connect: llm.timeout.min(Duration::from_secs(10)),
        first_byte: llm.timeout,
        idle: llm.timeout,
        total: Duration::from_secs(600),
    }
}

impl AppState {
    /// The state for `settings` and a migrated database reachable at `connections`.
    pub fn new(settings: &Settings, connections: &Connections) -> anyhow::Result<State> {
        let secret = settings.jwt_secret()?;
        let master_key = settings.master_key()?;
        Ok(Arc::new(AppState {
            db: {
                let options = PoolOptions {
                    request_size: settings.pool_size,
                    credentials_size: settings.credentials_pool_size,
                    jobs_size: 2,
                    timeout: settings.pool_timeout,
                    statement_cache: settings.statement_cache,
                };
                let replicas = settings
                    .replica_urls
                    .iter()
                    .map(|url| {
                        let mut config: tokio_postgres::Config =
                            url.expose_secret().parse().map_err(|_| {
                                anyhow::anyhow!(
                                    "DATABASE_REPLICA_URLS holds an invalid PostgreSQL connection string"
                                )
                            })?;
                        if config.get_connect_timeout().is_none() {
                            config.connect_timeout(Duration::from_secs(5));
                        }
                        Ok(config)
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Db::new(connections, options).with_replicas(
                    &replicas,
                    &options,
                    settings.replica_max_lag,
                )
            },
            jwt: JwtKeys::new(&settings.jwt.with_secret(secret)),
            passwords: Passwords::new(
                settings.password_hash_concurrency,
                settings.password_hash_wait,
            ),
            proofs: SessionProofs::new(&master_key),
            outbox: Sealer::new(&master_key, Purpose::EmailOutbox),
            refresh_successors: Sealer::new(&master_key, Purpose::RefreshSuccessor),
            mailer: Mailer::from_settings(settings)?,
            session_ttl: settings.session_ttl,
            auth: settings.auth.clone(),
            rate_limits: settings.rate_limits.clone(),
            refusals: DenyCache::default(),
            trusted_proxies: settings.trusted_proxies.clone(),
            usage_metering: settings.usage_metering,
            storage: crate::storage::Storage::new(&settings.storage())?,
            tails: crate::workspace::tail::Tails::default(),
            live_tail_max: settings.live_tail_max,
            audit_retention_days: settings.audit_retention_days,
            document_max_bytes: settings.document_max_bytes,
            stripe: match &settings.stripe {
                Some(s) => Some(Box::new(crate::billing::stripe::Stripe::new(s)?)),
                None => None,
            },
            billing_grace: settings.billing_grace,
            master_keys: crate::secrets::MasterKeys::new(
                &master_key,
                &settings.master_key_previous,
            ),
            llm: crate::llm::LlmClient::new(
                llm_timeouts(&settings.llm),
                settings.llm.allow_private_networks,
            )?,
            llm_server: crate::llm::LlmClient::new(llm_timeouts(&settings.llm), true)?,
            llm_settings: settings.llm.clone(),
        }))
    }
}
