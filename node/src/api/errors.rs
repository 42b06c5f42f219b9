//! How failures become gRPC statuses: a precise message, and for the cases a client must act
//! on, a machine-readable `quorumid-reason` (and leader hints) in the trailing metadata.

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use quorumid_biometrics::extract::ExtractError;

use crate::biometrics::ImageError;
use crate::reads::Refusal;
use crate::registry::{Action, Rejection, StateError, Status as IdStatus};
use crate::writes::WriteError;

pub const REASON_KEY: &str = "quorumid-reason";
pub const LEADER_ID_KEY: &str = "quorumid-leader-id";
pub const LEADER_ADDR_KEY: &str = "quorumid-leader-addr";
/// On INVALID_TRANSITION: the identity's current status (ACTIVE, SUSPENDED or REVOKED).
pub const STATUS_KEY: &str = "quorumid-status";
/// On RATE_LIMITED: milliseconds until the caller's next request is admitted.
pub const RETRY_AFTER_MS_KEY: &str = "quorumid-retry-after-ms";

/// A status carrying `quorumid-reason: reason`.
pub fn with_reason(code: Code, reason: &'static str, message: impl Into<String>) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(REASON_KEY, MetadataValue::from_static(reason));
    Status::with_metadata(code, message, metadata)
}

pub fn invalid(message: impl Into<String>) -> Status {
    with_reason(Code::InvalidArgument, "INVALID_ARGUMENT", message)
}

/// A status for "ask the leader": reason NO_LEADER, with the leader's id and address if known.
pub fn leader_hint(message: String, leader_id: Option<u64>, leader_addr: &str) -> Status {
    let mut status = with_reason(Code::Unavailable, "NO_LEADER", message);
    if let Some(id) = leader_id {
        status.metadata_mut().insert(LEADER_ID_KEY, id.into());
    }
    if let Ok(addr) = leader_addr.parse() {
        status.metadata_mut().insert(LEADER_ADDR_KEY, addr);
    }
    status
}

/// A face image in `field` that gave no template.
pub fn face_image(field: &str, e: ImageError) -> Status {
    match e {
        ImageError::NoModels => with_reason(
            Code::FailedPrecondition,
            "NO_FACE_MODELS",
            format!("{field}: {e}"),
        ),
        ImageError::Extract(ExtractError::NoFace) => {
            with_reason(Code::InvalidArgument, "NO_FACE", format!("{field}: {e}"))
        }
        ImageError::Extract(
            ExtractError::EncodedTooLarge { .. }
            | ExtractError::ImageTooLarge { .. }
            | ExtractError::Decode(_)
            | ExtractError::DegenerateFace,
        ) => invalid(format!("{field}: {e}")),
        ImageError::Extract(_) | ImageError::Failed(_) => {
            tracing::error!(error = %e, "face extraction failed");
            Status::internal(format!("{field}: the node could not extract the face: {e}"))
        }
    }
}

pub fn state(e: StateError) -> Status {
    tracing::error!(error = %e, "reading the registry state failed");
    Status::internal(format!("the node could not read its state: {e}"))
}

fn status_word(s: IdStatus) -> &'static str {
    match s {
        IdStatus::Active => "active",
        IdStatus::Suspended => "suspended",
        IdStatus::Revoked => "revoked",
    }
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Suspend => "suspend",
        Action::Reinstate => "reinstate",
        Action::Revoke => "revoke",
        Action::BindHolderKey => "bind a holder key to",
        Action::SetModalityLock => "lock or unlock a modality of",
    }
}

pub fn rejection(r: &Rejection, log_index: u64) -> Status {
    let at = format!("(decided at log index {log_index})");
    match r {
        Rejection::DuplicateDocument => with_reason(
            Code::AlreadyExists,
            "DUPLICATE_DOCUMENT",
            format!(
                "an identity is already enrolled for this document (rule: unique document key) {at}"
            ),
        ),
        Rejection::DuplicateFace => with_reason(
            Code::AlreadyExists,
            "DUPLICATE_BIOMETRIC",
            format!(
                "an enrolled identity's face matches this face (rule: biometric de-dup, face; \
                 searched at log index {log_index})"
            ),
        ),
        Rejection::DuplicateFingerprint => with_reason(
            Code::AlreadyExists,
            "DUPLICATE_BIOMETRIC",
            format!(
                "an enrolled identity's finger matches a finger of this enrollment (rule: \
                 biometric de-dup, fingerprint; searched at log index {log_index})"
            ),
        ),
        Rejection::UnknownIdentity => with_reason(
            Code::NotFound,
            "UNKNOWN_IDENTITY",
            format!("no identity has this id {at}"),
        ),
        Rejection::InvalidTransition { from, action } => {
            let mut status = with_reason(
                Code::FailedPrecondition,
                "INVALID_TRANSITION",
                format!(
                    "cannot {} an identity that is {} {at}",
                    action_word(*action),
                    status_word(*from)
                ),
            );
            let current = match from {
                IdStatus::Active => "ACTIVE",
                IdStatus::Suspended => "SUSPENDED",
                IdStatus::Revoked => "REVOKED",
            };
            status
                .metadata_mut()
                .insert(STATUS_KEY, MetadataValue::from_static(current));
            status
        }
        Rejection::OutOfScope => with_reason(
            Code::PermissionDenied,
            "OUT_OF_SCOPE",
            format!("the authority's province does not cover this identity's home province {at}"),
        ),
        Rejection::RequestIdReused => with_reason(
            Code::AlreadyExists,
            "REQUEST_ID_REUSED",
            "this request_id was already used for a different request; use a fresh request_id",
        ),
        Rejection::DocumentKeyMismatch => with_reason(
            Code::FailedPrecondition,
            "KEY_MISMATCH",
            "the node that received this write hashes documents with another key than the \
             cluster: its key configuration is wrong",
        ),
        Rejection::IdentityIdTaken => with_reason(
            Code::Aborted,
            "IDENTITY_ID_TAKEN",
            "the drawn identity id exists already; retry the same request",
        ),
        Rejection::MalformedCommand => Status::internal(format!("malformed command {at}")),
        Rejection::HolderKeyChanged => with_reason(
            Code::FailedPrecondition,
            "HOLDER_KEY_CHANGED",
            format!("the holder's device key changed since the request was signed {at}"),
        ),
    }
}

pub fn write(e: WriteError) -> Status {
    match &e {
        WriteError::NoLeader => leader_hint(e.to_string(), None, ""),
        WriteError::LeaderUnreachable {
            leader_id,
            leader_api_addr,
            ..
        } => leader_hint(e.to_string(), Some(*leader_id), leader_api_addr),
        WriteError::LeaderChanged {
            leader_id,
            leader_api_addr,
        } => leader_hint(e.to_string(), *leader_id, leader_api_addr),
        WriteError::ShuttingDown => with_reason(Code::Unavailable, "SHUTTING_DOWN", e.to_string()),
        WriteError::Unavailable(_) => Status::unavailable(e.to_string()),
    }
}

pub fn refusal(r: Refusal) -> Status {
    let reason = match r {
        Refusal::Stale { .. } => "STALE",
        Refusal::Behind { .. } => "BEHIND",
        Refusal::ShuttingDown => "SHUTTING_DOWN",
    };
    with_reason(Code::Unavailable, reason, r.to_string())
}
