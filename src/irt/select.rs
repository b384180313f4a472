//! Next-item selection.
//!
//! This module owns the choice of the next item to administer: the selection
//! rules of the R package catR 3.17 (`nextItem`, Magis & Barrada, 2017) for
//! dichotomous and polytomous items, the randomesque exposure control of
//! Kingsbury & Zara (1989) on top of any rule, and the exact fast path of
//! maximum-information selection over large banks ([`InformationIndex`]).
//!
//! | [`SelectionRule`] | catR `criterion` | picks the eligible item with | source |
//! |---|---|---|---|
//! | `MaxInfo` | `"MFI"` | the largest Fisher information `I_j(θ̂)` | Lord (1980, ch. 10) |
//! | `Urry` | `"bOpt"` | the smallest `|b_j − θ̂|` (polytomous: [`Item::location`]) | Urry (1970) |
//! | `Kl` | `"KL"` | the largest `∫ KL_j(θ ‖ θ̂) L(θ) dθ` | Chang & Ying (1996); Barrada et al. (2009) |
//! | `Klp` | `"KLP"` | the largest `∫ KL_j(θ ‖ θ̂) L(θ) π(θ) dθ` | Chang & Ying (1996) |
//! | `Mlwi` | `"MLWI"` | the largest `∫ I_j(θ) L(θ) dθ` | Veerkamp & Berger (1997) |
//! | `Mpwi` | `"MPWI"` | the largest `∫ I_j(θ) L(θ) π(θ) dθ` | van der Linden (1998) |
//! | `Mepv` | `"MEPV"` | the smallest `Σ_k P_jk(θ̂) Var(θ | x, k)` | van der Linden (1998) |
//! | `Progressive` | `"progressive"` | the largest `W·I_j(θ̂) + (1 − W)·U_j` | Revuelta & Ponsoda (1998); Barrada et al. (2008) |
//! | `Proportional` | `"proportional"` | a draw with probability `∝ I_j(θ̂)^H` | Segall (2004); Barrada et al. (2008) |
//! | `Random` | `"random"` | a uniform draw | |
//!
//! `L(θ)` is the likelihood of the responses so far, `π` the prior of the
//! [`EstimatorSettings`], and `KL_j(θ ‖ θ̂) = Σ_k P_jk(θ̂) ln(P_jk(θ̂)/P_jk(θ))`
//! the Kullback–Leibler divergence between the response distributions of item
//! `j` at `θ̂` and at `θ`. Integrals are catR's trapezoid rule
//! (`integrate.catR`) on the estimator's quadrature grid (`theta_min`,
//! `theta_max`, `quadrature_points`, catR's `parInt`); see
//! [`criterion_values`] for the exact quantities.
//!
//! Common conventions of [`select_item`]:
//! * only items with `eligible[i] == true` are considered (indices past the end
//!   of `eligible` are not eligible); the caller excludes administered items,
//!   enemies, exposure-ineligible items and other content areas;
//! * ties are broken by the lowest bank index; an item whose criterion is NaN
//!   is never chosen; `None` when no item can be chosen;
//! * randomesque `k` (clamped to `1..=`[`MAX_RANDOMESQUE`]): the item is drawn
//!   uniformly among the `k` best items by the rule's criterion (for
//!   `Progressive`, by its randomized score); it adds nothing to
//!   `Proportional` and `Random`, which are draws already (catR ignores
//!   randomesque for progressive and proportional too). With `k = 1` the
//!   deterministic rules use no random number.
//!
//! References:
//! * Barrada, J. R., Olea, J., Ponsoda, V. & Abad, F. J. (2008). Incorporating
//!   randomness in the Fisher information for improving item-exposure control
//!   in CATs. *British Journal of Mathematical and Statistical Psychology*, 61.
//! * Barrada, J. R., Olea, J., Ponsoda, V. & Abad, F. J. (2009). Item selection
//!   rules in computerized adaptive testing: accuracy and security.
//!   *Methodology*, 5(1).
//! * Chang, H.-H. & Ying, Z. (1996). A global information approach to
//!   computerized adaptive testing. *Applied Psychological Measurement*, 20(3).
//! * Kingsbury, G. G. & Zara, A. R. (1989). Procedures for selecting items for
//!   computerized adaptive tests. *Applied Measurement in Education*, 2(4).
//! * Revuelta, J. & Ponsoda, V. (1998). A comparison of item exposure control
//!   methods in computerized adaptive testing. *Journal of Educational
//!   Measurement*, 35(4).
//! * Segall, D. O. (2004). A sharing item response theory model for
//!   computerized adaptive testing. *Journal of Educational and Behavioral
//!   Statistics*, 29(4).
//! * Urry, V. W. (1970). *A Monte Carlo investigation of logistic test models*.
//!   PhD thesis, Purdue University.
//! * van der Linden, W. J. (1998). Bayesian item selection criteria for
//!   adaptive testing. *Psychometrika*, 63(2).
//! * Veerkamp, W. J. J. & Berger, M. P. F. (1997). Some new item selection
//!   criteria for adaptive testing. *Journal of Educational and Behavioral
//!   Statistics*, 22(2).

