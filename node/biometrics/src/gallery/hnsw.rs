//! Approximate 1:N search over int8 face templates of one model, for enrollment de-dup in
//! large galleries: an HNSW graph (hierarchical navigable small world, Malkov & Yashunin
//! 2016) over the same int8 rows as the exact [`Gallery`](super::Gallery).
//!
//! # What is exact and what is not
//!
//! Every score the graph computes, while building or searching, is the exact int8 cosine
//! of [`FaceTemplate::score`] (the same formula, in the same order, so the same bits): a
//! reported match is never an estimate, and `search` answers "is any template at or above
//! the threshold?" by checking the best candidates' exact scores against it. What is
//! approximate is which templates the graph visits: a template above the threshold can be
//! missed if the search never reaches it. The `dedup_bench` example measures how often
//! (against the exact gallery) at a million templates.
//!
//! Below [`HnswParams::exact_below`] live templates the search is a linear scan of the same
//! rows instead, which never misses; the graph is kept up to date all the same so that
//! crossing the size changes nothing but the speed. [`HnswGallery::search_exact`] scans at
//! any size: a caller that must not miss takes a graph hit as final and certifies a graph
//! miss with it.
//!
//! How often the graph misses depends on the data. On synthetic faces whose identities are
//! uniform on the 128-d sphere (`synthetic.rs`: the hard case, no low-dimensional structure
//! for a graph to follow), a million templates, M 16, it misses a large share of
//! duplicates even at ef 1,024, and FAISS's HNSW does no better (BENCHMARKS.md, "Face
//! de-dup at a million templates").
//!
//! # Layout
//!
//! Rows are slots `0..n` in insertion order: int8 values in one array, `1 / |q|`, key and a
//! live flag in parallel arrays. Layer-0 links are one array of `2·m + 1` `u32` per slot
//! (count, then links); the few slots on upper layers (one in `m`, geometrically) keep
//! their `m + 1`-wide blocks in a second array. Neighbours are chosen with the paper's
//! heuristic (keep a candidate only if it is closer to the new row than to every one
//! kept), as hnswlib and FAISS do. A slot's level comes from a hash of the seed and its
//! key, so the same inserts in the same order give the same graph.
//!
//! # Removal
//!
//! Removing (or replacing) a template tombstones its slot: the slot stays in the graph as
//! a waypoint but is never reported. When tombstones outnumber live templates the graph is
//! rebuilt from the live ones, in slot order (amortised: a rebuild of `n` rows follows at
//! least `n` removals). Removals are rare in a registry, so this keeps the code simple.
//!
//! # Concurrency
//!
//! Searches take `&self` and can run together (the node holds the index in an `RwLock`);
//! each borrows a visited-set from a small pool. Inserts and removals take `&mut self`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

mod file;

use super::GalleryMatch;
use super::topk::{Scored, TopK};
use crate::face::{FaceError, FaceTemplate, ModelId, dot_i8_dispatch};

/// How the graph is built and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per slot on the upper layers; layer 0 has `2 * m`.
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least `k` for [`HnswGallery::nearest`]).
    pub ef_search: usize,
    /// Seeds the level of each slot.
    pub seed: u64,
    /// Below this many live templates a search scans every row (exact) instead. The
    /// default, 100,000, is where the scan takes about half the 5 ms de-dup budget
    /// (BENCHMARKS.md): below it there is no reason to accept a miss.
    pub exact_below: usize,
}

impl Default for HnswParams {
    /// The figures measured in BENCHMARKS.md ("Face de-dup at a million templates").
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
            seed: 0x5155_4f52_554d, // "QUORUM"
            exact_below: 100_000,
        }
    }
}

const MAX_LEVEL: usize = 15;
const NO_SLOT: u32 = u32::MAX;

/// A visited-set stamped with a generation, so clearing it is one increment.
struct Visited {
    marks: Vec<u16>,
    tag: u16,
}

impl Visited {
    fn new() -> Self {
        Visited {
            marks: Vec::new(),
            tag: 0,
        }
    }

