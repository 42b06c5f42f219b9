//! What can go wrong, in the caller's terms: the registry's answers (revoked, unknown id,
//! duplicate, out of scope, ...) and the cluster's state (stale nodes, no quorum, nothing
//! reachable before the deadline), each with the node's own explanation.
//!
//! Also the one place that reads a gRPC status: [`classify`] decides whether another node
//! might answer (retry) or the answer is final.

use std::fmt;
use std::time::Duration;

use tonic::Code;

use crate::types::IdentityStatus;

pub const REASON_KEY: &str = "quorumid-reason";
pub const LEADER_ADDR_KEY: &str = "quorumid-leader-addr";
pub const STATUS_KEY: &str = "quorumid-status";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request was malformed; the message names the field.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("no identity has this id")]
    UnknownIdentity,
    #[error("the identity is revoked")]
    Revoked,
    #[error("the identity is suspended")]
    Suspended,
    #[error("the biometric probe did not match the identity's enrolled templates")]
    ProbeMismatch,
    /// A status change that the identity's current status does not allow.
    #[error("not allowed: {0}")]
    InvalidTransition(String),
    /// The document or a biometric is already enrolled (the other identity is never named).
    #[error("duplicate {kind}: {message}")]
    Duplicate {
        kind: DuplicateKind,
        message: String,
    },
    /// The request id was used before for a different request.
    #[error("request id reused: {0}")]
    RequestIdReused(String),
    /// The caller may not do this (for example an authority outside its province).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Every node that answered was too stale (or behind the token) for the level asked.
    #[error("no node is fresh enough for this read: {0}")]
    Stale(Failures),
    /// No node knew a leader: the cluster has no quorum (or is electing one).
    #[error("the cluster has no leader (no quorum?): {0}")]
    NoQuorum(Failures),
    /// No node could be reached, or each failed in a way that another might not.
    #[error("no node could answer: {0}")]
    Unavailable(Failures),
    /// The caller's deadline passed before any node answered.
    #[error("deadline of {deadline:?} exceeded: {failures}")]
    DeadlineExceeded {
        deadline: Duration,
        failures: Failures,
    },
    /// An answer this library has no better name for.
    #[error("{code:?}{}: {message}", reason.as_deref().map(|r| format!(" [{r}]")).unwrap_or_default())]
    Server {
        code: Code,
        reason: Option<String>,
        message: String,
    },
    /// The client was configured wrongly (for example an endpoint that is not a URI).
    #[error("client configuration: {0}")]
    Config(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicateKind {
    Document,
    Biometric,
}

impl fmt::Display for DuplicateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DuplicateKind::Document => "document",
            DuplicateKind::Biometric => "biometric",
        })
    }
}

/// Why each tried node did not answer, in the order they were tried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failures(pub Vec<Failure>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub node: String,
    pub kind: RetryKind,
    pub message: String,
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no node was tried");
        }
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", failure.node, failure.message)?;
        }
        Ok(())
    }
}

/// Why a node did not answer, when another node might.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryKind {
    /// Too stale for the level (quorumid-reason STALE).
    Stale,
    /// Has not applied the AT_LEAST token yet (BEHIND).
    Behind,
    /// Knows no leader, or could not reach it (NO_LEADER).
    NoLeader,
    /// The node is stopping (SHUTTING_DOWN).
    ShuttingDown,
    /// Connection refused or broken, or the node failed internally.
    Unreachable,
    /// No answer within the per-attempt timeout.
    Timeout,
}

/// What one attempt's failure means for the call.
pub(crate) enum Verdict {
    /// Another node (or the same one later) may answer.
    Retry {
        kind: RetryKind,
        message: String,
        leader_addr: Option<String>,
    },
    /// The registry's answer: return it to the caller.
    Final(Error),
}

