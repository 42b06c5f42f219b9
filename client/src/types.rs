//! The library's vocabulary: what a caller sends (enrollments, status changes, consistency
//! levels) and what it gets back (verifications, records, commit tokens), as plain Rust types
//! over the generated protobuf messages.

use std::time::Duration;

use quorumid_proto::v1 as pb;

/// A commit position: the Raft log index a write committed at. Passing it back as
/// [`Consistency::AtLeast`] gives read-your-writes at any node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CommitToken(pub u64);

impl CommitToken {
    pub fn index(self) -> u64 {
        self.0
    }
}

/// How fresh a read must be (DESIGN.md section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every write acknowledged before the call started (read index at the leader).
    Linearizable,
    /// Sees every write acknowledged more than this long before the answer (1 ms ..= 60 s).
    Bounded(Duration),
    /// Sees at least the write that returned this token (read-your-writes).
    AtLeast(CommitToken),
    /// Whatever the answering node has; the answer says how stale it may be.
    Local,
}

impl Default for Consistency {
    fn default() -> Consistency {
        Consistency::Bounded(Duration::from_secs(1))
    }
}

impl Consistency {
    pub(crate) fn to_proto(self) -> pb::ReadConsistency {
        let (level, max_staleness_ms, min_index) = match self {
            Consistency::Linearizable => (pb::ConsistencyLevel::Linearizable, 0, 0),
            Consistency::Bounded(max) => (
                pb::ConsistencyLevel::Bounded,
                // 0 would mean "the default": never send it for an explicit bound.
                (max.as_millis() as u64).max(1),
                0,
            ),
            Consistency::AtLeast(token) => (pb::ConsistencyLevel::AtLeast, 0, token.0),
            Consistency::Local => (pb::ConsistencyLevel::Local, 0, 0),
        };
        pb::ReadConsistency {
            level: level as i32,
            max_staleness_ms,
            min_index,
        }
    }
}

/// The status of an identity, as a read saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdentityStatus {
    Active,
    Suspended,
    Revoked,
    /// The answering node knows no identity with that id (at its applied index).
    Unknown,
}

impl IdentityStatus {
    pub(crate) fn from_proto(value: i32) -> IdentityStatus {
        match pb::IdentityStatus::try_from(value) {
            Ok(pb::IdentityStatus::Active) => IdentityStatus::Active,
            Ok(pb::IdentityStatus::Suspended) => IdentityStatus::Suspended,
            Ok(pb::IdentityStatus::Revoked) => IdentityStatus::Revoked,
            _ => IdentityStatus::Unknown,
        }
    }

    /// From the `quorumid-status` trailer's value.
    pub(crate) fn from_name(name: &str) -> IdentityStatus {
        match name {
            "ACTIVE" => IdentityStatus::Active,
            "SUSPENDED" => IdentityStatus::Suspended,
            "REVOKED" => IdentityStatus::Revoked,
            _ => IdentityStatus::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdentityStatus::Active => "ACTIVE",
            IdentityStatus::Suspended => "SUSPENDED",
            IdentityStatus::Revoked => "REVOKED",
            IdentityStatus::Unknown => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for IdentityStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a status changes (RFC 5280-like); every change names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::KeyCompromise,
        Reason::DocumentLost,
        Reason::DocumentStolen,
        Reason::Deceased,
        Reason::Fraud,
        Reason::HolderRequest,
        Reason::Superseded,
        Reason::CourtOrder,
        Reason::UnderInvestigation,
        Reason::IssueResolved,
    ];

    pub(crate) fn to_proto(self) -> pb::ReasonCode {
        match self {
            Reason::KeyCompromise => pb::ReasonCode::KeyCompromise,
            Reason::DocumentLost => pb::ReasonCode::DocumentLost,
            Reason::DocumentStolen => pb::ReasonCode::DocumentStolen,
            Reason::Deceased => pb::ReasonCode::Deceased,
            Reason::Fraud => pb::ReasonCode::Fraud,
            Reason::HolderRequest => pb::ReasonCode::HolderRequest,
            Reason::Superseded => pb::ReasonCode::Superseded,
            Reason::CourtOrder => pb::ReasonCode::CourtOrder,
            Reason::UnderInvestigation => pb::ReasonCode::UnderInvestigation,
            Reason::IssueResolved => pb::ReasonCode::IssueResolved,
        }
    }

    fn from_proto(value: i32) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|r| r.to_proto() as i32 == value)
    }

    /// The kebab-case name used by the CLI: `fraud`, `document-lost`, ...
    pub fn name(self) -> String {
        self.to_proto()
            .as_str_name()
            .trim_start_matches("REASON_CODE_")
            .to_lowercase()
            .replace('_', "-")
    }
}

