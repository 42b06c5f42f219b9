//! The `Verifier` service: platforms ask whether an identity is valid, at a consistency
//! level the node can prove. Nothing about the verification is recorded (DESIGN.md 7).

use std::sync::Arc;
use std::time::Instant;

use quorumid_proto::v1 as pb;
use tonic::{Code, Request, Response, Status};

use super::registry::status_to_pb;
use super::{Context, errors, validate};
use crate::biometrics::ProbeError;
use crate::registry::{Identity, Modality, Status as IdStatus, TemplateFormat};
use crate::security::holder::{self, ProofError};
use crate::security::{Caller, policy};
use crate::writes::unix_ms_now;

pub struct VerifierService {
    ctx: Arc<Context>,
}

impl VerifierService {
    pub fn new(ctx: Arc<Context>) -> VerifierService {
        VerifierService { ctx }
    }
}

/// The `outcome` label of a Verify call.
fn outcome(result: &Result<pb::VerifyResponse, Status>) -> &'static str {
    match result {
        Ok(answer) => match pb::IdentityStatus::try_from(answer.status) {
            Ok(pb::IdentityStatus::Active) => "active",
            Ok(pb::IdentityStatus::Suspended) => "suspended",
            Ok(pb::IdentityStatus::Revoked) => "revoked",
            _ => "unknown",
        },
        Err(status) => match status.code() {
            Code::Unavailable => "refused",
            Code::InvalidArgument => "invalid",
            _ => "error",
        },
    }
}

#[tonic::async_trait]
impl pb::verifier_server::Verifier for VerifierService {
    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let started = Instant::now();
        let caller = policy::caller(&request)?;
        let r = request.into_inner();
        // For the metric's label only; `answer` checks it again and explains a bad one.
        let level = validate::consistency(r.consistency.as_ref()).ok();
        let result = self.answer(&caller, r).await;
        if let Some(level) = level {
            self.ctx
                .telemetry
                .metrics
                .verify(level, outcome(&result), started.elapsed());
        }
        result.map(Response::new)
    }
}

impl VerifierService {
    async fn answer(
        &self,
        caller: &Caller,
        r: pb::VerifyRequest,
    ) -> Result<pb::VerifyResponse, Status> {
        let platform = policy::verify(caller, &r.platform_id)?;
        let id = validate::identity_id("identity_id", &r.identity_id)?;
        let level = validate::consistency(r.consistency.as_ref())?;
        let probe = r
            .probe
            .as_ref()
            .map(|p| validate::template("probe", p))
            .transpose()?;
        let challenge = r
            .holder
            .as_ref()
            .map(validate::holder_challenge)
            .transpose()?;
        // After every cheap check: a face image takes tens of milliseconds to embed.
        let probe = match probe {
            None => None,
            Some(input) => Some(self.ctx.template("probe", input).await?),
        };
        let (found, facts) = self
            .ctx
            .read(level, |state| {
                let Some(identity) = state.identity(&id)? else {
                    return Ok(None);
                };
                // Templates are read only to match a probe against an active identity.
                let templates = match (&probe, identity.status) {
                    (Some(_), IdStatus::Active) => state.templates(&id)?,
                    _ => Vec::new(),
                };
                Ok(Some((identity, templates)))
            })
            .await?;
        let response = match found {
            None => pb::VerifyResponse {
                status: pb::IdentityStatus::Unknown as i32,
                pseudonym: String::new(),
                facts: Some(facts),
                probe: None,
                holder: None,
            },
            Some((identity, templates)) => {
                let holder = match (&challenge, identity.status) {
                    (Some((nonce, proof)), IdStatus::Active) => {
                        Some(holder_result(&identity, &platform, nonce, proof))
                    }
                    _ => None,
                };
                let probe =
                    match (&probe, identity.status) {
                        (Some(p), IdStatus::Active) => {
                            let modality = p.format.modality();
                            if identity.locked.contains(&modality) {
                                return Err(errors::with_reason(
                                    Code::FailedPrecondition,
                                    "MODALITY_LOCKED",
                                    format!(
                                        "the holder locked this identity's {} checks",
                                        modality_word(modality)
                                    ),
                                ));
                            }
                            let matched = self.ctx.biometrics.matches(p, &templates).map_err(
                                |e| match e {
                                    ProbeError::Invalid(m) => {
                                        errors::invalid(format!("probe: {m}"))
                                    }
                                    ProbeError::NoTemplate(_) => errors::with_reason(
                                        Code::FailedPrecondition,
                                        "NO_TEMPLATE",
                                        e.to_string(),
                                    ),
                                },
                            )?;
                            let check = match p.format {
                                TemplateFormat::FaceEmbeddingF32 => "verify_face",
                                TemplateFormat::Iso19794_2_2005 => "verify_fingerprint",
                            };
                            self.ctx.telemetry.metrics.biometric(check, matched);
                            Some(pb::ProbeResult { matched })
                        }
                        _ => None,
                    };
                pb::VerifyResponse {
                    status: status_to_pb(identity.status) as i32,
                    pseudonym: self.ctx.keys.pseudonym(&platform, &identity.id),
                    facts: Some(facts),
                    probe,
                    holder,
                }
            }
        };
        Ok(response)
    }
}

fn modality_word(m: Modality) -> &'static str {
    match m {
        Modality::Face => "face",
        Modality::Fingerprint => "fingerprint",
    }
}

/// Whether the holder's device signed the platform's challenge, in time.
fn holder_result(
    identity: &Identity,
    platform: &str,
    nonce: &[u8],
    proof: &validate::HolderProof,
) -> pb::HolderResult {
    use pb::holder_result::Failure;
    let failure = match &identity.holder_key {
        None => Failure::NoKey,
        Some(key) => {
            let message =
                holder::message("verify", &[platform.as_bytes(), nonce], proof.at_unix_ms);
            match holder::check(
                key,
                &message,
                &proof.signature,
                proof.at_unix_ms,
                unix_ms_now(),
            ) {
                Ok(()) => Failure::Unspecified,
                Err(ProofError::OutsideWindow { .. }) => Failure::OutsideWindow,
                Err(_) => Failure::BadSignature,
            }
        }
    };
    pb::HolderResult {
        verified: failure == Failure::Unspecified,
        failure: failure as i32,
    }
}