    fn reset(&mut self, slots: usize) {
        if self.marks.len() < slots {
            self.marks.resize(slots, 0);
        }
        self.tag = self.tag.wrapping_add(1);
        if self.tag == 0 {
            self.marks.fill(0);
            self.tag = 1;
        }
    }

    #[inline]
    fn contains(&self, slot: u32) -> bool {
        self.marks[slot as usize] == self.tag
    }

    /// Marks `slot`; whether it was unmarked.
    #[inline]
    fn insert(&mut self, slot: u32) -> bool {
        let mark = &mut self.marks[slot as usize];
        let fresh = *mark != self.tag;
        *mark = self.tag;
        fresh
    }
}

/// Templates of one model, by opaque `u64` key, searched through an HNSW graph.
pub struct HnswGallery {
    model: ModelId,
    params: HnswParams,
    dim: usize,
    dot: fn(&[i8], &[i8]) -> i32,
    values: Vec<i8>,
    inverse_norms: Vec<f32>,
    keys: Vec<u64>,
    live: Vec<bool>,
    rows: HashMap<u64, u32>,
    /// Per slot: `[count, link0, .., link(2m-1)]`.
    links0: Vec<u32>,
    /// Per slot: where its upper-layer blocks start in `upper`, or `NO_SLOT`.
    upper_start: Vec<u32>,
    /// Per upper slot, for levels `1..=level`: `[count, link0, .., link(m-1)]`.
    upper: Vec<u32>,
    entry: u32,
    top: usize,
    dead: usize,
    visited: Mutex<Vec<Visited>>,
}

impl std::fmt::Debug for HnswGallery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswGallery")
            .field("model", &self.model)
            .field("params", &self.params)
            .field("len", &self.len())
            .field("tombstones", &self.dead)
            .finish_non_exhaustive()
    }
}

impl HnswGallery {
    /// An empty gallery; `m` and the candidate list sizes are raised to at least 2.
    pub fn new(model: ModelId, mut params: HnswParams) -> Self {
        params.m = params.m.max(2);
        params.ef_construction = params.ef_construction.max(2);
        params.ef_search = params.ef_search.max(1);
        HnswGallery {
            dim: model.dimension(),
            model,
            params,
            dot: dot_i8_dispatch(),
            values: Vec::new(),
            inverse_norms: Vec::new(),
            keys: Vec::new(),
            live: Vec::new(),
            rows: HashMap::new(),
            links0: Vec::new(),
            upper_start: Vec::new(),
            upper: Vec::new(),
            entry: NO_SLOT,
            top: 0,
            dead: 0,
            visited: Mutex::new(Vec::new()),
        }
    }

    pub fn model(&self) -> &ModelId {
        &self.model
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Changes the search candidate list size (recall against speed); takes effect at once.
    pub fn set_ef_search(&mut self, ef_search: usize) {
        self.params.ef_search = ef_search.max(1);
    }

    /// Live templates.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.rows.contains_key(&key)
    }

    /// Makes room for `additional` more templates without reallocating.
    pub fn reserve(&mut self, additional: usize) {
        let m0 = 2 * self.params.m;
        self.values.reserve_exact(additional * self.dim);
        self.inverse_norms.reserve_exact(additional);
        self.keys.reserve_exact(additional);
        self.live.reserve_exact(additional);
        self.rows.reserve(additional);
        self.links0.reserve_exact(additional * (m0 + 1));
        self.upper_start.reserve_exact(additional);
    }

    /// Adds (or replaces) the template under `key`; returns whether a template was replaced.
    pub fn insert(&mut self, key: u64, template: &FaceTemplate) -> Result<bool, FaceError> {
        self.model.check(template.model())?;
        let replaced = self.tombstone(key);
        self.insert_row(key, template.values(), template.inverse_norm());
        Ok(replaced)
    }

    /// Removes the template under `key`; returns whether there was one.
    pub fn remove(&mut self, key: u64) -> bool {
        if !self.tombstone(key) {
            return false;
        }
        if self.rows.is_empty() {
            *self = HnswGallery::new(self.model.clone(), self.params);
        } else if self.dead > self.rows.len() {
            self.rebuild();
        }
        true
    }

