//! Exact 1:N search over int8 face templates of one model, for enrollment de-dup.
//!
//! Templates live in one contiguous `i8` array (row `i` = template `i`), with their keys
//! and `1 / |q|` in parallel arrays, so a search is a linear scan of int8 dot products
//! that the compiler vectorises (AVX2 chosen at run time where the processor has it).
//! Exact search never misses a template above the threshold, and its scores are
//! bit-for-bit those of [`FaceTemplate::score`]. Removal swaps the last row into the hole.
//!
//! Memory per template: `dimension` bytes + 8 (key) + 4 (norm) + the key index entry
//! (about 18 bytes); 128-d is about 160 bytes ([`Gallery::memory_bytes`] counts it).

use std::collections::HashMap;

use crate::face::{FaceError, FaceTemplate, ModelId, cosine_i8};

pub mod hnsw;
mod topk;

pub use hnsw::{HnswGallery, HnswParams};
use topk::TopK;

/// A gallery entry found by a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GalleryMatch {
    pub key: u64,
    pub score: f32,
}

/// Templates of one model, by opaque `u64` key.
#[derive(Debug, Clone)]
pub struct Gallery {
    model: ModelId,
    keys: Vec<u64>,
    inverse_norms: Vec<f32>,
    values: Vec<i8>,
    rows: HashMap<u64, usize>,
}

impl Gallery {
    pub fn new(model: ModelId) -> Self {
        Gallery {
            model,
            keys: Vec::new(),
            inverse_norms: Vec::new(),
            values: Vec::new(),
            rows: HashMap::new(),
        }
    }

    pub fn model(&self) -> &ModelId {
        &self.model
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.rows.contains_key(&key)
    }

    /// Adds (or replaces) the template under `key`; returns whether a template was replaced.
    pub fn insert(&mut self, key: u64, template: &FaceTemplate) -> Result<bool, FaceError> {
        self.model.check(template.model())?;
        let dim = self.model.dimension();
        if let Some(&row) = self.rows.get(&key) {
            self.values[row * dim..(row + 1) * dim].copy_from_slice(template.values());
            self.inverse_norms[row] = template.inverse_norm();
            return Ok(true);
        }
        self.rows.insert(key, self.keys.len());
        self.keys.push(key);
        self.inverse_norms.push(template.inverse_norm());
        self.values.extend_from_slice(template.values());
        Ok(false)
    }

    /// Removes the template under `key`; returns whether there was one.
    pub fn remove(&mut self, key: u64) -> bool {
        let Some(row) = self.rows.remove(&key) else {
            return false;
        };
        let dim = self.model.dimension();
        let last = self.keys.len() - 1;
        if row != last {
            self.values
                .copy_within(last * dim..(last + 1) * dim, row * dim);
            self.keys[row] = self.keys[last];
            self.inverse_norms[row] = self.inverse_norms[last];
            self.rows.insert(self.keys[row], row);
        }
        self.keys.truncate(last);
        self.inverse_norms.truncate(last);
        self.values.truncate(last * dim);
        true
    }

    /// The best-scoring template with `score >= threshold`, if any (ties: the lowest row).
    pub fn search(
        &self,
        probe: &FaceTemplate,
        threshold: f32,
    ) -> Result<Option<GalleryMatch>, FaceError> {
        let mut best: Option<GalleryMatch> = None;
        self.scan(probe, threshold, |m| {
            if best.is_none_or(|b| m.score > b.score) {
                best = Some(m);
            }
        })?;
        Ok(best)
    }

    /// Every template with `score >= threshold`, best first.
    pub fn search_all(
        &self,
        probe: &FaceTemplate,
        threshold: f32,
    ) -> Result<Vec<GalleryMatch>, FaceError> {
        let mut out = Vec::new();
        self.scan(probe, threshold, |m| out.push(m))?;
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(out)
    }

    /// The `k` best-scoring templates whatever their score, best first (ties: the lowest
    /// row first): the exact answer an approximate index is measured against.
    pub fn nearest(&self, probe: &FaceTemplate, k: usize) -> Result<Vec<GalleryMatch>, FaceError> {
        let mut best = TopK::new(k);
        let mut row = 0u32;
        self.scan(probe, f32::NEG_INFINITY, |m| {
            best.offer(m.score, row, m.key);
            row += 1;
        })?;
        Ok(best.into_sorted())
    }

