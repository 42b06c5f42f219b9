//! The public gRPC API: `Registry`, `Verifier`, `Holder` and `Cluster`, plus standard health and
//! server reflection, so `grpcurl` and any gRPC client work from the .proto files alone.
//!
//! - `registry`, `verifier`, `holder`, `cluster`: one module per service.
//! - `validate`: checks and size limits on every input.
//! - `errors`: failures as gRPC statuses with machine-readable reasons.

mod cluster;
pub mod errors;
mod holder;
mod registry;
pub mod validate;
mod verifier;

use std::sync::Arc;
use std::time::Duration;

use quorumid_proto::v1 as pb;
use tonic::Status;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::biometrics::{Biometrics, MAX_FACE_IMAGE_BYTES};
use crate::handover::Handover;
use crate::raft::state_machine::StateReader;
use crate::raft::{NodeId, Raft};
use crate::reads::{Freshness, Level};
use crate::registry::{ClusterKeys, StateError, Template};
use crate::telemetry::NodeTelemetry;
use crate::writes::Writer;
use validate::TemplateInput;

/// Largest request each public service accepts: an enrollment may carry a few face images,
/// a verification one.
const MAX_REGISTRY_MESSAGE: usize = 4 * MAX_FACE_IMAGE_BYTES;
const MAX_VERIFIER_MESSAGE: usize = MAX_FACE_IMAGE_BYTES + 64 * 1024;
const MAX_CLUSTER_MESSAGE: usize = 64 * 1024;
const MAX_HOLDER_MESSAGE: usize = 16 * 1024;

/// A read may be served only while the watermark is this young for the node to report
/// SERVING (the default BOUNDED level).
const HEALTHY_WATERMARK_AGE: Duration = Duration::from_millis(1_000);

/// The services of the API port, by their gRPC names ("" is the whole server, for health).
const PUBLIC_SERVICES: [&str; 6] = [
    "",
    "quorumid.v1.Registry",
    "quorumid.v1.Verifier",
    "quorumid.v1.Holder",
    "quorumid.v1.Cluster",
    "grpc.health.v1.Health",
];

/// Everything the services share.
pub struct Context {
    pub node_id: NodeId,
    pub province: String,
    pub raft: Raft,
    pub writer: Arc<Writer>,
    pub freshness: Arc<Freshness>,
    pub state: StateReader,
    pub keys: ClusterKeys,
    pub biometrics: Arc<Biometrics>,
    pub handover: Handover,
    pub telemetry: Arc<NodeTelemetry>,
}

impl Context {
    /// Reads the state at `level` and says how fresh the answer is.
    pub async fn read<T>(
        &self,
        level: Level,
        read: impl FnOnce(&StateReader) -> Result<T, StateError>,
    ) -> Result<(T, pb::ReadFacts), Status> {
        self.freshness.clear(level).await.map_err(errors::refusal)?;
        // Read before the state: the answer reflects at least this index.
        let applied_index = self.freshness.applied_index();
        let value = read(&self.state).map_err(errors::state)?;
        // Rounded up, so that it stays an upper bound.
        let staleness_bound_ms = self
            .freshness
            .age()
            .map(|age| age.as_micros().div_ceil(1000) as u64);
        Ok((
            value,
            pb::ReadFacts {
                applied_index,
                staleness_bound_ms,
                node_id: self.node_id,
            },
        ))
    }

    /// A request's template as stored and compared: a face image becomes its embedding.
    pub async fn template(&self, field: &str, input: TemplateInput) -> Result<Template, Status> {
        match input {
            TemplateInput::Ready(template) => Ok(template),
            TemplateInput::FaceImage(image) => self
                .biometrics
                .face_from_image(image)
                .await
                .map_err(|e| errors::face_image(field, e)),
        }
    }

    fn healthy(&self) -> bool {
        serving(&self.raft, &self.freshness)
    }
}

/// SERVING (health, and `/ready` on the metrics port) when the node knows a leader and can
/// serve the default read level.
pub fn serving(raft: &Raft, freshness: &Freshness) -> bool {
    raft.metrics().borrow().current_leader.is_some()
        && freshness
            .age()
            .is_some_and(|age| age <= HEALTHY_WATERMARK_AGE)
}

/// The public services, health and reflection, ready to be served on the API port.
pub fn routes(ctx: Arc<Context>) -> Result<(RoutesBuilder, HealthReporter), anyhow::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Advertise only what this port serves (the Raft service is on the peer port).
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in PUBLIC_SERVICES.iter().filter(|n| !n.is_empty()) {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let mut routes = RoutesBuilder::default();
    routes
        .add_service(
            pb::registry_server::RegistryServer::new(registry::RegistryService::new(ctx.clone()))
                .max_decoding_message_size(MAX_REGISTRY_MESSAGE),
        )
        .add_service(
            pb::verifier_server::VerifierServer::new(verifier::VerifierService::new(ctx.clone()))
                .max_decoding_message_size(MAX_VERIFIER_MESSAGE),
        )
        .add_service(
            pb::holder_server::HolderServer::new(holder::HolderService::new(ctx.clone()))
                .max_decoding_message_size(MAX_HOLDER_MESSAGE),
        )
        .add_service(
            pb::cluster_server::ClusterServer::new(cluster::ClusterService::new(ctx))
                .max_decoding_message_size(MAX_CLUSTER_MESSAGE),
        )
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    Ok((routes, health))
}

/// Keeps the health status in step with the node, until the task is aborted.
pub async fn report_health(ctx: Arc<Context>, health: HealthReporter) {
    let mut last = None;
    loop {
        let healthy = ctx.healthy();
        if last != Some(healthy) {
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in PUBLIC_SERVICES {
                health.set_service_status(service, status).await;
            }
            last = Some(healthy);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