mod blocks;
mod draws;
mod grid;
mod index;
mod information;
mod tables;
mod topk;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::estimate::EstimatorSettings;
use super::item::Item;

pub use index::{IndexOptions, IndexPath, InformationIndex, Ranking};
use information::most_informative;
pub use information::{best_information, select_next_item};
pub use tables::{SelectionTables, TablesKey};
use topk::TopK;

/// Largest randomesque group size; larger requests are clamped to it. The
/// top-`k` buffer is a fixed array of this size (no allocation).
pub const MAX_RANDOMESQUE: usize = 64;

/// An item selection rule (catR's `nextItem` criteria; see the module doc for
/// the definitions and sources).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SelectionRule {
    /// Maximum Fisher information at `θ̂` (catR `"MFI"`).
    #[default]
    MaxInfo,
    /// Closest difficulty: smallest `|b − θ̂|` (catR `"bOpt"`, Urry 1970);
    /// polytomous items use [`Item::location`] (catR refuses them).
    Urry,
    /// Likelihood-weighted Kullback–Leibler information (catR `"KL"`).
    ///
    /// Chang & Ying (1996) integrate `KL_j(θ ‖ θ̂)` over the interval
    /// `θ̂ ± δ_n` with `δ_n = z/√n`; catR (since version 3, following Barrada
    /// et al., 2009) weights it by the likelihood over the whole quadrature
    /// grid instead, which needs no `z` and is what is implemented here.
    Kl,
    /// Posterior-weighted Kullback–Leibler information (catR `"KLP"`).
    Klp,
    /// Maximum likelihood-weighted information (catR `"MLWI"`).
    Mlwi,
    /// Maximum posterior-weighted information (catR `"MPWI"`).
    Mpwi,
    /// Minimum expected posterior variance (catR `"MEPV"`).
    Mepv,
    /// Progressive method: information plus a random component that fades
    /// over the test (catR `"progressive"`, acceleration 1, length rule).
    Progressive,
    /// Proportional method: a draw with probability `∝ I^H`, `H` growing over
    /// the test (catR `"proportional"`, acceleration 1, length rule).
    Proportional,
    /// Uniform draw among the eligible items (catR `"random"`).
    Random,
}

impl SelectionRule {
    /// Every rule, in declaration order.
    pub const ALL: [Self; 10] = [
        Self::MaxInfo,
        Self::Urry,
        Self::Kl,
        Self::Klp,
        Self::Mlwi,
        Self::Mpwi,
        Self::Mepv,
        Self::Progressive,
        Self::Proportional,
        Self::Random,
    ];

    /// Whether a larger [`criterion_values`] entry is better (`false` for
    /// `Urry`, a distance, and `Mepv`, a variance).
    #[must_use]
    pub const fn larger_is_better(self) -> bool {
        !matches!(self, Self::Urry | Self::Mepv)
    }
}