    fn scan(
        &self,
        probe: &FaceTemplate,
        threshold: f32,
        found: impl FnMut(GalleryMatch),
    ) -> Result<(), FaceError> {
        self.model.check(probe.model())?;
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor has just been checked for AVX2.
                unsafe { self.scan_avx2(probe, threshold, found) };
                return Ok(());
            }
        }
        self.scan_generic(probe, threshold, found);
        Ok(())
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn scan_avx2(&self, probe: &FaceTemplate, threshold: f32, found: impl FnMut(GalleryMatch)) {
        self.scan_generic(probe, threshold, found);
    }

    #[inline(always)]
    fn scan_generic(
        &self,
        probe: &FaceTemplate,
        threshold: f32,
        mut found: impl FnMut(GalleryMatch),
    ) {
        let dim = self.model.dimension();
        let (q, q_inverse) = (probe.values(), probe.inverse_norm());
        for ((row, &key), &inverse) in self
            .values
            .chunks_exact(dim)
            .zip(&self.keys)
            .zip(&self.inverse_norms)
        {
            let score = cosine_i8(q, q_inverse, row, inverse);
            if score >= threshold {
                found(GalleryMatch { key, score });
            }
        }
    }

    /// Heap bytes held (by capacity), including the key index's table.
    pub fn memory_bytes(&self) -> usize {
        let index_entry = std::mem::size_of::<(u64, usize)>() + 1; // hashbrown: slot + control byte
        self.values.capacity()
            + self.keys.capacity() * std::mem::size_of::<u64>()
            + self.inverse_norms.capacity() * std::mem::size_of::<f32>()
            + self.rows.capacity() * index_entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::Embedding;

    fn template(model: &ModelId, v: [f32; 3]) -> FaceTemplate {
        Embedding::new(model.clone(), v.to_vec())
            .unwrap()
            .quantise()
    }

    #[test]
    fn insert_remove_search() {
        let m = ModelId::new("t", 3).unwrap();
        let mut g = Gallery::new(m.clone());
        let x = template(&m, [1.0, 0.0, 0.0]);
        let y = template(&m, [0.0, 1.0, 0.0]);
        let z = template(&m, [0.0, 0.0, 1.0]);
        assert!(!g.insert(10, &x).unwrap());
        assert!(!g.insert(20, &y).unwrap());
        assert!(!g.insert(30, &z).unwrap());
        assert_eq!(g.search(&y, 0.5).unwrap().map(|h| h.key), Some(20));
        assert!(g.remove(10));
        assert!(!g.remove(10));
        assert_eq!(g.len(), 2);
        // Row of key 30 moved into the hole: still found by key and by content.
        assert_eq!(g.search(&z, 0.5).unwrap().map(|h| h.key), Some(30));
        assert_eq!(g.search(&x, 0.5).unwrap(), None);
        assert!(g.insert(20, &x).unwrap());
        assert_eq!(g.search(&x, 0.5).unwrap().map(|h| h.key), Some(20));
        assert!(g.remove(30) && g.remove(20) && g.is_empty());
        assert_eq!(g.search(&x, -1.0).unwrap(), None);
    }

    #[test]
    fn vectorised_scan_matches_the_plain_one() {
        let m = ModelId::new("t", 67).unwrap();
        let mut g = Gallery::new(m.clone());
        let mut state = 3u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 255) as f32 - 127.0
        };
        for key in 0..50 {
            let v: Vec<f32> = (0..67).map(|_| next()).collect();
            g.insert(key, &Embedding::new(m.clone(), v).unwrap().quantise())
                .unwrap();
        }
        let probe_values: Vec<f32> = (0..67).map(|_| next()).collect();
        let probe = Embedding::new(m, probe_values).unwrap().quantise();
        let mut plain = Vec::new();
        g.scan_generic(&probe, -1.0, |h| plain.push(h));
        let mut dispatched = Vec::new();
        g.scan(&probe, -1.0, |h| dispatched.push(h)).unwrap();
        assert_eq!(plain.len(), 50);
        assert_eq!(plain, dispatched);
    }

    #[test]
    fn other_model_is_refused() {
        let m = ModelId::new("t", 3).unwrap();
        let other = ModelId::new("u", 3).unwrap();
        let mut g = Gallery::new(m);
        let t = template(&other, [1.0, 0.0, 0.0]);
        assert!(matches!(
            g.insert(1, &t),
            Err(FaceError::ModelMismatch { .. })
        ));
        assert!(matches!(
            g.search(&t, 0.0),
            Err(FaceError::ModelMismatch { .. })
        ));
    }
}
