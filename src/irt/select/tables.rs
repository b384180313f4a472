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
//! | variance | `Mepv` | `P_jk(x_g)`, `k = 1..C` (category 0 by complement); under Jeffreys' prior also `I_j(x_g)` |
//!
//! computed by the very functions the plain formula calls, so every table
//! entry is bit-identical to the value the plain scan recomputes at every
//! step. Memory: `8·q·rows` bytes per item (33 nodes: 264 bytes for the
//! information family, 528 for dichotomous divergence, 264 for dichotomous
//! variance), plus per bucket of [`BUCKET_SIZE`] items an envelope of `8·b`
//! bytes (information, `b ≤ 64` node blocks) or `8·h·b` bytes (divergence,
//! `h ≤ 129` pivots).
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
//! Items are grouped by number of categories, sorted into bands of
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
//! * Variance: no exact bound that prunes usefully is known here (the
//!   spread of the expected posterior variance across good items is a few
//!   percent, far below what an envelope of the probability rows can
//!   resolve), so every eligible item gets its fast value.
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
use super::grid::{self, Posterior};
use super::{SelectionContext, SelectionRule, TopK};

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
    /// Per bucket: `blocks` values (information) or `pivots × blocks`
    /// (divergence); empty for the variance family.
    envelope: Vec<f64>,
    /// Per node, the largest entry of any row of the group at that node (in
    /// absolute value): what a skipped node can add (see [`Step`]).
    node_max: Vec<f64>,
    /// Variance family: the 4PL parameters of each position (a stand-in for
    /// polytomous ones), for the probabilities at `θ̂` across a bucket.
    params: Vec<ItemParams>,
    /// Variance family: whether every item of a bucket is dichotomous.
    dichotomous: Vec<bool>,
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

