//! The deterministic heart of the registry: `apply(state, index, command)`.
//!
//! It is a pure function of the current state (read through [`RegistryState`]) and the
//! command. It does no I/O of its own, reads no clock and draws no random numbers: every
//! replica that applies the same log reaches the same state. It returns the changes to make
//! instead of making them, so the storage layer can commit a whole batch atomically.

use serde::{Deserialize, Serialize};

use super::command::{Action, Command, Outcome, Proposal, Rejection, Response};
use super::keys::KeyId;
use super::model::{
    Authority, Event, EventKind, HolderKey, Identity, Reason, Status, Template, TemplateSummary,
};
use super::{DocumentKey, IdentityId};

/// How long a request id is remembered. A retry within this window returns the first result.
pub const REQUEST_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// How many expired request ids one command may forget, so that apply work stays bounded.
const EXPIRE_PER_COMMAND: usize = 64;

/// A remembered request: its fingerprint, when it was proposed, and its first result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub request_id: String,
    pub fingerprint: [u8; 32],
    pub at_unix_ms: u64,
    pub response: Response,
}

/// Error reading the state (the storage layer's problem, reported as such).
#[derive(Debug, thiserror::Error)]
#[error("reading registry state: {0}")]
pub struct StateError(pub String);

/// Read access to the registry state that `apply` needs, and nothing more.
pub trait RegistryState {
    fn identity(&self, id: &IdentityId) -> Result<Option<Identity>, StateError>;
    fn identity_by_document(&self, key: &DocumentKey) -> Result<Option<IdentityId>, StateError>;
    fn request(&self, request_id: &str) -> Result<Option<RequestRecord>, StateError>;
    /// Up to `limit` remembered requests proposed before `before_unix_ms`, oldest first.
    fn requests_before(
        &self,
        before_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StateError>;
    /// The id of the document key the registry was enrolled with, once there is one.
    fn document_key_id(&self) -> Result<Option<KeyId>, StateError>;
}

/// One change to the state, made by the storage layer in the apply batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    PutIdentity(Identity),
    /// Event number `seq` of the identity's history.
    PutEvent {
        identity: IdentityId,
        seq: u64,
        event: Event,
    },
    PutTemplates(IdentityId, Vec<Template>),
    PutDocument(DocumentKey, IdentityId),
    PutRequest(RequestRecord),
    ForgetRequest {
        request_id: String,
        at_unix_ms: u64,
    },
    SetDocumentKeyId(KeyId),
}

/// Applies `command`, committed at `log_index`, to `state`.
pub fn apply(
    state: &impl RegistryState,
    log_index: u64,
    command: &Command,
) -> Result<(Response, Vec<Change>), StateError> {
    let mut changes = Vec::new();
    let horizon = command.at_unix_ms.saturating_sub(REQUEST_WINDOW_MS);
    for (at_unix_ms, request_id) in state.requests_before(horizon, EXPIRE_PER_COMMAND)? {
        changes.push(Change::ForgetRequest {
            request_id,
            at_unix_ms,
        });
    }

    let request_id = &command.request.request_id;
    if let Some(seen) = state.request(request_id)?
        && seen.at_unix_ms >= horizon
    {
        let response = if seen.fingerprint == command.fingerprint {
            seen.response
        } else {
            rejected(Rejection::RequestIdReused, log_index)
        };
        return Ok((response, changes));
    }

    let outcome = match &command.request.proposal {
        Proposal::Enroll { .. } => enroll(state, log_index, command, &mut changes)?,
        Proposal::ChangeStatus { .. } => change_status(state, log_index, command, &mut changes)?,
        Proposal::BindHolderKey { .. } => bind_holder_key(state, log_index, command, &mut changes)?,
        Proposal::SetModalityLock { .. } => {
            set_modality_lock(state, log_index, command, &mut changes)?
        }
        Proposal::RotateHolderKey { .. } => {
            rotate_holder_key(state, log_index, command, &mut changes)?
        }
    };
    let response = Response { outcome, log_index };
    if !matches!(
        response.outcome,
        Outcome::Rejected(Rejection::IdentityIdTaken | Rejection::RequestIdReused)
    ) {
        changes.push(Change::PutRequest(RequestRecord {
            request_id: request_id.clone(),
            fingerprint: command.fingerprint,
            at_unix_ms: command.at_unix_ms,
            response: response.clone(),
        }));
    }
    Ok((response, changes))
}

