//! Exact fast maximum-information selection over large banks.
//!
//! This module owns [`InformationIndex`], a per-bank structure that finds the
//! exact `k` most informative eligible items at any ability value while
//! evaluating only a few dozen of them, and proves that the answer equals a
//! full scan.
//!
//! # The bound
//!
//! For a 4PL item write `L` for the logistic part, `g = d − c`,
//! `P = c + g·L`, `Q = 1 − P`, `P' = D·a·g·L(1 − L)`. Then
//!
//! ```text
//! ln I = const + 2 ln L + 2 ln(1 − L) − ln P − ln Q
//! d ln I/dθ = D·a·[2 − 4L − g·L(1 − L)/P + g·L(1 − L)/Q]
//! ```
//!
//! and since `g·L ≤ P` and `g·(1 − L) ≤ Q`, the two fractions lie in
//! `[0, 1 − L]` and `[0, L]`: the bracket lies in `[1 − 3L, 2 − 3L] ⊂ [−2, 2]`.
//! Hence `|d ln I/dθ| ≤ 2·D·a`, and for any two abilities
//!
//! ```text
//! I(θ) ≤ I(θ') · exp(2·D·a·|θ − θ'|)                          (1)
//! I(θ) ≤ D²a²·L(1 − L) ≤ D²a²/4                               (2)
//! ```
//!
//! ((2) from `P ≥ g·L`, `Q ≥ g·(1 − L)`.)
//!
//! # The index
//!
//! Built once per bank ([`InformationIndex::new`]): on a grid of nodes `θ_g`
//! (default step 0.02 on `[−6, 6]`, 601 nodes) the `K` (default 256) most
//! informative items at each node, sorted, with their information `I_i(θ_g)`,
//! and `τ_g`, the largest information at `θ_g` of the items left out. Let
//! `r = 2·D·max a` over the indexed items.
//!
//! # A query
//!
//! At ability `θ`, with `θ_g` the nearest node and `F = exp(r·|θ − θ_g|)`
//! (times `1 + 10⁻⁹` to absorb rounding):
//!
//! 1. *Proven path*: walk node `g`'s list in decreasing `I_i(θ_g)`, evaluate the
//!    eligible items exactly at `θ` and keep the best `k`. As soon as the `k`
//!    best are found and the `k`-th value `v_k` satisfies
//!    `I_i(θ_g)·F < v_k` for the next entry, by (1) no item further down the
//!    list, and none off the list (`τ_g·F < v_k` then too), can beat or tie
//!    `v_k`: the answer is exact.
//! 2. *Pruned path*, when the list cannot prove it (very restrictive
//!    eligibility, or `θ` far from the grid): branch and bound over buckets of
//!    about 128 items of neighbouring difficulty. For a bucket with `a ∈ [a₀,
//!    a₁]` and `b ∈ [b₀, b₁]` at distance `x` from `θ`, by (2) and since
//!    `s(u) = L(1 − L)` at `u = D·a·|θ − b|` decreases in `u`,
//!
//!    ```text
//!    I_i(θ) ≤ D²a²·s(D·a·x) = φ(D·a·x)/x²,   φ(u) = u²·s(u),
//!    ```
//!
//!    and `φ` increases up to `u* ≈ 2.3994` (the root of `u·tanh(u/2) = 2`) and
//!    decreases after, so the bucket's bound is `φ(clamp(u*, D·a₀·x, D·a₁·x))/x²`
//!    (`D²a₁²/4` when `θ ∈ [b₀, b₁]`). Buckets are visited in decreasing bound;
//!    their eligible items are evaluated; the search stops at the first bucket
//!    whose bound is below the `k`-th value (or the `k`-th value of step 1, a
//!    lower bound of the true one). Exact for any `θ` and any mask.
//!
//! Items outside the bound's assumptions — polytomous items, items failing
//! [`ItemParams::validate`], and the few items whose discrimination is far
//! above the bank's (top 0.2 % when more than 25 % above that quantile, so one
//! outlier does not inflate `r` for all) — are evaluated exactly at every
//! query instead, except the valid polytomous items: those are evaluated in
//! blocks across items, with the same values, and pruned by chunk with
//! envelopes of their own ([`super::blocks`], offered after the indexed
//! items: a lower `k`-th value in the proofs above is only more cautious). Every value compared is computed by the very function a
//! full scan uses ([`information`] / [`Item::information`]), so the ranking,
//! ties (lowest index first) included, is identical to the full scan; a
//! guard (`v_k > 10⁻²⁵⁰`) keeps underflowed informations out of the proofs.

