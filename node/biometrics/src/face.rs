//! Face templates: an embedding tagged with the model that made it, L2-normalised on
//! creation, stored quantised to int8, scored by cosine similarity.
//!
//! - [`ModelId`]: model name + embedding dimension. Templates of different models are
//!   never compared: every score returns [`FaceError::ModelMismatch`] instead.
//! - [`Embedding`]: validated float vector (right dimension, finite, non-zero), unit length.
//! - [`FaceTemplate`]: the stored form, `i8` values with a scale (`value ≈ i8 * scale`),
//!   the largest component mapped to ±127, plus `1 / |q|` of the int8 vector so the cosine
//!   is one integer dot product and two multiplications. 128-d: 128 bytes of values.
//!
//! The int8 cosine differs from the float one by a few thousandths (measured on the ORL
//! SFace set: the EERs agree; see `tests/face.rs`).

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// Largest embedding dimension accepted.
pub const MAX_DIMENSION: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum FaceError {
    #[error("model name is empty")]
    EmptyModelName,
    #[error("model dimension {0} is not in 1..={MAX_DIMENSION}")]
    BadModelDimension(usize),
    #[error("embedding has {found} values but model {model} makes {expected}")]
    WrongDimension {
        model: String,
        expected: usize,
        found: usize,
    },
    #[error("embedding value {index} is {value}, not a finite number")]
    NotFinite { index: usize, value: f32 },
    #[error("embedding is all zeros (or too small to normalise); it has no direction")]
    ZeroVector,
    #[error("template of model {found} cannot be compared with one of model {expected}")]
    ModelMismatch { expected: ModelId, found: ModelId },
    #[error("template scale {0} is not a finite positive number")]
    BadScale(f32),
}

/// Which model made an embedding: a name and the dimension it outputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawModelId", into = "RawModelId")]
pub struct ModelId {
    name: Arc<str>,
    dimension: usize,
}

/// The serialised form of [`ModelId`], checked by [`ModelId::new`] when read back.
#[derive(serde::Serialize, serde::Deserialize)]
struct RawModelId {
    name: String,
    dimension: usize,
}

impl TryFrom<RawModelId> for ModelId {
    type Error = FaceError;
    fn try_from(raw: RawModelId) -> Result<Self, FaceError> {
        ModelId::new(&raw.name, raw.dimension)
    }
}

impl From<ModelId> for RawModelId {
    fn from(m: ModelId) -> Self {
        RawModelId {
            name: m.name.to_string(),
            dimension: m.dimension,
        }
    }
}

impl ModelId {
    pub fn new(name: &str, dimension: usize) -> Result<Self, FaceError> {
        if name.is_empty() {
            return Err(FaceError::EmptyModelName);
        }
        if dimension == 0 || dimension > MAX_DIMENSION {
            return Err(FaceError::BadModelDimension(dimension));
        }
        Ok(ModelId {
            name: name.into(),
            dimension,
        })
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dimension(&self) -> usize {
        self.dimension
    }
    pub(crate) fn check(&self, other: &ModelId) -> Result<(), FaceError> {
        if self == other {
            Ok(())
        } else {
            Err(FaceError::ModelMismatch {
                expected: self.clone(),
                found: other.clone(),
            })
        }
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}d", self.name, self.dimension)
    }
}

/// A unit-length float embedding of a known model.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    model: ModelId,
    values: Vec<f32>,
}

