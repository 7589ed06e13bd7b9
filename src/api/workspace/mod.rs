//! Workspace data: conversations and their events, documents (payloads in the object
//! store), who may see a restricted project's data, and the assistant over documents.

pub mod assistant;
pub mod conversations;
pub mod documents;
pub mod events;
pub mod project_members;

use crate::{
    http::problem::ApiError,
    storage::{ObjectKey, StorageError},
};

/// The object store failed: 503, the cause logged.
pub fn storage_unavailable(e: StorageError) -> ApiError {
    tracing::error!(error = %e, "object store request failed");
    ApiError::unavailable("the object store is unavailable; retry shortly", 1)
}

/// A read of `key`, which a committed row names, failed: a missing object is data loss
/// (500, not a client error); anything else is the store being away (503).
pub fn committed_object_error(key: &ObjectKey, e: StorageError) -> ApiError {
    match e {
        StorageError::NotFound(_) => {
            ApiError::internal(&format!("object {key} of a committed row is missing"))
        }
        other => storage_unavailable(other),
    }
}
