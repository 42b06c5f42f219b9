//! The `k` best of a stream of scored rows, kept in a bounded heap: the one ordering (score
//! high first, then row low first) that exact and approximate searches both report in.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::GalleryMatch;

/// One scored row; `Ord` puts the better one first (higher score, then lower row).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored {
    pub score: f32,
    pub row: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    /// `Greater` means better.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.row.cmp(&self.row))
    }
}

/// Bounded selection of the `k` best rows.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<std::cmp::Reverse<(Scored, u64)>>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    pub fn offer(&mut self, score: f32, row: u32, key: u64) {
        if self.k == 0 {
            return;
        }
        let item = std::cmp::Reverse((Scored { score, row }, key));
        if self.heap.len() < self.k {
            self.heap.push(item);
        } else if let Some(worst) = self.heap.peek()
            && item.0.0 > worst.0.0
        {
            self.heap.pop();
            self.heap.push(item);
        }
    }

    /// The score a row must reach to be kept: the k-th best so far, or -∞ until there are
    /// `k` (+∞ if `k` is 0: nothing is kept).
    pub fn floor(&self) -> f32 {
        if self.k == 0 {
            f32::INFINITY
        } else if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.0.score)
        }
    }

    /// Adds the rows kept by `other` (of the same `k` or any): the `k` best of both.
    pub fn merge(&mut self, other: TopK) {
        for std::cmp::Reverse((s, key)) in other.heap {
            self.offer(s.score, s.row, key);
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<GalleryMatch> {
        // `into_sorted_vec` is ascending in `Reverse`, i.e. best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|std::cmp::Reverse((s, key))| GalleryMatch {
                key,
                score: s.score,
            })
            .collect()
    }
}