use rand::Rng;

use super::super::item::Item;
use super::super::model::{ItemParams, information};
use super::blocks::PolytomousBlocks;
use super::information::scan_params;
use super::{MAX_RANDOMESQUE, TopK};

/// Relative slack on every bound, far above the rounding error of the
/// information formula (a few ulp) and far below any useful gap.
const MARGIN: f64 = 1e-9;
/// Informations at or below this are too close to underflow to prove
/// anything with; such queries evaluate every eligible item.
const TINY: f64 = 1e-250;
/// Share of the indexed items (by discrimination) allowed into the exact
/// "extras" set as outliers.
const OUTLIER_QUANTILE: f64 = 0.998;
/// An item is an outlier when its discrimination exceeds the quantile by this
/// factor.
const OUTLIER_FACTOR: f64 = 1.25;

/// Construction options of an [`InformationIndex`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IndexOptions {
    /// First grid node.
    pub theta_min: f64,
    /// Last grid node (`> theta_min`).
    pub theta_max: f64,
    /// Largest distance between two nodes (`> 0`); the nodes are equally
    /// spaced, so the actual step may be slightly smaller.
    pub step: f64,
    /// Items kept per node (`K ≥ 1`).
    pub list_len: usize,
}

impl Default for IndexOptions {
    /// `[−6, 6]` by 0.02 (601 nodes), 256 items per node: 2.5 MB plus 56
    /// bytes per item (5.5 MB for 50,000 items), built in about 0.03 s for
    /// 5,000 items and 0.2 s for 50,000.
    fn default() -> Self {
        Self {
            theta_min: -6.0,
            theta_max: 6.0,
            step: 0.02,
            list_len: 256,
        }
    }
}

/// How a query of the index found its answer (for diagnostics and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexPath {
    /// Proven from the nearest node's list.
    Proven {
        /// Items whose information was computed at the query's `θ`.
        evaluated: usize,
    },
    /// Proven by the branch and bound over difficulty buckets.
    Pruned {
        /// Items whose information was computed at the query's `θ`.
        evaluated: usize,
    },
    /// Every item was evaluated (a non-finite `θ`, no index, or no item the
    /// bound covers).
    FullScan,
}

/// The exact `k` most informative eligible items, best first (larger
/// information first, lower bank index first among equal values).
#[derive(Clone, Copy, Debug)]
pub struct Ranking {
    /// The items and their information.
    pub(super) top: TopK,
    /// How they were found.
    path: IndexPath,
}

impl Ranking {
    /// Wraps a filled group.
    pub(super) fn from_top(top: TopK, path: IndexPath) -> Self {
        Self { top, path }
    }

    /// Bank indices, best first (fewer than `k` when fewer items are eligible).
    #[must_use]
    pub fn items(&self) -> &[usize] {
        &self.top.index[..self.top.len]
    }

    /// Their information at the query's `θ`, same order.
    #[must_use]
    pub fn information(&self) -> &[f64] {
        &self.top.value[..self.top.len]
    }

    /// How the answer was found.
    #[must_use]
    pub fn path(&self) -> IndexPath {
        self.path
    }

    /// A uniform draw among the items (randomesque); no random number is used
    /// when there is only one.
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<usize> {
        self.top.pick(rng)
    }
}

/// One item of a node's list.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Its information at the node.
    value: f64,
    /// Its position in `params`.
    pos: u32,
    /// Its bank index.
    bank: u32,
}