fn rejected(rejection: Rejection, log_index: u64) -> Response {
    Response {
        outcome: Outcome::Rejected(rejection),
        log_index,
    }
}

fn enroll(
    state: &impl RegistryState,
    log_index: u64,
    command: &Command,
    changes: &mut Vec<Change>,
) -> Result<Outcome, StateError> {
    let Proposal::Enroll {
        home_province,
        document,
        document_key_id,
        templates,
        authority,
        holder_key,
    } = &command.request.proposal
    else {
        unreachable!("enroll is only called for enrollments");
    };
    let Some(id) = &command.new_identity else {
        return Ok(Outcome::Rejected(Rejection::MalformedCommand));
    };
    match state.document_key_id()? {
        Some(known) if known != *document_key_id => {
            return Ok(Outcome::Rejected(Rejection::DocumentKeyMismatch));
        }
        Some(_) => {}
        None => changes.push(Change::SetDocumentKeyId(*document_key_id)),
    }
    if !authority.may_act_on(home_province) {
        return Ok(Outcome::Rejected(Rejection::OutOfScope));
    }
    if state.identity_by_document(document)?.is_some() {
        return Ok(Outcome::Rejected(Rejection::DuplicateDocument));
    }
    if state.identity(id)?.is_some() {
        return Ok(Outcome::Rejected(Rejection::IdentityIdTaken));
    }
    let mut identity = Identity {
        id: id.clone(),
        home_province: home_province.clone(),
        status: Status::Active,
        document: *document,
        templates: templates
            .iter()
            .map(|t| TemplateSummary {
                format: t.format,
                model_id: t.model_id.clone(),
            })
            .collect(),
        events: 0,
        holder_key: *holder_key,
        locked: Vec::new(),
    };
    let enrolled = |kind| event(command, log_index, kind, authority.clone());
    record(&mut identity, enrolled(EventKind::Enrolled), changes);
    if holder_key.is_some() {
        record(&mut identity, enrolled(EventKind::HolderKeyBound), changes);
    }
    changes.push(Change::PutDocument(*document, id.clone()));
    if !templates.is_empty() {
        changes.push(Change::PutTemplates(id.clone(), templates.clone()));
    }
    changes.push(Change::PutIdentity(identity));
    Ok(Outcome::Enrolled {
        identity: id.clone(),
    })
}

fn change_status(
    state: &impl RegistryState,
    log_index: u64,
    command: &Command,
    changes: &mut Vec<Change>,
) -> Result<Outcome, StateError> {
    let Proposal::ChangeStatus {
        identity: id,
        action,
        reason,
        authority,
    } = &command.request.proposal
    else {
        unreachable!("change_status is only called for status changes");
    };
    let Some(mut identity) = state.identity(id)? else {
        return Ok(Outcome::Rejected(Rejection::UnknownIdentity));
    };
    if !authority.may_act_on(&identity.home_province) {
        return Ok(Outcome::Rejected(Rejection::OutOfScope));
    }
    let (status, kind) = match (identity.status, action) {
        (Status::Active, Action::Suspend) => (Status::Suspended, EventKind::Suspended),
        (Status::Suspended, Action::Reinstate) => (Status::Active, EventKind::Reinstated),
        (Status::Active | Status::Suspended, Action::Revoke) => {
            (Status::Revoked, EventKind::Revoked)
        }
        (from, action) => {
            return Ok(Outcome::Rejected(Rejection::InvalidTransition {
                from,
                action: *action,
            }));
        }
    };
    identity.status = status;
    let changed = Event {
        reason: Some(*reason),
        ..event(command, log_index, kind, authority.clone())
    };
    record(&mut identity, changed, changes);
    changes.push(Change::PutIdentity(identity));
    Ok(Outcome::StatusChanged { status })
}

/// An event of `command`, committed at `log_index`, with no reason or modality.
fn event(command: &Command, log_index: u64, kind: EventKind, authority: Authority) -> Event {
    Event {
        kind,
        reason: None,
        authority,
        at_unix_ms: command.at_unix_ms,
        log_index,
        modality: None,
    }
}

