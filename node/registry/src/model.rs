//! The registry's records: identities, their status and history, templates, authorities.

use serde::{Deserialize, Serialize};

use super::{DocumentKey, IdentityId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Active,
    Suspended,
    Revoked,
}

/// Why a status changed (RFC 5280-like).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    KeyCompromise,
    DocumentLost,
    DocumentStolen,
    Deceased,
    Fraud,
    HolderRequest,
    Superseded,
    CourtOrder,
    UnderInvestigation,
    IssueResolved,
}

/// What an authority may touch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Identities homed in this province only.
    Province(String),
    /// Any identity.
    National,
}

/// The office performing a write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    pub id: String,
    pub scope: Scope,
}

impl Authority {
    /// The holder acting on their own record (signed by the bound device key).
    pub fn holder(home_province: &str) -> Authority {
        Authority {
            id: "holder".to_string(),
            scope: Scope::Province(home_province.to_string()),
        }
    }

    /// DESIGN.md 4: a province's authority changes identities homed in its own province; a
    /// national authority changes any.
    pub fn may_act_on(&self, home_province: &str) -> bool {
        match &self.scope {
            Scope::National => true,
            Scope::Province(p) => p == home_province,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TemplateFormat {
    FaceEmbeddingF32,
    Iso19794_2_2005,
}

impl TemplateFormat {
    pub fn modality(self) -> Modality {
        match self {
            TemplateFormat::FaceEmbeddingF32 => Modality::Face,
            TemplateFormat::Iso19794_2_2005 => Modality::Fingerprint,
        }
    }
}

/// A biometric modality, which the holder may lock (DESIGN.md 6): a locked modality's
/// probes are refused with an error of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Modality {
    Face,
    Fingerprint,
}

/// An Ed25519 public key of the holder's device, bound to the identity.
pub type HolderKey = [u8; 32];

/// A biometric template, opaque to the registry. Stored, never returned by any API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub format: TemplateFormat,
    pub model_id: String,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Template {
    // Template bytes are never printed (DESIGN.md 7).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Template({:?}, {}, {} bytes)",
            self.format,
            self.model_id,
            self.data.len()
        )
    }
}

/// What an identity record says about its templates: format and model, never the data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSummary {
    pub format: TemplateFormat,
    pub model_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Enrolled,
    Suspended,
    Reinstated,
    Revoked,
    /// A device key was bound (at enrollment, or a new one after rotation or loss).
    HolderKeyBound,
    /// The bound device key was revoked, none bound in its place.
    HolderKeyRevoked,
    /// The holder locked or unlocked a modality (`Event::modality`).
    ModalityLocked,
    ModalityUnlocked,
}

/// One administrative action in a record's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub reason: Option<Reason>,
    pub authority: Authority,
    /// The leader's clock when it proposed the action.
    pub at_unix_ms: u64,
    pub log_index: u64,
    /// For modality locks: which modality.
    pub modality: Option<Modality>,
}

/// An enrolled identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: IdentityId,
    pub home_province: String,
    pub status: Status,
    pub document: DocumentKey,
    pub templates: Vec<TemplateSummary>,
    /// How many events its history holds. The events are records of their own, numbered
    /// from 0 (`Change::PutEvent`), so that a status change writes one small event instead of
    /// rewriting a history that grows without bound.
    pub events: u64,
    /// The holder's device key, if one is bound.
    pub holder_key: Option<HolderKey>,
    /// The modalities the holder locked, in order, without repeats.
    pub locked: Vec<Modality>,
}