    /// The best-scoring template with `score >= threshold` among those the search reaches.
    pub fn search(
        &self,
        probe: &FaceTemplate,
        threshold: f32,
    ) -> Result<Option<GalleryMatch>, FaceError> {
        self.model.check(probe.model())?;
        let best = self.best(probe, 1, self.params.ef_search);
        Ok(best.into_iter().next().filter(|m| m.score >= threshold))
    }

    /// As [`search`](Self::search) but scanning every row: never misses, whatever the size
    /// (a plain int8 scan, without the exact [`Gallery`](super::Gallery)'s int4 pre-filter:
    /// about 17–23 ns per template on one thread against its 3 ns). A caller that must not miss can take a graph hit as final (it is exact) and
    /// certify only a miss this way.
    pub fn search_exact(
        &self,
        probe: &FaceTemplate,
        threshold: f32,
    ) -> Result<Option<GalleryMatch>, FaceError> {
        self.model.check(probe.model())?;
        let best = self.scan(probe, 1);
        Ok(best.into_iter().next().filter(|m| m.score >= threshold))
    }

    /// The `k` best-scoring templates the search reaches, best first.
    pub fn nearest(&self, probe: &FaceTemplate, k: usize) -> Result<Vec<GalleryMatch>, FaceError> {
        self.model.check(probe.model())?;
        Ok(self.best(probe, k, self.params.ef_search.max(k)))
    }

    /// Heap bytes held (by capacity): rows, graph, key index and the search visited-sets.
    pub fn memory_bytes(&self) -> usize {
        let index_entry = std::mem::size_of::<(u64, u32)>() + 1; // hashbrown: slot + control byte
        let visited: usize = self
            .visited
            .lock()
            .expect("visited pool lock poisoned")
            .iter()
            .map(|v| v.marks.capacity() * std::mem::size_of::<u16>())
            .sum();
        self.values.capacity()
            + self.inverse_norms.capacity() * std::mem::size_of::<f32>()
            + self.keys.capacity() * std::mem::size_of::<u64>()
            + self.live.capacity()
            + self.rows.capacity() * index_entry
            + (self.links0.capacity() + self.upper_start.capacity() + self.upper.capacity())
                * std::mem::size_of::<u32>()
            + visited
    }

    fn tombstone(&mut self, key: u64) -> bool {
        let Some(slot) = self.rows.remove(&key) else {
            return false;
        };
        self.live[slot as usize] = false;
        self.dead += 1;
        true
    }

    /// A fresh graph of the live rows, in slot order.
    fn rebuild(&mut self) {
        let mut fresh = HnswGallery::new(self.model.clone(), self.params);
        fresh.reserve(self.rows.len());
        for slot in 0..self.keys.len() {
            if self.live[slot] {
                let row = &self.values[slot * self.dim..(slot + 1) * self.dim];
                fresh.insert_row(self.keys[slot], row, self.inverse_norms[slot]);
            }
        }
        *self = fresh;
    }

    fn level_for(&self, key: u64) -> usize {
        let mut z = self.params.seed ^ key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let uniform = ((z >> 11) + 1) as f64 / (1u64 << 53) as f64; // (0, 1]
        let level = -uniform.ln() / (self.params.m as f64).ln();
        (level as usize).min(MAX_LEVEL)
    }

    fn row(&self, slot: u32) -> &[i8] {
        let start = slot as usize * self.dim;
        &self.values[start..start + self.dim]
    }

    /// The exact int8 cosine of `q` and `slot`, as [`FaceTemplate::score`] computes it.
    #[inline]
    fn score(&self, q: &[i8], q_inverse: f32, slot: u32) -> f32 {
        (self.dot)(q, self.row(slot)) as f32 * q_inverse * self.inverse_norms[slot as usize]
    }

    fn pair_score(&self, a: u32, b: u32) -> f32 {
        self.score(self.row(a), self.inverse_norms[a as usize], b)
    }

