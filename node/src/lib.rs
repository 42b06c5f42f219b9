//! quorumid-node: a province node of the quorumid federated identity registry.
//!
//! # Layout
//!
//! - [`registry`]: the domain (identities, status rules, keyed hashes) and its deterministic
//!   `apply`. No I/O, no clock. The `quorumid-registry` crate (`node/registry/`), re-exported.
//! - [`raft`]: openraft wired to RocksDB (log store, state machine, snapshots) and to gRPC
//!   (outgoing network, incoming Raft service). What it stores, as bytes (column families,
//!   sealing at rest, the state digest, snapshot files), is the `quorumid-storage-format`
//!   crate (`node/storage-format/`).
//! - [`writes`]: the write path: any node accepts a write, the leader completes and proposes it.
//! - [`reads`]: read consistency levels, the freshness watermark and the read gate.
//! - [`api`]: the public gRPC services (Registry, Verifier, Holder, Cluster, health,
//!   reflection).
//! - [`biometrics`]: template checks at enrollment and 1:1 probe matching at verification.
//! - [`security`]: mutual TLS, callers' roles and scopes from their certificates, who may
//!   call what, rate limits, and the holder's device key.
//! - [`telemetry`]: traces across nodes, Prometheus metrics and log lines, with no personal
//!   data.
//! - [`node`]: starts and stops all of the above as one node.
//! - [`config`]: the node's TOML configuration and environment overrides.
//! - [`join`]: at start, resume, initialise (the seed rule) or join as a learner.
//! - [`handover`]: leadership hand-over (TransferLeader, and on SIGTERM).
//! - [`leader_watch`]: fast failover: a voter whose leader's process died campaigns as soon
//!   as every leader lease has run out.
//! - [`dev`]: `quorumid-node dev`, a local multi-province cluster of child processes.

pub mod api;
pub mod biometrics;
pub mod config;
pub mod dev;
pub mod handover;
pub mod join;
pub mod leader_watch;
pub mod node;
pub mod raft;
pub mod reads;
pub mod security;
pub mod telemetry;
pub mod writes;

pub use quorumid_registry as registry;
