//! Exact fast ranking for the rules that integrate over the quadrature grid
//! (`Kl`, `Klp`, `Mlwi`, `Mpwi`, `Mepv`; definitions in
//! [`super::criterion_values`]).
//!
//! This module owns [`SelectionTables`]: per bank and per grid (quadrature
//! points, `theta_min`, `theta_max`, scaling `D`), each item's values on the
//! grid, laid out as contiguous rows of `f64` so that a rule's criterion
//! becomes a few dot products with the step's weights, plus per-bucket upper
//! envelopes that let whole buckets of items be skipped. It must never change
//! a rule's answer: the ranking it returns is the plain scan's
//! ([`super::grid::Posterior::criterion`] over every eligible item), ties
//! (lowest index first) and NaN (never chosen) included, and the values it
//! returns are the plain formula's, bit for bit.
//!
//! # The tables
//!
//! On the nodes `x_0..x_{q−1}` of the estimator's grid, per item `j` with `C`
//! categories (a row is `q` consecutive `f64`):
//!
//! | family | rules | rows |
//! |---|---|---|
//! | information | `Mlwi`, `Mpwi` | `I_j(x_g)` |
//! | divergence | `Kl`, `Klp` | `ln P_jk(x_g)`, `k = 0..C` |
//! | variance | `Mepv` | `P_jk(x_g)`, `k = 1..C` (category 0 by complement in the bounds; its own row, item-major, for the posterior); under Jeffreys' prior also `I_j(x_g)` |
//!
//! computed by the very functions the plain formula calls, so every table
//! entry is bit-identical to the value the plain scan recomputes at every
//! step. Memory: `8·q·rows` bytes per item (33 nodes: 264 bytes for the
//! information family, 528 for dichotomous divergence, 264 for dichotomous
//! variance), plus per bucket of [`BUCKET_SIZE`] items an envelope of `8·b`
//! bytes (information, `b ≤ 64` node blocks) or `8·h·b` bytes (divergence,
//! `h ≤ 129` pivots).
//!
//! The step's posterior ([`super::grid::Posterior`]) reads the answered
//! items' `ln P` from these rows where they hold it bit for bit (the
//! divergence family's, and `ln` of the variance family's from category 1:
//! [`SelectionTables::log_probabilities`]), the same terms in the same order.
//!
//! Items the tables cannot vouch for (parameters outside their model's
//! domain, or any non-finite entry) are "extras": evaluated by the plain
//! formula at every step.
//!
//! # Fast values and exact answers
//!
//! With `w_g` the step's normalized weights ([`super::grid::Posterior`]) and
//! `W = Σ_g w_g`:
//!
//! * information: `Σ_g w_g I_jg`, one dot product;
//! * divergence (`p_k = P_jk(θ̂)`, `H = −Σ_k p_k ln p_k`):
//!   `Σ_g w_g Σ_k p_k (ln p_k − ln P_jgk) = Σ_k p_k (−D_k) − W·H` with
//!   `D_k = Σ_g w_g ln P_jgk`, one dot product per category;
//! * variance: per category the sums `S_r = Σ_g w_g P_jgk u_g^r`
//!   (`u_g = x_g − centre`, `r = 0, 1, 2`), three dot products per stored row,
//!   then `Σ_k p_k (S_2/S_0 − (S_1/S_0)²)`.
//!
//! These are the plain formulas with the sums reassociated, so they differ
//! from the plain values by rounding only. Every fast value comes with a
//! bound on that difference: a sum of `n` products computed in any order is
//! within `γ_n·Σ|terms|` of the exact sum (`γ_n = n·u/(1 − n·u)`, `u = 2⁻⁵³`;
//! Higham, 2002, §3.1), so the plain and the fast value are within
//! `2γ_{q+C+8}·S` of each other, where `S` is the sum of the absolute terms:
//! `S` = the value itself (information: every term is `≥ 0`), `CE + W·H`
//! (divergence, `CE = Σ_k p_k (−D_k)`, since `ln P ≤ 0`), and for the
//! variance the bounds are carried through `S_2/S_0 − (S_1/S_0)²` in interval
//! arithmetic (`|S_1|`'s terms are bounded by `√(S_0·S_2)`, Cauchy–Schwarz).
//! [`ROUNDING`] `= 10⁻¹²` is more than twice `2γ_{q+C+8}` for every allowed
//! grid (`q ≤ 1001`, `C ≤ 32`).
//!
//! A step then (1) computes a fast value `v_j ± e_j` for the eligible items it
//! visits, keeping `L`, the `k`-th largest lower bound `v_j − e_j` (the rule's
//! sign applied, so larger is better), (2) evaluates exactly, with the plain
//! formula, every visited item whose upper bound `v_j + e_j` reaches the final
//! `L`, and ranks those. An item not evaluated exactly has a plain value below
//! `L`, while `k` items have plain values `≥ L`: it can neither enter the
//! top `k` nor tie with its last member, so the ranking is the plain scan's.
//! Items whose fast value or bound is not finite are always evaluated exactly.
//!
//! # Envelopes (pruning)
//!
//! Items are grouped by number of categories (divergence family: and by model,
//! GRM or GPCM, whose curvature bounds differ), sorted into bands of
//! discrimination and within a band by location, and cut into buckets of
//! [`BUCKET_SIZE`]. Nodes are grouped into at most 64 consecutive blocks `β`
//! with step masses `W_β = Σ_{g∈β} w_g`.
//!
//! * Information: `E_β = max_{j ∈ bucket, g ∈ β} I_jg`. Since `w_g ≥ 0`,
//!   every item of the bucket has `Σ_g w_g I_jg ≤ Σ_β W_β E_β`.
//! * Divergence: the integrand depends on `θ̂`, so the envelope is tabulated
//!   on pivots `t_0 < … < t_{h−1}` spanning `[theta_min, theta_max]`:
//!   `E_{hβ} = max_{j, g∈β} KL_j(x_g ‖ t_h)` (plus the rounding margin of
//!   the plain formula, `ROUNDING·(1 + ln C + CE)`). For `θ̂ ∈ [t_h, t_{h+1}]`,
//!   `KL_j(x ‖ θ̂) ≤ max(KL_j(x ‖ t_h), KL_j(x ‖ t_{h+1}))` for every model
//!   here, because `f(t) = KL(P(·|t) ‖ P(·|x))` decreases up to `t = x` and
//!   increases after: `f'(t) = Σ_k P_k'(t) ln(P_k(t)/P_k(x)) = Cov_t(s, r)`
//!   with the score `s(k) = ∂ln P_k(t)/∂t` and `r(k) = ln(P_k(t)/P_k(x))`.
//!   All three models have monotone likelihood ratios in `(k, θ)` — the 4PL
//!   because `P` increases, the GPCM because `ln(P_{k+1}/P_k) = D·a·(θ − δ_{k+1})`,
//!   the GRM because `∂ln(P_{k+1}/P_k)/∂θ = D·a·(σ(z_k) − σ(z_{k+2})) > 0`
//!   (with the module doc's notation of [`super::super::item`]) — so `s` is
//!   non-decreasing in `k` and `r` is non-decreasing for `t > x`,
//!   non-increasing for `t < x`; the covariance of two comonotone (or
//!   antitone) functions of one variable is `≥ 0` (`≤ 0`) (Chebyshev's sum
//!   inequality). The bucket's bound is `Σ_β W_β max(E_{hβ}, E_{h+1,β})`.
//!   Outside `[theta_min, theta_max]` there is no bound and nothing is pruned.
//!   Polytomous buckets have a second, much tighter bound when the posterior
//!   is concentrated (`curvature.rs`): `KL(θ̂ ‖ x) = ∫_{θ̂}^{x} (x − t)·f''(t) dt`
//!   with `f'' = I` for the GPCM and `f'' ≤ e^{D·a·|t − θ̂|}·I` for the GRM, so
//!   an envelope of the bucket's information on fine cells bounds every item's
//!   criterion; the bucket's bound is the smaller of the two.
//! * Variance, two-category groups (not under Jeffreys' prior): per node
//!   the smallest and largest `P_jk(x_g)` of the bucket and of its increments
//!   `P_jk(x_g) − P_jk(x_{g−1})`, `k = 0, 1`. With any constant `V_c`,
//!   `EPV = V_c·Σ_k p_k − Σ_k p_k (V_c − V_k)`, and `V_c − V_k` depends on
//!   the item through `π_k = Σ_g w_g P_jgk` and two sums by parts over the
//!   increments, so the bound tracks the variance *reduction* rather than the
//!   variance (see `Step::variance_bound`).
//! * Variance, polytomous groups (not under Jeffreys' prior): the same
//!   bucket bound prunes next to nothing (the spread of a bucket's
//!   thresholds), so each item gets its own bound instead, from its rows at a
//!   few nodes only (the nodes holding the posterior's mass, the ends of the
//!   kept window's tails and the two nodes bracketing `θ̂`): the GRM's and
//!   GPCM's cumulative probabilities `P(X ≥ k | θ)` are non-decreasing in
//!   `θ`, so those nodes bound every category's probability on the rest of
//!   the window and at `θ̂`, and a mixture bound turns that into a lower bound
//!   of each category's posterior variance (`spread.rs`). All of a step's
//!   item bounds are computed first; a bucket's bound is the largest of its
//!   eligible items', and a visited bucket computes the fast value (and the
//!   probabilities at `θ̂`) of the items whose bound reaches `L` only. Under
//!   Jeffreys' prior (weights that depend on the item) no variance group has
//!   a bound: every eligible item gets its fast value.
//!
//! Buckets are visited in decreasing bound (times `1 + ROUNDING`, for the
//! rounding of both sums); the visit stops at the first bucket whose bound is
//! below `L`: none of its items, nor any item of a later bucket, can reach
//! the top `k`.
//!
//! Reference: Higham, N. J. (2002). *Accuracy and stability of numerical
//! algorithms* (2nd ed.). SIAM.

