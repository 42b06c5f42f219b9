//! quorumid-registry: the identity registry's domain model and its deterministic state
//! transitions.
//!
//! Nothing here knows about Raft, RocksDB or gRPC, and the crate's dependencies enforce it:
//! none of openraft, rocksdb, tonic or tokio. `apply` reads state through the narrow
//! [`RegistryState`] trait and returns [`Change`]s; the node (`quorumid-node`, which
//! re-exports this crate as `registry`) stores them. [`codec`] is the byte encoding of the
//! commands and records, so decoding them can be tested and fuzzed without the node;
//! [`memory`] is the state in plain maps, for tests and fuzzing.

mod apply;
pub mod codec;
mod command;
mod id;
mod keys;
pub mod memory;
mod model;

pub use apply::{Change, REQUEST_WINDOW_MS, RegistryState, RequestRecord, StateError, apply};
pub use command::{Action, Batch, Command, Outcome, Proposal, Rejection, Request, Response};
pub use id::{IdParseError, IdentityId};
pub use keys::{ClusterKeys, DocumentKey, KeyId};
pub use model::{
    Authority, Event, EventKind, HolderKey, Identity, Modality, Reason, Scope, Status, Template,
    TemplateFormat, TemplateSummary,
};
