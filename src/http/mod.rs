//! HTTP plumbing with no resource knowledge: the request kernel every handler runs its
//! SQL through, the middleware around every request, problem+json errors and the error
//! sets operations declare, request validation, pagination, the security scheme, and
//! the finishing of the OpenAPI document.

pub mod accept;
pub mod download;
pub mod errors;
pub mod json;
pub mod kernel;
pub mod middleware;
pub mod pagination;
pub mod problem;
pub mod security;
pub mod spec;
pub mod sse;
pub mod upload;
pub mod validate;