use super::super::estimate::EstimatorSettings;
use super::super::item::{Item, MAX_CATEGORIES};
use super::super::model::{ItemParams, logistic_pair};
use super::grid;
use super::{SelectionContext, SelectionRule};

mod curvature;
mod envelope;
mod spread;
mod step;
mod variance;

use envelope::{node_blocks, pivot_count, pivot_grid};

/// Items per bucket of the envelopes.
pub(super) const BUCKET_SIZE: usize = 32;
/// Largest number of node blocks of an envelope.
const MAX_BLOCKS: usize = 64;
/// Largest number of pivots of a divergence envelope.
const MAX_PIVOTS: usize = 129;
/// Discrimination bands the buckets are cut from (banks of at least
/// [`BAND_MIN_ITEMS`] items per band).
const BANDS: usize = 8;
/// Fewest items per discrimination band.
const BAND_MIN_ITEMS: usize = 512;
/// Relative bound on the rounding difference between a fast and a plain sum
/// (see the module doc: at least twice `2γ_{q+C+8}`).
const ROUNDING: f64 = 1e-12;
/// Absolute slack for underflowed products.
const TINY: f64 = 1e-300;
/// Unit roundoff `u = 2⁻⁵³`.
const UNIT: f64 = f64::EPSILON / 2.0;
/// Nodes at either end of the grid whose weight is below this share of the
/// largest are skipped by the dot products (their possible contribution is
/// bounded and added to the error bounds instead, so a larger share only
/// widens the bounds): per family, small enough that the bounds stay far
/// narrower than the gaps between items' criteria. A divergence row can reach
/// hundreds at a far node, an information row `D²a²/4`, a probability 1.
const fn cut(family: Family) -> f64 {
    match family {
        Family::Divergence => 1e-13,
        Family::Information => 1e-11,
        Family::Variance | Family::VarianceJeffreys => 1e-9,
    }
}

