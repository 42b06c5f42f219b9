//! The de-dup index (DESIGN.md 4, 6): every enrolled face template, per model, in an exact
//! int8 gallery, and every enrolled finger view in an exact MCC gallery. Every node keeps it
//! in step with its applied state (rebuilt at start and after a snapshot install, extended
//! as enrollments apply), so any node can search it when it becomes leader. Both searches
//! are exact: they never miss a template at or above the threshold.
//!
//! The threshold rises with the gallery. A newcomer searched against N templates has N
//! chances to be taken for somebody else; at a fixed per-comparison false match rate of 1e-4,
//! 63 % of newcomers would be refused at 10,000 templates. Each search therefore takes the
//! threshold at which its comparisons (the probe's templates times the gallery's) keep the
//! configured share of newcomers refused (`dedup_fpir`, half of it to each modality), from
//! the modality's fitted impostor tail (`quorumid_biometrics::identification`), and never
//! under the configured floor. The price: a duplicate must score higher to be caught in a
//! large gallery (BENCHMARKS.md gives the rates). An enrollment checked against its batch's
//! earlier ones (a small index of their own) takes the threshold of the node's index and
//! those together, so batching never changes which pair is a duplicate.

use std::collections::HashMap;
use std::sync::RwLock;

use quorumid_biometrics::face::{FaceTemplate, ModelId};
use quorumid_biometrics::finger_gallery::FingerGallery;
use quorumid_biometrics::gallery::Gallery;
use quorumid_biometrics::identification::ImpostorTail;
use quorumid_biometrics::mcc::{Matcher, MccTemplate};
use sha2::{Digest, Sha256};

use super::{face, finger_views, on_every_core};
use crate::raft::state_machine::{ApplyObserver, StateReader};
use crate::registry::{IdentityId, StateError, Template, TemplateFormat};

/// Which biometric rule found a duplicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modality {
    Face,
    Fingerprint,
}

/// De-dup thresholds, one rule per modality: a floor, and the impostor tail it rises along
/// to keep each search's share `fpir / 2` of newcomers refused.
#[derive(Clone, Copy, Debug)]
pub struct DedupThresholds {
    pub face: f32,
    pub fingerprint: f32,
    pub face_tail: ImpostorTail,
    pub fingerprint_tail: ImpostorTail,
    pub fpir: f64,
    /// Faces and finger views the same enrollment is searched against in another index,
    /// which count towards its comparisons: the node's index, when an enrollment is checked
    /// against its batch's earlier ones, so that both checks take the same threshold.
    pub elsewhere: (usize, usize),
}

impl DedupThresholds {
    /// The face threshold of a search making `comparisons` comparisons.
    pub fn face_for(&self, comparisons: usize) -> f32 {
        self.face_tail
            .dedup_threshold(self.face, comparisons, self.fpir / 2.0)
    }

    /// The one-finger threshold of a search making `comparisons` comparisons.
    pub fn fingerprint_for(&self, comparisons: usize) -> f32 {
        self.fingerprint_tail
            .dedup_threshold(self.fingerprint, comparisons, self.fpir / 2.0)
    }
}

pub struct DedupIndex {
    faces: RwLock<HashMap<ModelId, Gallery>>,
    fingers: RwLock<FingerGallery>,
}

impl Default for DedupIndex {
    fn default() -> DedupIndex {
        DedupIndex {
            faces: RwLock::default(),
            fingers: RwLock::new(FingerGallery::new(Matcher::default())),
        }
    }
}

