//! Synthetic face embeddings for scale tests of 1:N search: identities on the unit sphere,
//! samples scattered around them, fitted to a real set's genuine and impostor scores.
//!
//! # Model
//!
//! In `d` dimensions, a sample of the identity with centre `c` is
//!
//! ```text
//! normalise(α·m + c + σ·e^(τ·z)·n)
//! ```
//!
//! - `c`: the identity's centre, uniform on the unit sphere;
//! - `m`: one unit vector shared by every face. Real embedding sets are not zero-centred
//!   (the mean of ORL's normalised SFace embeddings has norm 0.34), which is why their
//!   impostor cosines sit around 0.1 where independent random 128-d directions give 0;
//!   `α` puts that shared component back;
//! - `n ~ N(0, I/d)` (so `|n| ≈ 1`) and `z ~ N(0, 1)`, drawn per sample: `σ` sets the typical
//!   scatter of a person's samples, `τ` how much it varies from sample to sample (real sets
//!   have a long tail of poor samples: ORL's genuine scores reach down to 0.47 around a
//!   median of 0.83).
//!
//! Cross terms vanish in high dimension, so roughly `impostor ≈ α² / (α² + 1 + σ²)` and
//! `genuine ≈ (α² + 1) / (α² + 1 + σ²)`. [`SyntheticFaces::fit`] finds `σ`, `τ` and `α` by
//! bisection, on one fixed draw of pairs (common random numbers), so that the genuine
//! median, the genuine 5th percentile and the impostor median match the targets. The
//! impostor spread is not a free parameter: it comes out near `1/√d` (0.088 in 128-d,
//! against 0.096 for ORL), so the synthetic impostor tail is a little lighter than ORL's.
//!
//! Everything is deterministic given the seed ([`Rng`] is xoshiro256++ with Box–Muller
//! normals, written out here so the stream never changes with a dependency's version).

/// xoshiro256++, seeded through splitmix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
    spare: Option<f64>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        let s = [(); 4].map(|_| splitmix64(&mut state));
        Rng { s, spare: None }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller; the second value of each pair is kept for the next call).
    pub fn gaussian(&mut self) -> f64 {
        if let Some(g) = self.spare.take() {
            return g;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]: the logarithm is finite
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * sin);
        r * cos
    }

    /// Uniform on the unit sphere in `dim` dimensions.
    pub fn unit_vector(&mut self, dim: usize) -> Vec<f64> {
        loop {
            let v: Vec<f64> = (0..dim).map(|_| self.gaussian()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-12 {
                return v.into_iter().map(|x| x / norm).collect();
            }
        }
    }
}

/// The scatter parameters of the model (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scatter {
    /// `α`: weight of the shared component.
    pub shared: f64,
    /// `σ`: median noise scale.
    pub noise: f64,
    /// `τ`: log-normal spread of the noise scale across samples.
    pub noise_spread: f64,
}

/// The score statistics [`SyntheticFaces::fit`] matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreTargets {
    pub genuine_median: f64,
    pub genuine_p05: f64,
    pub impostor_median: f64,
}

/// The value at quantile `q` of `scores` (nearest rank on the sorted scores).
pub fn quantile(scores: &[f64], q: f64) -> f64 {
    let mut s = scores.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((q * s.len() as f64) as usize).min(s.len() - 1);
    s[i]
}

impl ScoreTargets {
    /// The targets read off a real set's genuine and impostor pair scores.
    pub fn from_scores(genuine: &[f64], impostor: &[f64]) -> Self {
        ScoreTargets {
            genuine_median: quantile(genuine, 0.5),
            genuine_p05: quantile(genuine, 0.05),
            impostor_median: quantile(impostor, 0.5),
        }
    }
}

/// A generator of synthetic face embeddings in `dim` dimensions.
#[derive(Debug, Clone)]
pub struct SyntheticFaces {
    dim: usize,
    shared_direction: Vec<f64>,
    scatter: Scatter,
}

/// Pairs drawn once for fitting: genuine pairs are two samples of one centre, impostor
/// pairs samples of two centres.
struct FitDraw {
    centres: Vec<[Vec<f64>; 2]>,
    noise: Vec<[Vec<f64>; 3]>,
    z: Vec<[f64; 3]>,
}