/// Everything a selection rule may look at.
#[derive(Clone, Copy, Debug)]
pub struct SelectionContext<'a> {
    /// The item bank.
    pub bank: &'a [Item],
    /// `true` = may be chosen. The caller has already excluded the
    /// administered items, enemies, exposure-ineligible items and other content
    /// areas. Items past the end of this slice are not eligible.
    pub eligible: &'a [bool],
    /// Bank indices of the administered items, in order (out-of-range indices
    /// are ignored).
    pub administered: &'a [usize],
    /// Their category scores (0/1 for dichotomous items), same order; only the
    /// first `min(administered.len(), responses.len())` pairs are used.
    pub responses: &'a [u32],
    /// The current ability estimate `θ̂`.
    pub theta: f64,
    /// Its standard error (kept for rules that use it; none of catR's does).
    pub standard_error: f64,
    /// Quadrature grid, prior and scaling constant `D` (every rule uses `D`;
    /// `Kl`, `Klp`, `Mlwi`, `Mpwi` and `Mepv` integrate on the grid).
    pub estimator: &'a EstimatorSettings,
    /// Test length `T` (the schedule of `Progressive` and `Proportional`).
    pub max_items: usize,
    /// Optional fast exact path for `MaxInfo`; ignored unless it was built
    /// for a bank of the same length with the same scaling constant (it must
    /// be built from this very bank: that is the caller's contract).
    pub index: Option<&'a InformationIndex>,
    /// Optional fast exact path for `Kl`, `Klp`, `Mlwi`, `Mpwi` and `Mepv`;
    /// ignored unless it was built for a bank of the same length, the same
    /// grid (quadrature points, range, scaling) and the rule's family (same
    /// contract: built from this very bank).
    pub tables: Option<&'a SelectionTables>,
}

impl SelectionContext<'_> {
    /// Whether bank item `i` is eligible.
    #[inline]
    fn is_eligible(&self, i: usize) -> bool {
        self.eligible.get(i).copied().unwrap_or(false)
    }

    /// Number of items that count as administered.
    fn answered(&self) -> usize {
        self.administered.len().min(self.responses.len())
    }

    /// The index, when it fits this bank.
    fn usable_index(&self) -> Option<&InformationIndex> {
        self.index
            .filter(|ix| ix.len() == self.bank.len() && ix.scaling() == self.estimator.scaling)
    }
}

/// Picks the next item by `rule` among the eligible items (see the module doc
/// for the rules and the conventions on ties, NaN and randomesque).
///
/// Costs, for a bank of `N` items, `n` answered items and `q` quadrature
/// points: `MaxInfo` with a usable [`InformationIndex`] a few hundred
/// nanoseconds typically (the exact top `k` is proven from a few dozen
/// candidates, else the index falls back to a pruned or full scan), `O(N)`
/// information evaluations without one; `Urry`, `Progressive`,
/// `Proportional` and `Random` `O(N)`; `Kl`, `Klp`, `Mlwi`, `Mpwi` and `Mepv`
/// `O(n·q + N·q·categories)` with one allocation of a few `q`-long vectors.
///
/// ```
/// use adaptive_engine::irt::{
///     EstimatorSettings, InformationIndex, Item, ItemParams, SelectionContext, SelectionRule,
///     select_item,
/// };
/// use rand::SeedableRng;
///
/// let bank: Vec<Item> = (0..100)
///     .map(|i| Item::from(ItemParams::three_pl(1.0 + (i % 5) as f64 * 0.2, -2.5 + 0.05 * i as f64, 0.2)))
///     .collect();
/// let index = InformationIndex::new(&bank, 1.0); // once per bank
/// let mut eligible = vec![true; bank.len()];
/// eligible[40] = false; // already administered
/// let settings = EstimatorSettings::default();
/// let ctx = SelectionContext {
///     bank: &bank,
///     eligible: &eligible,
///     administered: &[40],
///     responses: &[1],
///     theta: 0.3,
///     standard_error: 0.8,
///     estimator: &settings,
///     max_items: 20,
///     index: Some(&index),
///     tables: None,
/// };
/// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
/// let next = select_item(SelectionRule::MaxInfo, &ctx, 1, &mut rng).unwrap();
/// let by_mepv = select_item(SelectionRule::Mepv, &ctx, 1, &mut rng).unwrap();
/// assert!(eligible[next] && eligible[by_mepv]);
/// ```
pub fn select_item<R: Rng + ?Sized>(
    rule: SelectionRule,
    ctx: &SelectionContext<'_>,
    randomesque: usize,
    rng: &mut R,
) -> Option<usize> {
    let k = randomesque.clamp(1, MAX_RANDOMESQUE);
    match rule {
        SelectionRule::MaxInfo
        | SelectionRule::Urry
        | SelectionRule::Kl
        | SelectionRule::Klp
        | SelectionRule::Mlwi
        | SelectionRule::Mpwi
        | SelectionRule::Mepv => ranked(rule, ctx, k).and_then(|top| top.pick(rng)),
        SelectionRule::Progressive => {
            let weight = progressive_weight(ctx.answered(), ctx.max_items);
            if weight >= 1.0 {
                return most_informative(ctx, k).pick(rng);
            }
            draws::progressive(ctx, k, weight, rng)
        }
        SelectionRule::Proportional => {
            let exponent = proportional_exponent(ctx.answered(), ctx.max_items);
            draws::proportional(ctx, exponent, rng)
        }
        SelectionRule::Random => {
            let count = (0..ctx.bank.len()).filter(|&i| ctx.is_eligible(i)).count();
            if count == 0 {
                return None;
            }
            let target = rng.random_range(0..count);
            (0..ctx.bank.len())
                .filter(|&i| ctx.is_eligible(i))
                .nth(target)
        }
    }
}