/// What a family of rules tabulates (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Family {
    /// `I_j(x_g)`: `Mlwi`, `Mpwi`.
    Information,
    /// `ln P_jk(x_g)`: `Kl`, `Klp`.
    Divergence,
    /// `P_jk(x_g)`, `k ≥ 1`: `Mepv`.
    Variance,
    /// `P_jk(x_g)`, `k ≥ 1`, and `I_j(x_g)`: `Mepv` under Jeffreys' prior.
    VarianceJeffreys,
}

impl Family {
    /// The family of `rule` under `settings`, if it integrates on the grid.
    fn of(rule: SelectionRule, settings: &EstimatorSettings) -> Option<Self> {
        match rule {
            SelectionRule::Mlwi | SelectionRule::Mpwi => Some(Self::Information),
            SelectionRule::Kl | SelectionRule::Klp => Some(Self::Divergence),
            SelectionRule::Mepv => Some(match settings.prior {
                super::super::estimate::Prior::Jeffreys => Self::VarianceJeffreys,
                _ => Self::Variance,
            }),
            _ => None,
        }
    }

    /// Rows per item of `categories` categories.
    fn rows(self, categories: usize) -> usize {
        match self {
            Self::Information => 1,
            Self::Divergence => categories,
            Self::Variance => categories - 1,
            Self::VarianceJeffreys => categories,
        }
    }
}