/// Per-bank tables of one quadrature grid for one family of rules (see the
/// [module doc](self)): what makes `Kl`, `Klp`, `Mlwi`, `Mpwi` and `Mepv`
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
    /// The tabulated items, by number of categories.
    groups: Vec<Group>,
    /// Bank indices of the items evaluated by the plain formula.
    extras: Vec<u32>,
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
        let nodes = grid::quadrature_nodes(settings);
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
            order: Vec<(f64, f64, u32)>,
            rows: Vec<f64>,
        }
        let mut pending: Vec<Pending> = Vec::new();
        let mut extras = Vec::new();
        let mut row = Vec::new();
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
            let slot = match pending.iter().position(|p| p.categories == categories) {
                Some(slot) => slot,
                None => {
                    pending.push(Pending {
                        categories,
                        order: Vec::new(),
                        rows: Vec::new(),
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
        }
        pending.sort_by_key(|p| p.categories);

        let mut tables = Self {
            key,
            bank_len: bank.len(),
            scaling,
            nodes,
            blocks,
            pivots,
            groups: Vec::with_capacity(pending.len()),
            extras,
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
                params: Vec::new(),
                dichotomous: Vec::new(),
            };
            for &x in &order {
                group
                    .rows
                    .extend_from_slice(&p.rows[x * stride..(x + 1) * stride]);
            }
            for row in group.rows.chunks_exact(q) {
                for (m, v) in group.node_max.iter_mut().zip(row) {
                    *m = m.max(v.abs());
                }
            }
            if matches!(family, Family::Variance | Family::VarianceJeffreys) {
                group.to_lanes(bank, q);
            }
            group.envelope = tables.envelope(&group, bank);
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
            Family::Information => blocks,
            Family::Divergence => blocks * pivot_count(q),
            Family::Variance | Family::VarianceJeffreys => 0,
        };
        8 * (rows * q + buckets * envelope) + 4 * bank.len()
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
                8 * (g.rows.len() + g.envelope.len() + g.buckets.len() + g.node_max.len())
                    + 4 * g.ids.len()
                    + std::mem::size_of::<ItemParams>() * g.params.len()
                    + g.dichotomous.len()
            })
            .sum();
        groups
            + 8 * (self.nodes.len() + self.pivots.len() + 2 * self.blocks.len())
            + 4 * self.extras.len()
    }

    /// Whether they fit `ctx` and `rule`: same bank length, grid, scaling and
    /// family (they must also have been built from this very bank: that is
    /// the caller's contract).
    pub(super) fn fits(&self, ctx: &SelectionContext<'_>, rule: SelectionRule) -> bool {
        self.bank_len == ctx.bank.len() && TablesKey::new(ctx.estimator, rule) == Some(self.key)
    }

    /// The envelope of every bucket of `group` (module doc).
    fn envelope(&self, group: &Group, bank: &[Item]) -> Vec<f64> {
        let q = self.nodes.len();
        let blocks = &self.blocks;
        match self.key.family {
            Family::Information => {
                let mut env = Vec::with_capacity(group.buckets.len() * blocks.len());
                for &(start, end) in &group.buckets {
                    for &(b0, b1) in blocks {
                        let mut max = 0.0_f64;
                        for pos in start as usize..end as usize {
                            let row = &group.rows[pos * group.stride..][..q];
                            for &v in &row[b0..b1] {
                                max = max.max(v);
                            }
                        }
                        env.push(max);
                    }
                }
                env
            }
            Family::Divergence => {
                let c = group.categories;
                let ln_c = (c as f64).ln();
                let h = self.pivots.len();
                let nb = blocks.len();
                let mut env = vec![0.0_f64; group.buckets.len() * h * nb];
                let mut probs = [0.0; MAX_CATEGORIES];
                let mut log_p = [0.0; MAX_CATEGORIES];
                // Largest |ln P_jgk| over the categories, per node.
                let mut worst = vec![0.0_f64; q];
                for (b, &(start, end)) in group.buckets.iter().enumerate() {
                    let bucket_env = &mut env[b * h * nb..(b + 1) * h * nb];
                    for pos in start as usize..end as usize {
                        let rows = &group.rows[pos * group.stride..][..group.stride];
                        for (g, w) in worst.iter_mut().enumerate() {
                            *w = (0..c).map(|k| rows[k * q + g].abs()).fold(0.0, f64::max);
                        }
                        let item = &bank[group.ids[pos] as usize];
                        for (pivot, env_row) in self.pivots.iter().zip(bucket_env.chunks_mut(nb)) {
                            let m = grid::probabilities(item, *pivot, self.scaling, &mut probs);
                            debug_assert_eq!(m, c);
                            for k in 0..c {
                                log_p[k] = probs[k].ln();
                            }
                            for (slot, &(b0, b1)) in env_row.iter_mut().zip(blocks) {
                                for g in b0..b1 {
                                    let (mut kl, mut ce) = (0.0, 0.0);
                                    for k in 0..c {
                                        let p = probs[k];
                                        if p != 0.0 {
                                            let lq = rows[k * q + g];
                                            kl += p * (log_p[k] - lq);
                                            ce += p * (log_p[k].abs() + lq.abs());
                                        }
                                    }
                                    // The plain formula's rounding at θ̂ and here.
                                    let value = kl + ROUNDING * (1.0 + ln_c + ce + worst[g]);
                                    // NaN (never for finite rows) poisons the bound.
                                    *slot = if value.is_nan() {
                                        f64::INFINITY
                                    } else {
                                        slot.max(value)
                                    };
                                }
                            }
                        }
                    }
                }
                env
            }
            Family::Variance | Family::VarianceJeffreys => Vec::new(),
        }
    }

    /// The exact top `k` of `rule` (signed so that larger is better) among the
    /// eligible items, the plain formula's values; `None` when the step's
    /// weights are degenerate (the caller then runs the plain scan, which
    /// handles every case).
    pub(super) fn top(
        &self,
        ctx: &SelectionContext<'_>,
        rule: SelectionRule,
        posterior: &Posterior,
        k: usize,
    ) -> Option<TopK> {
        let step = Step::new(self, ctx, rule, posterior)?;
        let sign = if rule.larger_is_better() { 1.0 } else { -1.0 };
        let theta = ctx.theta;
        let exact = |i: usize| sign * posterior.criterion(&ctx.bank[i], theta);
        let mut lower = TopK::new(k);
        let mut candidates: Vec<(u32, f64)> = Vec::new();
        for &i in &self.extras {
            if ctx.is_eligible(i as usize) {
                // Exact already: its value is both bounds.
                let v = exact(i as usize);
                lower.offer(v, i as usize);
                candidates.push((i, v));
            }
        }

        // Buckets in decreasing bound.
        let mut order: Vec<(f64, u32, u32)> = Vec::new();
        for (gi, group) in self.groups.iter().enumerate() {
            for b in 0..group.buckets.len() {
                let bound = step.bucket_bound(self, group, b);
                order.push((bound, gi as u32, b as u32));
            }
        }
        order.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));

        let mut lanes = Lanes::new();
        for &(bound, gi, b) in &order {
            if lower.is_full() && bound < lower.threshold {
                break;
            }
            let group = &self.groups[gi as usize];
            let (start, end) = group.buckets[b as usize];
            let mut offer = |i: usize, lo: f64, hi: f64| {
                if lo.is_finite() && hi.is_finite() {
                    lower.offer(lo, i);
                    if hi >= lower.threshold {
                        candidates.push((i as u32, hi));
                    }
                } else {
                    candidates.push((i as u32, f64::INFINITY));
                }
            };
            match step.family {
                Family::Variance | Family::VarianceJeffreys => {
                    // The whole bucket at once (across lanes); minimized, so
                    // the signed value is −EPV.
                    let (mut lo, mut hi) = ([0.0; BUCKET_SIZE], [0.0; BUCKET_SIZE]);
                    step.variance_bucket(group, b as usize, ctx.bank, &mut lanes, &mut lo, &mut hi);
                    for (l, pos) in (start as usize..end as usize).enumerate() {
                        let i = group.ids[pos] as usize;
                        if ctx.is_eligible(i) {
                            offer(i, -hi[l], -lo[l]);
                        }
                    }
                }
                Family::Information | Family::Divergence => {
                    for pos in start as usize..end as usize {
                        let i = group.ids[pos] as usize;
                        if ctx.is_eligible(i) {
                            let rows = &group.rows[pos * group.stride..][..group.stride];
                            let (lo, hi) = step.bounds(gi as usize, group, rows, &ctx.bank[i]);
                            offer(i, lo, hi);
                        }
                    }
                }
            }
        }

        if std::env::var_os("CAT_DEBUG_TABLES").is_some() {
            let visited = order
                .iter()
                .take_while(|(b, _, _)| !(lower.is_full() && *b < lower.threshold))
                .count();
            let cut = lower.threshold;
            let mut bounds: Vec<(f64, usize)> = order
                .iter()
                .map(|&(b, g, _)| (b, self.groups[g as usize].categories))
                .collect();
            bounds.truncate(8);
            eprintln!(
                "  L {} top bounds {:?} median {:?}",
                cut,
                bounds,
                order.get(order.len() / 2)
            );
            eprintln!(
                "tables {:?}: buckets {} visited {} candidates {} exact {}",
                self.key.family,
                order.len(),
                visited,
                candidates.len(),
                candidates.iter().filter(|c| c.1 >= cut).count()
            );
        }
        let mut top = TopK::new(k);
        let cut = if lower.is_full() {
            lower.threshold
        } else {
            f64::NEG_INFINITY
        };
        for &(i, hi) in &candidates {
            if hi >= cut {
                top.offer(exact(i as usize), i as usize);
            }
        }
        Some(top)
    }
}

