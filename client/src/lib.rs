//! quorumid-client: how platforms, registrars, authorities and operators call a quorumid
//! cluster.
//!
//! # Layout
//!
//! - [`client`]: [`Client`] and [`ClientBuilder`]: verify, read records, enroll, change
//!   status, and the operator calls (status, membership, snapshot).
//! - [`nodes`]: the node set: one pooled channel per node, background health probes, round-trip
//!   moving averages, and the ranking that makes "nearest" mean something.
//! - `failover`: runs one call across nodes within the caller's deadline: next node on
//!   `UNAVAILABLE` (STALE, NO_LEADER, ...), connection errors and attempt timeouts; writes to
//!   the leader, following its hints; optional hedged reads.
//! - [`error`]: typed errors (revoked, suspended, unknown id, stale, no quorum, permission
//!   denied, invalid input, ...) and the reading of gRPC statuses.
//! - [`types`]: the requests and answers as plain Rust types.
//! - [`tls`]: [`ClientTls`], the CA and caller certificate for clusters that run mutual TLS.
//! - `src/bin/quorumid/`: the `quorumid` command-line tool, on this library.
//!
//! # Guarantees a caller can build on
//!
//! - Every write carries a request id (drawn per [`Enrollment`]/[`StatusChange`], or the
//!   caller's own). The registry applies an id once and answers retries with the first result,
//!   so the library retries writes on another node without risk of applying them twice.
//! - A write's answer carries a [`CommitToken`]; [`Consistency::AtLeast`] with it reads your
//!   own write at any node (a node that has not applied it yet answers BEHIND, and the
//!   library asks the next one).
//! - A read answer says which node answered and how stale it may be ([`ReadFacts`]).
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use quorumid_client::{Authority, Client, Consistency, Enrollment, Reason, StatusChange};
//!
//! # async fn example() -> Result<(), quorumid_client::Error> {
//! let client = Client::builder()
//!     .endpoints(["http://node-1.on:7100", "http://node-1.qc:7100"])
//!     .platform("acme-bank")
//!     .consistency(Consistency::Bounded(Duration::from_millis(500)))
//!     .deadline(Duration::from_secs(2))
//!     .connect()
//!     .await?;
//!
//! // A registrar enrolls; an authority revokes.
//! let registrar = Authority::provincial("registrar-on-12", "ON");
//! let enrolled = client.enroll(&Enrollment::new("ON", "P1234567", registrar)).await?;
//! let authority = Authority::provincial("authority-on", "ON");
//! let change = StatusChange::new(&enrolled.identity_id, Reason::Fraud, authority);
//! let revoked = client.revoke(&change).await?;
//!
//! // A platform verifies, reading its own write wherever it lands.
//! let answer = client
//!     .verify_with(
//!         &enrolled.identity_id,
//!         quorumid_client::VerifyOptions {
//!             consistency: Some(Consistency::AtLeast(revoked.token)),
//!             ..Default::default()
//!         },
//!     )
//!     .await?;
//! assert!(!answer.is_valid());
//! match answer.require_valid() {
//!     Err(quorumid_client::Error::Revoked) => println!("revoked, as it should be"),
//!     other => println!("unexpected: {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod error;
mod failover;
pub mod nodes;
pub mod tls;
pub mod types;

pub use client::{Client, ClientBuilder, MembershipChange, NewLearner, Settings, VerifyOptions};
pub use error::{DuplicateKind, Error, Failure, Failures, RetryKind};
pub use nodes::{Health, NodeView};
/// The generated protobuf types, for the operator calls that answer them directly.
pub use quorumid_proto::v1 as pb;
pub use tls::ClientTls;
pub use types::{
    Authority, CommitToken, Consistency, Enrolled, Enrollment, HistoryEvent, IdentityStatus,
    ReadFacts, Reason, Record, RequestId, StatusChange, StatusChanged, Template, Verification,
};