/// What a set of [`SelectionTables`] was built for: the grid (clamped number
/// of quadrature points, `theta_min`, `theta_max`, scaling `D`) and the rule
/// family. Equal keys mean interchangeable tables for the same bank, so it is
/// the key of a cache of tables per bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TablesKey {
    /// The rule family.
    family: Family,
    /// Number of nodes.
    points: usize,
    /// `theta_min` (bits).
    theta_min: u64,
    /// `theta_max` (bits).
    theta_max: u64,
    /// `D` (bits).
    scaling: u64,
}

impl TablesKey {
    /// The key of the tables `rule` needs under `settings`; `None` for the
    /// rules that do not integrate on the grid (they need no tables).
    #[must_use]
    pub fn new(settings: &EstimatorSettings, rule: SelectionRule) -> Option<Self> {
        Some(Self {
            family: Family::of(rule, settings)?,
            points: settings.quadrature_points.clamp(
                super::super::estimate::MIN_QUADRATURE_POINTS,
                super::super::estimate::MAX_QUADRATURE_POINTS,
            ),
            theta_min: settings.theta_min.to_bits(),
            theta_max: settings.theta_max.to_bits(),
            scaling: settings.scaling.to_bits(),
        })
    }
}

/// The items of one number of categories.
#[derive(Debug)]
struct Group {
    /// Categories of every item of the group.
    categories: usize,
    /// `f64`s per item: rows × nodes.
    stride: usize,
    /// Bank index of each position.
    ids: Vec<u32>,
    /// `stride` values per position (module doc).
    rows: Vec<f64>,
    /// Runs of positions `[start, end)`.
    buckets: Vec<(u32, u32)>,
    /// Per bucket: `blocks` values (information), `pivots × blocks`
    /// (divergence) or `8 × nodes + 1` (two-category variance groups, see
    /// [`SelectionTables::variance_envelope`]); else empty.
    envelope: Vec<f64>,
    /// Per node, the largest entry of any row of the group at that node (in
    /// absolute value): what a skipped node can add (see [`Step`]).
    node_max: Vec<f64>,
    /// Divergence family, buckets of polytomous items only: per bucket, the
    /// information envelope on [`curvature::CELLS`] cells (else empty).
    cells: Vec<f64>,
    /// With `cells`: per bucket, the largest GRM slope `D·a` (0 without GRM items).
    rates: Vec<f64>,
    /// Variance family: the 4PL parameters of each position (a stand-in for
    /// polytomous ones), for the probabilities at `θ̂` across a bucket.
    params: Vec<ItemParams>,
    /// Variance family: whether every item of a bucket is dichotomous.
    dichotomous: Vec<bool>,
    /// Variance family, polytomous groups: per position, a Lipschitz constant
    /// of the item's cumulative probabilities, NaN when the spread bound does
    /// not vouch for the item (see [`spread::slope`]).
    slopes: Vec<f64>,
    /// Variance family: per position, `P_0` on the nodes (item-major, `q`
    /// per position), the plain formula's, for the posterior of answers of
    /// category 0 ([`SelectionTables::log_probabilities`]).
    zeros: Vec<f64>,
}

