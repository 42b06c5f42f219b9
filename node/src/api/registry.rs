//! The `Registry` service: enrollments and status changes (through Raft), and records.

use std::sync::Arc;

use quorumid_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{Context, errors, validate};
use crate::registry::{
    Action, Event, EventKind, Modality, Outcome, Proposal, Reason, Request as WriteRequest, Scope,
    Status as IdStatus, TemplateFormat,
};
use crate::security::{holder, policy};

pub struct RegistryService {
    ctx: Arc<Context>,
}

impl RegistryService {
    pub fn new(ctx: Arc<Context>) -> RegistryService {
        RegistryService { ctx }
    }

    async fn change_status(
        &self,
        request: Request<pb::StatusChangeRequest>,
        action: Action,
    ) -> Result<Response<pb::StatusChangeResponse>, Status> {
        let caller = policy::caller(&request)?;
        let r = request.into_inner();
        let write = WriteRequest {
            request_id: validate::token("request_id", &r.request_id)?,
            proposal: Proposal::ChangeStatus {
                identity: validate::identity_id("identity_id", &r.identity_id)?,
                action,
                reason: validate::reason(r.reason)?,
                authority: policy::change_status(&caller, r.authority.as_ref())?,
            },
        };
        let response = self.ctx.writer.submit(write).await.map_err(errors::write)?;
        match response.outcome {
            Outcome::StatusChanged { status } => Ok(Response::new(pb::StatusChangeResponse {
                status: status_to_pb(status) as i32,
                log_index: response.log_index,
            })),
            Outcome::Rejected(r) => Err(errors::rejection(&r, response.log_index)),
            other => Err(Status::internal(format!(
                "unexpected outcome for a status change: {other:?}"
            ))),
        }
    }
}

pub fn status_to_pb(s: IdStatus) -> pb::IdentityStatus {
    match s {
        IdStatus::Active => pb::IdentityStatus::Active,
        IdStatus::Suspended => pb::IdentityStatus::Suspended,
        IdStatus::Revoked => pb::IdentityStatus::Revoked,
    }
}