fn metadata(status: &tonic::Status, key: &str) -> Option<String> {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads one failed attempt. Every write this library sends carries a request id, so a write
/// may be retried after any failure that is not an answer from the registry.
pub(crate) fn classify(status: &tonic::Status) -> Verdict {
    let reason = metadata(status, REASON_KEY);
    let message = status.message().to_string();
    let retry = |kind| Verdict::Retry {
        kind,
        message: message.clone(),
        leader_addr: metadata(status, LEADER_ADDR_KEY).filter(|a| !a.is_empty()),
    };
    match (status.code(), reason.as_deref()) {
        (_, Some("STALE")) => retry(RetryKind::Stale),
        (_, Some("BEHIND")) => retry(RetryKind::Behind),
        (_, Some("NO_LEADER")) => retry(RetryKind::NoLeader),
        (_, Some("SHUTTING_DOWN")) => retry(RetryKind::ShuttingDown),
        // A drawn identity id collided: the same request again draws another.
        (_, Some("IDENTITY_ID_TAKEN")) => retry(RetryKind::Unreachable),
        (Code::DeadlineExceeded, _) => retry(RetryKind::Timeout),
        (
            Code::Unavailable
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::ResourceExhausted,
            _,
        ) => retry(RetryKind::Unreachable),
        (Code::InvalidArgument | Code::OutOfRange, _) => {
            Verdict::Final(Error::InvalidInput(message))
        }
        (Code::NotFound, _) => Verdict::Final(Error::UnknownIdentity),
        (Code::AlreadyExists, Some("DUPLICATE_DOCUMENT")) => Verdict::Final(Error::Duplicate {
            kind: DuplicateKind::Document,
            message,
        }),
        (Code::AlreadyExists, Some("DUPLICATE_BIOMETRIC")) => Verdict::Final(Error::Duplicate {
            kind: DuplicateKind::Biometric,
            message,
        }),
        (_, Some("REQUEST_ID_REUSED")) => Verdict::Final(Error::RequestIdReused(message)),
        (_, Some("INVALID_TRANSITION")) => Verdict::Final(
            match metadata(status, STATUS_KEY)
                .as_deref()
                .map(IdentityStatus::from_name)
            {
                Some(IdentityStatus::Revoked) => Error::Revoked,
                // Only "suspend" is refused from SUSPENDED.
                Some(IdentityStatus::Suspended) => Error::Suspended,
                _ => Error::InvalidTransition(message),
            },
        ),
        (Code::PermissionDenied | Code::Unauthenticated, _) => {
            Verdict::Final(Error::PermissionDenied(message))
        }
        (code, reason) => Verdict::Final(Error::Server {
            code,
            reason: reason.map(str::to_string),
            message,
        }),
    }
}

/// The error for one call at one named node (no failover).
pub(crate) fn single(node: &str, status: &tonic::Status) -> Error {
    match classify(status) {
        Verdict::Final(e) => e,
        Verdict::Retry { kind, message, .. } => exhausted(
            Failures(vec![Failure {
                node: node.to_string(),
                kind,
                message,
            }]),
            None,
        ),
    }
}

/// The error for a call on which every attempt failed.
pub(crate) fn exhausted(failures: Failures, deadline: Option<Duration>) -> Error {
    let kinds: Vec<RetryKind> = failures.0.iter().map(|f| f.kind).collect();
    if let Some(deadline) = deadline {
        return Error::DeadlineExceeded { deadline, failures };
    }
    if kinds.contains(&RetryKind::NoLeader) {
        Error::NoQuorum(failures)
    } else if !kinds.is_empty()
        && kinds
            .iter()
            .all(|k| matches!(k, RetryKind::Stale | RetryKind::Behind))
    {
        Error::Stale(failures)
    } else {
        Error::Unavailable(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn status(code: Code, reason: &str, extra: &[(&'static str, &str)]) -> tonic::Status {
        let mut metadata = MetadataMap::new();
        metadata.insert(REASON_KEY, reason.parse().unwrap());
        for (k, v) in extra {
            metadata.insert(*k, v.parse().unwrap());
        }
        tonic::Status::with_metadata(code, "the node's words", metadata)
    }

    #[test]
    fn refusals_that_another_node_may_not_share_are_retried() {
        for (code, reason, kind) in [
            (Code::Unavailable, "STALE", RetryKind::Stale),
            (Code::Unavailable, "BEHIND", RetryKind::Behind),
            (Code::Unavailable, "NO_LEADER", RetryKind::NoLeader),
            (Code::Unavailable, "", RetryKind::Unreachable),
            (Code::DeadlineExceeded, "", RetryKind::Timeout),
        ] {
            match classify(&status(code, reason, &[(LEADER_ADDR_KEY, "http://l:1")])) {
                Verdict::Retry {
                    kind: k,
                    leader_addr,
                    ..
                } => {
                    assert_eq!(k, kind);
                    assert_eq!(leader_addr.as_deref(), Some("http://l:1"));
                }
                Verdict::Final(e) => panic!("{reason} must be retried, got {e}"),
            }
        }
    }

    #[test]
    fn registry_answers_are_typed() {
        let fin = |s| match classify(&s) {
            Verdict::Final(e) => e,
            Verdict::Retry { .. } => panic!("must be final"),
        };
        assert!(matches!(
            fin(status(Code::NotFound, "UNKNOWN_IDENTITY", &[])),
            Error::UnknownIdentity
        ));
        assert!(matches!(
            fin(status(
                Code::FailedPrecondition,
                "INVALID_TRANSITION",
                &[(STATUS_KEY, "REVOKED")]
            )),
            Error::Revoked
        ));
        assert!(matches!(
            fin(status(
                Code::FailedPrecondition,
                "INVALID_TRANSITION",
                &[(STATUS_KEY, "ACTIVE")]
            )),
            Error::InvalidTransition(_)
        ));
        assert!(matches!(
            fin(status(Code::AlreadyExists, "DUPLICATE_BIOMETRIC", &[])),
            Error::Duplicate {
                kind: DuplicateKind::Biometric,
                ..
            }
        ));
        assert!(matches!(
            fin(status(Code::PermissionDenied, "OUT_OF_SCOPE", &[])),
            Error::PermissionDenied(_)
        ));
        assert!(matches!(
            fin(status(Code::InvalidArgument, "INVALID_ARGUMENT", &[])),
            Error::InvalidInput(m) if m == "the node's words"
        ));
    }

    #[test]
    fn an_exhausted_call_says_what_the_nodes_said() {
        let f = |kind| Failure {
            node: "n".into(),
            kind,
            message: "m".into(),
        };
        let stale = Failures(vec![f(RetryKind::Stale), f(RetryKind::Behind)]);
        assert!(matches!(exhausted(stale, None), Error::Stale(_)));
        let mixed = Failures(vec![f(RetryKind::Stale), f(RetryKind::NoLeader)]);
        assert!(matches!(exhausted(mixed, None), Error::NoQuorum(_)));
        let down = Failures(vec![f(RetryKind::Unreachable), f(RetryKind::Stale)]);
        assert!(matches!(exhausted(down, None), Error::Unavailable(_)));
        assert!(matches!(
            exhausted(Failures::default(), Some(Duration::from_secs(1))),
            Error::DeadlineExceeded { .. }
        ));
    }
}