/// The identity a holder's signed write acts on: it exists, still has the key the signature
/// was checked with, and is not revoked.
fn signed_by_holder(
    state: &impl RegistryState,
    id: &IdentityId,
    signed_with: &HolderKey,
    action: Action,
) -> Result<Result<Identity, Rejection>, StateError> {
    let Some(identity) = state.identity(id)? else {
        return Ok(Err(Rejection::UnknownIdentity));
    };
    if identity.holder_key != Some(*signed_with) {
        return Ok(Err(Rejection::HolderKeyChanged));
    }
    if identity.status == Status::Revoked {
        return Ok(Err(Rejection::InvalidTransition {
            from: Status::Revoked,
            action,
        }));
    }
    Ok(Ok(identity))
}

/// Binds `key` (or none) to the identity and records `event` of it.
fn set_holder_key(
    mut identity: Identity,
    key: Option<HolderKey>,
    event: Event,
    changes: &mut Vec<Change>,
) -> Outcome {
    identity.holder_key = key;
    record(&mut identity, event, changes);
    changes.push(Change::PutIdentity(identity));
    Outcome::HolderKeyBound {
        bound: key.is_some(),
    }
}

/// Appends `event` to the identity's history (the caller writes the identity).
fn record(identity: &mut Identity, event: Event, changes: &mut Vec<Change>) {
    changes.push(Change::PutEvent {
        identity: identity.id.clone(),
        seq: identity.events,
        event,
    });
    identity.events += 1;
}

fn bind_holder_key(
    state: &impl RegistryState,
    log_index: u64,
    command: &Command,
    changes: &mut Vec<Change>,
) -> Result<Outcome, StateError> {
    let Proposal::BindHolderKey {
        identity: id,
        key,
        reason,
        authority,
    } = &command.request.proposal
    else {
        unreachable!("bind_holder_key is only called for key bindings");
    };
    let Some(identity) = state.identity(id)? else {
        return Ok(Outcome::Rejected(Rejection::UnknownIdentity));
    };
    if !authority.may_act_on(&identity.home_province) {
        return Ok(Outcome::Rejected(Rejection::OutOfScope));
    }
    if identity.status == Status::Revoked {
        return Ok(Outcome::Rejected(Rejection::InvalidTransition {
            from: Status::Revoked,
            action: Action::BindHolderKey,
        }));
    }
    let kind = match key {
        Some(_) => EventKind::HolderKeyBound,
        None => EventKind::HolderKeyRevoked,
    };
    let bound = Event {
        reason: Some(*reason),
        ..event(command, log_index, kind, authority.clone())
    };
    Ok(set_holder_key(identity, *key, bound, changes))
}

fn rotate_holder_key(
    state: &impl RegistryState,
    log_index: u64,
    command: &Command,
    changes: &mut Vec<Change>,
) -> Result<Outcome, StateError> {
    let Proposal::RotateHolderKey {
        identity: id,
        new_key,
        signed_with,
    } = &command.request.proposal
    else {
        unreachable!("rotate_holder_key is only called for key rotations");
    };
    let identity = match signed_by_holder(state, id, signed_with, Action::BindHolderKey)? {
        Ok(identity) => identity,
        Err(rejection) => return Ok(Outcome::Rejected(rejection)),
    };
    let holder = Authority::holder(&identity.home_province);
    let rotated = Event {
        reason: Some(Reason::Superseded),
        ..event(command, log_index, EventKind::HolderKeyBound, holder)
    };
    Ok(set_holder_key(identity, Some(*new_key), rotated, changes))
}

fn set_modality_lock(
    state: &impl RegistryState,
    log_index: u64,
    command: &Command,
    changes: &mut Vec<Change>,
) -> Result<Outcome, StateError> {
    let Proposal::SetModalityLock {
        identity: id,
        modality,
        locked,
        signed_with,
    } = &command.request.proposal
    else {
        unreachable!("set_modality_lock is only called for modality locks");
    };
    let mut identity = match signed_by_holder(state, id, signed_with, Action::SetModalityLock)? {
        Ok(identity) => identity,
        Err(rejection) => return Ok(Outcome::Rejected(rejection)),
    };
    let was = identity.locked.contains(modality);
    if was == *locked {
        // Nothing changes: no event.
        return Ok(Outcome::ModalityLocks {
            locked: identity.locked,
        });
    }
    if *locked {
        identity.locked.push(*modality);
        identity.locked.sort();
    } else {
        identity.locked.retain(|m| m != modality);
    }
    let kind = if *locked {
        EventKind::ModalityLocked
    } else {
        EventKind::ModalityUnlocked
    };
    let holder = Authority::holder(&identity.home_province);
    let changed = Event {
        modality: Some(*modality),
        ..event(command, log_index, kind, holder)
    };
    record(&mut identity, changed, changes);
    let locked = identity.locked.clone();
    changes.push(Change::PutIdentity(identity));
    Ok(Outcome::ModalityLocks { locked })
}

