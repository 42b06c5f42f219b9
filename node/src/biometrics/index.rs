//! The face index for enrollment de-dup (DESIGN.md 4, 6): every enrolled face template, per
//! model, in an exact int8 gallery. Every node keeps it in step with its applied state
//! (rebuilt at start and after a snapshot install, extended as enrollments apply), so any
//! node can search it when it becomes leader. The search is exact: it never misses a
//! template above the threshold.

use std::collections::HashMap;
use std::sync::RwLock;

use quorumid_biometrics::face::ModelId;
use quorumid_biometrics::gallery::Gallery;
use sha2::{Digest, Sha256};

use super::face;
use crate::raft::state_machine::{ApplyObserver, StateReader};
use crate::registry::{IdentityId, StateError, Template, TemplateFormat};

#[derive(Default)]
pub struct FaceIndex {
    galleries: RwLock<HashMap<ModelId, Gallery>>,
}

/// The gallery key of an identity's `n`-th template (the index stores no identity ids).
fn key(id: &IdentityId, n: usize) -> u64 {
    let hash = Sha256::new()
        .chain_update(id.as_str().as_bytes())
        .chain_update((n as u64).to_be_bytes())
        .finalize();
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

impl FaceIndex {
    /// Adds an identity's face templates. Templates that do not parse were refused at
    /// enrollment; one that still does not is left out rather than stopping apply.
    pub fn insert(&self, id: &IdentityId, templates: &[Template]) {
        let mut galleries = self.galleries.write().expect("face index lock poisoned");
        for (n, t) in templates.iter().enumerate() {
            if t.format != TemplateFormat::FaceEmbeddingF32 {
                continue;
            }
            let Ok(template) = face(t) else { continue };
            let gallery = galleries
                .entry(template.model().clone())
                .or_insert_with(|| Gallery::new(template.model().clone()));
            let _ = gallery.insert(key(id, n), &template);
        }
    }

    pub fn clear(&self) {
        self.galleries
            .write()
            .expect("face index lock poisoned")
            .clear();
    }

    /// Is any of `templates` at or above `threshold` against an enrolled face of its model?
    pub fn has_match(&self, templates: &[Template], threshold: f32) -> bool {
        let galleries = self.galleries.read().expect("face index lock poisoned");
        templates
            .iter()
            .filter(|t| t.format == TemplateFormat::FaceEmbeddingF32)
            .filter_map(|t| face(t).ok())
            .any(|probe| {
                galleries
                    .get(probe.model())
                    .and_then(|g| g.search(&probe, threshold).ok().flatten())
                    .is_some()
            })
    }

    /// How many templates the index holds.
    pub fn len(&self) -> usize {
        let galleries = self.galleries.read().expect("face index lock poisoned");
        galleries.values().map(Gallery::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ApplyObserver for FaceIndex {
    fn templates_applied(&self, id: &IdentityId, templates: &[Template]) {
        self.insert(id, templates);
    }

    fn state_replaced(&self, state: &StateReader) -> Result<(), StateError> {
        self.clear();
        state.for_each_templates(|id, templates| self.insert(&id, &templates))
    }
}