/// The step's vectors (weights and moments) shared by every item.
struct Step<'a> {
    /// The family.
    family: Family,
    /// `D`.
    scaling: f64,
    /// `θ̂`.
    theta: f64,
    /// Normalized weights `w_g`.
    w: &'a [f64],
    /// `W = Σ_g w_g`.
    total: f64,
    /// Variance family: `w_g·u_g`, `w_g·u_g²`, `|u_g|`, `u_g`, `u_g²`.
    wu: Vec<f64>,
    wuu: Vec<f64>,
    abs_u: Vec<f64>,
    u: Vec<f64>,
    uu: Vec<f64>,
    /// Variance family: `T_r = Σ_g w_g u_g^r` and `Σ_g w_g |u_g|`.
    moments: [f64; 3],
    /// Variance family: `max_g u_g²` (times `1 + 10⁻⁹`), above the variance of
    /// any weights on the nodes.
    max_square: f64,
    abs_moment: f64,
    /// Jeffreys: the answered items' information per node.
    jeffreys: Option<&'a [f64]>,
    /// Per envelope block: `W_β`.
    block_mass: Vec<f64>,
    /// Divergence: the pivots bracketing `θ̂` (`None`: no bound).
    bracket: Option<usize>,
    /// The nodes `[start, end)` whose weight counts: outside them every
    /// weight is below [`cut`] times the largest, and the dot products skip
    /// them, their whole possible contribution being added to the bounds.
    kept: (usize, usize),
    /// `Σ w_g` over the skipped nodes.
    skipped_mass: f64,
    /// Variance family: `Σ w_g |u_g|^r` over the skipped nodes.
    skipped_moments: [f64; 3],
    /// Per group, the most the skipped nodes can add to an item's criterion
    /// (information: `Σ w_g max I`; divergence: `Σ w_g max |ln P|`, the
    /// cross-entropy bounding the divergence).
    tails: Vec<f64>,
}

