//! Palisade: a multi-tenant SaaS backend whose tenant isolation lives in PostgreSQL
//! row-level security. The Rust layer authenticates, opens one transaction per request,
//! proves the caller to the database, runs SQL and returns typed responses.

/// The routes, grouped by domain (identity, tenancy, projects, health).
pub mod api;
/// The assistant's model choice, retrieval under RLS, prompt and cost (no HTTP).
pub mod assistant;
/// The audit log outside requests: daily chain heads in the object store, retention,
/// `palisade audit-log verify`.
pub mod audit_log;
/// Pure authentication primitives: JWTs, argon2id passwords, the common-password list.
pub mod auth;
/// Billing through Stripe: the API client, webhook signatures, the worker applying events.
pub mod billing;
/// The command line: parsing, the usage text, running a command (`main.rs` is thin).
pub mod cli;
/// Environment-first settings, validated at start; secrets as secret types.
pub mod config;
/// Keys derived per purpose from the master key (sealing, session proofs), opaque tokens.
pub mod crypto;
/// PostgreSQL: the private cluster, the three pools, transactions, migrations, policies,
/// the start-up self-check, the isolation audit, SQLSTATEs.
pub mod db;
/// Domain types shared by the kernel and the resources (the organization role).
pub mod domain;
/// Outgoing email: what each message says, and its delivery.
pub mod email;
/// HTTP plumbing without resource knowledge: the request kernel, middleware, errors,
/// validation, pagination, security scheme, the finished OpenAPI document.
pub mod http;
/// The background worker: email delivery, password-reset mail, retention.
pub mod jobs;
/// Rate limits shared by every replica (state in PostgreSQL), and the client address.
pub mod limits;
/// The client for an org's OpenAI-compatible chat endpoint: streaming, deadlines per
/// stage, no private addresses, no key in any error.
pub mod llm;
/// Prometheus metrics: RED per route template, pools, outbox, argon2, refusals.
pub mod metrics;
/// The operator's commands (users, orgs, sessions, outbox), as the schema owner.
pub mod operator;
/// Envelope encryption of tenant secrets: master key, per-org data keys, sealed values.
pub mod secrets;
/// Wiring: build the app, bind, serve, shut down gracefully.
pub mod startup;
/// The application state handlers receive.
pub mod state;
/// Object storage: S3 through rust-s3, or a local directory in development.
pub mod storage;
/// Structured logging setup.
pub mod telemetry;
/// Workspace services that are not HTTP: the event segment format, live-tail wake-ups,
/// object purge and reconcile.
pub mod workspace;
