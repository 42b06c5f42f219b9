//! Keeping callers to what they may do: mutual TLS on both ports, the caller's role read
//! from its certificate, and the rule of each RPC; and keeping what is on disk unreadable.
//!
//! - `caller`: the roles and scopes (`spiffe://quorumid/...` URIs in client certificates).
//! - `policy`: which caller may call which RPC, within which scope (pure).
//! - `tls`: the `[tls]` configuration, rustls on both ports, certificate rotation, and the
//!   layer that attaches the caller to every request.
//! - `certs`: issuing a cluster CA and caller certificates (`quorumid-node certs`).
//! - `limits`: per-caller rate limits (token buckets) on the API port.
//! - Sealing stored values at rest (AES-256-GCM, rotating storage keys) is part of the
//!   storage format: `quorumid_storage_format::at_rest`.
//! - `holder`: the holder's device key (Ed25519) and the signed proofs it makes.

pub mod caller;
pub mod certs;
pub mod holder;
pub mod limits;
pub mod policy;
pub mod tls;

pub use caller::Caller;
pub use limits::LimitsConfig;
pub use tls::{Authenticate, Tls, TlsConfig};
