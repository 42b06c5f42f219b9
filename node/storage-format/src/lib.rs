//! What a quorumid node stores, as bytes, without a database: the node's RocksDB store
//! (`quorumid-node`, `raft::store`) writes and reads these formats, and the fuzz targets
//! (`node/fuzz`) decode them without building RocksDB.
//!
//! # Layout
//!
//! - [`types`]: openraft's type configuration (node ids, [`NodeInfo`], log ids, snapshot meta).
//! - [`columns`]: the column families ([`Cf`]), their tags, and which are sealed.
//! - [`at_rest`]: sealing stored values (AES-256-GCM, rotating storage keys).
//! - [`digest`]: the multiset hash of the registry state that replicas compare.
//! - [`snapshot`]: the snapshot file, and its checked decoding.

pub mod at_rest;
pub mod columns;
pub mod digest;
pub mod snapshot;
pub mod types;

pub use at_rest::{SealError, Sealer};
pub use columns::Cf;
pub use digest::StateDigest;
pub use snapshot::{SnapshotError, SnapshotFile};
pub use types::*;
