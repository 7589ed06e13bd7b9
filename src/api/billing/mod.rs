//! Billing-side data: the plan catalogue and each organization's plan, customer-defined
//! meters, usage events, and usage reads (current period, daily, the billing-ready
//! report), and billing through Stripe (checkout, top-ups, the portal, the webhook). Quotas, feature flags and every rollup are kept by PostgreSQL
//! (policies/functions_usage.sql); these handlers translate HTTP.

pub mod checkout;
pub mod meters;
pub mod plans;
pub mod usage;
pub mod usage_batch;
pub mod webhook;
