//! The running top-`k` of a selection step (randomesque groups).

use rand::Rng;

use super::MAX_RANDOMESQUE;

/// The `k` best `(value, index)` pairs offered so far, best first: larger
/// value first, lower index first among equal values. NaN values are never
/// kept.
#[derive(Clone, Copy, Debug)]
pub(super) struct TopK {
    /// Group size (`1..=MAX_RANDOMESQUE`).
    pub(super) k: usize,
    /// Number of filled slots.
    pub(super) len: usize,
    /// `−∞` until full, then the `k`-th value: a value below it cannot enter
    /// (a value equal to it enters only with a lower index).
    pub(super) threshold: f64,
    /// Values, best first.
    pub(super) value: [f64; MAX_RANDOMESQUE],
    /// Indices matching `value`.
    pub(super) index: [usize; MAX_RANDOMESQUE],
}

impl TopK {
    /// An empty group of size `k` (clamped to `1..=MAX_RANDOMESQUE`).
    pub(super) fn new(k: usize) -> Self {
        Self {
            k: k.clamp(1, MAX_RANDOMESQUE),
            len: 0,
            threshold: f64::NEG_INFINITY,
            value: [0.0; MAX_RANDOMESQUE],
            index: [0; MAX_RANDOMESQUE],
        }
    }

    /// Whether `k` entries are held.
    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.len == self.k
    }

    /// The `k`-th value when full.
    #[inline]
    pub(super) fn kth(&self) -> Option<f64> {
        self.is_full().then(|| self.value[self.k - 1])
    }

    /// Offers `(value, index)`; kept if it ranks among the `k` best.
    #[inline]
    pub(super) fn offer(&mut self, value: f64, index: usize) {
        if value.is_nan() || value < self.threshold {
            return;
        }
        if self.is_full() {
            let last = self.k - 1;
            if value == self.value[last] && index > self.index[last] {
                return;
            }
        }
        self.insert(value, index);
    }

    /// Inserts an entry known to rank among the `k` best.
    pub(super) fn insert(&mut self, value: f64, index: usize) {
        let pos = self.value[..self.len]
            .iter()
            .zip(&self.index[..self.len])
            .position(|(&v, &i)| value > v || (value == v && index < i))
            .unwrap_or(self.len);
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
        if self.is_full() {
            self.threshold = self.value[self.k - 1];
        }
    }

    /// A uniform draw among the entries (no random number for one entry).
    pub(super) fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<usize> {
        match self.len {
            0 => None,
            1 => Some(self.index[0]),
            len => Some(self.index[rng.random_range(0..len)]),
        }
    }
}