impl<'a> Step<'a> {
    /// The step's vectors, or `None` when the weights are not finite and
    /// non-negative with a positive finite total.
    fn new(
        tables: &SelectionTables,
        ctx: &SelectionContext<'_>,
        rule: SelectionRule,
        posterior: &'a Posterior,
    ) -> Option<Self> {
        let family = Family::of(rule, ctx.estimator)?;
        let w = posterior.weights();
        if w.len() != tables.nodes.len()
            || posterior.nodes() != tables.nodes.as_slice()
            || !w.iter().all(|&x| x.is_finite() && x >= 0.0)
        {
            return None;
        }
        let total: f64 = w.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return None;
        }
        let block_mass = tables
            .blocks
            .iter()
            .map(|&(b0, b1)| w[b0..b1].iter().sum())
            .collect();
        let mut step = Self {
            family,
            scaling: tables.scaling,
            theta: ctx.theta,
            w,
            total,
            wu: Vec::new(),
            wuu: Vec::new(),
            abs_u: Vec::new(),
            u: Vec::new(),
            uu: Vec::new(),
            moments: [0.0; 3],
            max_square: 0.0,
            abs_moment: 0.0,
            jeffreys: None,
            block_mass,
            bracket: None,
            kept: (0, w.len()),
            skipped_mass: 0.0,
            skipped_moments: [0.0; 3],
            tails: Vec::new(),
        };
        if family != Family::VarianceJeffreys {
            let max = w.iter().copied().fold(0.0, f64::max);
            let floor = cut(family) * max;
            let start = w.iter().position(|&x| x > floor).unwrap_or(0);
            let end = w
                .iter()
                .rposition(|&x| x > floor)
                .map_or(w.len(), |g| g + 1);
            step.kept = (start, end);
            let skipped = || (0..start).chain(end..w.len());
            step.skipped_mass = skipped().map(|g| w[g]).sum();
            step.tails = tables
                .groups
                .iter()
                .map(|group| skipped().map(|g| w[g] * group.node_max[g]).sum())
                .collect();
        }
        match family {
            Family::Information => {}
            Family::Divergence => {
                let t = ctx.theta;
                let p = &tables.pivots;
                if p.len() >= 2 && t >= p[0] && t <= p[p.len() - 1] {
                    let h = p.partition_point(|&x| x <= t).clamp(1, p.len() - 1) - 1;
                    debug_assert!(p[h] <= t && t <= p[h + 1]);
                    step.bracket = Some(h);
                }
            }
            Family::Variance | Family::VarianceJeffreys => {
                let center = posterior.center();
                if !center.is_finite() {
                    return None;
                }
                // The same `u_g` as the plain formula.
                step.u = tables.nodes.iter().map(|&x| x - center).collect();
                step.uu = step.u.iter().map(|&u| u * u).collect();
                step.max_square = step.uu.iter().copied().fold(0.0, f64::max) * (1.0 + 1e-9);
                step.abs_u = step.u.iter().map(|u| u.abs()).collect();
                step.wu = w.iter().zip(&step.u).map(|(w, u)| w * u).collect();
                step.wuu = step.wu.iter().zip(&step.u).map(|(wu, u)| wu * u).collect();
                let (g0, g1) = step.kept;
                step.moments = [
                    w[g0..g1].iter().sum(),
                    step.wu[g0..g1].iter().sum(),
                    step.wuu[g0..g1].iter().sum(),
                ];
                step.abs_moment = dot(&w[g0..g1], &step.abs_u[g0..g1]);
                let skipped = (0..g0).chain(g1..w.len());
                for g in skipped {
                    step.skipped_moments[0] += w[g];
                    step.skipped_moments[1] += w[g] * step.abs_u[g];
                    step.skipped_moments[2] += w[g] * step.uu[g];
                }
                if family == Family::VarianceJeffreys {
                    step.jeffreys = Some(posterior.jeffreys_information()?);
                }
            }
        }
        Some(step)
    }

    /// Upper bound of the signed plain criterion of every item of bucket `b`
    /// (`+∞` when there is none).
    fn bucket_bound(&self, tables: &SelectionTables, group: &Group, b: usize) -> f64 {
        let nb = self.block_mass.len();
        let bound = match self.family {
            Family::Information => {
                let env = &group.envelope[b * nb..(b + 1) * nb];
                dot(&self.block_mass, env)
            }
            Family::Divergence => match self.bracket {
                Some(h) => {
                    let hp = tables.pivots.len();
                    let env = &group.envelope[b * hp * nb..(b + 1) * hp * nb];
                    let (lo, hi) = (&env[h * nb..(h + 1) * nb], &env[(h + 1) * nb..(h + 2) * nb]);
                    self.block_mass
                        .iter()
                        .zip(lo.iter().zip(hi))
                        .map(|(m, (x, y))| m * x.max(*y))
                        .sum()
                }
                None => f64::INFINITY,
            },
            Family::Variance | Family::VarianceJeffreys => f64::INFINITY,
        };
        if bound.is_nan() {
            f64::INFINITY
        } else {
            bound * (1.0 + ROUNDING) + TINY
        }
    }

    /// Bounds `(lo, hi)` of the signed plain criterion of one tabulated item
    /// from its rows (non-finite when they cannot be established).
    fn bounds(&self, gi: usize, group: &Group, rows: &[f64], item: &Item) -> (f64, f64) {
        let q = self.w.len();
        let (g0, g1) = self.kept;
        let w = &self.w[g0..g1];
        match self.family {
            Family::Information => {
                // Skipped nodes add between 0 and the tail (I ≥ 0).
                let v = dot(w, &rows[g0..g1]);
                let tail = self.tails[gi];
                let e = ROUNDING * (v.abs() + tail) + TINY;
                (v - e, v + tail + e)
            }
            Family::Divergence => {
                let mut probs = [0.0; MAX_CATEGORIES];
                let m = grid::probabilities(item, self.theta, self.scaling, &mut probs);
                debug_assert_eq!(m, group.categories);
                // CE = Σ_k p_k (−D_k), W·H = −W Σ_k p_k ln p_k, over the kept
                // nodes; a skipped node adds a divergence between 0 and its
                // cross-entropy, at most max_k |ln P_jgk|.
                let (mut cross, mut entropy) = (0.0, 0.0);
                for (k, &p) in probs[..group.categories].iter().enumerate() {
                    if p != 0.0 {
                        cross -= p * dot(w, &rows[k * q + g0..k * q + g1]);
                        entropy -= p * p.ln();
                    }
                }
                let wh = (self.total - self.skipped_mass) * entropy;
                let v = cross - wh;
                let tail = self.tails[gi];
                let e =
                    ROUNDING * (cross.abs() + wh.abs() + tail + self.skipped_mass * entropy) + TINY;
                (v - e, v + tail + e)
            }
            Family::Variance | Family::VarianceJeffreys => {
                unreachable!("the variance family is evaluated by buckets")
            }
        }
    }

    /// Bounds `[lo, hi]` of the plain expected posterior variance of every
    /// lane of bucket `b` (module doc), computed across the lanes.
    #[expect(
        clippy::needless_range_loop,
        reason = "the three moments are indexed alike in several arrays"
    )]
    fn variance_bucket(
        &self,
        group: &Group,
        b: usize,
        bank: &[Item],
        scratch: &mut Lanes,
        lo: &mut [f64; BUCKET_SIZE],
        hi: &mut [f64; BUCKET_SIZE],
    ) {
        const L: usize = BUCKET_SIZE;
        let q = self.w.len();
        let c = group.categories;
        let (start, end) = group.buckets[b];
        let (start, end) = (start as usize, end as usize);
        let n = end - start;
        let rows = group.lanes(b, q);
        let (g0, g1) = self.kept;
        let Lanes {
            probs,
            value,
            bound,
            unknown,
            others,
            rest,
            sums,
            own,
            moments,
            abs_moment,
        } = scratch;

        // P_jk(θ̂) per lane: across lanes for a dichotomous bucket (the
        // logistic of the model, within 20u of the plain formula's, see
        // `probability_slack`), else item by item (the plain formula's).
        let approximate = group.dichotomous[b];
        if approximate {
            let (p0, p1) = probs.split_at_mut(L);
            for ((p, q0), q1) in group.params[start..end].iter().zip(p0).zip(&mut p1[..L]) {
                let (big, small) = logistic_pair(self.scaling * p.a * (self.theta - p.b));
                let g = p.d - p.c;
                *q1 = p.c + g * big;
                *q0 = (1.0 - p.d) + g * small;
            }
        } else {
            let mut buf = [0.0; MAX_CATEGORIES];
            for (l, &i) in group.ids[start..end].iter().enumerate() {
                let m = grid::probabilities(&bank[i as usize], self.theta, self.scaling, &mut buf);
                debug_assert_eq!(m, c);
                for k in 0..c {
                    probs[k * L + l] = buf[k];
                }
            }
        }
        value.fill(0.0);
        bound.fill(0.0);
        unknown.fill(false);
        for r in 0..3 {
            others[r].fill(0.0);
            rest[r].fill(0.0);
        }

        // Jeffreys: each lane's own weights `w_g·√(J_g + I_jg)`, bit for bit
        // the plain formula's, and their moments.
        if let Some(info) = self.jeffreys {
            let info_rows = &rows[(c - 1) * q * L..c * q * L];
            own.clear();
            own.resize(q * L, 0.0);
            for r in 0..3 {
                moments[r].fill(0.0);
            }
            abs_moment.fill(0.0);
            for g in 0..q {
                let (w, j) = (self.w[g], info[g]);
                let (u, uu, au) = (self.u[g], self.uu[g], self.abs_u[g]);
                let lane = &info_rows[g * L..(g + 1) * L];
                let o = &mut own[g * L..(g + 1) * L];
                for l in 0..L {
                    o[l] = w * (j + lane[l]).sqrt();
                    moments[0][l] += o[l];
                    moments[1][l] += o[l] * u;
                    moments[2][l] += o[l] * uu;
                    abs_moment[l] += o[l] * au;
                }
            }
        } else {
            for r in 0..3 {
                moments[r].fill(self.moments[r]);
            }
            abs_moment.fill(self.abs_moment);
        }

        for k in 1..c {
            let row = &rows[(k - 1) * q * L..k * q * L];
            for s in sums.iter_mut() {
                s.fill(0.0);
            }
            let [s0, s1, s2] = sums;
            match self.jeffreys {
                None => {
                    for g in g0..g1 {
                        let (w, wu, wuu) = (self.w[g], self.wu[g], self.wuu[g]);
                        let lane = &row[g * L..(g + 1) * L];
                        for l in 0..L {
                            s0[l] += w * lane[l];
                            s1[l] += wu * lane[l];
                            s2[l] += wuu * lane[l];
                        }
                    }
                }
                Some(_) => {
                    for g in 0..q {
                        let (u, uu) = (self.u[g], self.uu[g]);
                        let lane = &row[g * L..(g + 1) * L];
                        let o = &own[g * L..(g + 1) * L];
                        for l in 0..L {
                            let wp = o[l] * lane[l];
                            s0[l] += wp;
                            s1[l] += wp * u;
                            s2[l] += wp * uu;
                        }
                    }
                }
            }
            let p = &probs[k * L..(k + 1) * L];
            let skipped = self.skipped_moments;
            for l in 0..L {
                let abs1 = (s0[l].max(0.0) * s2[l].max(0.0)).sqrt();
                let abs = [s0[l].abs(), abs1, s2[l].abs()];
                // Rounding, and the skipped nodes (0 ≤ P ≤ 1 there).
                let errs = [
                    ROUNDING * abs[0] + skipped[0],
                    ROUNDING * abs[1] + skipped[1],
                    ROUNDING * abs[2] + skipped[2],
                ];
                let (v, e, ok) = category_variance(p[l], [s0[l], s1[l], s2[l]], errs);
                value[l] += if ok { v } else { 0.0 };
                bound[l] += if ok { e } else { 0.0 };
                unknown[l] |= !ok;
                for r in 0..3 {
                    rest[r][l] += abs[r];
                }
                others[0][l] += s0[l];
                others[1][l] += s1[l];
                others[2][l] += s2[l];
            }
            // The rare lanes the fast formula cannot vouch for: the fallback.
            for l in 0..n {
                if unknown[l] && !value[l].is_nan() {
                    let errs = [
                        ROUNDING * s0[l].abs() + skipped[0],
                        ROUNDING * (s0[l].max(0.0) * s2[l].max(0.0)).sqrt() + skipped[1],
                        ROUNDING * s2[l].abs() + skipped[2],
                    ];
                    match self.fallback(p[l], [s0[l], s1[l], s2[l]], errs) {
                        Some((v, e)) => {
                            value[l] += v;
                            bound[l] += e;
                            unknown[l] = false;
                        }
                        // Poisons the lane: evaluated by the plain formula.
                        None => value[l] = f64::NAN,
                    }
                }
            }
        }
        // Category 0: Σ_k P_k = 1 up to (8C + 16)u per node. Across lanes,
        // then the fallback for the lanes that need it.
        let sum_slack = (8.0 * c as f64 + 16.0) * UNIT;
        let probability_slack = if approximate { 64.0 * UNIT } else { 0.0 };
        let p = &probs[..L];
        let skipped = self.skipped_moments;
        let [s0, s1, s2] = sums;
        for l in 0..L {
            let totals = [moments[0][l].abs(), abs_moment[l], moments[2][l].abs()];
            s0[l] = moments[0][l] - others[0][l];
            s1[l] = moments[1][l] - others[1][l];
            s2[l] = moments[2][l] - others[2][l];
            let errs = [
                ROUNDING * (totals[0] + rest[0][l]) + sum_slack * totals[0] + skipped[0],
                ROUNDING * (totals[1] + rest[1][l]) + sum_slack * totals[1] + skipped[1],
                ROUNDING * (totals[2] + rest[2][l]) + sum_slack * totals[2] + skipped[2],
            ];
            let (v, e, ok) = category_variance(p[l], [s0[l], s1[l], s2[l]], errs);
            value[l] += if ok { v } else { 0.0 };
            bound[l] += if ok { e } else { 0.0 };
            unknown[l] |= !ok;
            // Keep the errors for the fallback (in `rest`, no longer needed).
            rest[0][l] = errs[0];
        }
        for l in 0..n {
            if unknown[l] && !value[l].is_nan() {
                match self.fallback(p[l], [s0[l], s1[l], s2[l]], [rest[0][l], 0.0, 0.0]) {
                    Some((v, e)) => {
                        value[l] += v;
                        bound[l] += e;
                    }
                    None => value[l] = f64::NAN,
                }
            }
        }
        let sum_rounding = 2.0 * (c as f64 + 2.0) * UNIT + probability_slack;
        for l in 0..n {
            // The plain sum over the categories (terms ≥ 0), this one, and the
            // probabilities at θ̂ when they were computed across lanes.
            let e = bound[l] * (1.0 + probability_slack) + sum_rounding * value[l] + TINY;
            (lo[l], hi[l]) = if value[l].is_finite() && e.is_finite() {
                (value[l] - e, value[l] + e)
            } else {
                (f64::NEG_INFINITY, f64::INFINITY)
            };
        }
    }

    /// A category's term when [`category_variance`] cannot vouch for it: if
    /// `S_0` is surely above `10⁻²⁸⁰` (a category with next to no weight,
    /// whose sums are not known to within half of themselves), the plain
    /// variance is that of weights on the nodes (no subnormal terms, so
    /// rounding cannot push it out), which lies in `[0, max_g u_g²]`, and
    /// the term in `[0, p·max_g u_g²]`; else `None`.
    fn fallback(&self, p: f64, [s0, _, _]: [f64; 3], [d0, _, _]: [f64; 3]) -> Option<(f64, f64)> {
        (s0 - d0 > 1e-280 && p.is_finite()).then(|| {
            let half = 0.5 * p * self.max_square;
            (half, half)
        })
    }
}