impl Group {
    /// Variance family: rearranges the item-major rows into node-major
    /// buckets of [`BUCKET_SIZE`] lanes (see [`Group::lanes`]), and keeps the
    /// dichotomous parameters.
    #[expect(
        clippy::wrong_self_convention,
        reason = "fills the lanes in place; the name says what they become"
    )]
    fn to_lanes(&mut self, bank: &[Item], q: usize) {
        let rows = self.stride / q;
        let mut lanes = vec![0.0; self.buckets.len() * rows * q * BUCKET_SIZE];
        for (b, &(start, end)) in self.buckets.iter().enumerate() {
            let base = b * rows * q * BUCKET_SIZE;
            for (l, pos) in (start as usize..end as usize).enumerate() {
                let item = &self.rows[pos * self.stride..(pos + 1) * self.stride];
                for (rg, &v) in item.iter().enumerate() {
                    lanes[base + rg * BUCKET_SIZE + l] = v;
                }
            }
        }
        self.rows = lanes;
        self.params = self
            .ids
            .iter()
            .map(|&i| match &bank[i as usize] {
                Item::Dichotomous(p) => *p,
                Item::Polytomous(_) => ItemParams::two_pl(1.0, 0.0),
            })
            .collect();
        self.dichotomous = self
            .buckets
            .iter()
            .map(|&(start, end)| {
                self.ids[start as usize..end as usize]
                    .iter()
                    .all(|&i| matches!(bank[i as usize], Item::Dichotomous(_)))
            })
            .collect();
    }

    /// Variance family: the rows of bucket `b`, node-major: row `r`, node
    /// `g`, lane `l` at `(r·q + g)·BUCKET_SIZE + l` (lanes past the bucket's
    /// end are 0).
    fn lanes(&self, b: usize, q: usize) -> &[f64] {
        let size = (self.stride / q) * q * BUCKET_SIZE;
        &self.rows[b * size..(b + 1) * size]
    }
}