fn reason_to_pb(r: Reason) -> pb::ReasonCode {
    match r {
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

fn event_kind_to_pb(k: EventKind) -> pb::history_event::Kind {
    use pb::history_event::Kind;
    match k {
        EventKind::Enrolled => Kind::Enrolled,
        EventKind::Suspended => Kind::Suspended,
        EventKind::Reinstated => Kind::Reinstated,
        EventKind::Revoked => Kind::Revoked,
        EventKind::HolderKeyBound => Kind::HolderKeyBound,
        EventKind::HolderKeyRevoked => Kind::HolderKeyRevoked,
        EventKind::ModalityLocked => Kind::ModalityLocked,
        EventKind::ModalityUnlocked => Kind::ModalityUnlocked,
    }
}

pub fn modality_to_pb(m: Modality) -> pb::Modality {
    match m {
        Modality::Face => pb::Modality::Face,
        Modality::Fingerprint => pb::Modality::Fingerprint,
    }
}

/// A record's history as the API shows it (to registrars, authorities and the holder).
pub fn history_to_pb(history: &[Event]) -> Vec<pb::HistoryEvent> {
    history
        .iter()
        .map(|e| pb::HistoryEvent {
            kind: event_kind_to_pb(e.kind) as i32,
            reason: e.reason.map_or(0, |r| reason_to_pb(r) as i32),
            authority: Some(authority_to_pb(&e.authority)),
            at_unix_ms: e.at_unix_ms,
            log_index: e.log_index,
            modality: e.modality.map_or(0, |m| modality_to_pb(m) as i32),
        })
        .collect()
}

fn format_to_pb(f: TemplateFormat) -> pb::TemplateFormat {
    match f {
        TemplateFormat::FaceEmbeddingF32 => pb::TemplateFormat::FaceEmbeddingF32,
        TemplateFormat::Iso19794_2_2005 => pb::TemplateFormat::Iso1979422005,
    }
}

fn authority_to_pb(a: &crate::registry::Authority) -> pb::Authority {
    match &a.scope {
        Scope::National => pb::Authority {
            id: a.id.clone(),
            province: String::new(),
            national: true,
        },
        Scope::Province(p) => pb::Authority {
            id: a.id.clone(),
            province: p.clone(),
            national: false,
        },
    }
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let caller = policy::caller(&request)?;
        let r = request.into_inner();
        let request_id = validate::token("request_id", &r.request_id)?;
        let home_province = validate::province("home_province", &r.home_province)?;
        let authority = policy::enroll(&caller, &home_province, r.authority.as_ref())?;
        let holder_key = match r.holder_key.as_slice() {
            [] => None,
            bytes => {
                Some(holder::key(bytes).map_err(|e| errors::invalid(format!("holder_key: {e}")))?)
            }
        };
        let issuer = validate::province("document_issuer", &r.document_issuer)?;
        let number = validate::document_number(&r.document_number)?;
        let mut templates = Vec::with_capacity(r.templates.len());
        for (i, input) in validate::templates(&r.templates)?.into_iter().enumerate() {
            let field = format!("templates[{i}]");
            let template = self.ctx.template(&field, input).await?;
            self.ctx
                .biometrics
                .check(&template)
                .map_err(|e| errors::invalid(format!("{field}: {e}")))?;
            templates.push(template);
        }
        let write = WriteRequest {
            request_id,
            proposal: Proposal::Enroll {
                home_province,
                document: self.ctx.keys.document_key(&issuer, &number),
                document_key_id: self.ctx.keys.document_key_id(),
                templates,
                authority,
                holder_key,
            },
        };
        let response = self.ctx.writer.submit(write).await.map_err(errors::write)?;
        match response.outcome {
            Outcome::Enrolled { identity } => Ok(Response::new(pb::EnrollResponse {
                identity_id: identity.to_string(),
                log_index: response.log_index,
            })),
            Outcome::Rejected(r) => Err(errors::rejection(&r, response.log_index)),
            other => Err(Status::internal(format!(
                "unexpected outcome for an enrollment: {other:?}"
            ))),
        }
    }

    async fn revoke(
        &self,
        request: Request<pb::StatusChangeRequest>,
    ) -> Result<Response<pb::StatusChangeResponse>, Status> {
        self.change_status(request, Action::Revoke).await
    }

    async fn suspend(
        &self,
        request: Request<pb::StatusChangeRequest>,
    ) -> Result<Response<pb::StatusChangeResponse>, Status> {
        self.change_status(request, Action::Suspend).await
    }

    async fn reinstate(
        &self,
        request: Request<pb::StatusChangeRequest>,
    ) -> Result<Response<pb::StatusChangeResponse>, Status> {
        self.change_status(request, Action::Reinstate).await
    }

    async fn get_record(
        &self,
        request: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        let caller = policy::caller(&request)?;
        let r = request.into_inner();
        let id = validate::identity_id("identity_id", &r.identity_id)?;
        let level = validate::consistency(r.consistency.as_ref())?;
        let (record, facts) = self.ctx.read(level, |state| state.record(&id)).await?;
        let (identity, history) = record.ok_or_else(|| {
            errors::with_reason(
                tonic::Code::NotFound,
                "UNKNOWN_IDENTITY",
                format!(
                    "no identity has this id (at applied index {})",
                    facts.applied_index
                ),
            )
        })?;
        policy::read_record(&caller, &identity.home_province)?;
        Ok(Response::new(pb::GetRecordResponse {
            identity_id: identity.id.to_string(),
            status: status_to_pb(identity.status) as i32,
            home_province: identity.home_province,
            history: history_to_pb(&history),
            templates: identity
                .templates
                .iter()
                .map(|t| pb::TemplateSummary {
                    format: format_to_pb(t.format) as i32,
                    model_id: t.model_id.clone(),
                })
                .collect(),
            facts: Some(facts),
            holder_key_bound: identity.holder_key.is_some(),
            locked: identity
                .locked
                .iter()
                .map(|m| modality_to_pb(*m) as i32)
                .collect(),
        }))
    }

    async fn bind_holder_key(
        &self,
        request: Request<pb::BindHolderKeyRequest>,
    ) -> Result<Response<pb::BindHolderKeyResponse>, Status> {
        let caller = policy::caller(&request)?;
        let r = request.into_inner();
        let key = match r.holder_key.as_slice() {
            [] => None,
            bytes => {
                Some(holder::key(bytes).map_err(|e| errors::invalid(format!("holder_key: {e}")))?)
            }
        };
        let write = WriteRequest {
            request_id: validate::token("request_id", &r.request_id)?,
            proposal: Proposal::BindHolderKey {
                identity: validate::identity_id("identity_id", &r.identity_id)?,
                key,
                reason: validate::reason(r.reason)?,
                authority: policy::bind_holder_key(&caller, r.authority.as_ref())?,
            },
        };
        let response = self.ctx.writer.submit(write).await.map_err(errors::write)?;
        match response.outcome {
            Outcome::HolderKeyBound { bound } => Ok(Response::new(pb::BindHolderKeyResponse {
                bound,
                log_index: response.log_index,
            })),
            Outcome::Rejected(r) => Err(errors::rejection(&r, response.log_index)),
            other => Err(Status::internal(format!(
                "unexpected outcome for a key binding: {other:?}"
            ))),
        }
    }
}