/// Buffers of [`Step::variance_bucket`], one set per step.
struct Lanes {
    /// `P_jk(θ̂)` of category `k`, lane `l` at `k·BUCKET_SIZE + l`.
    probs: Vec<f64>,
    /// Per lane: the sum of the category terms, and of their bounds.
    value: [f64; BUCKET_SIZE],
    bound: [f64; BUCKET_SIZE],
    /// Per lane: a category term is not yet vouched for.
    unknown: [bool; BUCKET_SIZE],
    /// Per lane: `Σ S_r` and `Σ |S_r|` over the categories `1..`.
    others: [[f64; BUCKET_SIZE]; 3],
    rest: [[f64; BUCKET_SIZE]; 3],
    /// Per lane: one category's `S_r`.
    sums: [[f64; BUCKET_SIZE]; 3],
    /// Jeffreys: each lane's own weights, node-major.
    own: Vec<f64>,
    /// Per lane: the weights' moments `Σ w u^r` and `Σ w |u|`.
    moments: [[f64; BUCKET_SIZE]; 3],
    abs_moment: [f64; BUCKET_SIZE],
}

impl Lanes {
    /// Empty buffers.
    fn new() -> Self {
        Self {
            probs: vec![0.0; MAX_CATEGORIES * BUCKET_SIZE],
            value: [0.0; BUCKET_SIZE],
            bound: [0.0; BUCKET_SIZE],
            unknown: [false; BUCKET_SIZE],
            others: [[0.0; BUCKET_SIZE]; 3],
            rest: [[0.0; BUCKET_SIZE]; 3],
            sums: [[0.0; BUCKET_SIZE]; 3],
            own: Vec::new(),
            moments: [[0.0; BUCKET_SIZE]; 3],
            abs_moment: [0.0; BUCKET_SIZE],
        }
    }
}