#[cfg(test)]
mod tests {
    //! `apply` against a plain in-memory state: the rules, without storage.

    use super::*;
    use crate::command::Request;
    use crate::memory::MemoryState;
    use crate::model::{Authority, HolderKey, Modality, Reason, Scope, TemplateFormat};

    fn authority(province: &str) -> Authority {
        Authority {
            id: format!("registrar-{province}"),
            scope: Scope::Province(province.into()),
        }
    }

    fn command(request_id: &str, at: u64, new: Option<u8>, proposal: Proposal) -> Command {
        let request = Request {
            request_id: request_id.into(),
            proposal,
        };
        Command {
            fingerprint: request.fingerprint(),
            request,
            at_unix_ms: at,
            new_identity: new.map(|n| IdentityId::from_random([n; 10])),
        }
    }

    fn enroll(request_id: &str, doc: u8, province: &str, seed: u8) -> Command {
        command(
            request_id,
            1_000,
            Some(seed),
            Proposal::Enroll {
                home_province: province.into(),
                document: DocumentKey([doc; 32]),
                document_key_id: [1; 8],
                templates: vec![Template {
                    format: TemplateFormat::FaceEmbeddingF32,
                    model_id: "sface".into(),
                    data: vec![0; 16],
                }],
                authority: authority(province),
                holder_key: None,
            },
        )
    }

    fn change(
        request_id: &str,
        at: u64,
        id: &IdentityId,
        action: Action,
        by: Authority,
    ) -> Command {
        command(
            request_id,
            at,
            None,
            Proposal::ChangeStatus {
                identity: id.clone(),
                action,
                reason: Reason::Fraud,
                authority: by,
            },
        )
    }

    fn enrolled_id(response: &Response) -> IdentityId {
        match &response.outcome {
            Outcome::Enrolled { identity } => identity.clone(),
            other => panic!("expected an enrollment, got {other:?}"),
        }
    }

    fn lock(request_id: &str, id: &IdentityId, locked: bool, key: HolderKey) -> Command {
        command(
            request_id,
            2_000,
            None,
            Proposal::SetModalityLock {
                identity: id.clone(),
                modality: Modality::Face,
                locked,
                signed_with: key,
            },
        )
    }

    fn bind(request_id: &str, id: &IdentityId, key: Option<HolderKey>, by: Authority) -> Command {
        command(
            request_id,
            3_000,
            None,
            Proposal::BindHolderKey {
                identity: id.clone(),
                key,
                reason: Reason::KeyCompromise,
                authority: by,
            },
        )
    }