impl std::str::FromStr for Reason {
    type Err = String;

    fn from_str(s: &str) -> Result<Reason, String> {
        Reason::ALL
            .into_iter()
            .find(|r| r.name() == s.to_lowercase().replace('_', "-"))
            .ok_or_else(|| {
                let names: Vec<String> = Reason::ALL.iter().map(|r| r.name()).collect();
                format!("unknown reason {s:?}; one of: {}", names.join(", "))
            })
    }
}

/// Who performs a write: a provincial authority changes identities homed in its province, a
/// national one any identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    pub id: String,
    pub province: String,
    pub national: bool,
}

impl Authority {
    pub fn provincial(id: impl Into<String>, province: impl Into<String>) -> Authority {
        Authority {
            id: id.into(),
            province: province.into(),
            national: false,
        }
    }

    pub fn national(id: impl Into<String>) -> Authority {
        Authority {
            id: id.into(),
            province: String::new(),
            national: true,
        }
    }

    pub(crate) fn to_proto(&self) -> pb::Authority {
        pb::Authority {
            id: self.id.clone(),
            province: self.province.clone(),
            national: self.national,
        }
    }

    fn from_proto(a: pb::Authority) -> Authority {
        Authority {
            id: a.id,
            province: a.province,
            national: a.national,
        }
    }
}