/// The gallery key of an identity's `n`-th template (the index stores no identity ids).
fn key(id: &IdentityId, n: usize) -> u64 {
    let hash = Sha256::new()
        .chain_update(id.as_str().as_bytes())
        .chain_update((n as u64).to_be_bytes())
        .finalize();
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

/// The finger views of the fingerprint templates among `templates`, as MCC templates.
/// Templates that do not parse were refused at enrollment; one that still does not is left
/// out rather than stopping apply.
fn fingerprint_views(matcher: &Matcher, templates: &[Template]) -> Vec<(u8, MccTemplate)> {
    templates
        .iter()
        .filter(|t| t.format == TemplateFormat::Iso19794_2_2005)
        .filter_map(|t| finger_views(matcher, t).ok())
        .flatten()
        .collect()
}

/// Identities indexed together at a rebuild.
const REBUILD_CHUNK: usize = 4_096;

/// Adds the face templates among `templates` to their model's gallery. Templates that do not
/// parse were refused at enrollment; one that still does not is left out.
fn insert_faces(
    galleries: &mut HashMap<ModelId, Gallery>,
    id: &IdentityId,
    templates: &[Template],
) {
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

impl DedupIndex {
    /// Adds an identity's face templates and finger views. Building a finger's MCC template
    /// takes about 0.6 ms; it is done before the gallery is locked.
    pub fn insert(&self, id: &IdentityId, templates: &[Template]) {
        let fingers = {
            let matcher = self.fingers.read().expect("finger index lock poisoned");
            fingerprint_views(matcher.matcher(), templates)
        };
        if !fingers.is_empty() {
            let mut gallery = self.fingers.write().expect("finger index lock poisoned");
            for (n, (position, template)) in fingers.into_iter().enumerate() {
                gallery.insert(key(id, n), position, template);
            }
        }
        let mut galleries = self.faces.write().expect("face index lock poisoned");
        insert_faces(&mut galleries, id, templates);
    }

    /// Adds several identities' templates, building finger templates on every core.
    fn insert_many(&self, identities: &[(IdentityId, Vec<Template>)]) {
        let matcher = self
            .fingers
            .read()
            .expect("finger index lock poisoned")
            .matcher()
            .clone();
        let built = on_every_core(identities, |(_, templates)| {
            fingerprint_views(&matcher, templates)
        });
        let mut gallery = self.fingers.write().expect("finger index lock poisoned");
        for ((id, _), fingers) in identities.iter().zip(built) {
            for (n, (position, template)) in fingers.into_iter().enumerate() {
                gallery.insert(key(id, n), position, template);
            }
        }
        drop(gallery);
        let mut galleries = self.faces.write().expect("face index lock poisoned");
        for (id, templates) in identities {
            insert_faces(&mut galleries, id, templates);
        }
    }

    pub fn clear(&self) {
        self.faces
            .write()
            .expect("face index lock poisoned")
            .clear();
        self.fingers
            .write()
            .expect("finger index lock poisoned")
            .clear();
    }

    /// Does one of `templates` match an enrolled template of its kind at or above the
    /// modality's threshold? Faces are searched first (microseconds); fingers take one MCC
    /// comparison per enrolled finger view at a position they may share.
    pub fn find_match(
        &self,
        templates: &[Template],
        thresholds: DedupThresholds,
    ) -> Option<Modality> {
        if self.faces_match(&[templates], &thresholds)[0] {
            return Some(Modality::Face);
        }
        self.fingers_match(templates, &thresholds)
            .then_some(Modality::Fingerprint)
    }

    /// [`find_match`](Self::find_match) for each enrollment of a batch (`None`: not
    /// searched, and no match). The batch's faces are searched in one pass over each
    /// model's gallery; then the fingers of those with no face match, split over the cores.
    pub fn find_matches(
        &self,
        batch: &[Option<Vec<Template>>],
        thresholds: DedupThresholds,
    ) -> Vec<Option<Modality>> {
        let all: Vec<&[Template]> = batch
            .iter()
            .map(|templates| templates.as_deref().unwrap_or_default())
            .collect();
        let faces = self.faces_match(&all, &thresholds);
        let no_face: Vec<usize> = (0..all.len())
            .filter(|&i| !faces[i] && !all[i].is_empty())
            .collect();
        let fingers = on_every_core(&no_face, |&i| self.fingers_match(all[i], &thresholds));
        let mut found: Vec<Option<Modality>> = faces
            .into_iter()
            .map(|face| face.then_some(Modality::Face))
            .collect();
        for (i, finger) in no_face.into_iter().zip(fingers) {
            if finger {
                found[i] = Some(Modality::Fingerprint);
            }
        }
        found
    }

    /// For each enrollment, whether one of its faces matches an enrolled face of its model
    /// at or above its search's threshold: each model's faces of the whole batch in one pass.
    fn faces_match(&self, batch: &[&[Template]], thresholds: &DedupThresholds) -> Vec<bool> {
        let mut by_model: HashMap<ModelId, Vec<(usize, FaceTemplate)>> = HashMap::new();
        let mut faces_of = vec![0usize; batch.len()];
        for (i, templates) in batch.iter().enumerate() {
            let faces = templates
                .iter()
                .filter(|t| t.format == TemplateFormat::FaceEmbeddingF32)
                .filter_map(|t| face(t).ok());
            for probe in faces {
                faces_of[i] += 1;
                by_model
                    .entry(probe.model().clone())
                    .or_default()
                    .push((i, probe));
            }
        }
        let mut matched = vec![false; batch.len()];
        let galleries = self.faces.read().expect("face index lock poisoned");
        for (model, probes) in &by_model {
            let Some(gallery) = galleries.get(model) else {
                continue;
            };
            // An enrollment's threshold follows its own comparisons (its faces times the
            // gallery): the batch is searched at the lowest, and each best match is held to
            // its enrollment's threshold.
            let rows = gallery.len() + thresholds.elsewhere.0;
            let threshold_of = |i: usize| thresholds.face_for(faces_of[i] * rows);
            let lowest = probes
                .iter()
                .map(|(i, _)| threshold_of(*i))
                .fold(f32::INFINITY, f32::min);
            let refs: Vec<&FaceTemplate> = probes.iter().map(|(_, probe)| probe).collect();
            let Ok(found) = gallery.search_many(&refs, lowest) else {
                continue;
            };
            for ((i, _), found) in probes.iter().zip(found) {
                matched[*i] |= found.is_some_and(|m| m.score >= threshold_of(*i));
            }
        }
        matched
    }

    /// Whether one of the finger views among `templates` matches an enrolled one at a
    /// position they may share, at or above the threshold of a search of that many views
    /// against the whole gallery.
    fn fingers_match(&self, templates: &[Template], thresholds: &DedupThresholds) -> bool {
        let gallery = self.fingers.read().expect("finger index lock poisoned");
        let probe = fingerprint_views(gallery.matcher(), templates);
        let rows = gallery.len() + thresholds.elsewhere.1;
        let threshold = thresholds.fingerprint_for(probe.len() * rows);
        !probe.is_empty() && gallery.search(&probe, threshold, true).is_some()
    }

    /// How many face templates the index holds.
    pub fn faces(&self) -> usize {
        let galleries = self.faces.read().expect("face index lock poisoned");
        galleries.values().map(Gallery::len).sum()
    }

    /// How many finger views the index holds.
    pub fn fingers(&self) -> usize {
        self.fingers
            .read()
            .expect("finger index lock poisoned")
            .len()
    }
}

impl ApplyObserver for DedupIndex {
    fn templates_applied(&self, id: &IdentityId, templates: &[Template]) {
        self.insert(id, templates);
    }

    /// Rebuilds from every stored template. A finger's MCC template takes about 0.8 ms to
    /// build, so identities are indexed in chunks, each chunk's fingers built on every core.
    fn state_replaced(&self, state: &StateReader) -> Result<(), StateError> {
        self.clear();
        let mut chunk = Vec::with_capacity(REBUILD_CHUNK);
        state.for_each_templates(|id, templates| {
            chunk.push((id, templates));
            if chunk.len() == REBUILD_CHUNK {
                self.insert_many(&std::mem::take(&mut chunk));
            }
        })?;
        self.insert_many(&chunk);
        Ok(())
    }
}
