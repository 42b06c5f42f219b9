//! Exact 1:N search over int8 face templates of one model, for enrollment de-dup.
//!
//! Templates live in one contiguous `i8` array (row `i` = template `i`), with their keys
//! and `1 / |q|` in parallel arrays. A search never misses a template above the threshold,
//! and its scores are bit-for-bit those of [`FaceTemplate::score`].
//!
//! At a million templates the plain scan is bound by memory (128 MB read per query), so a
//! search first reads a 4-bit copy of each row (half the bytes) and an upper bound of what
//! the 4 bits lose ([`coarse`]): a row whose bound is below the threshold cannot reach it
//! and is skipped; every other row is scored exactly from its int8 values. The proof that
//! this skips no row at or above the threshold is in `coarse.rs`. `nearest` uses its
//! current k-th best score as the threshold, `search` its best so far. The scan can be
//! split over [`ScanPlan::threads`] threads (contiguous row ranges, merged in row order, so
//! the answer does not depend on the split; two by default where there are two cores). AVX2 is chosen at run time where the
//! processor has it; the portable code gives the same answers.
//!
//! Removal swaps the last row into the hole (in every array, the 4-bit rows included).
//!
//! Memory per template: `dimension` bytes + 8 (key) + 4 (norm) + `dimension / 2` rounded
//! up to 4 (4-bit row) + 2 (its bound) + the key index entry (about 18 bytes); 128-d is
//! about 244 bytes ([`Gallery::memory_bytes`] counts it).

use std::collections::HashMap;
use std::ops::Range;

use crate::face::{FaceError, FaceTemplate, ModelId, dot_i8, dot_i8_dispatch, score_from_dot};

mod coarse;
pub mod hnsw;
mod topk;

use coarse::{Coarse, CoarseProbe, LANES};
pub use hnsw::{HnswGallery, HnswParams};
use topk::TopK;

/// A gallery entry found by a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GalleryMatch {
    pub key: u64,
    pub score: f32,
}

/// How a search scans the rows. Every plan gives the same answers; only the time differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPlan {
    /// Threads one search may use (at least 1). A gallery too small to be worth it (fewer
    /// than [`ScanPlan::ROWS_PER_THREAD`] rows a thread) uses fewer.
    pub threads: usize,
    /// Rule rows out with the 4-bit bound before scoring them (off: score every row).
    pub prefilter: bool,
}

/// A batch search ([`Gallery::search_many`]) takes the rows this many bytes of 4-bit rows
/// at a time and scans them for every probe before it moves on, so that for all but the
/// first probe they come from the core's cache (1 MiB of L2 a core on the machine of
/// BENCHMARKS.md), not from memory.
const CHUNK_BYTES: usize = 256 * 1024;

impl ScanPlan {
    /// Fewest rows worth a thread of their own (a thread costs tens of microseconds to
    /// start; this many rows take about 0.1 ms to scan with the pre-filter, 0.6 ms without).
    pub const ROWS_PER_THREAD: usize = 32_768;
}

impl Default for ScanPlan {
    /// Two threads where the machine has two cores, with the pre-filter. At a million
    /// templates on the 2-core machine of BENCHMARKS.md with no other work running, a
    /// de-dup search took 1.9 ms p50 / 4.3 ms p99 on two threads against 6.7 / 8.7 ms on
    /// one; under a load of 4-5 from other work the split was slower (its second part waits
    /// for a core). A node's leader runs one de-dup search at a time.
    fn default() -> Self {
        ScanPlan {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
            prefilter: true,
        }
    }
}

/// What one search did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCount {
    /// Rows in the gallery.
    pub rows: usize,
    /// Rows scored exactly: those the 4-bit bound could not rule out (all, without it).
    pub rechecked: usize,
    /// Threads the scan was split over.
    pub threads: usize,
}

/// Templates of one model, by opaque `u64` key.
#[derive(Debug, Clone)]
pub struct Gallery {
    model: ModelId,
    keys: Vec<u64>,
    inverse_norms: Vec<f32>,
    values: Vec<i8>,
    coarse: Coarse,
    rows: HashMap<u64, usize>,
    plan: ScanPlan,
    /// [`ScanPlan::ROWS_PER_THREAD`], lowered by the unit tests to split small galleries.
    rows_per_thread: usize,
    /// [`CHUNK_BYTES`], lowered by the unit tests to chunk small galleries.
    chunk_bytes: usize,
    /// Set by the unit tests only: the portable code even where AVX2 is present.
    portable: bool,
}

