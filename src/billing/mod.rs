//! Billing through Stripe, outside HTTP: the Stripe API client ([`stripe`]), webhook
//! signatures ([`signature`]), and the worker that applies stored webhook events to the
//! org's subscription, credits and entitlement ([`apply`]). The handlers are in
//! `api::billing::checkout` and `api::billing::webhook`; every rule is in
//! policies/functions_billing.sql.

pub mod apply;
pub mod signature;
pub mod stripe;
