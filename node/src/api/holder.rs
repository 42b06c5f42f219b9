//! The `Holder` service: a holder's self-service, signed by the device key bound to their
//! identity (`security::holder`). Any authenticated caller may relay the request (the
//! holder's app, a platform): the signature is the authorization.
//!
//! The proof is checked here, against the key read at LINEARIZABLE for a write (so a key
//! rebound before the request is seen), and `apply` refuses a lock whose signing key is no
//! longer bound by the time it commits.

use std::sync::Arc;

use quorumid_proto::v1 as pb;
use tonic::{Code, Request, Response, Status};

use super::registry::{history_to_pb, modality_to_pb, status_to_pb};
use super::{Context, errors, validate};
use crate::reads::Level;
use crate::registry::{
    HolderKey, Identity, IdentityId, Modality, Outcome, Proposal, Request as WriteRequest,
};
use crate::security::holder;
use crate::writes::unix_ms_now;

pub struct HolderService {
    ctx: Arc<Context>,
}

impl HolderService {
    pub fn new(ctx: Arc<Context>) -> HolderService {
        HolderService { ctx }
    }
}

fn unknown(applied_index: u64) -> Status {
    errors::with_reason(
        Code::NotFound,
        "UNKNOWN_IDENTITY",
        format!("no identity has this id (at applied index {applied_index})"),
    )
}

/// Checks the holder's proof of `purpose` over `fields` against the identity's bound key, and
/// returns that key.
fn proven(
    identity: &Identity,
    purpose: &str,
    fields: &[&[u8]],
    proof: &validate::HolderProof,
) -> Result<HolderKey, Status> {
    let key = identity.holder_key.ok_or_else(|| {
        errors::with_reason(
            Code::FailedPrecondition,
            "NO_HOLDER_KEY",
            "no holder device key is bound to this identity (a registrar binds one)",
        )
    })?;
    let message = holder::message(purpose, fields, proof.at_unix_ms);
    holder::check(
        &key,
        &message,
        &proof.signature,
        proof.at_unix_ms,
        unix_ms_now(),
    )
    .map_err(|e| {
        errors::with_reason(
            Code::PermissionDenied,
            "HOLDER_PROOF_REJECTED",
            e.to_string(),
        )
    })?;
    Ok(key)
}

fn modality_name(m: Modality) -> &'static [u8] {
    match m {
        Modality::Face => b"FACE",
        Modality::Fingerprint => b"FINGERPRINT",
    }
}

impl HolderService {
    async fn identity(
        &self,
        id: &IdentityId,
        level: Level,
    ) -> Result<(Identity, pb::ReadFacts), Status> {
        let (found, facts) = self.ctx.read(level, |state| state.identity(id)).await?;
        let identity = found.ok_or_else(|| unknown(facts.applied_index))?;
        Ok((identity, facts))
    }
}

#[tonic::async_trait]
impl pb::holder_server::Holder for HolderService {
    async fn set_modality_lock(
        &self,
        request: Request<pb::SetModalityLockRequest>,
    ) -> Result<Response<pb::SetModalityLockResponse>, Status> {
        let r = request.into_inner();
        let request_id = validate::token("request_id", &r.request_id)?;
        let id = validate::identity_id("identity_id", &r.identity_id)?;
        let modality = validate::modality(r.modality)?;
        let proof = validate::holder_proof("proof", r.proof.as_ref())?;
        let (identity, _) = self.identity(&id, Level::Linearizable).await?;
        let locked_field: &[u8] = if r.locked { b"1" } else { b"0" };
        let fields: [&[u8]; 4] = [
            id.as_str().as_bytes(),
            modality_name(modality),
            locked_field,
            request_id.as_bytes(),
        ];
        let signed_with = proven(&identity, "lock", &fields, &proof)?;
        let write = WriteRequest {
            request_id,
            proposal: Proposal::SetModalityLock {
                identity: id,
                modality,
                locked: r.locked,
                signed_with,
            },
        };
        let response = self.ctx.writer.submit(write).await.map_err(errors::write)?;
        match response.outcome {
            Outcome::ModalityLocks { locked } => Ok(Response::new(pb::SetModalityLockResponse {
                locked: locked.iter().map(|m| modality_to_pb(*m) as i32).collect(),
                log_index: response.log_index,
            })),
            Outcome::Rejected(r) => Err(errors::rejection(&r, response.log_index)),
            other => Err(Status::internal(format!(
                "unexpected outcome for a modality lock: {other:?}"
            ))),
        }
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateHolderKeyRequest>,
    ) -> Result<Response<pb::RotateHolderKeyResponse>, Status> {
        let r = request.into_inner();
        let request_id = validate::token("request_id", &r.request_id)?;
        let id = validate::identity_id("identity_id", &r.identity_id)?;
        let new_key =
            holder::key(&r.new_key).map_err(|e| errors::invalid(format!("new_key: {e}")))?;
        let proof = validate::holder_proof("proof", r.proof.as_ref())?;
        let (identity, _) = self.identity(&id, Level::Linearizable).await?;
        let fields: [&[u8]; 3] = [id.as_str().as_bytes(), &new_key, request_id.as_bytes()];
        let signed_with = proven(&identity, "rotate", &fields, &proof)?;
        let write = WriteRequest {
            request_id,
            proposal: Proposal::RotateHolderKey {
                identity: id,
                new_key,
                signed_with,
            },
        };
        let response = self.ctx.writer.submit(write).await.map_err(errors::write)?;
        match response.outcome {
            Outcome::HolderKeyBound { .. } => Ok(Response::new(pb::RotateHolderKeyResponse {
                log_index: response.log_index,
            })),
            Outcome::Rejected(r) => Err(errors::rejection(&r, response.log_index)),
            other => Err(Status::internal(format!(
                "unexpected outcome for a key rotation: {other:?}"
            ))),
        }
    }

    async fn get_history(
        &self,
        request: Request<pb::HolderHistoryRequest>,
    ) -> Result<Response<pb::HolderHistoryResponse>, Status> {
        let r = request.into_inner();
        let id = validate::identity_id("identity_id", &r.identity_id)?;
        let proof = validate::holder_proof("proof", r.proof.as_ref())?;
        let level = validate::consistency(r.consistency.as_ref())?;
        let (found, facts) = self.ctx.read(level, |state| state.record(&id)).await?;
        let (identity, history) = found.ok_or_else(|| unknown(facts.applied_index))?;
        proven(&identity, "history", &[id.as_str().as_bytes()], &proof)?;
        Ok(Response::new(pb::HolderHistoryResponse {
            identity_id: identity.id.to_string(),
            status: status_to_pb(identity.status) as i32,
            history: history_to_pb(&history),
            facts: Some(facts),
        }))
    }
}