/// Where a scan puts the rows it scores: it scores only the rows whose bound reaches
/// `threshold()` and offers those whose exact score does.
trait Sink {
    fn threshold(&self) -> f32;
    fn offer(&mut self, row: usize, key: u64, score: f32);
}

/// Scores exactly the rows the 4-bit bound could not rule out, for a sink.
///
/// A row's int8 values are fetched from memory, so they are asked for (prefetched) when
/// the bound lets the row through and scored [`Recheck::DELAY`] rows later, so that the
/// fetches overlap. Rows are still scored, and offered, in row order, each against the
/// sink's threshold of the moment; the delay only means the bound was compared with a
/// threshold a few rows old (lower or equal: more rows scored, none skipped).
struct Recheck<'a, S> {
    gallery: &'a Gallery,
    probe: &'a FaceTemplate,
    dot: fn(&[i8], &[i8]) -> i32,
    sink: &'a mut S,
    rechecked: usize,
    /// Rows waiting to be scored, a ring of `DELAY`: `waiting` of them from `next`.
    pending: [usize; 8],
    next: usize,
    waiting: usize,
}

impl<'a, S: Sink> Recheck<'a, S> {
    const DELAY: usize = 8;

    fn new(
        gallery: &'a Gallery,
        probe: &'a FaceTemplate,
        dot: fn(&[i8], &[i8]) -> i32,
        sink: &'a mut S,
    ) -> Self {
        Recheck {
            gallery,
            probe,
            dot,
            sink,
            rechecked: 0,
            pending: [0; 8],
            next: 0,
            waiting: 0,
        }
    }

    fn score_now(&mut self, row: usize) {
        self.rechecked += 1;
        let score = self.gallery.score(self.probe, row, self.dot);
        if score >= self.sink.threshold() {
            self.sink.offer(row, self.gallery.keys[row], score);
        }
    }

    /// Scores every row still waiting; returns the rows scored in all.
    fn finish(mut self) -> usize {
        while self.waiting > 0 {
            let row = self.pending[self.next];
            self.next = (self.next + 1) % Self::DELAY;
            self.waiting -= 1;
            self.score_now(row);
        }
        self.rechecked
    }
}

impl<S: Sink> coarse::Visit for Recheck<'_, S> {
    fn threshold(&self) -> f32 {
        self.sink.threshold()
    }
    fn row(&mut self, row: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let dim = self.gallery.model.dimension();
            let start = self.gallery.values.as_ptr().wrapping_add(row * dim);
            let mut line = 0;
            while line < dim {
                // SAFETY: a prefetch is a hint; it never faults, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line)) };
                line += 64;
            }
        }
        if self.waiting == Self::DELAY {
            let oldest = self.pending[self.next];
            self.pending[self.next] = row;
            self.next = (self.next + 1) % Self::DELAY;
            self.score_now(oldest);
        } else {
            self.pending[(self.next + self.waiting) % Self::DELAY] = row;
            self.waiting += 1;
        }
    }
}

/// `search`: the best row at or above a threshold (ties: the lowest row). Its threshold
/// rises to the best score found so far: only a row at least as good can matter.
struct Best {
    threshold: f32,
    best: Option<(usize, GalleryMatch)>,
}

impl Best {
    /// The best of the parts of a split scan. Parts are in row order: on a tie the earlier
    /// part's (lower) row stays.
    fn merge(parts: Vec<Best>) -> Option<GalleryMatch> {
        let best = parts.into_iter().filter_map(|p| p.best).fold(
            None::<(usize, GalleryMatch)>,
            |acc, b| match acc {
                Some(a) if b.1.score <= a.1.score => Some(a),
                _ => Some(b),
            },
        );
        best.map(|(_, m)| m)
    }
}

impl Sink for Best {
    fn threshold(&self) -> f32 {
        self.best.map_or(self.threshold, |(_, b)| b.score)
    }
    fn offer(&mut self, row: usize, key: u64, score: f32) {
        if self.best.is_none_or(|(_, b)| score > b.score) {
            self.best = Some((row, GalleryMatch { key, score }));
        }
    }
}

