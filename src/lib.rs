//! Palisade: a multi-tenant SaaS backend whose tenant isolation lives in PostgreSQL
//! row-level security. The Rust layer authenticates, opens one transaction per request,
//! sets the tenant context transaction-locally, runs SQL and returns typed responses.

/// HTTP: one module per resource, the problem+json error model, security schemes.
pub mod api;
/// Pure authentication primitives: JWTs, argon2id passwords, random tokens. No HTTP, no SQL.
pub mod auth;
/// Environment-first settings, validated at start; secrets as secret types.
pub mod config;
/// PostgreSQL: the private cluster, pool, request transaction, migrations, policies, SQLSTATEs.
pub mod db;
/// Outgoing email: the sealed outbox and its sender.
pub mod email;
/// Wiring: build the app, bind, serve, shut down gracefully.
pub mod startup;
/// Structured logging setup.
pub mod telemetry;
