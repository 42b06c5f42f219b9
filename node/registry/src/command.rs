//! What goes through the Raft log, and what comes back.
//!
//! A node turns a client request into a [`Proposal`] (validated, document number already
//! hashed). The leader completes it into a [`Command`] with everything that is not
//! deterministic: the new identity id, its clock reading and the request fingerprint. `apply`
//! then only checks and records. One log entry carries a [`Batch`] of commands: the leader
//! proposes the commands that arrive while earlier proposals are in flight together, so that
//! one log fsync makes many writes durable (group commit).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::codec;
use super::keys::KeyId;
use super::model::{Authority, HolderKey, Modality, Reason, Status, Template};
use super::{DocumentKey, IdentityId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Suspend,
    Reinstate,
    Revoke,
    BindHolderKey,
    SetModalityLock,
}

/// A validated write, before the leader completes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    Enroll {
        home_province: String,
        document: DocumentKey,
        document_key_id: KeyId,
        templates: Vec<Template>,
        authority: Authority,
        holder_key: Option<HolderKey>,
    },
    ChangeStatus {
        identity: IdentityId,
        action: Action,
        reason: Reason,
        authority: Authority,
    },
    /// Binds a new device key (rotation, loss), or with `None` revokes the bound one.
    BindHolderKey {
        identity: IdentityId,
        key: Option<HolderKey>,
        reason: Reason,
        authority: Authority,
    },
    /// The holder replaces their device key with a new one, signed by the bound key
    /// (`signed_with`: `apply` refuses if it is no longer the bound one).
    RotateHolderKey {
        identity: IdentityId,
        new_key: HolderKey,
        signed_with: HolderKey,
    },
    /// The holder locks or unlocks a modality. `signed_with` is the key the node checked the
    /// holder's signature with: `apply` refuses if it is no longer the bound one.
    SetModalityLock {
        identity: IdentityId,
        modality: Modality,
        locked: bool,
        signed_with: HolderKey,
    },
}

/// A client write as received by any node: its idempotency key and what it asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub request_id: String,
    pub proposal: Proposal,
}

impl Request {
    /// SHA-256 of the request's content: a retried request must carry the same content.
    pub fn fingerprint(&self) -> [u8; 32] {
        let encoded = codec::encode(&self.proposal);
        let mut hasher = Sha256::new();
        hasher.update(self.request_id.as_bytes());
        hasher.update([0]);
        hasher.update(encoded);
        hasher.finalize().into()
    }
}

/// A request completed by the leader, ready to apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub request: Request,
    pub fingerprint: [u8; 32],
    /// The leader's wall clock when it proposed, Unix milliseconds.
    pub at_unix_ms: u64,
    /// For enrollments: the id the leader drew for the new identity.
    pub new_identity: Option<IdentityId>,
}

/// The Raft log's entry payload (openraft's `D`): commands applied in order, each as if it
/// had an entry of its own at the entry's index. Never empty.
pub type Batch = Vec<Command>;

/// Why `apply` refused a command. Refusals are results too: they are recorded under the
/// request id (except where noted) so a retry gets the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// Another identity holds this document.
    DuplicateDocument,
    /// An enrolled identity's face matches the enrolling face. Decided by the leader's 1:N
    /// search before proposing (not by `apply`, which does no approximate look-ups).
    DuplicateFace,
    /// The identity does not exist.
    UnknownIdentity,
    /// The status change is not allowed from the current status.
    InvalidTransition { from: Status, action: Action },
    /// The authority's scope does not cover the identity's home province.
    OutOfScope,
    /// The request id was already used for a different request (not recorded).
    RequestIdReused,
    /// The proposing node hashes documents with another key than the cluster's.
    DocumentKeyMismatch,
    /// The drawn identity id exists already (not recorded: a retry draws a new id).
    IdentityIdTaken,
    /// An enrollment command without a drawn id (a bug in the proposer).
    MalformedCommand,
    /// The holder signed with a key that is no longer bound to the identity.
    HolderKeyChanged,
    /// An enrolled finger matches one of the enrolling fingers. Decided like `DuplicateFace`.
    /// (Last, so that the encoding of the others does not move.)
    DuplicateFingerprint,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Enrolled { identity: IdentityId },
    StatusChanged { status: Status },
    HolderKeyBound { bound: bool },
    ModalityLocks { locked: Vec<Modality> },
    Rejected(Rejection),
}

/// The state machine's answer to one command. The answer to a log entry (openraft's `R`)
/// is a `Vec<Response>`, one per command of its batch (none for blank and membership
/// entries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub outcome: Outcome,
    /// The log index at which the request was first applied: retries return it unchanged.
    pub log_index: u64,
}