/// `search_all`: every row at or above a fixed threshold, in row order.
struct Every {
    threshold: f32,
    found: Vec<GalleryMatch>,
}

impl Sink for Every {
    fn threshold(&self) -> f32 {
        self.threshold
    }
    fn offer(&mut self, _row: usize, key: u64, score: f32) {
        self.found.push(GalleryMatch { key, score });
    }
}

/// `nearest`: the `k` best; the threshold is the k-th best so far (-∞ until there are k).
impl Sink for TopK {
    fn threshold(&self) -> f32 {
        self.floor()
    }
    fn offer(&mut self, row: usize, key: u64, score: f32) {
        TopK::offer(self, score, row as u32, key);
    }
}

impl Gallery {
    pub fn new(model: ModelId) -> Self {
        Gallery {
            coarse: Coarse::new(model.dimension()),
            model,
            keys: Vec::new(),
            inverse_norms: Vec::new(),
            values: Vec::new(),
            rows: HashMap::new(),
            plan: ScanPlan::default(),
            rows_per_thread: ScanPlan::ROWS_PER_THREAD,
            chunk_bytes: CHUNK_BYTES,
            portable: false,
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

    pub fn plan(&self) -> ScanPlan {
        self.plan
    }

    /// Sets how searches scan (threads below 1 count as 1).
    pub fn set_plan(&mut self, plan: ScanPlan) {
        self.plan = ScanPlan {
            threads: plan.threads.max(1),
            ..plan
        };
    }

    /// Adds (or replaces) the template under `key`; returns whether a template was replaced.
    pub fn insert(&mut self, key: u64, template: &FaceTemplate) -> Result<bool, FaceError> {
        self.model.check(template.model())?;
        let dim = self.model.dimension();
        if let Some(&row) = self.rows.get(&key) {
            self.values[row * dim..(row + 1) * dim].copy_from_slice(template.values());
            self.inverse_norms[row] = template.inverse_norm();
            self.coarse.set(row, template.values());
            return Ok(true);
        }
        self.rows.insert(key, self.keys.len());
        self.keys.push(key);
        self.inverse_norms.push(template.inverse_norm());
        self.values.extend_from_slice(template.values());
        self.coarse.push(template.values());
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
        self.coarse.swap_remove(row);
        true
    }

    /// The best-scoring template with `score >= threshold`, if any (ties: the lowest row).
    pub fn search(
        &self,
        probe: &FaceTemplate,
        threshold: f32,
    ) -> Result<Option<GalleryMatch>, FaceError> {
        Ok(self.search_counted(probe, threshold)?.0)
    }

    /// [`search`](Self::search), and what the scan did.
    pub fn search_counted(
        &self,
        probe: &FaceTemplate,
        threshold: f32,
    ) -> Result<(Option<GalleryMatch>, ScanCount), FaceError> {
        let (parts, count) = self.scan(probe, || Best {
            threshold,
            best: None,
        })?;
        Ok((Best::merge(parts), count))
    }

    /// [`search`](Self::search) for each of `probes`, in one pass over the rows: each chunk
    /// of rows is scanned for every probe while it is in the cache. The answers are those
    /// of `search`, to the bit; a batch of enrollments reads the gallery once, not once each.
    pub fn search_many(
        &self,
        probes: &[&FaceTemplate],
        threshold: f32,
    ) -> Result<Vec<Option<GalleryMatch>>, FaceError> {
        let (per_probe, _) = self.scan_many(probes, || Best {
            threshold,
            best: None,
        })?;
        Ok(per_probe.into_iter().map(Best::merge).collect())
    }

    /// Every template with `score >= threshold`, best first (ties: the lowest row first).
    pub fn search_all(
        &self,
        probe: &FaceTemplate,
        threshold: f32,
    ) -> Result<Vec<GalleryMatch>, FaceError> {
        let (parts, _) = self.scan(probe, || Every {
            threshold,
            found: Vec::new(),
        })?;
        let mut out: Vec<GalleryMatch> = parts.into_iter().flat_map(|p| p.found).collect();
        // Stable: equal scores keep row order.
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(out)
    }

    /// The `k` best-scoring templates whatever their score, best first (ties: the lowest
    /// row first): the exact answer an approximate index is measured against.
    pub fn nearest(&self, probe: &FaceTemplate, k: usize) -> Result<Vec<GalleryMatch>, FaceError> {
        Ok(self.nearest_counted(probe, k)?.0)
    }

    /// [`nearest`](Self::nearest), and what the scan did.
    pub fn nearest_counted(
        &self,
        probe: &FaceTemplate,
        k: usize,
    ) -> Result<(Vec<GalleryMatch>, ScanCount), FaceError> {
        self.model.check(probe.model())?;
        if k == 0 {
            return Ok((Vec::new(), ScanCount::default()));
        }
        let (parts, count) = self.scan(probe, || TopK::new(k))?;
        let mut best = TopK::new(k);
        for part in parts {
            best.merge(part);
        }
        Ok((best.into_sorted(), count))
    }

    /// Scans every row into sinks made by `sink`, one per part of the split, in row order.
    fn scan<S: Sink + Send>(
        &self,
        probe: &FaceTemplate,
        sink: impl Fn() -> S,
    ) -> Result<(Vec<S>, ScanCount), FaceError> {
        let (mut per_probe, count) = self.scan_many(&[probe], sink)?;
        Ok((per_probe.pop().unwrap_or_default(), count))
    }

    /// Scans every row for each of `probes`: for each probe, the sinks made by `sink`, one
    /// per part of the split, in row order. A part's rows are taken a chunk (`chunk_bytes`
    /// of 4-bit rows) at a time, each chunk scanned for every probe before the next.
    fn scan_many<S: Sink + Send>(
        &self,
        probes: &[&FaceTemplate],
        sink: impl Fn() -> S,
    ) -> Result<(Vec<Vec<S>>, ScanCount), FaceError> {
        for probe in probes {
            self.model.check(probe.model())?;
        }
        let prepared: Vec<Option<CoarseProbe>> = probes
            .iter()
            .map(|probe| {
                self.plan
                    .prefilter
                    .then(|| self.coarse.probe(probe.values(), probe.inverse_norm()))
            })
            .collect();
        let blocks = self.coarse.blocks();
        let work = self.len().saturating_mul(probes.len());
        let threads = self
            .plan
            .threads
            .min(work / self.rows_per_thread.max(1))
            .max(1);
        let parts: Vec<Range<usize>> = (0..threads)
            .map(|t| blocks * t / threads..blocks * (t + 1) / threads)
            .collect();
        let chunk = (self.chunk_bytes / self.coarse.block_bytes().max(1)).max(1);
        let mut sinks: Vec<Vec<S>> = parts
            .iter()
            .map(|_| probes.iter().map(|_| sink()).collect())
            .collect();
        let mut rechecked = vec![0usize; threads];
        let run = |part: &Range<usize>, sinks: &mut Vec<S>| {
            let mut scored = 0;
            let mut start = part.start;
            while start < part.end {
                let end = (start + chunk).min(part.end);
                for ((probe, prepared), sink) in probes.iter().zip(&prepared).zip(sinks.iter_mut())
                {
                    scored += self.scan_blocks(probe, prepared.as_ref(), start..end, sink);
                }
                start = end;
            }
            scored
        };
        if threads == 1 {
            rechecked[0] = run(&parts[0], &mut sinks[0]);
        } else {
            let run = &run;
            std::thread::scope(|s| {
                let mut work = parts.iter().zip(sinks.iter_mut()).zip(rechecked.iter_mut());
                let first = work.next();
                for ((part, sinks), n) in work {
                    s.spawn(move || *n = run(part, sinks));
                }
                if let Some(((part, sinks), n)) = first {
                    *n = run(part, sinks);
                }
            });
        }
        let count = ScanCount {
            rows: self.len(),
            rechecked: rechecked.iter().sum(),
            threads,
        };
        // Part-major to probe-major.
        let mut per_probe: Vec<Vec<S>> = probes.iter().map(|_| Vec::new()).collect();
        for part in sinks {
            for (probe, sink) in per_probe.iter_mut().zip(part) {
                probe.push(sink);
            }
        }
        Ok((per_probe, count))
    }

    /// Scans the rows of blocks `blocks` (of [`LANES`] rows); returns the rows scored.
    fn scan_blocks(
        &self,
        probe: &FaceTemplate,
        prepared: Option<&CoarseProbe>,
        blocks: Range<usize>,
        sink: &mut impl Sink,
    ) -> usize {
        let dot = if self.portable {
            dot_i8
        } else {
            dot_i8_dispatch()
        };
        let Some(prepared) = prepared else {
            #[cfg(target_arch = "x86_64")]
            {
                if !self.portable && std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the processor has just been checked for AVX2.
                    return unsafe { self.offer_rows_avx2(probe, blocks, sink) };
                }
            }
            return self.offer_rows(probe, blocks, sink, dot_i8);
        };
        let mut recheck = Recheck::new(self, probe, dot, sink);
        #[cfg(target_arch = "x86_64")]
        {
            if !self.portable && std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor has just been checked for AVX2.
                unsafe {
                    self.coarse
                        .scan_avx2(blocks, prepared, &self.inverse_norms, &mut recheck)
                };
                return recheck.finish();
            }
        }
        self.coarse
            .scan_portable(blocks, prepared, &self.inverse_norms, &mut recheck);
        recheck.finish()
    }