/// The exact `k` (clamped to `1..=`[`MAX_RANDOMESQUE`]) best eligible items
/// of a deterministic rule (`MaxInfo`, `Urry`, `Kl`, `Klp`, `Mlwi`, `Mpwi`,
/// `Mepv`), best first (ties by lowest index, NaN never), each with its
/// [`criterion_values`] entry; `None` for the rules that draw (`Progressive`,
/// `Proportional`, `Random`). [`select_item`] draws uniformly among these.
///
/// Uses the context's [`InformationIndex`] (`MaxInfo`) and
/// [`SelectionTables`] (the integrating rules) when they fit; the answer is
/// the same as without them.
#[must_use]
pub fn best_items(
    rule: SelectionRule,
    ctx: &SelectionContext<'_>,
    k: usize,
) -> Option<Vec<(usize, f64)>> {
    let top = ranked(rule, ctx, k.clamp(1, MAX_RANDOMESQUE))?;
    let sign = if rule.larger_is_better() { 1.0 } else { -1.0 };
    Some(
        top.index[..top.len]
            .iter()
            .zip(&top.value[..top.len])
            .map(|(&i, &v)| (i, sign * v))
            .collect(),
    )
}

/// The top `k` of a deterministic rule, values signed so that larger is
/// better; `None` for the rules that draw.
fn ranked(rule: SelectionRule, ctx: &SelectionContext<'_>, k: usize) -> Option<TopK> {
    let theta = ctx.theta;
    match rule {
        SelectionRule::MaxInfo => Some(most_informative(ctx, k).top),
        SelectionRule::Urry => {
            let mut top = TopK::new(k);
            for (i, item) in ctx.bank.iter().enumerate() {
                if ctx.is_eligible(i) {
                    top.offer(-(item.location() - theta).abs(), i);
                }
            }
            Some(top)
        }
        SelectionRule::Kl
        | SelectionRule::Klp
        | SelectionRule::Mlwi
        | SelectionRule::Mpwi
        | SelectionRule::Mepv => {
            let posterior = grid::Posterior::new(ctx, rule);
            if let Some(top) = ctx
                .tables
                .filter(|t| t.fits(ctx, rule))
                .and_then(|t| t.top(ctx, rule, &posterior, k))
            {
                return Some(top);
            }
            let sign = if rule.larger_is_better() { 1.0 } else { -1.0 };
            let mut top = TopK::new(k);
            for (i, item) in ctx.bank.iter().enumerate() {
                if ctx.is_eligible(i) {
                    top.offer(sign * posterior.criterion(item, theta), i);
                }
            }
            Some(top)
        }
        SelectionRule::Progressive | SelectionRule::Proportional | SelectionRule::Random => None,
    }
}

