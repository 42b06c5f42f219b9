//! Minutia Cylinder-Code matcher (Cappelli, Ferrara, Maltoni, IEEE TPAMI 32(12), 2010).
//!
//! Each minutia gets a *cylinder*: a 16 x 16 grid of cells of side 2R/16 (R = 70 px at
//! 500 dpi) turned to the minutia's direction, with 6 direction bins per cell. A cell's bin
//! holds the Gaussian-weighted evidence (sigma_S = 28/3 px, sigma_D = 2π/9) of neighbour
//! minutiae near the cell whose direction, relative to the centre minutia, falls in the bin;
//! it is stored as one bit (evidence >= mu_psi = 0.01, the paper's MCC16b). A cell is *valid*
//! if it lies within R of the minutia and inside the convex hull of all minutiae enlarged by
//! 60 px (the paper's omega is 50); a cylinder is kept only if 75% of its disc is valid and
//! at least 2 other minutiae lie within R + 3 sigma_S.
//!
//! Two cylinders are compared over the cells valid in both (at least 60% of the disc, and
//! the centre minutiae no more than 90° apart): `1 - sqrt(|a xor b|) / (sqrt(|a|) +
//! sqrt(|b|))`. The global score is relaxation-based (the paper's LSA-R, with a greedy
//! one-to-one assignment in place of the Hungarian algorithm): local pairs are taken best
//! first, each minutia at most once (so at most `min(nA, nB)` pairs); their similarities are
//! relaxed five times by how consistent their distances (half weight at 6 px of difference;
//! the paper's mu_1 is 5), relative directions and radial angles are with the other pairs;
//! and the `nP` (4..12, growing with the minutia count)
//! pairs whose similarity held up best (highest relaxed / initial ratio) are averaged.
//! Scores lie in `[0, 1]`.
//!
//! Cylinders and each template's pairwise geometry are computed once by
//! [`Matcher::template`]; [`Matcher::compare`] only works on those, with hardware popcount
//! (and AVX2) chosen at run time where the processor has it.

use std::f32::consts::PI;

use crate::fingerprint::{AngleConvention, FingerRecord, FingerView};

/// Cells per side of the cylinder's base (NS).
pub const SPATIAL_CELLS: usize = 16;
/// Direction bins per cell (ND).
pub const DIRECTION_CELLS: usize = 6;
const CELLS: usize = SPATIAL_CELLS * SPATIAL_CELLS;
const LAYER_WORDS: usize = CELLS / 64;
const CYLINDER_WORDS: usize = LAYER_WORDS * DIRECTION_CELLS;
/// Minutiae a template keeps at most (the first ones given); a record view holds at most 255.
pub const MAX_MINUTIAE: usize = 1024;
/// Minutiae farther than this from the origin (in pixels, either axis) are ignored, as are
/// non-finite ones: ISO records hold at most 16,383.
pub const MAX_COORDINATE: f32 = 100_000.0;
/// Pixels per centimetre of 500 dpi, the resolution the parameters are given for.
pub const REFERENCE_PPCM: f32 = 197.0;