impl Embedding {
    /// Validates and L2-normalises `values`.
    pub fn new(model: ModelId, mut values: Vec<f32>) -> Result<Self, FaceError> {
        if values.len() != model.dimension {
            return Err(FaceError::WrongDimension {
                model: model.name.to_string(),
                expected: model.dimension,
                found: values.len(),
            });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FaceError::NotFinite { index, value });
        }
        // In f64 so that neither huge nor tiny (but non-zero) values overflow or vanish.
        let norm = values
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(FaceError::ZeroVector);
        }
        for v in &mut values {
            *v = (f64::from(*v) / norm) as f32;
        }
        Ok(Embedding { model, values })
    }

    pub fn model(&self) -> &ModelId {
        &self.model
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Cosine similarity (the dot product of the unit vectors).
    pub fn cosine(&self, other: &Embedding) -> Result<f32, FaceError> {
        self.model.check(&other.model)?;
        Ok(self
            .values
            .iter()
            .zip(&other.values)
            .map(|(a, b)| a * b)
            .sum())
    }

    pub fn quantise(&self) -> FaceTemplate {
        FaceTemplate::from_embedding(self)
    }
}

/// The stored form of a face: int8 values and a scale.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceTemplate {
    model: ModelId,
    scale: f32,
    inverse_norm: f32,
    values: Box<[i8]>,
}

/// Dot product of two int8 vectors, written so the compiler vectorises it.
#[inline(always)]
pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    // Products fit in i16 (at most 128² = 16,384) and a sum of at most MAX_DIMENSION of them
    // fits in i32, so wrapping arithmetic never wraps; it keeps the overflow checks of the
    // `ci` profile out of the loop, which lets it vectorise (pmaddwd-shaped: pairs of i16
    // products summed into i32 lanes).
    const BLOCK: usize = 32;
    let mut lanes = [0i32; BLOCK / 2];
    let (a_blocks, b_blocks) = (a.chunks_exact(BLOCK), b.chunks_exact(BLOCK));
    let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
    for (x, y) in a_blocks.zip(b_blocks) {
        for (k, lane) in lanes.iter_mut().enumerate() {
            let p0 = i32::from(i16::from(x[2 * k]).wrapping_mul(i16::from(y[2 * k])));
            let p1 = i32::from(i16::from(x[2 * k + 1]).wrapping_mul(i16::from(y[2 * k + 1])));
            *lane = lane.wrapping_add(p0.wrapping_add(p1));
        }
    }
    let rest = a_rest.iter().zip(b_rest).fold(0i32, |acc, (&x, &y)| {
        acc.wrapping_add(i32::from(x).wrapping_mul(i32::from(y)))
    });
    lanes.iter().fold(rest, |acc, &l| acc.wrapping_add(l))
}

/// [`dot_i8`] compiled for the best instruction set this processor has (AVX2 on x86-64
/// where present), picked once; for loops that cannot carry a `target_feature` themselves.
pub(crate) fn dot_i8_dispatch() -> fn(&[i8], &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return dot_i8_avx2_checked;
        }
    }
    dot_i8_plain
}

fn dot_i8_plain(a: &[i8], b: &[i8]) -> i32 {
    dot_i8(a, b)
}

/// Sixteen values at a time: sign-extend to i16, multiply and add pairs into i32 lanes
/// (`vpmaddwd`); the same integer sum as [`dot_i8`], so the same score to the bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_loadu_si128, _mm_shuffle_epi32,
        _mm256_add_epi32, _mm256_castsi256_si128, _mm256_cvtepi8_epi16, _mm256_extracti128_si256,
        _mm256_madd_epi16, _mm256_setzero_si256,
    };
    let n = a.len().min(b.len());
    let blocks = n / 16;
    let mut acc = _mm256_setzero_si256();
    for i in 0..blocks {
        // SAFETY: `i * 16 + 16 <= n`, in bounds of both slices; unaligned loads.
        let (x, y) = unsafe {
            (
                _mm_loadu_si128(a.as_ptr().add(i * 16).cast::<__m128i>()),
                _mm_loadu_si128(b.as_ptr().add(i * 16).cast::<__m128i>()),
            )
        };
        let products = _mm256_madd_epi16(_mm256_cvtepi8_epi16(x), _mm256_cvtepi8_epi16(y));
        acc = _mm256_add_epi32(acc, products);
    }
    let half = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256::<1>(acc),
    );
    let quarter = _mm_add_epi32(half, _mm_shuffle_epi32::<0b01_00_11_10>(half));
    let single = _mm_add_epi32(quarter, _mm_shuffle_epi32::<0b10_11_00_01>(quarter));
    let rest = a[blocks * 16..n]
        .iter()
        .zip(&b[blocks * 16..n])
        .fold(0i32, |acc, (&x, &y)| {
            acc.wrapping_add(i32::from(x).wrapping_mul(i32::from(y)))
        });
    _mm_cvtsi128_si32(single).wrapping_add(rest)
}