/// One item's tabulated `ln P` of one category on the nodes
/// ([`SelectionTables::log_probabilities`]).
pub(super) enum LogRow<'a> {
    /// `ln P` at node `g` at `g`.
    Logarithms(&'a [f64]),
    /// `P` at node `g` at `g·BUCKET_SIZE`.
    Probabilities(&'a [f64]),
    /// `P` at node `g` at `g`.
    Values(&'a [f64]),
}

impl LogRow<'_> {
    /// `ln P` at node `g`.
    #[inline]
    pub(super) fn at(&self, g: usize) -> f64 {
        match self {
            Self::Logarithms(row) => row[g],
            Self::Probabilities(lanes) => lanes[g * BUCKET_SIZE].ln(),
            Self::Values(row) => row[g].ln(),
        }
    }
}

/// Per-bank tables of one quadrature grid for one family of rules (see the
/// module doc of `irt::select::tables`): what makes `Kl`, `Klp`, `Mlwi`, `Mpwi` and `Mepv`
/// steps cost dot products over a few buckets instead of exponentials and
/// logarithms over the whole bank.
///
/// Built once per bank and grid ([`SelectionTables::new`]) and passed to
/// [`super::select_item`] in [`SelectionContext::tables`]; the bank is
/// immutable, so the tables can be shared by every exam of the bank.
pub struct SelectionTables {
    /// What they were built for.
    key: TablesKey,
    /// Length of the bank.
    bank_len: usize,
    /// Scaling constant `D`.
    scaling: f64,
    /// The quadrature nodes.
    nodes: Vec<f64>,
    /// Node ranges `[start, end)` of the envelope blocks.
    blocks: Vec<(usize, usize)>,
    /// Pivots of the divergence envelopes (empty for other families).
    pivots: Vec<f64>,
    /// `[theta_min, theta_max]`: the span of the curvature cells.
    cell_range: (f64, f64),
    /// The tabulated items, by number of categories.
    groups: Vec<Group>,
    /// Bank indices of the items evaluated by the plain formula.
    extras: Vec<u32>,
    /// Per bank item, its group and position (`(u32::MAX, 0)` for the
    /// extras): where [`SelectionTables::log_probabilities`] reads its rows.
    places: Vec<(u32, u32)>,
}

impl std::fmt::Debug for SelectionTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectionTables")
            .field("key", &self.key)
            .field("bank_len", &self.bank_len)
            .field("nodes", &self.nodes.len())
            .field("blocks", &self.blocks.len())
            .field("pivots", &self.pivots.len())
            .field(
                "tabulated",
                &self.groups.iter().map(|g| g.ids.len()).sum::<usize>(),
            )
            .field("extras", &self.extras.len())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

impl SelectionTables {
    /// Builds the tables `rule` needs for `bank` on the grid of `settings`;
    /// `None` for the rules that need none (`MaxInfo`, `Urry`, `Progressive`,
    /// `Proportional`, `Random`).
    ///
    /// Cost: `q` evaluations of every item's probabilities (or information),
    /// and for `Kl`/`Klp` the envelope, `h·q·C` operations per item (about
    /// 0.1 s for 50,000 dichotomous items on 33 nodes). Memory: see
    /// [`SelectionTables::estimated_bytes`].
    ///
    /// # Panics
    /// If the bank has `2^32` items or more.
    #[must_use]
    pub fn new(bank: &[Item], settings: &EstimatorSettings, rule: SelectionRule) -> Option<Self> {
        let key = TablesKey::new(settings, rule)?;
        assert!(
            u32::try_from(bank.len()).is_ok(),
            "SelectionTables: banks must have fewer than 2^32 items"
        );
        let family = key.family;
        let scaling = settings.scaling;
        let nodes: Vec<f64> = settings.quadrature_nodes().collect();
        let q = nodes.len();
        let blocks = node_blocks(q);
        let pivots = if family == Family::Divergence {
            pivot_grid(settings.theta_min, settings.theta_max, q)
        } else {
            Vec::new()
        };

        // Rows of every item, grouped by number of categories.
        struct Pending {
            categories: usize,
            /// Divergence family: 1 for GRM items, 2 for GPCM items (their
            /// curvature bounds differ), else 0.
            kind: u8,
            order: Vec<(f64, f64, u32)>,
            rows: Vec<f64>,
            /// Variance family: `P_0` on the nodes, `q` per item.
            zeros: Vec<f64>,
        }
        let mut pending: Vec<Pending> = Vec::new();
        let mut extras = Vec::new();
        let mut row = Vec::new();
        let mut zeros = vec![0.0; q];
        let mut probs = [0.0; MAX_CATEGORIES];
        for (i, item) in bank.iter().enumerate() {
            let id = i as u32;
            if item.validate_at(i).is_err() {
                extras.push(id);
                continue;
            }
            let categories = item.categories().min(MAX_CATEGORIES);
            let rows = family.rows(categories);
            row.clear();
            row.resize(rows * q, 0.0);
            for (g, &x) in nodes.iter().enumerate() {
                match family {
                    Family::Information => row[g] = item.information(x, scaling),
                    Family::Divergence => {
                        grid::probabilities(item, x, scaling, &mut probs);
                        for k in 0..categories {
                            row[k * q + g] = probs[k].ln();
                        }
                    }
                    Family::Variance | Family::VarianceJeffreys => {
                        grid::probabilities(item, x, scaling, &mut probs);
                        zeros[g] = probs[0];
                        for k in 1..categories {
                            row[(k - 1) * q + g] = probs[k];
                        }
                        if family == Family::VarianceJeffreys {
                            row[(categories - 1) * q + g] = item.information(x, scaling);
                        }
                    }
                }
            }
            if !row.iter().all(|v| v.is_finite()) {
                extras.push(id);
                continue;
            }
            let kind = match item {
                Item::Polytomous(p) if family == Family::Divergence => match p.model {
                    super::super::item::PolytomousModel::Grm => 1,
                    super::super::item::PolytomousModel::Gpcm => 2,
                },
                _ => 0,
            };
            let slot = match pending
                .iter()
                .position(|p| p.categories == categories && p.kind == kind)
            {
                Some(slot) => slot,
                None => {
                    pending.push(Pending {
                        categories,
                        kind,
                        order: Vec::new(),
                        rows: Vec::new(),
                        zeros: Vec::new(),
                    });
                    pending.len() - 1
                }
            };
            let a = match item {
                Item::Dichotomous(p) => p.a,
                Item::Polytomous(p) => p.a,
            };
            let p = &mut pending[slot];
            p.order.push((a, item.location(), id));
            p.rows.extend_from_slice(&row);
            if matches!(family, Family::Variance | Family::VarianceJeffreys) {
                p.zeros.extend_from_slice(&zeros);
            }
        }
        pending.sort_by_key(|p| (p.categories, p.kind));

        let mut tables = Self {
            key,
            bank_len: bank.len(),
            scaling,
            nodes,
            blocks,
            pivots,
            cell_range: (settings.theta_min, settings.theta_max),
            groups: Vec::with_capacity(pending.len()),
            extras,
            places: vec![(u32::MAX, 0); bank.len()],
        };
        for p in pending {
            let stride = family.rows(p.categories) * q;
            // Bands of discrimination, location order within a band.
            let n = p.order.len();
            let mut by_slope: Vec<usize> = (0..n).collect();
            by_slope.sort_by(|&x, &y| p.order[x].0.total_cmp(&p.order[y].0).then(x.cmp(&y)));
            let bands = (n / BAND_MIN_ITEMS).clamp(1, BANDS);
            let mut order = Vec::with_capacity(n);
            let mut buckets = Vec::new();
            for band in 0..bands {
                let mut members: Vec<usize> =
                    by_slope[band * n / bands..(band + 1) * n / bands].to_vec();
                members.sort_by(|&x, &y| p.order[x].1.total_cmp(&p.order[y].1).then(x.cmp(&y)));
                for chunk in members.chunks(BUCKET_SIZE) {
                    let start = order.len() as u32;
                    order.extend_from_slice(chunk);
                    buckets.push((start, order.len() as u32));
                }
            }
            let mut group = Group {
                categories: p.categories,
                stride,
                ids: order.iter().map(|&x| p.order[x].2).collect(),
                rows: Vec::with_capacity(n * stride),
                buckets,
                envelope: Vec::new(),
                node_max: vec![0.0; q],
                cells: Vec::new(),
                rates: Vec::new(),
                params: Vec::new(),
                dichotomous: Vec::new(),
                slopes: Vec::new(),
                zeros: Vec::new(),
            };
            for &x in &order {
                group
                    .rows
                    .extend_from_slice(&p.rows[x * stride..(x + 1) * stride]);
                if !p.zeros.is_empty() {
                    group.zeros.extend_from_slice(&p.zeros[x * q..(x + 1) * q]);
                }
            }
            for row in group.rows.chunks_exact(q) {
                for (m, v) in group.node_max.iter_mut().zip(row) {
                    *m = m.max(v.abs());
                }
            }
            for (pos, &i) in group.ids.iter().enumerate() {
                tables.places[i as usize] = (tables.groups.len() as u32, pos as u32);
            }
            if matches!(family, Family::Variance | Family::VarianceJeffreys) {
                group.to_lanes(bank, q);
            }
            if family == Family::Variance && group.categories > 2 {
                let radius = tables.nodes[0].abs().max(tables.nodes[q - 1].abs());
                group.slopes = group
                    .ids
                    .iter()
                    .map(|&i| spread::slope(&bank[i as usize], scaling, radius))
                    .collect();
            }
            group.envelope = tables.envelope(&group, bank);
            if family == Family::Divergence {
                (group.cells, group.rates) = tables.curvature_envelope(&group, bank);
            }
            tables.groups.push(group);
        }
        Some(tables)
    }

    /// Approximate heap size in bytes of the tables `rule` needs for `bank`
    /// under `settings` (0 for the rules that need none), before building
    /// them: for a cache's memory budget.
    #[must_use]
    pub fn estimated_bytes(
        bank: &[Item],
        settings: &EstimatorSettings,
        rule: SelectionRule,
    ) -> usize {
        let Some(key) = TablesKey::new(settings, rule) else {
            return 0;
        };
        let q = key.points;
        let rows: usize = bank
            .iter()
            .map(|item| key.family.rows(item.categories().clamp(2, MAX_CATEGORIES)))
            .sum();
        let buckets = bank.len().div_ceil(BUCKET_SIZE) + BANDS * 32;
        let blocks = q.min(MAX_BLOCKS);
        let envelope = match key.family {
            Family::Information => buckets * blocks,
            Family::Divergence => buckets * (blocks * pivot_count(q) + curvature::CELLS + 1),
            Family::Variance => {
                // Two-category buckets (at most one partial per band) times
                // their size; no envelope for the others.
                let mut counts = [0_usize; MAX_CATEGORIES + 1];
                for item in bank {
                    counts[item.categories().clamp(2, MAX_CATEGORIES)] += 1;
                }
                counts
                    .iter()
                    .enumerate()
                    .filter(|&(c, &n)| c == 2 && n > 0)
                    .map(|(c, &n)| {
                        (n.div_ceil(BUCKET_SIZE) + BANDS) * variance::variance_size(c, q)
                    })
                    .sum()
            }
            Family::VarianceJeffreys => 0,
        };
        // The variance family's rows of category 0 (for the posterior).
        let zeros = match key.family {
            Family::Variance | Family::VarianceJeffreys => q * bank.len(),
            _ => 0,
        };
        8 * (rows * q + zeros + envelope) + 12 * bank.len()
    }

    /// What the tables were built for.
    #[must_use]
    pub fn key(&self) -> TablesKey {
        self.key
    }

    /// Length of the bank they were built from.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bank_len
    }

    /// Whether they were built from an empty bank.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bank_len == 0
    }

    /// Heap size in bytes.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        let groups: usize = self
            .groups
            .iter()
            .map(|g| {
                8 * (g.rows.len()
                    + g.envelope.len()
                    + g.buckets.len()
                    + g.node_max.len()
                    + g.cells.len()
                    + g.rates.len())
                    + 4 * g.ids.len()
                    + std::mem::size_of::<ItemParams>() * g.params.len()
                    + g.dichotomous.len()
                    + 8 * (g.slopes.len() + g.zeros.len())
            })
            .sum();
        groups
            + 8 * (self.nodes.len() + self.pivots.len() + 2 * self.blocks.len())
            + 4 * self.extras.len()
            + 8 * self.places.len()
    }

    /// The natural logarithms of bank item `i`'s probability of category
    /// `x` on the nodes, bit for bit `ln` of the plain formula's probability
    /// (a score past the last category reads as the last, any score `≥ 1` of
    /// a dichotomous item as correct), when the tables hold them: the
    /// divergence family's rows, or the variance family's (`ln` still to be
    /// taken; category 0 from its own rows). `None` otherwise (extras, the
    /// information family).
    pub(super) fn log_probabilities(&self, i: usize, x: u32) -> Option<LogRow<'_>> {
        let &(gi, pos) = self.places.get(i)?;
        let group = self.groups.get(gi as usize)?;
        let (pos, q) = (pos as usize, self.nodes.len());
        let k = (x as usize).min(group.categories - 1);
        match self.key.family {
            Family::Divergence => Some(LogRow::Logarithms(
                &group.rows[pos * group.stride + k * q..][..q],
            )),
            Family::Variance | Family::VarianceJeffreys if k >= 1 => {
                let b = group
                    .buckets
                    .partition_point(|&(start, _)| start as usize <= pos)
                    - 1;
                let lane = pos - group.buckets[b].0 as usize;
                let rows = group.lanes(b, q);
                Some(LogRow::Probabilities(
                    &rows[(k - 1) * q * BUCKET_SIZE + lane..],
                ))
            }
            Family::Variance | Family::VarianceJeffreys => {
                group.zeros.get(pos * q..(pos + 1) * q).map(LogRow::Values)
            }
            _ => None,
        }
    }

    /// Whether they fit `ctx` and `rule`: same bank length, grid, scaling and
    /// family (they must also have been built from this very bank: that is
    /// the caller's contract).
    pub(super) fn fits(&self, ctx: &SelectionContext<'_>, rule: SelectionRule) -> bool {
        self.bank_len == ctx.bank.len() && TablesKey::new(ctx.estimator, rule) == Some(self.key)
    }
}