/// Matcher parameters. [`MccParams::default`] gives the paper's values for MCC16b with
/// relaxation, except two measured on FVC2002 DB1..DB4 (EER 2.13 / 1.20 / 5.35 / 1.06 % with
/// the paper's, 1.78 / 1.06 / 5.00 / 1.06 % with these):
///
/// - `hull_margin` 60 px, not 50: the paper's 50 sits at the edge of a cliff on these records
///   (45 px gives 2.85 / 1.43 / 5.70 %, DB1..DB3) and cells of the print beyond it are lost;
///   60 to 80 px give the same EERs on DB1..DB3 (DB4 alone prefers 50 to 60: 1.06 vs 1.20 %
///   with the paper's other values).
/// - `compat_distance` mu 6 px, not 5: a little more tolerance of distortion between two
///   pairs' distances. On its own it lowers DB2 and DB3 (1.20 to 1.06, 5.35 to 5.00 %) and
///   keeps DB1 and DB4; 6 to 8 px all do about as well, 4 px is worse.
#[derive(Debug, Clone, PartialEq)]
pub struct MccParams {
    /// Cylinder radius R in pixels at 500 dpi.
    pub radius: f32,
    /// sigma_S, spatial spread of a neighbour's contribution.
    pub sigma_s: f32,
    /// sigma_D, directional spread.
    pub sigma_d: f32,
    /// mu_psi: a bin's evidence at or above this sets its bit.
    pub bit_threshold: f32,
    /// Omega: how far the minutiae's convex hull is enlarged to decide cell validity.
    pub hull_margin: f32,
    /// minVC: share of the disc's cells that must be valid to keep a cylinder.
    pub min_valid_cells: f32,
    /// minM: other minutiae needed within R + 3 sigma_S to keep a cylinder.
    pub min_neighbours: usize,
    /// minME: share of the disc's cells valid in both cylinders for them to be comparable.
    pub min_matchable_cells: f32,
    /// delta_theta: largest direction difference of two comparable cylinders (radians).
    pub max_rotation: f32,
    /// minNP, maxNP, mu_P, tau_P: how many pairs make the global score.
    pub min_pairs: usize,
    pub max_pairs: usize,
    pub pairs_mu: f32,
    pub pairs_tau: f32,
    /// n_rel and w_R: relaxation rounds and the weight kept from the previous round.
    pub relaxation_rounds: usize,
    pub relaxation_weight: f32,
    /// (mu, tau) of the three compatibility sigmoids: distance, direction, radial angle.
    pub compat_distance: (f32, f32),
    pub compat_direction: (f32, f32),
    pub compat_radial: (f32, f32),
    /// How the records' angle bytes are read.
    pub angle_convention: AngleConvention,
}

impl Default for MccParams {
    fn default() -> Self {
        MccParams {
            radius: 70.0,
            sigma_s: 28.0 / 3.0,
            sigma_d: 2.0 * PI / 9.0,
            bit_threshold: 0.01,
            hull_margin: 60.0,
            min_valid_cells: 0.75,
            min_neighbours: 2,
            min_matchable_cells: 0.6,
            max_rotation: PI / 2.0,
            min_pairs: 4,
            max_pairs: 12,
            pairs_mu: 20.0,
            pairs_tau: 0.4,
            relaxation_rounds: 5,
            relaxation_weight: 0.5,
            compat_distance: (6.0, -8.0 / 5.0),
            compat_direction: (PI / 12.0, -30.0),
            compat_radial: (PI / 12.0, -30.0),
            angle_convention: AngleConvention::default(),
        }
    }
}

/// A minutia in matcher space: pixels at 500 dpi, direction in radians in image
/// coordinates (x right, y down; the minutia points along `(cos, sin)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinutiaPoint {
    pub x: f32,
    pub y: f32,
    pub direction: f32,
}

impl MinutiaPoint {
    /// The minutiae of one finger view, rescaled from the record's resolution to 500 dpi.
    pub fn from_view(
        record: &FingerRecord,
        view: &FingerView,
        convention: AngleConvention,
    ) -> Vec<MinutiaPoint> {
        // Resolutions are non-zero: the parser rejects zero.
        let sx = REFERENCE_PPCM / f32::from(record.resolution_x.max(1));
        let sy = REFERENCE_PPCM / f32::from(record.resolution_y.max(1));
        view.minutiae
            .iter()
            .map(|m| MinutiaPoint {
                x: f32::from(m.x) * sx,
                y: f32::from(m.y) * sy,
                direction: m.direction(convention),
            })
            .collect()
    }
}