    /// The exact score of row `row`, as [`FaceTemplate::score`] gives it.
    #[inline(always)]
    fn score(&self, probe: &FaceTemplate, row: usize, dot: fn(&[i8], &[i8]) -> i32) -> f32 {
        let dim = self.model.dimension();
        let values = &self.values[row * dim..(row + 1) * dim];
        score_from_dot(
            dot(probe.values(), values),
            probe.inverse_norm(),
            self.inverse_norms[row],
        )
    }

    /// Without the pre-filter: scores every row of `blocks` with `dot`.
    #[inline(always)]
    fn offer_rows(
        &self,
        probe: &FaceTemplate,
        blocks: Range<usize>,
        sink: &mut impl Sink,
        dot: impl Fn(&[i8], &[i8]) -> i32,
    ) -> usize {
        let rows = (blocks.start * LANES).min(self.len())..(blocks.end * LANES).min(self.len());
        let scored = rows.len();
        let dim = self.model.dimension();
        for row in rows {
            let values = &self.values[row * dim..(row + 1) * dim];
            let s = score_from_dot(
                dot(probe.values(), values),
                probe.inverse_norm(),
                self.inverse_norms[row],
            );
            if s >= sink.threshold() {
                sink.offer(row, self.keys[row], s);
            }
        }
        scored
    }

