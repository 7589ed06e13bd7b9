//! The one integration-test binary. Every test gets its own database, cloned from a
//! migrated template in a private PostgreSQL cluster started once per run.

mod fixtures;
mod helpers;
mod llm_fake;
mod s3;
mod secrets;
mod stripe_fake;

mod api_keys;
mod assistant;
mod attacks;
mod audit;
mod audit_api;
mod audit_coverage;
mod audit_log;
mod auth;
mod billing;
mod contract;
mod documents;
mod drills;
mod email;
mod health;
mod invitations;
mod isolation;
mod jobs;
mod llm_client;
mod matrix;
mod members;
mod metrics;
mod operator;
mod orgs;
mod performance;
mod plans;
mod projects;
mod replicas;
mod sessions;
mod settings;
mod usage;
mod workspace;