/// A finger's precomputed cylinders and geometry; build with [`Matcher::template`].
#[derive(Debug, Clone)]
pub struct MccTemplate {
    /// Centre minutiae of the kept cylinders.
    points: Vec<MinutiaPoint>,
    /// Per cylinder, `DIRECTION_CELLS` layers of `LAYER_WORDS` words of cell bits.
    values: Vec<[u64; CYLINDER_WORDS]>,
    /// Per cylinder, the valid cells.
    masks: Vec<[u64; LAYER_WORDS]>,
    /// Row-major `n x n`: distance between centre minutiae i and j.
    distance: Vec<f32>,
    /// Row-major `n x n`: angle of the segment i -> j relative to minutia i's direction.
    radial: Vec<f32>,
    /// Minutiae in the input, including those whose cylinder was dropped.
    minutia_count: usize,
}

impl MccTemplate {
    /// Number of kept (valid) cylinders.
    pub fn cylinder_count(&self) -> usize {
        self.points.len()
    }
    /// Number of minutiae the template was made from.
    pub fn minutia_count(&self) -> usize {
        self.minutia_count
    }
}

/// Builds templates and compares them with one set of parameters.
#[derive(Debug, Clone)]
pub struct Matcher {
    params: MccParams,
    /// sqrt(i) for every popcount a cylinder can have.
    sqrt_table: Vec<f32>,
    /// Offsets of the cell centres from the minutia in the cylinder's frame.
    cell_offsets: Vec<(f32, f32)>,
    /// Cells of the grid inside the disc of radius R (the denominator of the validity shares).
    disc_cells: usize,
    /// Directional contribution to each bin of a neighbour whose direction relative to the
    /// centre minutia is `i * 2π / DIRECTION_STEPS - π`.
    direction_table: Vec<[f32; DIRECTION_CELLS]>,
}

/// Resolution of the directional contribution table (radians per step: 2π / 1024).
const DIRECTION_STEPS: usize = 1024;

impl Default for Matcher {
    fn default() -> Self {
        Matcher::new(MccParams::default())
    }
}

/// `a - b` brought into `[-π, π)`.
pub fn angle_difference(a: f32, b: f32) -> f32 {
    let d = a - b;
    // Fast path: both angles within one turn of each other, as they are once normalised.
    if (-PI..PI).contains(&d) {
        return d;
    }
    if (PI..3.0 * PI).contains(&d) {
        return d - 2.0 * PI;
    }
    if (-3.0 * PI..-PI).contains(&d) {
        return d + 2.0 * PI;
    }
    let d = d - (2.0 * PI) * ((d + PI) / (2.0 * PI)).floor();
    if d >= PI { d - 2.0 * PI } else { d }
}

fn distance2(dx: f32, dy: f32) -> f32 {
    dx * dx + dy * dy
}

/// `sigmoid(v, mu, tau)`, or exactly 0 where it is below about 1.2e-7.
fn compatibility(v: f32, (mu, tau): (f32, f32)) -> f32 {
    let x = -tau * (v - mu);
    if x > 16.0 { 0.0 } else { 1.0 / (1.0 + x.exp()) }
}

fn sigmoid(v: f32, mu: f32, tau: f32) -> f32 {
    1.0 / (1.0 + (-tau * (v - mu)).exp())
}

/// Error function, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
fn erf(x: f32) -> f32 {
    let x = f64::from(x);
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    (if x >= 0.0 { y } else { -y }) as f32
}

