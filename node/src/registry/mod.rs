//! The identity registry: the domain model and its deterministic state transitions.
//!
//! Nothing here knows about Raft, RocksDB or gRPC. `apply` reads state through the narrow
//! [`RegistryState`] trait and returns [`Change`]s; the `raft` module stores them.

mod apply;
mod command;
mod id;
mod keys;
mod model;

pub use apply::{Change, REQUEST_WINDOW_MS, RegistryState, RequestRecord, StateError, apply};
pub use command::{Action, Batch, Command, Outcome, Proposal, Rejection, Request, Response};
pub use id::{IdParseError, IdentityId};
pub use keys::{ClusterKeys, DocumentKey, KeyId};
pub use model::{
    Authority, Event, EventKind, Identity, Reason, Scope, Status, Template, TemplateFormat,
    TemplateSummary,
};
