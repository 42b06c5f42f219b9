//! The registry state in memory: a [`RegistryState`] over plain maps that makes `apply`'s
//! [`Change`]s itself.
//!
//! The reference state for `apply`'s tests and for the command fuzz target (`node/fuzz`); the
//! node keeps the same state in RocksDB (`raft::state_machine`).

use std::collections::{BTreeMap, BTreeSet};

use super::apply::{Change, RegistryState, RequestRecord, StateError, apply};
use super::command::{Command, Response};
use super::keys::KeyId;
use super::model::{Event, Identity, Template};
use super::{DocumentKey, IdentityId};

#[derive(Clone, Debug, Default)]
pub struct MemoryState {
    pub identities: BTreeMap<IdentityId, Identity>,
    /// History events by identity and event number.
    pub events: BTreeMap<(IdentityId, u64), Event>,
    pub templates: BTreeMap<IdentityId, Vec<Template>>,
    pub documents: BTreeMap<DocumentKey, IdentityId>,
    pub requests: BTreeMap<String, RequestRecord>,
    /// (proposal time, request id) of every remembered request: the expiry order.
    pub request_times: BTreeSet<(u64, String)>,
    pub document_key_id: Option<KeyId>,
}

impl RegistryState for MemoryState {
    fn identity(&self, id: &IdentityId) -> Result<Option<Identity>, StateError> {
        Ok(self.identities.get(id).cloned())
    }
    fn identity_by_document(&self, key: &DocumentKey) -> Result<Option<IdentityId>, StateError> {
        Ok(self.documents.get(key).cloned())
    }
    fn request(&self, request_id: &str) -> Result<Option<RequestRecord>, StateError> {
        Ok(self.requests.get(request_id).cloned())
    }
    fn requests_before(
        &self,
        before_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StateError> {
        Ok(self
            .request_times
            .iter()
            .take_while(|(t, _)| *t < before_unix_ms)
            .take(limit)
            .cloned()
            .collect())
    }
    fn document_key_id(&self) -> Result<Option<KeyId>, StateError> {
        Ok(self.document_key_id)
    }
}

impl MemoryState {
    /// Applies `command`, committed at `log_index`, and makes its changes.
    pub fn run(&mut self, log_index: u64, command: &Command) -> Response {
        let (response, changes) =
            apply(self, log_index, command).expect("reading the in-memory state cannot fail");
        for change in changes {
            self.make(change);
        }
        response
    }

    fn make(&mut self, change: Change) {
        match change {
            Change::PutIdentity(identity) => {
                self.identities.insert(identity.id.clone(), identity);
            }
            Change::PutEvent {
                identity,
                seq,
                event,
            } => {
                self.events.insert((identity, seq), event);
            }
            Change::PutTemplates(id, templates) => {
                self.templates.insert(id, templates);
            }
            Change::PutDocument(key, id) => {
                self.documents.insert(key, id);
            }
            Change::PutRequest(record) => {
                self.request_times
                    .insert((record.at_unix_ms, record.request_id.clone()));
                self.requests.insert(record.request_id.clone(), record);
            }
            Change::ForgetRequest {
                request_id,
                at_unix_ms,
            } => {
                self.requests.remove(&request_id);
                self.request_times.remove(&(at_unix_ms, request_id));
            }
            Change::SetDocumentKeyId(key_id) => self.document_key_id = Some(key_id),
        }
    }
}