#[cfg(target_arch = "x86_64")]
fn dot_i8_avx2_checked(a: &[i8], b: &[i8]) -> i32 {
    // SAFETY: `dot_i8_dispatch` returns this function only after detecting AVX2.
    unsafe { dot_i8_avx2(a, b) }
}

fn inverse_norm(values: &[i8]) -> Option<f32> {
    let sum = dot_i8(values, values);
    (sum > 0).then(|| 1.0 / (sum as f32).sqrt())
}

impl FaceTemplate {
    pub fn from_embedding(embedding: &Embedding) -> Self {
        let largest = embedding.values.iter().fold(0f32, |m, v| m.max(v.abs()));
        // A unit vector has a component of at least 1/sqrt(d) > 0.
        let scale = largest / 127.0;
        let values: Box<[i8]> = embedding
            .values
            .iter()
            .map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8)
            .collect();
        let inverse_norm = inverse_norm(&values).unwrap_or(0.0);
        FaceTemplate {
            model: embedding.model.clone(),
            scale,
            inverse_norm,
            values,
        }
    }

    /// Rebuilds a stored template, checking it as [`Embedding::new`] would.
    pub fn from_parts(model: ModelId, scale: f32, values: Vec<i8>) -> Result<Self, FaceError> {
        if values.len() != model.dimension {
            return Err(FaceError::WrongDimension {
                model: model.name.to_string(),
                expected: model.dimension,
                found: values.len(),
            });
        }
        if !(scale.is_finite() && scale > 0.0) {
            return Err(FaceError::BadScale(scale));
        }
        let inverse_norm = inverse_norm(&values).ok_or(FaceError::ZeroVector)?;
        Ok(FaceTemplate {
            model,
            scale,
            inverse_norm,
            values: values.into_boxed_slice(),
        })
    }

    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// `value ≈ i8 * scale` for the unit-length embedding.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    pub fn values(&self) -> &[i8] {
        &self.values
    }

    pub(crate) fn inverse_norm(&self) -> f32 {
        self.inverse_norm
    }

    /// The unit-length float embedding this template approximates.
    pub fn dequantise(&self) -> Vec<f32> {
        self.values
            .iter()
            .map(|&q| f32::from(q) * self.scale)
            .collect()
    }

    /// Cosine similarity of the two int8 vectors; templates of different models are refused.
    pub fn score(&self, other: &FaceTemplate) -> Result<f32, FaceError> {
        self.model.check(&other.model)?;
        Ok(cosine_i8(
            &self.values,
            self.inverse_norm,
            &other.values,
            other.inverse_norm,
        ))
    }
}

/// The one formula every int8 score uses, so 1:1 and 1:N agree to the bit.
#[inline(always)]
pub(crate) fn cosine_i8(a: &[i8], inverse_a: f32, b: &[i8], inverse_b: f32) -> f32 {
    score_from_dot(dot_i8(a, b), inverse_a, inverse_b)
}

