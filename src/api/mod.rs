//! The API, grouped by domain: each resource an `#[OpenApi]` unit struct (so the spec
//! can be printed without a database) with its objects, responses and error sets. Every
//! handler reaches the database through the request kernel (`crate::http::kernel`).

pub mod billing;
pub mod changes;
pub mod health;
pub mod identity;
pub mod projects;
pub mod tenancy;
pub mod workspace;

use poem_openapi::{OpenApiService, Tags};

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
    /// API keys: programmatic access to one organization's data.
    ApiKeys,
    /// Plans: the catalogue, each organization's plan, its limits and features.
    Plans,
    /// Usage metering: meters, usage events, usage per period and day, reports.
    Usage,
    /// Conversations: metadata, events (stored in the object store) and their live tail.
    Conversations,
    /// Documents: uploaded files (stored in the object store) and their extracted text.
    Documents,
    /// The audit log: every change and sign-in of an organization, hash-chained.
    AuditLog,
    /// Billing through Stripe: subscriptions, credit top-ups, the portal, the webhook.
    Billing,
    /// Organization settings: the agent, the model and its prices, search; secret settings
    /// (API keys) as hints only; each member's own LLM key.
    Settings,
    /// Secrets: write-only named values, a member's own or the organization's, sealed
    /// with the organization's data key.
    Secrets,
    /// The assistant: questions answered from the organization's documents, streamed.
    Assistant,
}

pub const API_TITLE: &str = "Palisade API";

type Apis = (
    health::HealthApi,
    identity::auth::AuthApi,
    identity::me::MeApi,
    identity::sessions::SessionsApi,
    identity::verification::VerificationApi,
    (
        tenancy::orgs::OrgsApi,
        tenancy::members::MembersApi,
        tenancy::invitations::InvitationsApi,
        tenancy::api_keys::ApiKeysApi,
        tenancy::audit_log::AuditLogApi,
        tenancy::settings::SettingsApi,
        tenancy::secrets::SecretsApi,
    ),
    projects::ProjectsApi,
    workspace::project_members::ProjectMembersApi,
    (
        billing::plans::PlansApi,
        billing::meters::MetersApi,
        billing::usage::UsageApi,
        billing::checkout::BillingApi,
        billing::webhook::WebhookApi,
    ),
    // poem-openapi implements `OpenApi` for tuples of at most 16: a domain nests.
    (
        workspace::conversations::ConversationsApi,
        workspace::events::EventsApi,
        workspace::documents::DocumentsApi,
        workspace::assistant::AssistantApi,
    ),
);

/// The OpenAPI service. Paths are absolute (`/health`, `/v1/...`).
pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            health::HealthApi,
            identity::auth::AuthApi,
            identity::me::MeApi,
            identity::sessions::SessionsApi,
            identity::verification::VerificationApi,
            (
                tenancy::orgs::OrgsApi,
                tenancy::members::MembersApi,
                tenancy::invitations::InvitationsApi,
                tenancy::api_keys::ApiKeysApi,
                tenancy::audit_log::AuditLogApi,
                tenancy::settings::SettingsApi,
                tenancy::secrets::SecretsApi,
            ),
            projects::ProjectsApi,
            workspace::project_members::ProjectMembersApi,
            (
                billing::plans::PlansApi,
                billing::meters::MetersApi,
                billing::usage::UsageApi,
                billing::checkout::BillingApi,
                billing::webhook::WebhookApi,
            ),
            (
                workspace::conversations::ConversationsApi,
                workspace::events::EventsApi,
                workspace::documents::DocumentsApi,
                workspace::assistant::AssistantApi,
            ),
        ),
        API_TITLE,
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Multi-tenant SaaS backend. Tenant isolation is enforced by PostgreSQL row-level \
         security: every request runs in one transaction whose tenant context is proven to \
         the database and sealed, and policies decide what it can see and change. Errors are \
         RFC 9457 `application/problem+json` with a stable `code`. Optional fields are \
         always present, as `null` when empty.",
    )
}

/// The spec as served at `/openapi.json` and committed in `openapi.json`
/// (`palisade openapi > openapi.json`).
pub fn openapi_json() -> String {
    crate::http::spec::finish(&service().spec())
}
