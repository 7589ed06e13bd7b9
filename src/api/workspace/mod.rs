//! Workspace data: conversations and their events, documents (payloads in the object
//! store), and who may see a restricted project's data.

pub mod conversations;
pub mod documents;
pub mod events;
pub mod project_members;