    #[test]
    fn the_holder_key_rules_who_locks_and_registrars_rebind_it_in_scope() {
        let mut s = MemoryState::default();
        let mut with_key = enroll("e", 7, "ON", 1);
        if let Proposal::Enroll { holder_key, .. } = &mut with_key.request.proposal {
            *holder_key = Some([1; 32]);
        }
        with_key.fingerprint = with_key.request.fingerprint();
        let id = enrolled_id(&s.run(1, &with_key));
        let kinds =
            |s: &MemoryState| -> Vec<EventKind> { s.events.values().map(|e| e.kind).collect() };
        assert_eq!(kinds(&s), [EventKind::Enrolled, EventKind::HolderKeyBound]);
        // The holder locks the face; locking again changes nothing and records nothing.
        let locked = s.run(2, &lock("l1", &id, true, [1; 32]));
        assert_eq!(
            locked.outcome,
            Outcome::ModalityLocks {
                locked: vec![Modality::Face]
            }
        );
        s.run(3, &lock("l2", &id, true, [1; 32]));
        assert_eq!(kinds(&s).len(), 3);
        let event = s.events.values().last().unwrap();
        assert_eq!(event.kind, EventKind::ModalityLocked);
        assert_eq!(event.modality, Some(Modality::Face));
        assert_eq!(event.authority, Authority::holder("ON"));
        // A lost device: QC's authority may not rebind; ON's may. The old key then fails.
        let refused = s.run(4, &bind("b1", &id, Some([2; 32]), authority("QC")));
        assert_eq!(refused.outcome, Outcome::Rejected(Rejection::OutOfScope));
        let rebound = s.run(5, &bind("b2", &id, Some([2; 32]), authority("ON")));
        assert_eq!(rebound.outcome, Outcome::HolderKeyBound { bound: true });
        let stale = s.run(6, &lock("l3", &id, false, [1; 32]));
        assert_eq!(
            stale.outcome,
            Outcome::Rejected(Rejection::HolderKeyChanged)
        );
        let unlocked = s.run(7, &lock("l4", &id, false, [2; 32]));
        assert_eq!(unlocked.outcome, Outcome::ModalityLocks { locked: vec![] });
        // The holder rotates to a third key, signed by the second; the second then fails.
        let rotated = s.run(
            8,
            &command(
                "k-rot",
                2_500,
                None,
                Proposal::RotateHolderKey {
                    identity: id.clone(),
                    new_key: [3; 32],
                    signed_with: [2; 32],
                },
            ),
        );
        assert_eq!(rotated.outcome, Outcome::HolderKeyBound { bound: true });
        assert_eq!(s.identities[&id].holder_key, Some([3; 32]));
        let replayed = s.run(
            9,
            &command(
                "k-rot-2",
                2_600,
                None,
                Proposal::RotateHolderKey {
                    identity: id.clone(),
                    new_key: [9; 32],
                    signed_with: [2; 32],
                },
            ),
        );
        assert_eq!(
            replayed.outcome,
            Outcome::Rejected(Rejection::HolderKeyChanged)
        );
        // Revoking the key leaves none: no lock can be signed.
        s.run(10, &bind("b3", &id, None, authority("ON")));
        assert_eq!(s.identities[&id].holder_key, None);
        let none = s.run(11, &lock("l5", &id, true, [3; 32]));
        assert_eq!(none.outcome, Outcome::Rejected(Rejection::HolderKeyChanged));
        assert_eq!(
            kinds(&s)[3..],
            [
                EventKind::HolderKeyBound,
                EventKind::ModalityUnlocked,
                EventKind::HolderKeyBound,
                EventKind::HolderKeyRevoked
            ]
        );
    }

    #[test]
    fn one_document_one_identity() {
        let mut s = MemoryState::default();
        let first = s.run(1, &enroll("r1", 7, "ON", 1));
        enrolled_id(&first);
        let second = s.run(2, &enroll("r2", 7, "ON", 2));
        assert_eq!(
            second.outcome,
            Outcome::Rejected(Rejection::DuplicateDocument)
        );
        assert_eq!(s.identities.len(), 1);
    }

    #[test]
    fn a_retried_request_returns_the_first_result_and_applies_once() {
        let mut s = MemoryState::default();
        let first = s.run(1, &enroll("r1", 7, "ON", 1));
        // The retry reaches a new leader that draws another id: still the first result.
        let retry = s.run(5, &enroll("r1", 7, "ON", 9));
        assert_eq!(retry, first);
        assert_eq!(retry.log_index, 1);
        assert_eq!(s.identities.len(), 1);
    }

    #[test]
    fn a_request_id_reused_for_other_content_is_refused() {
        let mut s = MemoryState::default();
        s.run(1, &enroll("r1", 7, "ON", 1));
        let other = s.run(2, &enroll("r1", 8, "ON", 2));
        assert_eq!(other.outcome, Outcome::Rejected(Rejection::RequestIdReused));
        assert_eq!(s.identities.len(), 1);
    }

    #[test]
    fn request_ids_are_forgotten_after_the_window() {
        let mut s = MemoryState::default();
        s.run(1, &enroll("r1", 7, "ON", 1));
        let later = 1_000 + REQUEST_WINDOW_MS + 1;
        let id = enrolled_id(&s.run(2, &enroll("r2", 8, "ON", 2)));
        s.run(
            3,
            &change("r3", later, &id, Action::Suspend, authority("ON")),
        );
        assert!(!s.requests.contains_key("r1"), "r1 expired");
        assert!(s.requests.contains_key("r3"));
    }

