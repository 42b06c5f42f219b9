//! The int4 pre-filter of the exact [`Gallery`](super::Gallery) scan: a 4-bit copy of every
//! int8 row and a bound on what the 4 bits lose, so that most rows are ruled out after
//! reading half their bytes, and only the others are scored exactly (from the int8 row).
//!
//! # The bound
//!
//! Each value `x_i` of a row (int8, -128..=127) is kept as `x4_i = clamp(round(x_i / 17),
//! -8, 7)`, leaving the residual `r_i = x_i - 17·x4_i`. For every int8 value
//! `|x_i / 17 - round(x_i / 17)| <= 1/2`, so `|r_i| <= 8.5`, an integer, so `|r_i| <= 8`
//! (and the clamp never binds: `round(-128 / 17)` is -8, `round(127 / 17)` is 7). The row
//! keeps `R = ceil(sqrt(Σ r_i²))`, so the residual vector's norm `|r| <= R`.
//!
//! For a probe `q` (int8), with integers throughout:
//!
//! `<q, x> = 17·<q, x4> + <q, r> <= 17·<q, x4> + |q|·|r| <= 17·<q, x4> + reach(R) = U`
//!
//! by Cauchy–Schwarz, where `reach(R) = ceil(sqrt(Σ q² · R²))` is the smallest integer at
//! least `|q|·R`, computed per probe in exact integer arithmetic ([`ceil_sqrt`]).
//!
//! The exact score is `score_from_dot(<q, x>, 1/|q|, 1/|x|)`: an `i32 -> f32` conversion
//! and two multiplications by non-negative numbers, each rounded to nearest. Rounding to
//! nearest is monotone (`a <= b` gives `round(a) <= round(b)`) and so is multiplying by a
//! non-negative number, so `<q, x> <= U` gives `score_from_dot(<q, x>, ..) <=
//! score_from_dot(U, ..)`, with the same two inverse norms, in that order. A row whose
//! `score_from_dot(U, ..)` is below the threshold therefore has an exact score below it:
//! skipping it loses nothing, with no epsilon, and the scores reported are the exact
//! ones. The comparison is `>=` as in the exact scan, so a row exactly at the threshold
//! is re-checked and kept; a NaN threshold rules out every row, as it does there.
//!
//! No overflow: for dimension `d <= 65,536`, `|17·<q, x4>| <= 17 · 128 · 8 · d < 1.2e9`,
//! `reach <= 128·√d · 8·√d = 1,024·d < 6.8e7`, the unsigned nibble sum `<= 15 · 128 · d`:
//! all within `i32`. In the AVX2 kernel `vpmaddubsw` adds two products of a nibble (0..=15)
//! and an int8 (at most 15 · 128 = 1,920 each): 3,840 at most, and eight of those summed
//! in `i16` lanes (30,720) before widening to `i32`, so it never saturates.
//!
//! # Layout
//!
//! Rows are stored in blocks of [`LANES`] (8), interleaved so that one 32-byte load holds 8
//! dimensions of each of the 8 rows and the kernel needs no horizontal sum: in block `b`,
//! chunk `c` (dimensions `8c..8c+8`), the 4 bytes of lane `j` hold dimensions `8c + k` in
//! their low nibbles and `8c + 4 + k` in their high ones, `k` in 0..4, each stored offset
//! to unsigned (`x4 + 8`, 0..=15). Dimensions past the model's (to a multiple of 8) and the
//! lanes of rows not (or no longer) in the gallery hold `x4 = 0`. The offset is taken back
//! once per row as `8 · Σ q`. 128-d: 64 bytes a row, plus 2 for `R`.

use std::ops::Range;

/// Rows per block.
pub(crate) const LANES: usize = 8;

/// What a scan does with the rows the bound cannot rule out.
pub(crate) trait Visit {
    /// The score a row must be able to reach to be visited. Read once per block (or pair
    /// of blocks): if visiting raises it, the rest of the block is held to the older, lower
    /// one, which only visits more.
    fn threshold(&self) -> f32;
    fn row(&mut self, row: usize);
}