impl Matcher {
    pub fn new(params: MccParams) -> Self {
        let delta = 2.0 * params.radius / SPATIAL_CELLS as f32;
        let mut cell_offsets = Vec::with_capacity(CELLS);
        let mut disc_cells = 0;
        for j in 0..SPATIAL_CELLS {
            for i in 0..SPATIAL_CELLS {
                let u = (i as f32 + 0.5 - SPATIAL_CELLS as f32 / 2.0) * delta;
                let v = (j as f32 + 0.5 - SPATIAL_CELLS as f32 / 2.0) * delta;
                if (u * u + v * v).sqrt() <= params.radius {
                    disc_cells += 1;
                }
                cell_offsets.push((u, v));
            }
        }
        let sqrt_table = (0..=CELLS * DIRECTION_CELLS)
            .map(|i| (i as f32).sqrt())
            .collect();
        let delta_d = 2.0 * PI / DIRECTION_CELLS as f32;
        let erf_scale = 1.0 / (params.sigma_d * std::f32::consts::SQRT_2);
        let direction_table = (0..DIRECTION_STEPS)
            .map(|step| {
                let relative = step as f32 * (2.0 * PI / DIRECTION_STEPS as f32) - PI;
                let mut bins = [0f32; DIRECTION_CELLS];
                for (k, bin) in bins.iter_mut().enumerate() {
                    // Area of the Gaussian around `relative` that falls in bin k.
                    let centre = -PI + (k as f32 + 0.5) * delta_d;
                    let a = angle_difference(centre, relative);
                    *bin = 0.5
                        * (erf((a + delta_d / 2.0) * erf_scale)
                            - erf((a - delta_d / 2.0) * erf_scale));
                }
                bins
            })
            .collect();
        Matcher {
            params,
            sqrt_table,
            cell_offsets,
            disc_cells,
            direction_table,
        }
    }

    pub fn params(&self) -> &MccParams {
        &self.params
    }

    /// Template of one finger view of a parsed record.
    pub fn template_from_view(&self, record: &FingerRecord, view: &FingerView) -> MccTemplate {
        self.template(&MinutiaPoint::from_view(
            record,
            view,
            self.params.angle_convention,
        ))
    }

