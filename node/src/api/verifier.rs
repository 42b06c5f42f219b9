//! The `Verifier` service: platforms ask whether an identity is valid, at a consistency
//! level the node can prove. Nothing about the verification is recorded (DESIGN.md 7).

use std::sync::Arc;

use quorumid_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::registry::status_to_pb;
use super::{Context, validate};

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
        if let Some(probe) = &r.probe {
            validate::template(0, probe)?;
            return Err(Status::unimplemented(
                "biometric probes are not matched by this node version; verify without a probe",
            ));
        }
        let (identity, facts) = self.ctx.read(level, |state| state.identity(&id)).await?;
        let response = match identity {
            None => pb::VerifyResponse {
                status: pb::IdentityStatus::Unknown as i32,
                pseudonym: String::new(),
                facts: Some(facts),
            },
            Some(identity) => pb::VerifyResponse {
                status: status_to_pb(identity.status) as i32,
                pseudonym: self.ctx.keys.pseudonym(&platform, &identity.id),
                facts: Some(facts),
            },
        };
        Ok(Response::new(response))
    }
}