/// A client-chosen write id. The registry applies a request id once and answers every retry
/// with the first result, so a write that carries one can be retried safely — by this library
/// after a failover, and by the caller if it keeps the id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh random id (128 bits, hex).
    pub fn random() -> RequestId {
        RequestId(format!("c-{}", hex::encode(rand::random::<[u8; 16]>())))
    }

    /// The caller's own id: 1..64 characters of `[A-Za-z0-9._:-]` (checked by the node).
    pub fn new(id: impl Into<String>) -> RequestId {
        RequestId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A biometric template: a face embedding, a face photograph the node embeds, or an ISO/IEC
/// 19794-2 finger minutiae record.
#[derive(Clone, Debug, PartialEq)]
pub enum Template {
    /// An embedding and the model that made it (for example `sface-2021dec`).
    Face { model: String, embedding: Vec<f32> },
    /// A face photograph (PNG, JPEG or PGM, at most 1 MiB): the node extracts its embedding
    /// (model `sface-2021dec`) and keeps only that.
    FaceImage { image: Vec<u8> },
    /// An ISO/IEC 19794-2:2005 record, as bytes.
    Finger { record: Vec<u8> },
}

impl Template {
    pub(crate) fn to_proto(&self) -> pb::Template {
        match self {
            Template::Face { model, embedding } => pb::Template {
                format: pb::TemplateFormat::FaceEmbeddingF32 as i32,
                model_id: model.clone(),
                data: embedding.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
            Template::FaceImage { image } => pb::Template {
                format: pb::TemplateFormat::FaceImage as i32,
                model_id: String::new(),
                data: image.clone(),
            },
            Template::Finger { record } => pb::Template {
                format: pb::TemplateFormat::Iso1979422005 as i32,
                model_id: "iso-19794-2".to_string(),
                data: record.clone(),
            },
        }
    }
}

/// A new identity to enroll. `request_id` is drawn at construction: keep the value (clone it)
/// to retry the same enrollment yourself.
#[derive(Clone, Debug)]
pub struct Enrollment {
    pub request_id: RequestId,
    pub home_province: String,
    pub document_issuer: String,
    pub document_number: String,
    pub templates: Vec<Template>,
    pub authority: Authority,
    /// The holder's device public key (Ed25519, 32 bytes), bound at enrollment.
    pub holder_key: Option<[u8; 32]>,
}

impl Enrollment {
    /// An enrollment homed in `province`, for a document issued by the same province.
    pub fn new(province: &str, document_number: &str, authority: Authority) -> Enrollment {
        Enrollment {
            request_id: RequestId::random(),
            home_province: province.to_string(),
            document_issuer: province.to_string(),
            document_number: document_number.to_string(),
            templates: Vec::new(),
            authority,
            holder_key: None,
        }
    }

    pub fn holder_key(mut self, key: [u8; 32]) -> Enrollment {
        self.holder_key = Some(key);
        self
    }

    pub fn issuer(mut self, issuer: &str) -> Enrollment {
        self.document_issuer = issuer.to_string();
        self
    }

    pub fn template(mut self, template: Template) -> Enrollment {
        self.templates.push(template);
        self
    }

    pub fn request_id(mut self, id: RequestId) -> Enrollment {
        self.request_id = id;
        self
    }

    pub(crate) fn to_proto(&self) -> pb::EnrollRequest {
        pb::EnrollRequest {
            request_id: self.request_id.0.clone(),
            home_province: self.home_province.clone(),
            document_issuer: self.document_issuer.clone(),
            document_number: self.document_number.clone(),
            templates: self.templates.iter().map(Template::to_proto).collect(),
            authority: Some(self.authority.to_proto()),
            holder_key: self.holder_key.map(|k| k.to_vec()).unwrap_or_default(),
        }
    }
}

/// A revocation, suspension or reinstatement. `request_id` is drawn at construction.
#[derive(Clone, Debug)]
pub struct StatusChange {
    pub request_id: RequestId,
    pub identity_id: String,
    pub reason: Reason,
    pub authority: Authority,
}

impl StatusChange {
    pub fn new(identity_id: &str, reason: Reason, authority: Authority) -> StatusChange {
        StatusChange {
            request_id: RequestId::random(),
            identity_id: identity_id.to_string(),
            reason,
            authority,
        }
    }

    pub fn request_id(mut self, id: RequestId) -> StatusChange {
        self.request_id = id;
        self
    }

    pub(crate) fn to_proto(&self) -> pb::StatusChangeRequest {
        pb::StatusChangeRequest {
            request_id: self.request_id.0.clone(),
            identity_id: self.identity_id.clone(),
            reason: self.reason.to_proto() as i32,
            authority: Some(self.authority.to_proto()),
        }
    }
}

/// An acknowledged enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    pub identity_id: String,
    pub token: CommitToken,
}

/// An acknowledged status change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChanged {
    pub status: IdentityStatus,
    pub token: CommitToken,
}

/// How fresh a read answer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadFacts {
    /// The answer reflects at least this log index.
    pub applied_index: u64,
    /// Every write acknowledged longer ago than this is reflected (absent only for LOCAL reads
    /// at a node that never proved its freshness).
    pub staleness_bound: Option<Duration>,
    /// The node that answered.
    pub node_id: u64,
}

impl ReadFacts {
    pub(crate) fn from_proto(f: Option<pb::ReadFacts>) -> ReadFacts {
        let f = f.unwrap_or_default();
        ReadFacts {
            applied_index: f.applied_index,
            staleness_bound: f.staleness_bound_ms.map(Duration::from_millis),
            node_id: f.node_id,
        }
    }
}