    fn links(&self, slot: u32, level: usize) -> &[u32] {
        let block = if level == 0 {
            let width = 2 * self.params.m + 1;
            &self.links0[slot as usize * width..][..width]
        } else {
            let width = self.params.m + 1;
            let start = self.upper_start[slot as usize] as usize + (level - 1) * width;
            &self.upper[start..start + width]
        };
        &block[1..1 + block[0] as usize]
    }

    fn set_links(&mut self, slot: u32, level: usize, links: &[u32]) {
        let block = if level == 0 {
            let width = 2 * self.params.m + 1;
            &mut self.links0[slot as usize * width..][..width]
        } else {
            let width = self.params.m + 1;
            let start = self.upper_start[slot as usize] as usize + (level - 1) * width;
            &mut self.upper[start..start + width]
        };
        block[0] = links.len() as u32;
        block[1..1 + links.len()].copy_from_slice(links);
    }

    #[inline]
    fn prefetch(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let start = slot as usize * self.dim;
            let mut offset = 0;
            while offset < self.dim {
                // SAFETY: SSE is part of x86-64; a prefetch is only a hint and never faults
                // (and this address is in bounds).
                unsafe { _mm_prefetch::<_MM_HINT_T0>(self.values[start + offset..].as_ptr()) };
                offset += 64;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    fn take_visited(&self) -> Visited {
        self.visited
            .lock()
            .expect("visited pool lock poisoned")
            .pop()
            .unwrap_or_else(Visited::new)
    }

    fn return_visited(&self, visited: Visited) {
        let mut pool = self.visited.lock().expect("visited pool lock poisoned");
        // Keep a few (one per concurrent searcher); drop the rest.
        if pool.len() < 8 {
            pool.push(visited);
        }
    }

    /// Best-first walk on one layer from `from` until the best `ef` found stop improving.
    fn search_layer(
        &self,
        q: &[i8],
        q_inverse: f32,
        from: &[Scored],
        ef: usize,
        level: usize,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef * 2);
        let mut found: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        for &e in from {
            if visited.insert(e.row) {
                candidates.push(e);
                found.push(Reverse(e));
                if found.len() > ef {
                    found.pop();
                }
            }
        }
        while let Some(c) = candidates.pop() {
            let worst = found.peek().expect("found is never empty here").0;
            if c < worst && found.len() >= ef {
                break;
            }
            let links = self.links(c.row, level);
            for &n in links {
                if !visited.contains(n) {
                    self.prefetch(n);
                }
            }
            for &n in links {
                if !visited.insert(n) {
                    continue;
                }
                let s = Scored {
                    score: self.score(q, q_inverse, n),
                    row: n,
                };
                if found.len() < ef || s > found.peek().expect("found is full").0 {
                    candidates.push(s);
                    found.push(Reverse(s));
                    if found.len() > ef {
                        found.pop();
                    }
                }
            }
        }
        // Ascending in `Reverse` is best first.
        found.into_sorted_vec().into_iter().map(|r| r.0).collect()
    }

    /// Greedy descent on one layer: move to the best neighbour until none is better.
    fn greedy(&self, q: &[i8], q_inverse: f32, mut at: Scored, level: usize) -> Scored {
        loop {
            let mut moved = false;
            for &n in self.links(at.row, level) {
                let s = Scored {
                    score: self.score(q, q_inverse, n),
                    row: n,
                };
                if s > at {
                    at = s;
                    moved = true;
                }
            }
            if !moved {
                return at;
            }
        }
    }

    /// The HNSW neighbour heuristic over `candidates` (best first, scored against the row
    /// being linked): keep one only if it is closer to that row than to every one kept.
    fn select(&self, candidates: &[Scored], cap: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(cap);
        for c in candidates {
            if kept.len() >= cap {
                break;
            }
            if kept.iter().all(|&k| self.pair_score(c.row, k) < c.score) {
                kept.push(c.row);
            }
        }
        kept
    }

    fn insert_row(&mut self, key: u64, values: &[i8], inverse_norm: f32) {
        let slot = u32::try_from(self.keys.len())
            .ok()
            .filter(|&s| s != NO_SLOT)
            .expect("an HNSW gallery holds fewer than 2^32 - 1 rows");
        let (m, m0) = (self.params.m, 2 * self.params.m);
        let level = self.level_for(key);
        self.values.extend_from_slice(values);
        self.inverse_norms.push(inverse_norm);
        self.keys.push(key);
        self.live.push(true);
        self.rows.insert(key, slot);
        self.links0.resize(self.links0.len() + m0 + 1, 0);
        if level > 0 {
            self.upper_start.push(self.upper.len() as u32);
            self.upper.resize(self.upper.len() + level * (m + 1), 0);
        } else {
            self.upper_start.push(NO_SLOT);
        }
        if self.entry == NO_SLOT {
            self.entry = slot;
            self.top = level;
            return;
        }

        let q = values.to_vec();
        let mut visited = self
            .visited
            .get_mut()
            .expect("visited pool lock poisoned")
            .pop()
            .unwrap_or_else(Visited::new);
        let mut at = Scored {
            score: self.score(&q, inverse_norm, self.entry),
            row: self.entry,
        };
        for l in (level + 1..=self.top).rev() {
            at = self.greedy(&q, inverse_norm, at, l);
        }
        let mut from = vec![at];
        for l in (0..=level.min(self.top)).rev() {
            visited.reset(self.keys.len());
            let found = self.search_layer(
                &q,
                inverse_norm,
                &from,
                self.params.ef_construction,
                l,
                &mut visited,
            );
            let cap = if l == 0 { m0 } else { m };
            let links = self.select(&found, cap);
            self.set_links(slot, l, &links);
            for &n in &links {
                self.link_back(n, slot, l, cap);
            }
            from = found;
        }
        self.visited
            .get_mut()
            .expect("visited pool lock poisoned")
            .push(visited);
        if level > self.top {
            self.entry = slot;
            self.top = level;
        }
    }

    /// Adds `slot` to `n`'s links on `level`, re-selecting them if the list is full.
    fn link_back(&mut self, n: u32, slot: u32, level: usize, cap: usize) {
        let current = self.links(n, level);
        if current.len() < cap {
            let mut links = current.to_vec();
            links.push(slot);
            self.set_links(n, level, &links);
            return;
        }
        let mut candidates: Vec<Scored> = current
            .iter()
            .chain(std::iter::once(&slot))
            .map(|&x| Scored {
                score: self.pair_score(n, x),
                row: x,
            })
            .collect();
        candidates.sort_by(|a, b| b.cmp(a));
        let links = self.select(&candidates, cap);
        self.set_links(n, level, &links);
    }

    /// The `k` best live rows, every row scored.
    fn scan(&self, probe: &FaceTemplate, k: usize) -> Vec<GalleryMatch> {
        let (q, q_inverse) = (probe.values(), probe.inverse_norm());
        let mut top = TopK::new(k);
        for slot in 0..self.keys.len() as u32 {
            if self.live[slot as usize] {
                top.offer(
                    self.score(q, q_inverse, slot),
                    slot,
                    self.keys[slot as usize],
                );
            }
        }
        top.into_sorted()
    }

    /// The `k` best live rows reached with a candidate list of `ef` (or all rows, scanned,
    /// below `exact_below`).
    fn best(&self, probe: &FaceTemplate, k: usize, ef: usize) -> Vec<GalleryMatch> {
        let (q, q_inverse) = (probe.values(), probe.inverse_norm());
        if self.entry == NO_SLOT || k == 0 {
            return Vec::new();
        }
        if self.len() < self.params.exact_below {
            return self.scan(probe, k);
        }
        let mut at = Scored {
            score: self.score(q, q_inverse, self.entry),
            row: self.entry,
        };
        for l in (1..=self.top).rev() {
            at = self.greedy(q, q_inverse, at, l);
        }
        let mut visited = self.take_visited();
        visited.reset(self.keys.len());
        let found = self.search_layer(q, q_inverse, &[at], ef, 0, &mut visited);
        self.return_visited(visited);
        found
            .into_iter()
            .filter(|s| self.live[s.row as usize])
            .take(k)
            .map(|s| GalleryMatch {
                key: self.keys[s.row as usize],
                score: s.score,
            })
            .collect()
    }
}