/// Whether the processor has AVX-512 VNNI (with VL, for 256-bit vectors): the scan of
/// dimensions other than 128 then uses `vpdpbusd`.
#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// Visits the rows of `block` set in `mask`, lowest first.
#[inline(always)]
fn visit_mask(block: usize, mut mask: u32, visit: &mut impl Visit) {
    while mask != 0 {
        visit.row(block * LANES + mask.trailing_zeros() as usize);
        mask &= mask - 1;
    }
}

/// The int8 step of one int4 unit.
const STEP: i32 = 17;

/// A byte holding two stored nibbles of value 0 (`x4 = 0`, stored as 8).
const ZERO_PAIR: u8 = 0x88;

/// `ceil(sqrt(n))`, exactly.
pub(crate) fn ceil_sqrt(n: u64) -> u64 {
    // The float root is within one of the answer for n < 2^64; fix it in integers.
    let mut s = (n as f64).sqrt() as u64;
    while s.checked_mul(s).is_some_and(|sq| sq < n) {
        s += 1;
    }
    while s > 0 && (s - 1) * (s - 1) >= n {
        s -= 1;
    }
    s
}

/// `round(x / 17)` (never a tie: `x / 17` is not a half for any integer `x`), clamped.
fn quarter(x: i8) -> i32 {
    (2 * i32::from(x) + STEP).div_euclid(2 * STEP).clamp(-8, 7)
}

/// The 4-bit rows, in blocks, and each row's residual bound `R`.
#[derive(Debug, Clone)]
pub(crate) struct Coarse {
    chunks: usize,
    bytes: Vec<u8>,
    residuals: Vec<u16>,
}

/// A probe made ready for the 4-bit scan: its values packed as the kernel reads them, the
/// nibble offset and the `reach` table.
pub(crate) struct CoarseProbe {
    /// Per chunk, probe values `8c..8c+4` as the four bytes of an `i32` (0 past the end).
    low: Vec<i32>,
    /// Per chunk, probe values `8c+4..8c+8`.
    high: Vec<i32>,
    /// `8 · Σ q`: what the stored offset adds to `<q, x4 + 8>`.
    offset: i32,
    /// `reach[R] = ceil(|q| · R)`, for every `R` a row of this dimension can have.
    reach: Vec<i32>,
    inverse: f32,
}

impl Coarse {
    pub fn new(dimension: usize) -> Self {
        Coarse {
            chunks: dimension.div_ceil(8),
            bytes: Vec::new(),
            residuals: Vec::new(),
        }
    }

    pub fn block_bytes(&self) -> usize {
        self.chunks * 32
    }

    pub fn len(&self) -> usize {
        self.residuals.len()
    }

    pub fn blocks(&self) -> usize {
        self.len().div_ceil(LANES)
    }

    pub fn memory_bytes(&self) -> usize {
        self.bytes.capacity() + self.residuals.capacity() * std::mem::size_of::<u16>()
    }

    /// The largest `R` any row of this dimension can have: `ceil(sqrt(64 · d))`.
    fn largest_residual(&self) -> usize {
        ceil_sqrt(64 * 8 * self.chunks as u64) as usize
    }

    /// Appends a row (its int8 values).
    pub fn push(&mut self, values: &[i8]) {
        let row = self.len();
        if row.is_multiple_of(LANES) {
            self.bytes
                .resize(self.bytes.len() + self.block_bytes(), ZERO_PAIR);
        }
        self.residuals.push(0);
        self.set(row, values);
    }

    /// Overwrites row `row` (< len) with new int8 values.
    pub fn set(&mut self, row: usize, values: &[i8]) {
        let mut squares = 0u64;
        let mut packed = vec![ZERO_PAIR; self.chunks * 4];
        for (d, &x) in values.iter().enumerate().take(self.chunks * 8) {
            let q = quarter(x);
            let r = i64::from(x) - i64::from(STEP * q);
            squares += (r * r) as u64;
            let nibble = (q + 8) as u8;
            let (byte, shift) = ((d / 8) * 4 + d % 4, if d % 8 < 4 { 0 } else { 4 });
            packed[byte] = (packed[byte] & !(0x0f << shift)) | (nibble << shift);
        }
        self.write_lanes(row, &packed);
        // At most sqrt(64 · 65,536) = 2,048.
        self.residuals[row] = u16::try_from(ceil_sqrt(squares)).unwrap_or(u16::MAX);
    }

