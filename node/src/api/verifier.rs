//! The `Verifier` service: platforms ask whether an identity is valid, at a consistency
//! level the node can prove. Nothing about the verification is recorded (DESIGN.md 7).

use std::sync::Arc;

use quorumid_proto::v1 as pb;
use tonic::{Code, Request, Response, Status};

use super::registry::status_to_pb;
use super::{Context, errors, validate};
use crate::biometrics::ProbeError;
use crate::registry::Status as IdStatus;

pub struct VerifierService {
    ctx: Arc<Context>,
}

impl VerifierService {
    pub fn new(ctx: Arc<Context>) -> VerifierService {
        VerifierService { ctx }
    }
}

#[tonic::async_trait]
impl pb::verifier_server::Verifier for VerifierService {
    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let r = request.into_inner();
        let id = validate::identity_id("identity_id", &r.identity_id)?;
        let platform = validate::token("platform_id", &r.platform_id)?;
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
        Ok(Response::new(response))
    }
}
