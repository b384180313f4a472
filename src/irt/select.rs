//! Next-item selection.
//!
//! This module owns the choice of the next item to administer: maximum Fisher
//! information at the current ability estimate (Lord, 1980, ch. 10; catR's
//! `nextItem(criterion = "MFI")`) with the randomesque exposure control of
//! Kingsbury & Zara (1989): the item is drawn uniformly among the `k` most
//! informative eligible items (`k = 1` is plain, deterministic MFI).
//!
//! Kingsbury, G. G. & Zara, A. R. (1989). Procedures for selecting items for
//! computerized adaptive tests. *Applied Measurement in Education*, 2(4).

use rand::Rng;

use super::model::{ItemParams, information};

/// Largest randomesque group size; larger requests are clamped to it. The
/// top-`k` buffer is a fixed array of this size (no allocation).
pub const MAX_RANDOMESQUE: usize = 64;

/// Picks the next item: uniformly at random among the `randomesque` eligible
/// items with the largest Fisher information at `theta` (see
/// [`information`], scaling constant `D = scaling`).
///
/// * `administered[i] == true` makes `bank[i]` ineligible; only the first
///   `min(bank.len(), administered.len())` items are considered.
/// * `randomesque` is clamped to `1..=`[`MAX_RANDOMESQUE`]; with 1 the choice
///   is deterministic and `rng` is not used. Ties in information are broken
///   by the lowest index, both for the top-1 item and for membership of the
///   top-`k` group. Items whose information is NaN (invalid parameters) are
///   never chosen.
/// * Returns `None` when no item is eligible.
///
/// Cost: per item one branch-free exponential and one division (computed for
/// administered items too, which keeps the loop vectorizable), then one
/// comparison; the group is kept sorted in a fixed array, touched only when an
/// item beats the current `k`-th best. No allocation.
pub fn select_next_item<R: Rng + ?Sized>(
    bank: &[ItemParams],
    administered: &[bool],
    theta: f64,
    scaling: f64,
    randomesque: usize,
    rng: &mut R,
) -> Option<usize> {
    let k = randomesque.clamp(1, MAX_RANDOMESQUE);
    let mut top = TopK::new(k);
    // Two passes per chunk: a branch-free (vectorizable) information loop,
    // then a cheap scan against the current k-th best.
    let mut info = [0.0_f64; CHUNK];
    for (chunk, (items, done)) in bank
        .chunks(CHUNK)
        .zip(administered.chunks(CHUNK))
        .enumerate()
    {
        let n = items.len().min(done.len());
        for (slot, item) in info[..n].iter_mut().zip(items) {
            *slot = information(item, theta, scaling);
        }
        for (j, (&value, &done)) in info[..n].iter().zip(done).enumerate() {
            if !done && value > top.threshold {
                top.insert(value, chunk * CHUNK + j);
            }
        }
    }
    match top.len {
        0 => None,
        1 => Some(top.index[0]),
        len => Some(top.index[rng.random_range(0..len)]),
    }
}

/// Items per block of the selection loop.
const CHUNK: usize = 256;

/// The `k` largest values seen so far, sorted in decreasing order, earlier
/// insertions first among equal values.
struct TopK {
    /// Group size (`1..=MAX_RANDOMESQUE`).
    k: usize,
    /// Number of filled slots.
    len: usize,
    /// A value must exceed this to enter: `−∞` until full, then the `k`-th
    /// largest value.
    threshold: f64,
    /// Values, decreasing.
    value: [f64; MAX_RANDOMESQUE],
    /// Item indices matching `value`.
    index: [usize; MAX_RANDOMESQUE],
}

impl TopK {
    /// An empty group of size `k`.
    fn new(k: usize) -> Self {
        Self {
            k,
            len: 0,
            threshold: f64::NEG_INFINITY,
            value: [0.0; MAX_RANDOMESQUE],
            index: [0; MAX_RANDOMESQUE],
        }
    }

    /// Inserts `value > self.threshold`, dropping the smallest entry when full.
    fn insert(&mut self, value: f64, index: usize) {
        // After every entry >= value, so ties keep the earlier index first.
        let pos = self.value[..self.len].partition_point(|&v| v >= value);
        let end = if self.len < self.k {
            self.len
        } else {
            self.k - 1
        };
        self.value.copy_within(pos..end, pos + 1);
        self.index.copy_within(pos..end, pos + 1);
        self.value[pos] = value;
        self.index[pos] = index;
        if self.len < self.k {
            self.len += 1;
        }
        if self.len == self.k {
            self.threshold = self.value[self.k - 1];
        }
    }
}