    /// Computes the cylinders of a set of minutiae. Points with non-finite values or beyond
    /// [`MAX_COORDINATE`] are ignored,
    /// and only the first [`MAX_MINUTIAE`] are used.
    pub fn template(&self, minutiae: &[MinutiaPoint]) -> MccTemplate {
        let p = &self.params;
        let all: Vec<MinutiaPoint> = minutiae
            .iter()
            .copied()
            .filter(|m| {
                m.x.abs() <= MAX_COORDINATE
                    && m.y.abs() <= MAX_COORDINATE
                    && m.direction.is_finite()
            })
            .take(MAX_MINUTIAE)
            .collect();
        let hull = convex_hull(&all);
        let neighbourhood2 = (p.radius + 3.0 * p.sigma_s).powi(2);
        let radius2 = p.radius * p.radius;
        let reach2 = (3.0 * p.sigma_s).powi(2);
        let gauss_norm = 1.0 / (p.sigma_s * (2.0 * PI).sqrt());

        let mut points = Vec::new();
        let mut values = Vec::new();
        let mut masks = Vec::new();
        for (mi, m) in all.iter().enumerate() {
            let close = all
                .iter()
                .enumerate()
                .filter(|&(ti, t)| ti != mi && distance2(t.x - m.x, t.y - m.y) <= neighbourhood2)
                .count();
            if close < p.min_neighbours {
                continue;
            }
            let (sin, cos) = m.direction.sin_cos();
            let mut mask = [0u64; LAYER_WORDS];
            let mut bits = [0u64; CYLINDER_WORDS];
            let mut valid = 0usize;
            for (cell, &(u, v)) in self.cell_offsets.iter().enumerate() {
                if distance2(u, v) > radius2 {
                    continue;
                }
                let cx = m.x + u * cos - v * sin;
                let cy = m.y + u * sin + v * cos;
                if !hull.contains(cx, cy, p.hull_margin) {
                    continue;
                }
                valid += 1;
                mask[cell / 64] |= 1 << (cell % 64);
                let mut evidence = [0f32; DIRECTION_CELLS];
                for (ti, t) in all.iter().enumerate() {
                    if ti == mi {
                        continue;
                    }
                    let d2 = distance2(t.x - cx, t.y - cy);
                    if d2 > reach2 {
                        continue;
                    }
                    let spatial = gauss_norm * (-d2 / (2.0 * p.sigma_s * p.sigma_s)).exp();
                    let relative = angle_difference(m.direction, t.direction);
                    let step = ((relative + PI) * (DIRECTION_STEPS as f32 / (2.0 * PI))).round();
                    let bins = &self.direction_table[step as usize % DIRECTION_STEPS];
                    for (e, b) in evidence.iter_mut().zip(bins) {
                        *e += spatial * b;
                    }
                }
                for (k, &e) in evidence.iter().enumerate() {
                    if e >= p.bit_threshold {
                        bits[k * LAYER_WORDS + cell / 64] |= 1 << (cell % 64);
                    }
                }
            }
            if (valid as f32) < p.min_valid_cells * self.disc_cells as f32 {
                continue;
            }
            points.push(*m);
            values.push(bits);
            masks.push(mask);
        }
        let n = points.len();
        let mut distance = vec![0f32; n * n];
        let mut radial = vec![0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                let (a, b) = (points[i], points[j]);
                distance[i * n + j] = (b.x - a.x).hypot(b.y - a.y);
                radial[i * n + j] = angle_difference((b.y - a.y).atan2(b.x - a.x), a.direction);
            }
        }
        MccTemplate {
            points,
            values,
            masks,
            distance,
            radial,
            minutia_count: all.len(),
        }
    }

    /// Similarity of two templates in `[0, 1]` (0 when either has no valid cylinder).
    pub fn compare(&self, a: &MccTemplate, b: &MccTemplate) -> f32 {
        let (na, nb) = (a.points.len(), b.points.len());
        if na == 0 || nb == 0 {
            return 0.0;
        }
        let mut local = vec![0f32; na * nb];
        self.local_similarities(a, b, &mut local);
        self.relaxed_score(a, b, &local)
    }

    fn local_similarities(&self, a: &MccTemplate, b: &MccTemplate, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                // SAFETY: the processor has just been checked for both features.
                unsafe { self.local_similarities_avx2(a, b, out) };
                return;
            }
            if std::arch::is_x86_feature_detected!("popcnt") {
                // SAFETY: the processor has just been checked for popcnt.
                unsafe { self.local_similarities_popcnt(a, b, out) };
                return;
            }
        }
        self.local_similarities_generic(a, b, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    fn local_similarities_avx2(&self, a: &MccTemplate, b: &MccTemplate, out: &mut [f32]) {
        self.local_similarities_generic(a, b, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    fn local_similarities_popcnt(&self, a: &MccTemplate, b: &MccTemplate, out: &mut [f32]) {
        self.local_similarities_generic(a, b, out);
    }

    #[inline(always)]
    fn local_similarities_generic(&self, a: &MccTemplate, b: &MccTemplate, out: &mut [f32]) {
        let min_common = (self.params.min_matchable_cells * self.disc_cells as f32).ceil() as u32;
        let nb = b.points.len();
        for (i, (pa, (va, ma))) in a
            .points
            .iter()
            .zip(a.values.iter().zip(a.masks.iter()))
            .enumerate()
        {
            let row = &mut out[i * nb..(i + 1) * nb];
            for (j, (pb, (vb, mb))) in b
                .points
                .iter()
                .zip(b.values.iter().zip(b.masks.iter()))
                .enumerate()
            {
                row[j] = 0.0;
                if angle_difference(pa.direction, pb.direction).abs() > self.params.max_rotation {
                    continue;
                }
                let mut common = [0u64; LAYER_WORDS];
                let mut common_count = 0u32;
                for w in 0..LAYER_WORDS {
                    common[w] = ma[w] & mb[w];
                    common_count = common_count.wrapping_add(common[w].count_ones());
                }
                if common_count < min_common {
                    continue;
                }
                let (mut count_a, mut count_b, mut count_x) = (0u32, 0u32, 0u32);
                // Wrapping adds (at most 1,536 each, so they never wrap) keep the `ci`
                // profile's overflow checks from blocking vectorisation.
                for w in 0..CYLINDER_WORDS {
                    let ca = va[w] & common[w % LAYER_WORDS];
                    let cb = vb[w] & common[w % LAYER_WORDS];
                    count_a = count_a.wrapping_add(ca.count_ones());
                    count_b = count_b.wrapping_add(cb.count_ones());
                    count_x = count_x.wrapping_add((ca ^ cb).count_ones());
                }
                if count_a + count_b == 0 {
                    continue;
                }
                let t = &self.sqrt_table;
                let denominator = t[count_a as usize] + t[count_b as usize];
                row[j] = 1.0 - t[count_x as usize] / denominator;
            }
        }
    }

    /// Number of pairs averaged into the global score for templates of `na` and `nb` cylinders.
    fn pair_count(&self, na: usize, nb: usize) -> usize {
        let p = &self.params;
        let span = p.max_pairs.saturating_sub(p.min_pairs) as f32;
        let z = sigmoid(na.min(nb) as f32, p.pairs_mu, p.pairs_tau);
        p.min_pairs + (z * span).round() as usize
    }

    fn relaxed_score(&self, a: &MccTemplate, b: &MccTemplate, local: &[f32]) -> f32 {
        let p = &self.params;
        let (na, nb) = (a.points.len(), b.points.len());
        // Candidate pairs as sortable keys: the score's bits (positive floats order like their
        // bits) above the index into `local`.
        let mut keys: Vec<u64> = local
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s > 0.0)
            .map(|(idx, &s)| (u64::from(s.to_bits()) << 32) | idx as u64)
            .collect();
        if keys.is_empty() {
            return 0.0;
        }
        keys.sort_unstable();
        // Greedy one-to-one assignment, best first: each minutia takes part in at most one
        // pair. A fast stand-in for the paper's Hungarian LSA: on FVC2002 DB1..DB4 it beat
        // plain LSS selection by 0.3 to 0.7 points of EER on DB1..DB3 and matched or beat an
        // exact Hungarian assignment on every database, with the paper's parameters (2.13 /
        // 1.23 / 6.06 / 1.50 %) and with the defaults (1.78 / 1.43 / 6.06 / 1.43 %).
        let mut used_a = vec![false; na];
        let mut used_b = vec![false; nb];
        let mut pairs: Vec<(f32, usize, usize)> = Vec::with_capacity(na.min(nb));
        for &key in keys.iter().rev() {
            let idx = (key & u64::from(u32::MAX)) as usize;
            let (i, j) = (idx / nb, idx % nb);
            if used_a[i] || used_b[j] {
                continue;
            }
            used_a[i] = true;
            used_b[j] = true;
            pairs.push((local[idx], i, j));
            if pairs.len() == na.min(nb) {
                break;
            }
        }
        let n = pairs.len();
        let initial: Vec<f32> = pairs.iter().map(|x| x.0).collect();
        let mut lambda = initial.clone();
        if n > 1 && p.relaxation_rounds > 0 {
            // Compatibility of pair t with pair k (symmetric).
            let mut rho = vec![0f32; n * n];
            for t in 0..n {
                let (at, bt) = (pairs[t].1, pairs[t].2);
                for k in t + 1..n {
                    let (ak, bk) = (pairs[k].1, pairs[k].2);
                    // Factors below 1.2e-7 count as 0, which skips the other two.
                    let d1 = (a.distance[at * na + ak] - b.distance[bt * nb + bk]).abs();
                    let mut r = compatibility(d1, p.compat_distance);
                    if r > 0.0 {
                        let d2 = angle_difference(
                            angle_difference(a.points[at].direction, a.points[ak].direction),
                            angle_difference(b.points[bt].direction, b.points[bk].direction),
                        )
                        .abs();
                        r *= compatibility(d2, p.compat_direction);
                    }
                    if r > 0.0 {
                        let d3 =
                            angle_difference(a.radial[at * na + ak], b.radial[bt * nb + bk]).abs();
                        r *= compatibility(d3, p.compat_radial);
                    }
                    rho[t * n + k] = r;
                    rho[k * n + t] = r;
                }
            }
            let w = p.relaxation_weight;
            let mut next = vec![0f32; n];
            for _ in 0..p.relaxation_rounds {
                for t in 0..n {
                    let support: f32 = rho[t * n..(t + 1) * n]
                        .iter()
                        .zip(&lambda)
                        .map(|(r, l)| r * l)
                        .sum();
                    next[t] = w * lambda[t] + (1.0 - w) * support / (n - 1) as f32;
                }
                std::mem::swap(&mut lambda, &mut next);
            }
        }
        // The nP pairs whose similarity held up best through relaxation.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by(|&x, &y| {
            (lambda[y] / initial[y]).total_cmp(&(lambda[x] / initial[x]))
        });
        let take = self.pair_count(na, nb).min(n).max(1);
        let sum: f32 = order[..take].iter().map(|&t| lambda[t]).sum();
        let score = sum / take as f32;
        if score.is_nan() {
            0.0
        } else {
            score.clamp(0.0, 1.0)
        }
    }
}

