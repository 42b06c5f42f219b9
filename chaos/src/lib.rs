//! quorumid-chaos: runs real `quorumid-node` containers under network partitions, crashes,
//! pauses and membership changes while concurrent clients use the cluster through the client
//! library, records what every call saw, and checks that history against the guarantees of
//! DESIGN.md section 1 (no acknowledged write lost, revocation fresh within its stated bound,
//! no split brain).
//!
//! # Layout
//!
//! - [`docker`]: the Docker engine (bollard, API version negotiated), the version relay that
//!   lets testcontainers talk to an older engine, clean-up of leftovers by label.
//! - [`image`]: builds the node image from the binary under test (`deploy/build-image.sh`).
//! - [`cluster`]: a cluster of node containers on a private network: configuration, start,
//!   kill -9 and restart with the same volume, pause, membership.
//! - [`net`]: partitions as "grudges" (who drops whose packets), applied with iptables inside
//!   each node's network namespace.
//! - [`schedule`]: the seeded fault schedule; the same seed gives the same schedule.
//! - [`nemesis`]: carries out a schedule against a cluster, each fault with its heal.
//! - [`workload`]: concurrent clients that enroll, change status and verify at every
//!   consistency level, recording each call's invocation and completion.
//! - [`history`]: what the workload and the nemesis record; written as JSON lines.
//! - [`checker`]: the checks over a history and the final state of every node;
//!   [`linearizability`]: the per-identity Wing–Gong search used by one of them.
//! - [`run`]: one run from start to verdict, and the report.

pub mod checker;
pub mod cluster;
pub mod docker;
pub mod history;
pub mod image;
pub mod linearizability;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod schedule;
pub mod workload;