    #[test]
    fn status_transitions_follow_the_design() {
        let mut s = MemoryState::default();
        let id = enrolled_id(&s.run(1, &enroll("e", 7, "ON", 1)));
        let on = authority("ON");
        let status = |r: Response| r.outcome;
        assert_eq!(
            status(s.run(2, &change("a", 2, &id, Action::Reinstate, on.clone()))),
            Outcome::Rejected(Rejection::InvalidTransition {
                from: Status::Active,
                action: Action::Reinstate
            })
        );
        assert_eq!(
            status(s.run(3, &change("b", 3, &id, Action::Suspend, on.clone()))),
            Outcome::StatusChanged {
                status: Status::Suspended
            }
        );
        assert_eq!(
            status(s.run(4, &change("c", 4, &id, Action::Reinstate, on.clone()))),
            Outcome::StatusChanged {
                status: Status::Active
            }
        );
        assert_eq!(
            status(s.run(5, &change("d", 5, &id, Action::Revoke, on.clone()))),
            Outcome::StatusChanged {
                status: Status::Revoked
            }
        );
        // Revoked is terminal.
        for (i, action) in [Action::Reinstate, Action::Suspend, Action::Revoke]
            .into_iter()
            .enumerate()
        {
            let r = s.run(
                6 + i as u64,
                &change(&format!("x{i}"), 6, &id, action, on.clone()),
            );
            assert!(matches!(
                r.outcome,
                Outcome::Rejected(Rejection::InvalidTransition { .. })
            ));
        }
        let record = &s.identities[&id];
        assert_eq!(record.status, Status::Revoked);
        assert_eq!(record.events, 4);
        let history: Vec<&Event> = (0..record.events)
            .map(|n| &s.events[&(id.clone(), n)])
            .collect();
        let kinds: Vec<_> = history.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Enrolled,
                EventKind::Suspended,
                EventKind::Reinstated,
                EventKind::Revoked
            ]
        );
        assert_eq!(history[3].log_index, 5);
        assert_eq!(history[3].reason, Some(Reason::Fraud));
    }

    #[test]
    fn authorities_are_scoped_to_their_province() {
        let mut s = MemoryState::default();
        let id = enrolled_id(&s.run(1, &enroll("e", 7, "ON", 1)));
        let quebec = s.run(2, &change("q", 2, &id, Action::Revoke, authority("QC")));
        assert_eq!(quebec.outcome, Outcome::Rejected(Rejection::OutOfScope));
        assert_eq!(s.identities[&id].status, Status::Active);
        let national = Authority {
            id: "national".into(),
            scope: Scope::National,
        };
        let n = s.run(3, &change("n", 3, &id, Action::Revoke, national));
        assert_eq!(
            n.outcome,
            Outcome::StatusChanged {
                status: Status::Revoked
            }
        );
        // A provincial registrar cannot enroll into another province.
        let mut cross = enroll("x", 9, "ON", 3);
        if let Proposal::Enroll { authority: a, .. } = &mut cross.request.proposal {
            *a = authority("QC");
        }
        cross.fingerprint = cross.request.fingerprint();
        assert_eq!(
            s.run(4, &cross).outcome,
            Outcome::Rejected(Rejection::OutOfScope)
        );
    }

    #[test]
    fn a_node_with_another_document_key_is_refused() {
        let mut s = MemoryState::default();
        s.run(1, &enroll("e", 7, "ON", 1));
        let mut other = enroll("f", 8, "ON", 2);
        if let Proposal::Enroll {
            document_key_id, ..
        } = &mut other.request.proposal
        {
            *document_key_id = [2; 8];
        }
        other.fingerprint = other.request.fingerprint();
        assert_eq!(
            s.run(2, &other).outcome,
            Outcome::Rejected(Rejection::DocumentKeyMismatch)
        );
    }

    #[test]
    fn unknown_identities_are_reported() {
        let mut s = MemoryState::default();
        let ghost = IdentityId::from_random([3; 10]);
        let r = s.run(1, &change("g", 1, &ghost, Action::Revoke, authority("ON")));
        assert_eq!(r.outcome, Outcome::Rejected(Rejection::UnknownIdentity));
    }
}