impl SyntheticFaces {
    pub fn new(dim: usize, scatter: Scatter, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5348_4152_4544); // "SHARED"
        SyntheticFaces {
            dim,
            shared_direction: rng.unit_vector(dim),
            scatter,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn scatter(&self) -> Scatter {
        self.scatter
    }

    /// Fits the scatter to `targets` (see the module documentation); deterministic.
    pub fn fit(dim: usize, targets: ScoreTargets, seed: u64) -> Self {
        const PAIRS: usize = 3000;
        let mut rng = Rng::new(seed ^ 0x0046_4954); // "FIT"
        let scale = 1.0 / (dim as f64).sqrt();
        let draw = FitDraw {
            centres: (0..PAIRS)
                .map(|_| [rng.unit_vector(dim), rng.unit_vector(dim)])
                .collect(),
            noise: (0..PAIRS)
                .map(|_| [(); 3].map(|_| (0..dim).map(|_| rng.gaussian() * scale).collect()))
                .collect(),
            z: (0..PAIRS)
                .map(|_| [rng.gaussian(), rng.gaussian(), rng.gaussian()])
                .collect(),
        };
        let mut faces = SyntheticFaces::new(
            dim,
            Scatter {
                shared: 0.3,
                noise: 0.5,
                noise_spread: 0.0,
            },
            seed,
        );
        // Coordinate-wise bisection; each statistic is monotone in its own parameter.
        for _ in 0..6 {
            faces.scatter.noise = bisect(0.0, 8.0, |x| {
                let mut s = faces.scatter;
                s.noise = x;
                quantile(&faces.fit_scores(&draw, s).0, 0.5) - targets.genuine_median
            });
            faces.scatter.noise_spread = bisect(0.0, 3.0, |x| {
                let mut s = faces.scatter;
                s.noise_spread = x;
                quantile(&faces.fit_scores(&draw, s).0, 0.05) - targets.genuine_p05
            });
            faces.scatter.shared = bisect(0.0, 8.0, |x| {
                let mut s = faces.scatter;
                s.shared = x;
                quantile(&faces.fit_scores(&draw, s).1, 0.5) - targets.impostor_median
            });
        }
        faces
    }

    /// Genuine and impostor scores of the fitting draw under `scatter`.
    fn fit_scores(&self, draw: &FitDraw, scatter: Scatter) -> (Vec<f64>, Vec<f64>) {
        let mut genuine = Vec::with_capacity(draw.centres.len());
        let mut impostor = Vec::with_capacity(draw.centres.len());
        for ((c, n), z) in draw.centres.iter().zip(&draw.noise).zip(&draw.z) {
            let a = self.compose(&c[0], &n[0], z[0], scatter);
            let b = self.compose(&c[0], &n[1], z[1], scatter);
            let other = self.compose(&c[1], &n[2], z[2], scatter);
            genuine.push(dot(&a, &b));
            impostor.push(dot(&a, &other));
        }
        (genuine, impostor)
    }

    /// `normalise(α·m + centre + σ·e^(τ·z)·noise)`.
    fn compose(&self, centre: &[f64], noise: &[f64], z: f64, s: Scatter) -> Vec<f64> {
        let sigma = s.noise * (s.noise_spread * z).exp();
        let v: Vec<f64> = self
            .shared_direction
            .iter()
            .zip(centre)
            .zip(noise)
            .map(|((m, c), n)| s.shared * m + c + sigma * n)
            .collect();
        let norm = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    /// A new identity's centre.
    pub fn identity(&self, rng: &mut Rng) -> Vec<f64> {
        rng.unit_vector(self.dim)
    }

    /// One unit-length sample (an embedding) of the identity with `centre`.
    pub fn sample(&self, centre: &[f64], rng: &mut Rng) -> Vec<f32> {
        let scale = 1.0 / (self.dim as f64).sqrt();
        let noise: Vec<f64> = (0..self.dim).map(|_| rng.gaussian() * scale).collect();
        let z = rng.gaussian();
        self.compose(centre, &noise, z, self.scatter)
            .into_iter()
            .map(|x| x as f32)
            .collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A root of the decreasing-or-increasing `f` on `[lo, hi]` by bisection (an end point if
/// there is none inside).
fn bisect(mut lo: f64, mut hi: f64, f: impl Fn(f64) -> f64) -> f64 {
    let rising = f(hi) > f(lo);
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if (f(mid) < 0.0) == rising {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_normal() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
        let g: Vec<f64> = (0..20_000).map(|_| a.gaussian()).collect();
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        let var = g.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / g.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn fit_reaches_the_targets() {
        let targets = ScoreTargets {
            genuine_median: 0.8,
            genuine_p05: 0.6,
            impostor_median: 0.1,
        };
        let faces = SyntheticFaces::fit(64, targets, 1);
        let mut rng = Rng::new(2);
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for _ in 0..2000 {
            let (c, d) = (faces.identity(&mut rng), faces.identity(&mut rng));
            let a = faces.sample(&c, &mut rng);
            let b = faces.sample(&c, &mut rng);
            let o = faces.sample(&d, &mut rng);
            let cos = |x: &[f32], y: &[f32]| -> f64 {
                x.iter().zip(y).map(|(p, q)| f64::from(p * q)).sum()
            };
            genuine.push(cos(&a, &b));
            impostor.push(cos(&a, &o));
            assert!((cos(&a, &a) - 1.0).abs() < 1e-5);
        }
        let fitted = ScoreTargets::from_scores(&genuine, &impostor);
        assert!((fitted.genuine_median - 0.8).abs() < 0.02, "{fitted:?}");
        assert!((fitted.genuine_p05 - 0.6).abs() < 0.03, "{fitted:?}");
        assert!((fitted.impostor_median - 0.1).abs() < 0.02, "{fitted:?}");
    }
}