    fn write_lanes(&mut self, row: usize, packed: &[u8]) {
        let base = (row / LANES) * self.block_bytes() + (row % LANES) * 4;
        for (c, four) in packed.chunks_exact(4).enumerate() {
            self.bytes[base + c * 32..base + c * 32 + 4].copy_from_slice(four);
        }
    }

    fn read_lanes(&self, row: usize) -> Vec<u8> {
        let base = (row / LANES) * self.block_bytes() + (row % LANES) * 4;
        (0..self.chunks)
            .flat_map(|c| self.bytes[base + c * 32..base + c * 32 + 4].iter().copied())
            .collect()
    }

    /// Moves the last row into `row` and drops the last (as the gallery's swap-remove).
    pub fn swap_remove(&mut self, row: usize) {
        let last = self.len() - 1;
        if row != last {
            let moved = self.read_lanes(last);
            self.write_lanes(row, &moved);
        }
        self.write_lanes(last, &vec![ZERO_PAIR; self.chunks * 4]);
        self.residuals.swap_remove(row);
        self.bytes.truncate(self.blocks() * self.block_bytes());
    }

    /// Readies `values` (int8, of this dimension) with inverse norm `inverse` for a scan.
    pub fn probe(&self, values: &[i8], inverse: f32) -> CoarseProbe {
        let byte = |d: usize| values.get(d).map_or(0, |&v| v as u8);
        let pack = |d: usize| i32::from_le_bytes([byte(d), byte(d + 1), byte(d + 2), byte(d + 3)]);
        let low = (0..self.chunks).map(|c| pack(8 * c)).collect();
        let high = (0..self.chunks).map(|c| pack(8 * c + 4)).collect();
        let sum: i32 = values.iter().map(|&v| i32::from(v)).sum();
        let squares: u64 = values
            .iter()
            .map(|&v| (i64::from(v) * i64::from(v)) as u64)
            .sum();
        let reach = (0..=self.largest_residual() as u64)
            .map(|r| i32::try_from(ceil_sqrt(squares * r * r)).unwrap_or(i32::MAX))
            .collect();
        CoarseProbe {
            low,
            high,
            offset: 8 * sum,
            reach,
            inverse,
        }
    }

    /// The bound `U` of each lane of block `block` (lanes past the last row: meaningless).
    pub fn bounds(&self, block: usize, probe: &CoarseProbe) -> [i32; LANES] {
        let base = &self.bytes[block * self.block_bytes()..(block + 1) * self.block_bytes()];
        let mut sums = [0i32; LANES];
        for (c, chunk) in base.chunks_exact(32).enumerate() {
            let (low, high) = (probe.low[c].to_le_bytes(), probe.high[c].to_le_bytes());
            for (lane, sum) in sums.iter_mut().enumerate() {
                for k in 0..4 {
                    let b = chunk[lane * 4 + k];
                    *sum += i32::from(b & 0x0f) * i32::from(low[k] as i8)
                        + i32::from(b >> 4) * i32::from(high[k] as i8);
                }
            }
        }
        let mut out = [0i32; LANES];
        for (lane, (o, sum)) in out.iter_mut().zip(sums).enumerate() {
            let r = self
                .residuals
                .get(block * LANES + lane)
                .map_or(0, |&r| usize::from(r));
            *o = STEP * (sum - probe.offset) + probe.reach[r.min(probe.reach.len() - 1)];
        }
        out
    }

    /// Rows of block `block` whose bound reaches `threshold` (bit `j` for lane `j`), given
    /// the rows' inverse norms (`inverse_norms[row]`); rows past the last are never set.
    pub fn candidates(
        &self,
        block: usize,
        probe: &CoarseProbe,
        inverse_norms: &[f32],
        threshold: f32,
    ) -> u32 {
        let bounds = self.bounds(block, probe);
        let mut mask = 0;
        for (lane, &u) in bounds.iter().enumerate() {
            let row = block * LANES + lane;
            if row < self.len()
                && let Some(&inverse) = inverse_norms.get(row)
                && crate::face::score_from_dot(u, probe.inverse, inverse) >= threshold
            {
                mask |= 1 << lane;
            }
        }
        mask
    }