/// The criterion each rule ranks by, for every bank item (NaN for the
/// ineligible ones): what [`select_item`] maximizes (or minimizes, see
/// [`SelectionRule::larger_is_better`]).
///
/// With nodes `x_0..x_{q−1}` of the estimator's grid, catR's trapezoid weights
/// `t_g`, the likelihood `L_g = Π_i P_{i,x_i}(x_g)` of the answered items and
/// the prior `π_g` (normal or uniform density; for Jeffreys' prior
/// `sqrt(Σ_i I_i(x_g))` over the answered items, flat before the first answer),
/// write `w_g = t_g·L_g` (likelihood weight) or `w_g = t_g·L_g·π_g`
/// (posterior weight). Then
///
/// * `MaxInfo`, `Progressive`, `Proportional`: Fisher information `I_j(θ̂)`
///   (the deterministic part of the last two);
/// * `Urry`: `|location_j − θ̂|`;
/// * `Mlwi` / `Mpwi`: `Σ_g w_g I_j(x_g) / Σ_g w_g` with the likelihood /
///   posterior weight;
/// * `Kl` / `Klp`: `Σ_g w_g KL_j(x_g ‖ θ̂) / Σ_g w_g` likewise;
/// * `Mepv`: `Σ_k P_jk(θ̂)·V_k` where `V_k` is the posterior variance
///   `Σ_g w_g P_jk(x_g)(x_g − m_k)² / Σ_g w_g P_jk(x_g)` around the posterior
///   mean `m_k` after answering `k` to item `j` (catR's `EPV`: `eapSem²` with
///   the candidate appended);
/// * `Random`: 0.
///
/// catR's `MWI` and `KL` return the numerators `Σ_g w_g f_g` with the raw
/// likelihood; dividing by `Σ_g w_g` (the same for every item) keeps the
/// ranking and keeps the values finite however long the test (the likelihood
/// is evaluated in log space and scaled to a maximum of 1 first).
#[must_use]
pub fn criterion_values(rule: SelectionRule, ctx: &SelectionContext<'_>) -> Vec<f64> {
    let scaling = ctx.estimator.scaling;
    let theta = ctx.theta;
    // The criterion of every eligible item, NaN for the others.
    let per_item = |f: &dyn Fn(&Item) -> f64| -> Vec<f64> {
        ctx.bank
            .iter()
            .enumerate()
            .map(|(i, item)| {
                if ctx.is_eligible(i) {
                    f(item)
                } else {
                    f64::NAN
                }
            })
            .collect()
    };
    match rule {
        SelectionRule::MaxInfo | SelectionRule::Progressive | SelectionRule::Proportional => {
            per_item(&|item| item.information(theta, scaling))
        }
        SelectionRule::Urry => per_item(&|item| (item.location() - theta).abs()),
        SelectionRule::Kl
        | SelectionRule::Klp
        | SelectionRule::Mlwi
        | SelectionRule::Mpwi
        | SelectionRule::Mepv => {
            let posterior = grid::Posterior::new(ctx, rule);
            per_item(&|item| posterior.criterion(item, theta))
        }
        SelectionRule::Random => per_item(&|_| 0.0),
    }
}

/// Weight `W` of the information part of the progressive method after `t`
/// answered items of a test of length `T` (catR `nextItem`, `rule =
/// "length"`, acceleration `AP = 1`; Barrada et al., 2008):
///
/// ```text
/// W = Σ_{i=1..t} i^AP / Σ_{i=1..T−1} i^AP = t(t + 1) / (T(T − 1))
/// ```
///
/// so the score `W·I_j(θ̂) + (1 − W)·U_j`, `U_j ~ U(0, max_j I_j(θ̂))`, is pure
/// chance at `t = 0` and pure information at `t = T − 1`. Capped at 1 (for
/// `t ≥ T − 1`); for `T ≤ 1`: 0 at `t = 0`, else 1.
#[must_use]
pub fn progressive_weight(answered: usize, max_items: usize) -> f64 {
    if answered == 0 {
        0.0
    } else if max_items <= 1 {
        1.0
    } else {
        let t = answered as f64;
        let total = max_items as f64;
        (t * (t + 1.0) / (total * (total - 1.0))).min(1.0)
    }
}

/// Exponent `H` of the proportional method after `t` answered items of a
/// test of length `T` (catR `nextItem`, `rule = "length"`, `AP = 1`; Barrada
/// et al., 2008): `H = T·W` with `W` of [`progressive_weight`], i.e.
/// `H = t(t + 1)/(T − 1)` (0 at the start: uniform selection; `T` from
/// `t = T − 1` on).
#[must_use]
pub fn proportional_exponent(answered: usize, max_items: usize) -> f64 {
    max_items.max(1) as f64 * progressive_weight(answered, max_items)
}