/// Convex hull of the minutiae, for the cell validity test.
struct Hull {
    /// Counter-clockwise vertices (in a y-up sense; orientation only has to be consistent).
    vertices: Vec<(f32, f32)>,
}

fn convex_hull(points: &[MinutiaPoint]) -> Hull {
    let mut pts: Vec<(f32, f32)> = points.iter().map(|m| (m.x, m.y)).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pts.dedup();
    if pts.len() < 3 {
        return Hull { vertices: pts };
    }
    let cross = |o: (f32, f32), a: (f32, f32), b: (f32, f32)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(f32, f32)> = Vec::with_capacity(2 * pts.len());
    for &p in pts.iter().chain(pts.iter().rev().skip(1)) {
        // Lower hull on the way out, upper hull on the way back (monotone chain).
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    hull.pop();
    Hull { vertices: hull }
}

impl Hull {
    /// Whether `(x, y)` is inside the hull or within `margin` of it.
    fn contains(&self, x: f32, y: f32, margin: f32) -> bool {
        let v = &self.vertices;
        match v.len() {
            0 => return false,
            1 => return (x - v[0].0).hypot(y - v[0].1) <= margin,
            _ => {}
        }
        if v.len() >= 3 {
            let inside = (0..v.len()).all(|i| {
                let (a, b) = (v[i], v[(i + 1) % v.len()]);
                (b.0 - a.0) * (y - a.1) - (b.1 - a.1) * (x - a.0) >= 0.0
            });
            if inside {
                return true;
            }
        }
        (0..v.len()).any(|i| segment_distance(v[i], v[(i + 1) % v.len()], (x, y)) <= margin)
    }
}

fn segment_distance(a: (f32, f32), b: (f32, f32), p: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (p.0 - (a.0 + t * dx)).hypot(p.1 - (a.1 + t * dy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn angle_difference_wraps() {
        assert!((angle_difference(0.1, 2.0 * PI - 0.1) - 0.2).abs() < 1e-5);
        assert!((angle_difference(2.0 * PI - 0.1, 0.1) + 0.2).abs() < 1e-5);
        assert!(angle_difference(PI, 0.0) < PI + 1e-6);
    }

    #[test]
    fn erf_matches_known_values() {
        assert!((erf(0.5) - 0.520_499_9).abs() < 1e-6);
        assert!((erf(-1.0) + 0.842_700_8).abs() < 1e-6);
    }

    fn grid(offset: (f32, f32), rotation: f32) -> Vec<MinutiaPoint> {
        // A deterministic scatter of 30 minutiae, optionally moved and rotated.
        let (s, c) = rotation.sin_cos();
        (0..30)
            .map(|i| {
                let x = 60.0 + ((i * 37) % 180) as f32;
                let y = 60.0 + ((i * 53) % 260) as f32;
                let d = (i as f32 * 1.3) % (2.0 * PI);
                let (x, y) = (x - 150.0, y - 200.0);
                MinutiaPoint {
                    x: 150.0 + offset.0 + c * x - s * y,
                    y: 200.0 + offset.1 + s * x + c * y,
                    direction: (d + rotation).rem_euclid(2.0 * PI),
                }
            })
            .collect()
    }

    #[test]
    fn rotated_copy_scores_high_and_unrelated_scores_low() {
        let m = Matcher::default();
        let a = m.template(&grid((0.0, 0.0), 0.0));
        let b = m.template(&grid((12.0, -7.0), 0.3));
        assert!(a.cylinder_count() > 10);
        let same = m.compare(&a, &a);
        let moved = m.compare(&a, &b);
        assert!(same > 0.95, "self score {same}");
        assert!(moved > 0.6, "rotated copy score {moved}");
        let other: Vec<MinutiaPoint> = grid((0.0, 0.0), 0.0)
            .into_iter()
            .enumerate()
            .map(|(i, p)| MinutiaPoint {
                direction: (p.direction + i as f32 * 2.1).rem_euclid(2.0 * PI),
                ..p
            })
            .collect();
        let c = m.template(&other);
        let different = m.compare(&a, &c);
        assert!(different < moved / 2.0, "{different} vs {moved}");
    }

    #[test]
    fn every_popcount_path_gives_the_same_similarities() {
        let m = Matcher::default();
        let a = m.template(&grid((0.0, 0.0), 0.0));
        let b = m.template(&grid((9.0, 4.0), -0.4));
        let n = a.cylinder_count() * b.cylinder_count();
        let (mut fast, mut plain) = (vec![0f32; n], vec![0f32; n]);
        m.local_similarities(&a, &b, &mut fast);
        m.local_similarities_generic(&a, &b, &mut plain);
        assert_eq!(fast, plain);
        assert!(plain.iter().any(|&s| s > 0.5));
    }

    #[test]
    fn random_minutiae_give_scores_in_range() {
        let mut state = 7u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let m = Matcher::default();
        let specials = [f32::NAN, f32::INFINITY, -1e30, 1e30, 0.0, -5.0, 16383.0];
        let mut templates = Vec::new();
        for round in 0..40 {
            let count = (next() % 90) as usize;
            let points: Vec<MinutiaPoint> = (0..count)
                .map(|_| {
                    let mut v = [0f32; 3];
                    for x in &mut v {
                        *x = if round % 4 == 0 && next() % 10 == 0 {
                            specials[(next() % specials.len() as u64) as usize]
                        } else {
                            (next() % 400) as f32 + 0.5
                        };
                    }
                    MinutiaPoint {
                        x: v[0],
                        y: v[1],
                        direction: v[2] / 60.0,
                    }
                })
                .collect();
            templates.push(m.template(&points));
        }
        for a in &templates {
            for b in &templates {
                let s = m.compare(a, b);
                assert!((0.0..=1.0).contains(&s), "{s}");
            }
        }
    }

    #[test]
    fn empty_and_degenerate_inputs_score_zero() {
        let m = Matcher::default();
        let empty = m.template(&[]);
        let one = m.template(&[MinutiaPoint {
            x: 1.0,
            y: 1.0,
            direction: 0.0,
        }]);
        let nan = m.template(&[MinutiaPoint {
            x: f32::NAN,
            y: 1.0,
            direction: 0.0,
        }]);
        let a = m.template(&grid((0.0, 0.0), 0.0));
        for t in [&empty, &one, &nan] {
            assert_eq!(t.cylinder_count(), 0);
            assert_eq!(m.compare(t, &a), 0.0);
            assert_eq!(m.compare(&a, t), 0.0);
        }
    }
}
