//! The HTTP API: one module per resource, each an `#[OpenApi]` unit struct (so the spec
//! can be printed without a database) with its objects and response enums.

pub mod auth;
pub mod health;
pub mod invitations;
pub mod json;
pub mod members;
pub mod orgs;
pub mod pagination;
pub mod problem;
pub mod projects;
pub mod security;
pub mod sessions;
pub mod validate;
pub mod verification;

use std::{sync::Arc, time::Duration};

use poem_openapi::{OpenApiService, Tags};

use crate::{
    auth::{jwt::JwtKeys, password::Passwords},
    config::AuthPolicy,
    db::Db,
    email::{Sealer, sender::Mailer},
};

/// Shared by every handler, passed as `Data<&Arc<AppState>>`.
pub struct AppState {
    pub db: Db,
    pub jwt: JwtKeys,
    pub passwords: Passwords,
    /// Absolute lifetime of a sign-in session.
    pub session_ttl: Duration,
    /// Refresh grace, throttling, token lifetimes, email links.
    pub auth: AuthPolicy,
    /// Seals outbox bodies (they carry one-time tokens).
    pub sealer: Sealer,
    /// Where the outbox sender delivers.
    pub mailer: Mailer,
}

pub type State = Arc<AppState>;

#[derive(Tags)]
pub enum ApiTags {
    /// Liveness and readiness.
    Health,
    /// Accounts, sign-in and the current user.
    Auth,
    /// Organizations (tenants) the caller belongs to.
    Organizations,
    /// Members of an organization and their roles: owner > admin > member > viewer.
    Members,
    /// Invitations to join an organization, by email.
    Invitations,
    /// Projects: tenant data, isolated by row-level security.
    Projects,
}

pub const API_TITLE: &str = "Palisade API";

type Apis = (
    health::HealthApi,
    auth::AuthApi,
    sessions::SessionsApi,
    verification::VerificationApi,
    orgs::CurrentOrgApi,
    orgs::OrgsApi,
    members::MembersApi,
    invitations::InvitationsApi,
    projects::ProjectsApi,
);

/// The OpenAPI service. Paths are absolute (`/health`, `/v1/...`).
pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            health::HealthApi,
            auth::AuthApi,
            sessions::SessionsApi,
            verification::VerificationApi,
            orgs::CurrentOrgApi,
            orgs::OrgsApi,
            members::MembersApi,
            invitations::InvitationsApi,
            projects::ProjectsApi,
        ),
        API_TITLE,
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Multi-tenant SaaS backend. Tenant isolation is enforced by PostgreSQL row-level \
         security: every request runs in one transaction whose tenant context is set from \
         the access token, and policies decide what it can see and change. Errors are \
         RFC 9457 `application/problem+json` with a stable `code`.",
    )
}

/// The spec as committed in `openapi.json` (`palisade openapi > openapi.json`).
pub fn openapi_json() -> String {
    service().spec()
}