    /// [`bounds`](Self::bounds) with AVX2, for a whole block (`block < len / LANES`), any
    /// dimension.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    fn bounds_avx2(&self, block: usize, probe: &CoarseProbe) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        assert!(block < self.len() / LANES && probe.low.len() == self.chunks);
        let nibble = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let base = self.bytes[block * self.block_bytes()..].as_ptr();
        let mut sums = _mm256_setzero_si256();
        let mut c = 0;
        while c < self.chunks {
            // Up to 8 `vpmaddubsw` results (≤ 3,840 each) summed in i16 lanes: ≤ 30,720.
            let end = (c + 4).min(self.chunks);
            let mut pairs = _mm256_setzero_si256();
            while c < end {
                // SAFETY: `block` is a whole block (asserted), whose bytes are
                // `chunks * 32` from `base`; `c < chunks`. Unaligned load.
                let v = unsafe { _mm256_loadu_si256(base.add(c * 32).cast::<__m256i>()) };
                let low = _mm256_and_si256(v, nibble);
                let high = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
                pairs = _mm256_add_epi16(
                    pairs,
                    _mm256_maddubs_epi16(low, _mm256_set1_epi32(probe.low[c])),
                );
                pairs = _mm256_add_epi16(
                    pairs,
                    _mm256_maddubs_epi16(high, _mm256_set1_epi32(probe.high[c])),
                );
                c += 1;
            }
            sums = _mm256_add_epi32(sums, _mm256_madd_epi16(pairs, ones));
        }
        self.finish_avx2(block, sums, probe)
    }

    /// The candidate bits of whole block `block` from its bounds `U`: the scalar
    /// `score_from_dot`, lane by lane (convert, round to nearest; × the probe's inverse
    /// norm, rounded; × the row's, rounded; no fused multiply-add), compared with `>=`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    fn reached_avx2(
        block: usize,
        bounds: std::arch::x86_64::__m256i,
        probe: &CoarseProbe,
        inverse_norms: &[f32],
        threshold: f32,
    ) -> u32 {
        use std::arch::x86_64::*;
        let rows = &inverse_norms[block * LANES..block * LANES + LANES];
        let scores = _mm256_mul_ps(
            _mm256_mul_ps(_mm256_cvtepi32_ps(bounds), _mm256_set1_ps(probe.inverse)),
            // SAFETY: `rows` holds 8 floats. Unaligned load.
            unsafe { _mm256_loadu_ps(rows.as_ptr()) },
        );
        let reached = _mm256_cmp_ps::<_CMP_GE_OQ>(scores, _mm256_set1_ps(threshold));
        _mm256_movemask_ps(reached) as u32
    }

    /// `U` from the nibble sums of a whole block: `17 · (sums - offset) + reach[R]`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    fn finish_avx2(
        &self,
        block: usize,
        sums: std::arch::x86_64::__m256i,
        probe: &CoarseProbe,
    ) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let residuals = &self.residuals[block * LANES..block * LANES + LANES];
        let centred = _mm256_sub_epi32(sums, _mm256_set1_epi32(probe.offset));
        let scaled = _mm256_add_epi32(_mm256_slli_epi32::<4>(centred), centred); // × 17
        // SAFETY: `residuals` holds 8 u16 (16 bytes). Unaligned load.
        let r = unsafe { _mm_loadu_si128(residuals.as_ptr().cast::<__m128i>()) };
        let largest = _mm256_set1_epi32(probe.reach.len() as i32 - 1);
        // Never binds (every R is at most the table's last index); keeps the gather in bounds.
        let index = _mm256_min_epu32(_mm256_cvtepu16_epi32(r), largest);
        // SAFETY: every index is in 0..reach.len() (clamped above); 4-byte elements.
        let reach = unsafe { _mm256_i32gather_epi32::<4>(probe.reach.as_ptr(), index) };
        _mm256_add_epi32(scaled, reach)
    }

    /// The nibble sums of whole blocks `block` and `block + 1` of a 128-d gallery (16
    /// chunks), unrolled, each probe vector loaded once for both blocks.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    fn pair_sums_128(
        &self,
        block: usize,
        q: &[std::arch::x86_64::__m256i; 32],
    ) -> [std::arch::x86_64::__m256i; 2] {
        use std::arch::x86_64::*;
        const BLOCK: usize = 16 * 32;
        let bytes = &self.bytes[block * BLOCK..(block + 2) * BLOCK];
        let base = bytes.as_ptr();
        let nibble = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let mut sums = [_mm256_setzero_si256(); 2];
        for group in 0..4 {
            // 8 `vpmaddubsw` results (≤ 3,840 each) per i16 lane: ≤ 30,720.
            let mut pairs = [_mm256_setzero_si256(); 2];
            for c in group * 4..group * 4 + 4 {
                for (b, pair) in pairs.iter_mut().enumerate() {
                    // SAFETY: `b * BLOCK + c * 32 + 32 <= 2 * BLOCK = bytes.len()`.
                    let v = unsafe {
                        _mm256_loadu_si256(base.add(b * BLOCK + c * 32).cast::<__m256i>())
                    };
                    let low = _mm256_and_si256(v, nibble);
                    let high = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
                    *pair = _mm256_add_epi16(*pair, _mm256_maddubs_epi16(low, q[2 * c]));
                    *pair = _mm256_add_epi16(*pair, _mm256_maddubs_epi16(high, q[2 * c + 1]));
                }
            }
            for (sum, pair) in sums.iter_mut().zip(pairs) {
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pair, ones));
            }
        }
        sums
    }

    /// The nibble sums of whole blocks `block` and `block + 1`, of any dimension, with
    /// AVX-512 VNNI: `vpdpbusd` multiplies the nibbles (unsigned) by the probe's int8
    /// values and adds each lane's four products into its i32 sum, exactly (no i16 step to
    /// bound), and each probe vector is loaded once for both blocks. Sums up to `15 · 128 ·
    /// d` fit an i32 (module comment).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    #[inline]
    fn pair_sums_vnni(&self, block: usize, probe: &CoarseProbe) -> [std::arch::x86_64::__m256i; 2] {
        use std::arch::x86_64::*;
        let block_bytes = self.block_bytes();
        let bytes = &self.bytes[block * block_bytes..(block + 2) * block_bytes];
        assert!(probe.low.len() == self.chunks && probe.high.len() == self.chunks);
        let base = bytes.as_ptr();
        let nibble = _mm256_set1_epi8(0x0f);
        let mut low_sums = [_mm256_setzero_si256(); 2];
        let mut high_sums = [_mm256_setzero_si256(); 2];
        for c in 0..self.chunks {
            let low_q = _mm256_set1_epi32(probe.low[c]);
            let high_q = _mm256_set1_epi32(probe.high[c]);
            for b in 0..2 {
                // SAFETY: `b * block_bytes + c * 32 + 32 <= 2 * block_bytes = bytes.len()`.
                let v = unsafe {
                    _mm256_loadu_si256(base.add(b * block_bytes + c * 32).cast::<__m256i>())
                };
                let low = _mm256_and_si256(v, nibble);
                let high = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
                low_sums[b] = _mm256_dpbusd_epi32(low_sums[b], low, low_q);
                high_sums[b] = _mm256_dpbusd_epi32(high_sums[b], high, high_q);
            }
        }
        [
            _mm256_add_epi32(low_sums[0], high_sums[0]),
            _mm256_add_epi32(low_sums[1], high_sums[1]),
        ]
    }

    /// Visits the rows of whole blocks `block` and `block + 1` whose bound, from their nibble
    /// sums, reaches the visitor's threshold (read once for the pair).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    fn visit_pair_avx2(
        &self,
        block: usize,
        sums: [std::arch::x86_64::__m256i; 2],
        probe: &CoarseProbe,
        inverse_norms: &[f32],
        visit: &mut impl Visit,
    ) {
        let threshold = visit.threshold();
        let [s0, s1] = sums;
        let u0 = self.finish_avx2(block, s0, probe);
        let u1 = self.finish_avx2(block + 1, s1, probe);
        let m0 = Self::reached_avx2(block, u0, probe, inverse_norms, threshold);
        let m1 = Self::reached_avx2(block + 1, u1, probe, inverse_norms, threshold);
        visit_mask(block, m0, visit);
        visit_mask(block + 1, m1, visit);
    }

    /// Visits the rows of blocks `blocks` whose bound reaches the threshold, portably.
    pub fn scan_portable(
        &self,
        blocks: Range<usize>,
        probe: &CoarseProbe,
        inverse_norms: &[f32],
        visit: &mut impl Visit,
    ) {
        for block in blocks {
            let mask = self.candidates(block, probe, inverse_norms, visit.threshold());
            visit_mask(block, mask, visit);
        }
    }

    /// [`scan_portable`](Self::scan_portable) with AVX2: the same rows, in the same order,
    /// for the same thresholds.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    pub fn scan_avx2(
        &self,
        blocks: Range<usize>,
        probe: &CoarseProbe,
        inverse_norms: &[f32],
        visit: &mut impl Visit,
    ) {
        use std::arch::x86_64::*;
        let whole = blocks.end.min(self.len() / LANES);
        let mut block = blocks.start;
        if self.chunks == 16 && probe.low.len() == 16 {
            let mut q = [_mm256_setzero_si256(); 32];
            for c in 0..16 {
                q[2 * c] = _mm256_set1_epi32(probe.low[c]);
                q[2 * c + 1] = _mm256_set1_epi32(probe.high[c]);
            }
            while block + 2 <= whole {
                // The pair 8 blocks (4 KiB) ahead: on this shared machine the scan ran at
                // 3 ms with it and 4-9 ms without (the hardware prefetcher alone).
                let ahead = self.bytes.as_ptr().wrapping_add((block + 8) * 512);
                for line in 0..16 {
                    // A prefetch never faults, even past the end of the array.
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line * 64).cast::<i8>());
                }
                let sums = self.pair_sums_128(block, &q);
                self.visit_pair_avx2(block, sums, probe, inverse_norms, visit);
                block += 2;
            }
        }
        if vnni() {
            while block + 2 <= whole {
                // SAFETY: AVX-512 VNNI and VL were just detected.
                let sums = unsafe { self.pair_sums_vnni(block, probe) };
                self.visit_pair_avx2(block, sums, probe, inverse_norms, visit);
                block += 2;
            }
        }
        while block < whole {
            let bounds = self.bounds_avx2(block, probe);
            let threshold = visit.threshold();
            let mask = Self::reached_avx2(block, bounds, probe, inverse_norms, threshold);
            visit_mask(block, mask, visit);
            block += 1;
        }
        for block in block..blocks.end {
            let mask = self.candidates(block, probe, inverse_norms, visit.threshold());
            visit_mask(block, mask, visit);
        }
    }

    /// The VNNI bounds of whole blocks `block` and `block + 1`, as arrays (for the tests).
    #[cfg(all(test, target_arch = "x86_64"))]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub fn pair_bounds_vnni_array(&self, block: usize, probe: &CoarseProbe) -> [[i32; LANES]; 2] {
        let sums = self.pair_sums_vnni(block, probe);
        let mut out = [[0i32; LANES]; 2];
        for (b, (out, sums)) in out.iter_mut().zip(sums).enumerate() {
            let v = self.finish_avx2(block + b, sums, probe);
            // SAFETY: `out` is 32 bytes, as the vector. Unaligned store.
            unsafe { std::arch::x86_64::_mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
        }
        out
    }

    /// The AVX2 bounds of a whole block, as an array (for the tests).
    #[cfg(all(test, target_arch = "x86_64"))]
    #[target_feature(enable = "avx2")]
    pub fn bounds_avx2_array(&self, block: usize, probe: &CoarseProbe) -> [i32; LANES] {
        let v = self.bounds_avx2(block, probe);
        let mut out = [0i32; LANES];
        // SAFETY: `out` is 32 bytes, as the vector. Unaligned store.
        unsafe { std::arch::x86_64::_mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_sqrt_is_exact() {
        for n in 0..10_000u64 {
            let s = ceil_sqrt(n);
            assert!(s * s >= n && (s == 0 || (s - 1) * (s - 1) < n), "{n}");
        }
        for s in [1u64 << 20, (1 << 26) - 1, 3_037_000_499] {
            assert_eq!(ceil_sqrt(s * s), s);
            assert_eq!(ceil_sqrt(s * s + 1), s + 1);
            assert_eq!(ceil_sqrt(s * s - 1), s);
        }
    }

    #[test]
    fn every_int8_value_is_within_8_of_its_quarter() {
        for x in i8::MIN..=i8::MAX {
            let q = quarter(x);
            let exact = (f64::from(x) / 17.0).round() as i32;
            assert_eq!(q, exact, "{x}");
            assert!((i32::from(x) - 17 * q).abs() <= 8, "{x}");
        }
    }

    fn rows(dimension: usize, count: usize, seed: u64) -> Vec<Vec<i8>> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8 as i8
        };
        (0..count)
            .map(|i| match i % 5 {
                0 => vec![i8::MIN; dimension],
                1 => vec![i8::MAX; dimension],
                _ => (0..dimension).map(|_| next()).collect(),
            })
            .collect()
    }

    fn dot(a: &[i8], b: &[i8]) -> i32 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum()
    }

    /// Records the rows visited at a fixed threshold.
    struct Recorder(f32, Vec<usize>);

    impl Visit for Recorder {
        fn threshold(&self) -> f32 {
            self.0
        }
        fn row(&mut self, row: usize) {
            self.1.push(row);
        }
    }

    #[test]
    fn the_bound_is_at_least_the_dot_and_avx2_agrees() {
        for dimension in [1, 7, 8, 9, 33, 128, 200] {
            let rows = rows(dimension, 61, dimension as u64);
            let mut coarse = Coarse::new(dimension);
            for r in &rows {
                coarse.push(r);
            }
            let inverse: Vec<f32> = rows
                .iter()
                .map(|r| 1.0 / (dot(r, r).max(1) as f32).sqrt())
                .collect();
            for probe in rows.iter().take(12) {
                let p = coarse.probe(probe, 0.01);
                for block in 0..coarse.blocks() {
                    let bounds = coarse.bounds(block, &p);
                    for (lane, &u) in bounds.iter().enumerate() {
                        if let Some(row) = rows.get(block * LANES + lane) {
                            assert!(dot(probe, row) <= u, "dimension {dimension}");
                        }
                    }
                    #[cfg(target_arch = "x86_64")]
                    if std::arch::is_x86_feature_detected!("avx2") && block < coarse.len() / LANES {
                        // SAFETY: AVX2 just detected.
                        let fast = unsafe { coarse.bounds_avx2_array(block, &p) };
                        assert_eq!(fast, bounds);
                    }
                    #[cfg(target_arch = "x86_64")]
                    if vnni() && block + 1 < coarse.len() / LANES {
                        // SAFETY: AVX-512 VNNI and VL just detected.
                        let [fast, next] = unsafe { coarse.pair_bounds_vnni_array(block, &p) };
                        assert_eq!(fast, bounds);
                        assert_eq!(next, coarse.bounds(block + 1, &p));
                    }
                }
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let blocks = coarse.blocks();
                    for range in [0..blocks, 1..blocks, 0..blocks.saturating_sub(1), 3..4] {
                        for t in [f32::NEG_INFINITY, -1.0, 0.0, 0.3, 0.5, 1.0, f32::NAN] {
                            let mut slow = Recorder(t, Vec::new());
                            coarse.scan_portable(range.clone(), &p, &inverse, &mut slow);
                            let mut fast = Recorder(t, Vec::new());
                            // SAFETY: AVX2 just detected.
                            unsafe { coarse.scan_avx2(range.clone(), &p, &inverse, &mut fast) };
                            assert_eq!(fast.1, slow.1, "dimension {dimension} {range:?} {t}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn swap_remove_keeps_the_rows_in_step() {
        let rows = rows(20, 30, 7);
        let mut coarse = Coarse::new(20);
        let mut kept: Vec<Vec<i8>> = Vec::new();
        for r in &rows {
            coarse.push(r);
            kept.push(r.clone());
        }
        let probe = coarse.probe(&rows[3], 1.0);
        for row in [0usize, 28, 5, 5, 25, 0] {
            coarse.swap_remove(row);
            kept.swap_remove(row);
            let mut fresh = Coarse::new(20);
            for r in &kept {
                fresh.push(r);
            }
            assert_eq!(coarse.len(), kept.len());
            assert_eq!(coarse.residuals, fresh.residuals);
            assert_eq!(coarse.bytes, fresh.bytes);
            for block in 0..coarse.blocks() {
                assert_eq!(coarse.bounds(block, &probe), fresh.bounds(block, &probe));
            }
        }
        while coarse.len() > 0 {
            coarse.swap_remove(0);
        }
        assert!(coarse.bytes.is_empty());
    }
}
