//! The `Verifier` service: platforms ask whether an identity is valid, at a consistency
//! level the node can prove. Nothing about the verification is recorded (DESIGN.md 7).

use std::sync::Arc;
use std::time::Instant;

use quorumid_proto::v1 as pb;
use tonic::{Code, Request, Response, Status};

use super::registry::status_to_pb;
use super::{Context, errors, validate};
use crate::biometrics::ProbeError;
use crate::registry::{Status as IdStatus, TemplateFormat};
use crate::security::{Caller, policy};

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
            },
            Some((identity, templates)) => {
                let probe =
                    match (&probe, identity.status) {
                        (Some(p), IdStatus::Active) => {
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
                }
            }
        };
        Ok(response)
    }
}