/// A platform's verification answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub status: IdentityStatus,
    /// Stable for one platform, unlinkable across platforms; empty when UNKNOWN.
    pub pseudonym: String,
    /// Whether the probe matched, when the request carried one and the identity is ACTIVE.
    pub probe_matched: Option<bool>,
    pub facts: ReadFacts,
}

impl Verification {
    /// ACTIVE, and the probe (if any) matched.
    pub fn is_valid(&self) -> bool {
        self.status == IdentityStatus::Active && self.probe_matched != Some(false)
    }

    /// This verification if it is valid, or the error that says why not (revoked,
    /// suspended, unknown, or the probe did not match).
    pub fn require_valid(self) -> Result<Verification, crate::Error> {
        match self.status {
            IdentityStatus::Active if self.probe_matched == Some(false) => {
                Err(crate::Error::ProbeMismatch)
            }
            IdentityStatus::Active => Ok(self),
            IdentityStatus::Suspended => Err(crate::Error::Suspended),
            IdentityStatus::Revoked => Err(crate::Error::Revoked),
            IdentityStatus::Unknown => Err(crate::Error::UnknownIdentity),
        }
    }
}

/// One administrative action in a record's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEvent {
    /// ENROLLED, SUSPENDED, REINSTATED or REVOKED.
    pub kind: &'static str,
    pub reason: Option<Reason>,
    pub authority: Option<Authority>,
    pub at_unix_ms: u64,
    pub log_index: u64,
}

/// A record as an authority sees it: status, history, the kinds of templates enrolled.
/// Never a template or a document number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub identity_id: String,
    pub status: IdentityStatus,
    pub home_province: String,
    pub history: Vec<HistoryEvent>,
    /// (format, model) of each enrolled template.
    pub templates: Vec<(String, String)>,
    pub facts: ReadFacts,
}

impl Record {
    pub(crate) fn from_proto(r: pb::GetRecordResponse) -> Record {
        Record {
            identity_id: r.identity_id,
            status: IdentityStatus::from_proto(r.status),
            home_province: r.home_province,
            history: r
                .history
                .into_iter()
                .map(|e| HistoryEvent {
                    kind: pb::history_event::Kind::try_from(e.kind)
                        .map(|k| k.as_str_name().trim_start_matches("KIND_"))
                        .unwrap_or("UNSPECIFIED"),
                    reason: Reason::from_proto(e.reason),
                    authority: e.authority.map(Authority::from_proto),
                    at_unix_ms: e.at_unix_ms,
                    log_index: e.log_index,
                })
                .collect(),
            templates: r
                .templates
                .into_iter()
                .map(|t| {
                    let format = pb::TemplateFormat::try_from(t.format)
                        .map(|f| f.as_str_name().trim_start_matches("TEMPLATE_FORMAT_"))
                        .unwrap_or("UNSPECIFIED");
                    (format.to_string(), t.model_id)
                })
                .collect(),
            facts: ReadFacts::from_proto(r.facts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_names() {
        for reason in Reason::ALL {
            assert_eq!(reason.name().parse::<Reason>(), Ok(reason));
            assert_eq!(Reason::from_proto(reason.to_proto() as i32), Some(reason));
        }
        let err = "bogus".parse::<Reason>().unwrap_err();
        assert!(err.contains("document-lost"), "{err}");
    }

    #[test]
    fn consistency_maps_to_the_wire() {
        let c = Consistency::Bounded(Duration::from_micros(10)).to_proto();
        assert_eq!(
            c.max_staleness_ms, 1,
            "an explicit bound never becomes 'default'"
        );
        let c = Consistency::AtLeast(CommitToken(42)).to_proto();
        assert_eq!(c.level, pb::ConsistencyLevel::AtLeast as i32);
        assert_eq!(c.min_index, 42);
    }

    #[test]
    fn request_ids_are_fresh_and_valid_on_the_wire() {
        let a = RequestId::random();
        assert_ne!(a, RequestId::random());
        assert!(a.as_str().len() <= 64);
        assert!(
            a.as_str()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
        );
    }
}