/// A run of `params` (sorted by difficulty) with the ranges of its
/// parameters.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// First position.
    start: u32,
    /// One past the last position.
    end: u32,
    /// Smallest and largest discrimination.
    a: (f64, f64),
    /// Smallest and largest difficulty.
    b: (f64, f64),
}

impl Bucket {
    /// Upper bound of the information at `theta` of every item of the
    /// bucket (module doc, step 2), with the rounding margin.
    fn bound(&self, theta: f64, scaling: f64) -> f64 {
        let x = (self.b.0 - theta).max(theta - self.b.1).max(0.0);
        // The slope at which φ peaks, clamped to the bucket (a₁ when x = 0);
        // evaluated as D²a²·s(D·a·x), which cannot underflow for tiny x.
        let a = (PHI_ARGMAX / (scaling * x)).clamp(self.a.0, self.a.1);
        let da = scaling * a;
        let e = (-(da * x)).exp();
        da * da * e / ((1.0 + e) * (1.0 + e)) * (1.0 + MARGIN)
    }
}

/// Items per bucket of the pruned path.
const BUCKET_SIZE: usize = 128;
/// The maximizer `u*` of `φ(u) = u²·e^u/(1 + e^u)²`, root of `u·tanh(u/2) = 2`.
const PHI_ARGMAX: f64 = 2.399_357_280_515_468;

/// Per-bank index for exact fast maximum-information selection (see the
/// module doc for the method and its proof). Immutable once built; `Send` and
/// `Sync`, so one instance serves every exam on the bank.
#[derive(Clone)]
pub struct InformationIndex {
    /// Scaling constant `D` the index was built for.
    scaling: f64,
    /// Length of the bank it was built from.
    bank_len: usize,
    /// The indexed items (valid dichotomous, not outliers), sorted by
    /// difficulty (ties by bank index).
    params: Vec<ItemParams>,
    /// Bank index of each item of `params`.
    ids: Vec<u32>,
    /// Bank indices of the items evaluated at every query, one by one.
    extras: Vec<u32>,
    /// The valid polytomous items, also evaluated at every query, in blocks
    /// (same values, faster).
    polytomous: PolytomousBlocks,
    /// First node.
    theta_min: f64,
    /// Last node.
    theta_max: f64,
    /// Distance between nodes.
    step: f64,
    /// Number of nodes.
    nodes: usize,
    /// `2·D·max a` over the indexed items.
    rate: f64,
    /// Entries per node.
    list_len: usize,
    /// `nodes × list_len` entries, node by node, best first.
    entries: Vec<Entry>,
    /// Per node, the largest information among the items not on its list
    /// (`−∞` when every indexed item is on it).
    tail: Vec<f64>,
    /// Buckets of neighbouring difficulty over `params` (which is sorted by
    /// `b`), for the pruned path.
    buckets: Vec<Bucket>,
}

impl std::fmt::Debug for InformationIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InformationIndex")
            .field("scaling", &self.scaling)
            .field("bank_len", &self.bank_len)
            .field("indexed", &self.params.len())
            .field("extras", &self.extras.len())
            .field("polytomous", &self.polytomous.len())
            .field("nodes", &self.nodes)
            .field("theta_range", &(self.theta_min, self.theta_max))
            .field("step", &self.step)
            .field("list_len", &self.list_len)
            .field("rate", &self.rate)
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

impl InformationIndex {
    /// Builds the index of `bank` for scaling constant `scaling` with the
    /// default [`IndexOptions`].
    ///
    /// # Panics
    /// If the bank has `2^32` items or more.
    #[must_use]
    pub fn new(bank: &[Item], scaling: f64) -> Self {
        Self::with_options(bank, scaling, IndexOptions::default())
    }

