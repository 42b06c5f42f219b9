//! Biometric matching for quorumid nodes: face embeddings and fingerprint minutiae.
//!
//! # Layout
//!
//! - [`fingerprint`]: strict parser (and writer) for ISO/IEC 19794-2:2005 minutiae records.
//! - [`mcc`]: Minutia Cylinder-Code templates and their 1:1 comparison.
//! - [`fusion`]: identity-level scores from several fingers.
//! - [`finger_gallery`]: exact 1:N search over enrolled fingerprints, for enrollment de-dup.
//! - [`fvc`]: FVC protocol evaluation over a directory of records.
//! - [`eval`]: EER, FNMR at a given FMR, thresholds for named FMR targets.
//! - [`face`]: model-tagged face embeddings and their int8 templates.
//! - [`extract`] (feature `extract`): image -> face embedding, YuNet + SFace run by tract.
//! - [`gallery`]: 1:N search over int8 face templates, for enrollment de-dup: exact
//!   ([`gallery::Gallery`]) and an HNSW graph for large galleries ([`gallery::HnswGallery`]).
//! - [`synthetic`]: synthetic face embeddings fitted to a real set's scores, for scale tests.
//! - [`calibration`]: thresholds and error rates from a labelled set of embeddings.
//! - [`identification`]: 1:N de-dup thresholds that rise with the gallery, from a fitted
//!   impostor score tail.

pub mod calibration;
pub mod eval;
#[cfg(feature = "extract")]
pub mod extract;
pub mod face;
pub mod finger_gallery;
pub mod fingerprint;
pub mod fusion;
pub mod fvc;
pub mod gallery;
pub mod identification;
pub mod mcc;
pub mod synthetic;