/// The score of an integer dot product: `dot`, then `× inverse_a`, then `× inverse_b`, each
/// rounded to `f32` as it goes. Every step is monotone (non-decreasing in `dot` for the
/// non-negative inverse norms), which the gallery's pre-filter relies on: a bound on `dot`
/// put through this same function bounds the score.
#[inline(always)]
pub(crate) fn score_from_dot(dot: i32, inverse_a: f32, inverse_b: f32) -> f32 {
    dot as f32 * inverse_a * inverse_b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelId {
        ModelId::new("test", 4).unwrap()
    }

    #[test]
    fn validation() {
        assert_eq!(ModelId::new("", 4), Err(FaceError::EmptyModelName));
        assert_eq!(ModelId::new("m", 0), Err(FaceError::BadModelDimension(0)));
        assert!(matches!(
            Embedding::new(model(), vec![1.0; 3]),
            Err(FaceError::WrongDimension {
                expected: 4,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            Embedding::new(model(), vec![1.0, f32::NAN, 0.0, 0.0]),
            Err(FaceError::NotFinite { index: 1, .. })
        ));
        assert!(matches!(
            Embedding::new(model(), vec![1.0, 0.0, f32::INFINITY, 0.0]),
            Err(FaceError::NotFinite { index: 2, .. })
        ));
        assert_eq!(
            Embedding::new(model(), vec![0.0; 4]),
            Err(FaceError::ZeroVector)
        );
        assert_eq!(
            FaceTemplate::from_parts(model(), 0.01, vec![0; 4]),
            Err(FaceError::ZeroVector)
        );
        assert!(matches!(
            FaceTemplate::from_parts(model(), f32::NAN, vec![1; 4]),
            Err(FaceError::BadScale(_))
        ));
        assert!(matches!(
            FaceTemplate::from_parts(model(), 0.1, vec![1; 5]),
            Err(FaceError::WrongDimension { .. })
        ));
    }

    #[test]
    fn normalises_and_quantises() {
        let e = Embedding::new(model(), vec![3.0, 4.0, 0.0, 0.0]).unwrap();
        assert!((e.values()[0] - 0.6).abs() < 1e-6);
        let tiny = Embedding::new(model(), vec![1e-30, 0.0, 0.0, 0.0]).unwrap();
        assert_eq!(tiny.values()[0], 1.0);
        let t = e.quantise();
        assert_eq!(t.values(), &[95, 127, 0, 0]);
        assert!((t.score(&t).unwrap() - 1.0).abs() < 1e-6);
        let back = t.dequantise();
        assert!((back[1] - 0.8).abs() < 1e-6);
        let copy = FaceTemplate::from_parts(model(), t.scale(), t.values().to_vec()).unwrap();
        assert_eq!(copy, t);
    }

    #[test]
    fn dispatched_dot_is_the_plain_one() {
        let dot = dot_i8_dispatch();
        let mut state = 5u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8 as i8
        };
        for len in [0, 1, 15, 16, 17, 31, 32, 100, 128, 129, 512] {
            let a: Vec<i8> = (0..len).map(|_| next()).collect();
            let b: Vec<i8> = (0..len).map(|_| next()).collect();
            assert_eq!(dot(&a, &b), dot_i8(&a, &b), "length {len}");
            let extremes = vec![-128i8; len];
            assert_eq!(dot(&extremes, &extremes), dot_i8(&extremes, &extremes));
        }
    }

    #[test]
    fn other_model_is_refused() {
        let other = ModelId::new("other", 4).unwrap();
        let a = Embedding::new(model(), vec![1.0, 0.0, 0.0, 0.0]).unwrap();
        let b = Embedding::new(other, vec![1.0, 0.0, 0.0, 0.0]).unwrap();
        assert!(matches!(a.cosine(&b), Err(FaceError::ModelMismatch { .. })));
        assert!(matches!(
            a.quantise().score(&b.quantise()),
            Err(FaceError::ModelMismatch { .. })
        ));
        // Same name, other dimension: another model too.
        let wide = ModelId::new("test", 5).unwrap();
        let c = Embedding::new(wide, vec![1.0; 5]).unwrap();
        assert!(a.cosine(&c).is_err());
    }
}