/// One category's term `p·max(0, S_2/S_0 − (S_1/S_0)²)` of the expected
/// posterior variance from fast sums `S_r` within `d_r` of the plain ones,
/// with a bound on the difference to the plain term: `(value, bound, ok)`;
/// not `ok` when `S_0` is not known to within half of itself (or anything is
/// not finite). Branch-free, so the loop over lanes vectorizes.
///
/// With `ρ = d_0/S_0 ≤ 1/2`, `A = S_2/S_0` and `m = S_1/S_0`: the plain `A`
/// is within `ΔA = (d_2 + A·d_0)/(S_0 − d_0) ≤ (d_2 + A·d_0)(1 + 2ρ)/S_0`,
/// the plain `m` within `Δm = (d_1 + |m|·d_0)(1 + 2ρ)/S_0`, so the plain
/// `m²` within `2|m|·Δm + Δm²`; `8u·(A + m²)` covers the rounding of the
/// plain division, square and subtraction, and `max(0, ·)` is 1-Lipschitz.
#[inline(always)]
fn category_variance(p: f64, [s0, s1, s2]: [f64; 3], [d0, d1, d2]: [f64; 3]) -> (f64, f64, bool) {
    let r0 = 1.0 / s0;
    let rho = d0 * r0;
    let widen = (1.0 + 2.0 * rho) * r0;
    let a = s2 * r0;
    let m = s1 * r0;
    let b = m * m;
    let da = (d2 + a.abs() * d0) * widen;
    let dm = (d1 + m.abs() * d0) * widen;
    let db = (2.0 * m.abs() + dm) * dm;
    let slack = 8.0 * UNIT * (a.abs() + b);
    let v = p * (a - b).max(0.0);
    let e = p * (da + db + slack);
    // NaN fails every comparison.
    let ok = (s0 > 1e-250) & (rho <= 0.5) & ((v + e).abs() < f64::INFINITY);
    (v, e, ok)
}

/// `Σ a_i b_i` with four accumulators (vectorizes; the order differs from a
/// sequential sum by rounding only, see the module doc).
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0_f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut rest = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        rest += x * y;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

/// Consecutive node ranges, at most [`MAX_BLOCKS`] of them, covering `0..q`.
fn node_blocks(q: usize) -> Vec<(usize, usize)> {
    let size = q.div_ceil(MAX_BLOCKS).max(1);
    (0..q)
        .step_by(size)
        .map(|start| (start, (start + size).min(q)))
        .collect()
}

/// Number of pivots of a grid of `q` nodes: twice as fine as the nodes, at
/// most [`MAX_PIVOTS`].
fn pivot_count(q: usize) -> usize {
    (2 * q.saturating_sub(1) + 1).clamp(2, MAX_PIVOTS)
}

/// Equally spaced pivots from `lo` to `hi` (the last exactly `hi`).
fn pivot_grid(lo: f64, hi: f64, q: usize) -> Vec<f64> {
    let n = pivot_count(q);
    let step = (hi - lo) / (n - 1) as f64;
    (0..n)
        .map(|k| if k + 1 == n { hi } else { lo + k as f64 * step })
        .collect()
}
