//! Workspace data that is not HTTP: the event segment format, the live-tail hub (LISTEN
//! wake-ups), the object purge worker and `palisade storage reconcile`, document text
//! extraction. Handlers live in `api/workspace/`.

pub mod documents;
pub mod events;
pub mod purge;
pub mod tail;