    /// Builds the index with explicit options (invalid options — non-finite
    /// or inverted range, non-positive step, zero list length — are replaced
    /// by the defaults field by field).
    ///
    /// Cost: `nodes × N` information evaluations plus a linear-time top-`K`
    /// selection per node; memory about `16·nodes·K + 56·N` bytes.
    ///
    /// # Panics
    /// If the bank has `2^32` items or more.
    #[must_use]
    pub fn with_options(bank: &[Item], scaling: f64, options: IndexOptions) -> Self {
        assert!(
            u32::try_from(bank.len()).is_ok(),
            "InformationIndex: banks must have fewer than 2^32 items"
        );
        let defaults = IndexOptions::default();
        let (theta_min, theta_max) = if options.theta_min.is_finite()
            && options.theta_max.is_finite()
            && options.theta_min < options.theta_max
        {
            (options.theta_min, options.theta_max)
        } else {
            (defaults.theta_min, defaults.theta_max)
        };
        let step = if options.step.is_finite() && options.step > 0.0 {
            options.step
        } else {
            defaults.step
        };
        let list_len = if options.list_len > 0 {
            options.list_len
        } else {
            defaults.list_len
        };
        let intervals = ((theta_max - theta_min) / step).ceil().clamp(1.0, 1e6) as usize;
        let nodes = intervals + 1;
        let step = (theta_max - theta_min) / intervals as f64;

        // Which items the bound covers.
        let scaling_ok = scaling.is_finite() && scaling > 0.0;
        let valid = |item: &Item| -> Option<ItemParams> {
            match item {
                Item::Dichotomous(p) if scaling_ok && p.validate().is_ok() => Some(*p),
                _ => None,
            }
        };
        let mut slopes: Vec<f64> = bank.iter().filter_map(valid).map(|p| p.a).collect();
        slopes.sort_unstable_by(f64::total_cmp);
        let a_cap = match slopes.last() {
            Some(&max) => {
                let q = slopes[((slopes.len() - 1) as f64 * OUTLIER_QUANTILE) as usize];
                if max > OUTLIER_FACTOR * q {
                    OUTLIER_FACTOR * q
                } else {
                    max
                }
            }
            None => 0.0,
        };
        let mut indexed: Vec<(ItemParams, u32)> = Vec::new();
        let mut extras = Vec::new();
        for (i, item) in bank.iter().enumerate() {
            match valid(item).filter(|p| p.a <= a_cap) {
                Some(p) => indexed.push((p, i as u32)),
                None => extras.push(i as u32),
            }
        }
        let (mut polytomous, extras) = PolytomousBlocks::new(bank, &extras);
        polytomous.build_envelopes(scaling);
        indexed.sort_by(|x, y| x.0.b.total_cmp(&y.0.b).then(x.1.cmp(&y.1)));
        let (params, ids): (Vec<ItemParams>, Vec<u32>) = indexed.into_iter().unzip();
        let n = params.len();
        let a_max = params.iter().map(|p| p.a).fold(0.0, f64::max);
        let rate = 2.0 * scaling * a_max;
        let list_len = list_len.min(n);

        let mut index = Self {
            scaling,
            bank_len: bank.len(),
            params,
            ids,
            extras,
            polytomous,
            theta_min,
            theta_max,
            step,
            nodes,
            rate,
            list_len,
            entries: Vec::with_capacity(nodes * list_len),
            tail: Vec::with_capacity(nodes),
            buckets: Vec::new(),
        };
        if n == 0 {
            index.tail = vec![f64::NEG_INFINITY; nodes];
            return index;
        }

        let by_value = |x: &(f64, u32), y: &(f64, u32)| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1));
        let mut values = vec![0.0_f64; n];
        let mut candidates: Vec<(f64, u32)> = Vec::with_capacity(n.min(8 * list_len + 64));
        // Lower bound of the (K+1)-th value at the next node: by (1) it moves by
        // at most a factor exp(rate·step) from one node to the next.
        let drift = (rate * step).exp() * (1.0 + MARGIN);
        let mut guess = f64::NEG_INFINITY;
        for g in 0..nodes {
            let theta = index.node(g);
            for (v, p) in values.iter_mut().zip(&index.params) {
                *v = information(p, theta, scaling);
            }
            loop {
                candidates.clear();
                candidates.extend(
                    values
                        .iter()
                        .enumerate()
                        .filter(|&(_, &v)| v >= guess)
                        .map(|(pos, &v)| (v, pos as u32)),
                );
                if candidates.len() > list_len || guess == f64::NEG_INFINITY {
                    break;
                }
                guess = f64::NEG_INFINITY;
            }
            let tail = if candidates.len() > list_len {
                candidates.select_nth_unstable_by(list_len, by_value);
                candidates[list_len].0
            } else {
                f64::NEG_INFINITY
            };
            candidates.truncate(list_len);
            candidates.sort_unstable_by(by_value);
            index
                .entries
                .extend(candidates.iter().map(|&(value, pos)| Entry {
                    value,
                    pos,
                    bank: index.ids[pos as usize],
                }));
            index.tail.push(tail);
            guess = if tail > 0.0 {
                tail / drift
            } else {
                f64::NEG_INFINITY
            };
        }

        index.buckets = (0..n)
            .step_by(BUCKET_SIZE)
            .map(|start| {
                let end = (start + BUCKET_SIZE).min(n);
                let run = &index.params[start..end];
                let (a0, a1) = run
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                        (lo.min(p.a), hi.max(p.a))
                    });
                Bucket {
                    start: start as u32,
                    end: end as u32,
                    a: (a0, a1),
                    b: (run[0].b, run[run.len() - 1].b),
                }
            })
            .collect();
        index
    }

    /// Length of the bank the index was built from.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bank_len
    }

    /// Whether it was built from an empty bank.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bank_len == 0
    }

    /// The scaling constant `D` it was built for.
    #[must_use]
    pub fn scaling(&self) -> f64 {
        self.scaling
    }

    /// Approximate heap size in bytes.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        self.params.len() * std::mem::size_of::<ItemParams>()
            + (self.ids.len() + self.extras.len()) * 4
            + self.polytomous.memory_bytes()
            + self.entries.len() * std::mem::size_of::<Entry>()
            + self.tail.len() * 8
            + self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    /// Node `g` (the last one exactly `theta_max`).
    #[inline]
    fn node(&self, g: usize) -> f64 {
        if g + 1 == self.nodes {
            self.theta_max
        } else {
            self.theta_min + g as f64 * self.step
        }
    }

    /// The exact `k` (clamped to `1..=`[`MAX_RANDOMESQUE`]) most informative
    /// items of `bank` at `theta` among those with `eligible[i] == true`
    /// (indices past the end of `eligible` are not eligible), best first, ties
    /// by lowest index, NaN never: the same as a full scan of
    /// [`Item::information`] over the bank.
    ///
    /// `bank` must be the bank the index was built from (only the items
    /// evaluated exactly are read from it).
    ///
    /// # Panics
    /// If `bank` is shorter than the bank the index was built from.
    #[must_use]
    pub fn most_informative(
        &self,
        bank: &[Item],
        eligible: &[bool],
        theta: f64,
        k: usize,
    ) -> Ranking {
        assert!(
            bank.len() >= self.bank_len,
            "InformationIndex: the bank is shorter than the one indexed"
        );
        let k = k.clamp(1, MAX_RANDOMESQUE);
        let elig = |i: usize| eligible.get(i).copied().unwrap_or(false);
        let scaling = self.scaling;
        if !theta.is_finite() || self.params.is_empty() {
            return self.full_scan(bank, eligible, theta, k);
        }
        let mut top = TopK::new(k);
        let mut evaluated = self.offer_extras(bank, eligible, theta, &mut top);

        // 1. The nearest node's list.
        let g = ((theta - self.theta_min) / self.step)
            .round()
            .clamp(0.0, (self.nodes - 1) as f64) as usize;
        let factor = (self.rate * (theta - self.node(g)).abs()).exp() * (1.0 + MARGIN);
        let list = &self.entries[g * self.list_len..(g + 1) * self.list_len];
        let mut proven = false;
        for e in list {
            if let Some(kth) = top.kth()
                && kth > TINY
                && e.value * factor < kth
            {
                proven = true;
                break;
            }
            if elig(e.bank as usize) {
                let value = information(&self.params[e.pos as usize], theta, scaling);
                top.offer(value, e.bank as usize);
                evaluated += 1;
            }
        }
        if !proven
            && let Some(kth) = top.kth()
            && kth > TINY
            && self.tail[g] * factor < kth
        {
            proven = true;
        }
        if proven {
            evaluated += self.offer_polytomous(bank, eligible, theta, &mut top);
            return Ranking::from_top(top, IndexPath::Proven { evaluated });
        }

        // 2. Branch and bound over the buckets, starting from the k-th value
        //    found so far (a lower bound of the true k-th value).
        let lower = top.kth().unwrap_or(f64::NEG_INFINITY);
        let mut order: Vec<(f64, u32)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(j, bucket)| (bucket.bound(theta, scaling), j as u32))
            .collect();
        order.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));
        let mut fresh = TopK::new(k);
        let mut evaluated = self.offer_extras(bank, eligible, theta, &mut fresh);
        for &(bound, j) in &order {
            let cut = fresh.kth().map_or(lower, |v| v.max(lower));
            if cut > TINY && bound < cut {
                break;
            }
            let bucket = &self.buckets[j as usize];
            for pos in bucket.start as usize..bucket.end as usize {
                let i = self.ids[pos] as usize;
                if elig(i) {
                    fresh.offer(information(&self.params[pos], theta, scaling), i);
                    evaluated += 1;
                }
            }
        }
        evaluated += self.offer_polytomous(bank, eligible, theta, &mut fresh);
        Ranking::from_top(fresh, IndexPath::Pruned { evaluated })
    }

    /// Bank indices of the items evaluated one by one at every query (not
    /// indexed, and not in the polytomous blocks).
    pub(super) fn extras(&self) -> &[u32] {
        &self.extras
    }

    /// Calls `f(bank index, I(θ))` for every polytomous item of the bank that
    /// is valid, with [`Item::information`]'s value (computed in blocks).
    pub(super) fn polytomous_information(&self, theta: f64, f: impl FnMut(usize, f64)) {
        self.polytomous.for_each(theta, self.scaling, f);
    }

    /// Writes to `out[i]`, for every item `i` of the bank (`out` as long as
    /// the bank), [`Item::information`]'s value at `theta`, except for the
    /// items of a difficulty bucket (module doc, step 2) or polytomous chunk
    /// ([`super::blocks`]) whose bound at `theta` is below `floor`: for those
    /// `−U`, with `U > 0` an upper bound of their information, and their
    /// information is not computed. `FAST`: the polytomous blocks' GPCM
    /// values are within `err[i]` of it ([`super::blocks`]); `err` is as long
    /// as `out` and 0 on entry (empty when not `FAST`), only those are written.
    pub(super) fn information_above<const FAST: bool>(
        &self,
        bank: &[Item],
        theta: f64,
        floor: f64,
        out: &mut [f64],
        err: &mut [f64],
    ) {
        let scaling = self.scaling;
        let mut info = [0.0_f64; BUCKET_SIZE];
        for bucket in &self.buckets {
            let (start, end) = (bucket.start as usize, bucket.end as usize);
            let ids = &self.ids[start..end];
            let bound = bucket.bound(theta, scaling);
            if bound < floor {
                for &i in ids {
                    out[i as usize] = -bound.max(f64::MIN_POSITIVE);
                }
            } else {
                let info = &mut info[..end - start];
                for (v, p) in info.iter_mut().zip(&self.params[start..end]) {
                    *v = information(p, theta, scaling);
                }
                for (&i, &v) in ids.iter().zip(info.iter()) {
                    out[i as usize] = v;
                }
            }
        }
        for &i in &self.extras {
            out[i as usize] = bank[i as usize].information(theta, scaling);
        }
        self.polytomous
            .for_each_above::<FAST>(theta, scaling, floor, |i, v, e| {
                out[i] = v;
                if FAST {
                    err[i] = e;
                }
            });
    }

    /// Whether the blocks hold any polytomous item.
    pub(super) fn has_polytomous(&self) -> bool {
        self.polytomous.len() > 0
    }

    /// Calls `f(bank index, bound)` for every polytomous item of the blocks
    /// (the valid ones), `bound` an upper bound of [`Item::information`] at
    /// `theta`; `false`, and no call, when the blocks cannot bound there.
    pub(super) fn polytomous_bounds(&self, theta: f64, f: impl FnMut(usize, f64)) -> bool {
        self.polytomous.for_each_bound(theta, self.scaling, f)
    }

    /// Offers the eligible extras evaluated one by one (not the polytomous
    /// blocks) to `top`; returns how many were evaluated.
    fn offer_extras(&self, bank: &[Item], eligible: &[bool], theta: f64, top: &mut TopK) -> usize {
        let mut evaluated = 0;
        for &i in &self.extras {
            let i = i as usize;
            if eligible.get(i).copied().unwrap_or(false) {
                top.offer(bank[i].information(theta, self.scaling), i);
                evaluated += 1;
            }
        }
        evaluated
    }

    /// Offers the eligible polytomous items of the blocks that can enter
    /// `top` (pruned by the blocks' envelopes, [`super::blocks`]); returns how
    /// many were evaluated.
    fn offer_polytomous(
        &self,
        bank: &[Item],
        eligible: &[bool],
        theta: f64,
        top: &mut TopK,
    ) -> usize {
        self.polytomous
            .offer_pruned(bank, eligible, theta, self.scaling, top)
    }

    /// Evaluates every eligible item.
    fn full_scan(&self, bank: &[Item], eligible: &[bool], theta: f64, k: usize) -> Ranking {
        let mut top = TopK::new(k);
        let elig = |i: usize| eligible.get(i).copied().unwrap_or(false);
        scan_params(
            &self.params,
            theta,
            self.scaling,
            |pos| self.ids[pos] as usize,
            elig,
            &mut top,
        );
        self.offer_extras(bank, eligible, theta, &mut top);
        self.offer_polytomous(bank, eligible, theta, &mut top);
        Ranking::from_top(top, IndexPath::FullScan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_information_bounds_hold() {
        let items = [
            ItemParams::new(0.4, -1.0, 0.0, 1.0),
            ItemParams::new(2.9, -0.2, 0.25, 1.0),
            ItemParams::new(1.3, 0.0, 0.1, 0.9),
            ItemParams::new(0.9, 0.7, 0.3, 0.95),
            ItemParams::new(2.0, 1.5, 0.0, 1.0),
        ];
        let bucket = Bucket {
            start: 0,
            end: items.len() as u32,
            a: (0.4, 2.9),
            b: (-1.0, 1.5),
        };
        for &scaling in &[1.0, 1.702] {
            let mut thetas = vec![-1.0 - 1e-300, 1.5 + 1e-300, -1.0 - 1e-12, 1.5 + 1e-9];
            thetas.extend((0..4_000).map(|k| -40.0 + 0.02 * f64::from(k)));
            for theta in thetas {
                let bound = bucket.bound(theta, scaling);
                for p in &items {
                    let info = information(p, theta, scaling);
                    assert!(info <= bound, "{p:?} at {theta}: {info} > {bound}");
                }
            }
            // (1): ln I is 2·D·a-Lipschitz, (2): I ≤ D²a²/4, tight for the 2PL.
            for p in &items {
                let da = scaling * p.a;
                for k in 0..2_000 {
                    let t0 = -8.0 + 0.008 * f64::from(k);
                    let i0 = information(p, t0, scaling);
                    assert!(i0 <= da * da / 4.0 * (1.0 + MARGIN));
                    for h in [1e-6, 0.005, 0.01, 0.3] {
                        for t1 in [t0 - h, t0 + h] {
                            let i1 = information(p, t1, scaling);
                            assert!(
                                i1 <= i0 * (2.0 * da * h).exp() * (1.0 + MARGIN),
                                "{p:?} {t0} {t1}"
                            );
                        }
                    }
                }
            }
            // Tight where an item's slope is the maximizing one.
            let at_edge = bucket.bound(1.5, scaling);
            assert_eq!(at_edge, (scaling * 2.9_f64).powi(2) / 4.0 * (1.0 + MARGIN));
        }
    }
}