    /// [`offer_rows`](Self::offer_rows) with the explicit AVX2 dot, inlined (faster here
    /// than the compiler's vectorisation of [`dot_i8`]: 16–18 ms against 22 ms a million
    /// rows, on one thread of the shared machine).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn offer_rows_avx2(
        &self,
        probe: &FaceTemplate,
        blocks: Range<usize>,
        sink: &mut impl Sink,
    ) -> usize {
        self.offer_rows(probe, blocks, sink, |a, b| crate::face::dot_i8_avx2(a, b))
    }

    /// Heap bytes held (by capacity), including the key index's table.
    pub fn memory_bytes(&self) -> usize {
        let index_entry = std::mem::size_of::<(u64, usize)>() + 1; // hashbrown: slot + control byte
        self.values.capacity()
            + self.keys.capacity() * std::mem::size_of::<u64>()
            + self.inverse_norms.capacity() * std::mem::size_of::<f32>()
            + self.coarse.memory_bytes()
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

    /// Random rows with the extremes mixed in: all +127, all -128 (possible through
    /// `from_parts`), alternating signs, a single non-zero value.
    fn rows(dimension: usize, count: usize, seed: u64) -> Vec<Vec<i8>> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count)
            .map(|i| match i % 11 {
                0 => vec![127; dimension],
                1 => vec![-128; dimension],
                2 => (0..dimension)
                    .map(|d| if d % 2 == 0 { 127 } else { -128 })
                    .collect(),
                3 => {
                    let mut v = vec![0; dimension];
                    v[i % dimension] = -128;
                    v
                }
                _ => (0..dimension).map(|_| next() as u8 as i8).collect(),
            })
            .collect()
    }

    struct Reference {
        model: ModelId,
        rows: Vec<(u64, FaceTemplate)>,
    }

    impl Reference {
        /// Scores in row order, by `FaceTemplate::score`: the definition.
        fn scores(&self, probe: &FaceTemplate) -> Vec<(u64, f32)> {
            self.rows
                .iter()
                .map(|(k, t)| (*k, probe.score(t).unwrap()))
                .collect()
        }
        fn search(&self, probe: &FaceTemplate, threshold: f32) -> Option<GalleryMatch> {
            let mut best: Option<GalleryMatch> = None;
            for (key, score) in self.scores(probe) {
                if score >= threshold && best.is_none_or(|b| score > b.score) {
                    best = Some(GalleryMatch { key, score });
                }
            }
            best
        }
        fn search_all(&self, probe: &FaceTemplate, threshold: f32) -> Vec<GalleryMatch> {
            let mut all: Vec<GalleryMatch> = self
                .scores(probe)
                .into_iter()
                .filter(|&(_, s)| s >= threshold)
                .map(|(key, score)| GalleryMatch { key, score })
                .collect();
            all.sort_by(|a, b| b.score.total_cmp(&a.score));
            all
        }
        fn nearest(&self, probe: &FaceTemplate, k: usize) -> Vec<GalleryMatch> {
            let mut all = self.search_all(probe, f32::NEG_INFINITY);
            all.truncate(k);
            all
        }
    }

    fn galleries(dimension: usize, count: usize, seed: u64) -> (Reference, Vec<FaceTemplate>) {
        let model = ModelId::new("t", dimension).unwrap();
        let all = rows(dimension, count + 40, seed);
        let template = |v: &Vec<i8>| FaceTemplate::from_parts(model.clone(), 0.01, v.clone());
        let rows = all[..count]
            .iter()
            .enumerate()
            .filter_map(|(i, v)| template(v).ok().map(|t| (1_000 + i as u64, t)))
            .collect();
        // Probes: fresh rows, and stored ones (scores of 1 and exact ties).
        let probes = all[count..]
            .iter()
            .chain(all[..count].iter().step_by(count / 10 + 1))
            .filter_map(|v| template(v).ok())
            .collect();
        (Reference { model, rows }, probes)
    }

    /// Every plan (pre-filter on and off, 1 to 3 threads) and both code paths.
    fn every_way(reference: &Reference) -> Vec<Gallery> {
        let mut g = Gallery::new(reference.model.clone());
        for (key, t) in &reference.rows {
            g.insert(*key, t).unwrap();
        }
        let mut out = Vec::new();
        for prefilter in [true, false] {
            for threads in 1..=3 {
                for portable in [false, true] {
                    let mut one = g.clone();
                    one.set_plan(ScanPlan { threads, prefilter });
                    one.rows_per_thread = 1;
                    // Chunks of one block, except with two threads: the default.
                    if threads != 2 {
                        one.chunk_bytes = 1;
                    }
                    one.portable = portable;
                    out.push(one);
                }
            }
        }
        out
    }

    fn bits(matches: &[GalleryMatch]) -> Vec<(u64, u32)> {
        matches.iter().map(|m| (m.key, m.score.to_bits())).collect()
    }

    #[test]
    fn every_plan_and_path_gives_the_plain_answers() {
        for (dimension, count) in [(1, 30), (7, 50), (67, 203), (128, 300), (130, 77)] {
            let (reference, probes) = galleries(dimension, count, dimension as u64);
            let ways = every_way(&reference);
            let (mut rechecked, mut searched) = (0, 0);
            for probe in &probes {
                let scores = reference.scores(probe);
                // Thresholds at stored scores: those rows sit exactly on the threshold.
                let mut thresholds = vec![f32::NEG_INFINITY, -1.0, 0.0, 0.3, 0.9, 1.0, f32::NAN];
                thresholds.extend(scores.iter().step_by(7).map(|&(_, s)| s));
                for g in &ways {
                    for &t in &thresholds {
                        let want = reference.search(probe, t);
                        let got = g.search(probe, t).unwrap();
                        assert_eq!(
                            got.map(|m| (m.key, m.score.to_bits())),
                            want.map(|m| (m.key, m.score.to_bits())),
                            "d {dimension} threshold {t} plan {:?}",
                            g.plan
                        );
                        assert_eq!(
                            bits(&g.search_all(probe, t).unwrap()),
                            bits(&reference.search_all(probe, t))
                        );
                        if g.plan.prefilter && g.plan.threads == 1 && !g.portable && t >= 0.3 {
                            rechecked += g.search_counted(probe, t).unwrap().1.rechecked;
                            searched += reference.rows.len();
                        }
                    }
                    for k in [0, 1, 10, count + 5] {
                        assert_eq!(
                            bits(&g.nearest(probe, k).unwrap()),
                            bits(&reference.nearest(probe, k)),
                            "d {dimension} k {k} plan {:?}",
                            g.plan
                        );
                    }
                }
            }
            // The pre-filter does rule rows out (random rows score about 0 against a probe).
            if dimension >= 67 {
                assert!(rechecked * 4 < searched, "{rechecked} of {searched}");
            }
        }
    }

    #[test]
    fn a_batch_search_gives_each_probe_the_answer_of_its_own_search() {
        let exact = |m: Option<GalleryMatch>| m.map(|m| (m.key, m.score.to_bits()));
        for (dimension, count) in [(7, 50), (128, 300), (130, 77)] {
            let (reference, probes) = galleries(dimension, count, 11 + dimension as u64);
            let probes: Vec<&FaceTemplate> = probes.iter().collect();
            for g in every_way(&reference) {
                for t in [f32::NEG_INFINITY, 0.0, 0.3, 0.9, 1.0] {
                    let got = g.search_many(&probes, t).unwrap();
                    assert_eq!(got.len(), probes.len());
                    for (probe, got) in probes.iter().zip(got) {
                        assert_eq!(
                            exact(got),
                            exact(reference.search(probe, t)),
                            "d {dimension} threshold {t} plan {:?} chunk {}",
                            g.plan,
                            g.chunk_bytes
                        );
                    }
                }
                assert!(g.search_many(&[], 0.5).unwrap().is_empty());
            }
        }
        let (reference, _) = galleries(16, 20, 3);
        let other = FaceTemplate::from_parts(ModelId::new("u", 16).unwrap(), 0.01, vec![1; 16]);
        let g = &every_way(&reference)[0];
        assert!(g.search_many(&[&other.unwrap()], 0.5).is_err());
    }

    #[test]
    fn removal_and_replacement_keep_the_four_bit_rows_in_step() {
        let (reference, probes) = galleries(128, 150, 5);
        let mut g = Gallery::new(reference.model.clone());
        let mut kept = Reference {
            model: reference.model.clone(),
            rows: Vec::new(),
        };
        for (key, t) in &reference.rows {
            g.insert(*key, t).unwrap();
            kept.rows.push((*key, t.clone()));
        }
        let check = |g: &Gallery, kept: &Reference| {
            let mut plain = g.clone();
            plain.set_plan(ScanPlan {
                threads: 1,
                prefilter: false,
            });
            for probe in &probes {
                for t in [0.2, 0.5, 0.99] {
                    assert_eq!(g.search(probe, t).unwrap(), plain.search(probe, t).unwrap());
                }
                assert_eq!(
                    bits(&g.nearest(probe, 7).unwrap()),
                    bits(&plain.nearest(probe, 7).unwrap())
                );
                // Row order differs after swap-removes; the set of scores does not.
                let mut a = bits(&g.search_all(probe, 0.1).unwrap());
                let mut b = bits(&kept.search_all(probe, 0.1));
                a.sort();
                b.sort();
                assert_eq!(a, b);
            }
        };
        for (step, key) in [1_000u64, 1_149, 1_077, 1_008, 1_009, 1_016]
            .iter()
            .enumerate()
        {
            assert!(g.remove(*key));
            kept.rows.retain(|(k, _)| k != key);
            // Replace another key's template with a stored row's (exact 1.0 scores).
            let other = 1_020 + step as u64;
            let with = reference.rows[step * 3].1.clone();
            assert!(g.insert(other, &with).unwrap());
            for row in &mut kept.rows {
                if row.0 == other {
                    row.1 = with.clone();
                }
            }
            check(&g, &kept);
        }
        while let Some(&(key, _)) = kept.rows.last() {
            assert!(g.remove(key));
            kept.rows.pop();
        }
        assert!(g.is_empty());
        assert_eq!(g.nearest(&probes[0], 3).unwrap(), vec![]);
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
