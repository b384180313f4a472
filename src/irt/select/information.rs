//! Maximum Fisher information over the bank, by a vectorized scan: the
//! information of every item at one ability ([`bank_information`]), the `k`
//! most informative ([`most_informative`], through the index when it fits),
//! and the dichotomous entry points [`best_information`] and
//! [`select_next_item`].

use rand::Rng;

use super::super::item::Item;
use super::super::model::{ItemParams, information};
use super::{IndexPath, InformationIndex, MAX_RANDOMESQUE, Ranking, SelectionContext, TopK};

/// Fisher information at `ctx.theta` of every bank item, in bank order, with
/// [`Item::information`]'s value: the dichotomous items through the
/// vectorized [`information`] (the same function), the polytomous ones
/// through the index's blocks when it fits; ineligible polytomous items
/// outside the blocks are not evaluated (NaN).
pub(super) fn bank_information(ctx: &SelectionContext<'_>) -> Vec<f64> {
    /// Stand-in for polytomous slots of the buffer (overwritten after the loop).
    const FILLER: ItemParams = ItemParams::two_pl(1.0, 0.0);
    let (theta, scaling) = (ctx.theta, ctx.estimator.scaling);
    let index = ctx.usable_index();
    let mut out = vec![f64::NAN; ctx.bank.len()];
    let mut params = [FILLER; CHUNK];
    let mut polytomous = false;
    for (items, out) in ctx.bank.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        let mut dichotomous = false;
        for (slot, item) in params.iter_mut().zip(items) {
            *slot = match item {
                Item::Dichotomous(p) => {
                    dichotomous = true;
                    *p
                }
                Item::Polytomous(_) => {
                    polytomous = true;
                    FILLER
                }
            };
        }
        if dichotomous {
            let mut info = [0.0; CHUNK];
            for (value, p) in info.iter_mut().zip(&params[..items.len()]) {
                *value = information(p, theta, scaling);
            }
            for ((value, item), &info) in out.iter_mut().zip(items).zip(&info) {
                if let Item::Dichotomous(_) = item {
                    *value = info;
                }
            }
        }
    }
    if polytomous {
        let exact = |i: usize, item: &Item| {
            if ctx.is_eligible(i) {
                item.information(theta, scaling)
            } else {
                f64::NAN
            }
        };
        match index {
            Some(index) => {
                index.polytomous_information(theta, |i, info| out[i] = info);
                // The polytomous items outside the blocks (invalid ones).
                for &i in index.extras() {
                    let i = i as usize;
                    if let item @ Item::Polytomous(_) = &ctx.bank[i] {
                        out[i] = exact(i, item);
                    }
                }
            }
            None => {
                for (i, item) in ctx.bank.iter().enumerate() {
                    if let Item::Polytomous(_) = item {
                        out[i] = exact(i, item);
                    }
                }
            }
        }
    }
    out
}

/// The exact `k` most informative eligible items at `ctx.theta`, through the
/// index when it fits the bank, else by a full scan.
pub(super) fn most_informative(ctx: &SelectionContext<'_>, k: usize) -> Ranking {
    match ctx.usable_index() {
        Some(index) => index.most_informative(ctx.bank, ctx.eligible, ctx.theta, k),
        None => {
            let mut top = TopK::new(k);
            scan_items(
                ctx.bank,
                ctx.eligible,
                ctx.theta,
                ctx.estimator.scaling,
                &mut top,
            );
            Ranking::from_top(top, IndexPath::FullScan)
        }
    }
}

/// Offers the information of every eligible item of `bank` to `top`, in
/// chunks: the dichotomous parameters are copied to a contiguous buffer so
/// the information loop vectorizes (polytomous items are evaluated apart),
/// then the comparisons.
pub(super) fn scan_items(
    bank: &[Item],
    eligible: &[bool],
    theta: f64,
    scaling: f64,
    top: &mut TopK,
) {
    /// Stand-in for polytomous slots of the buffer (overwritten after the loop).
    const FILLER: ItemParams = ItemParams::two_pl(1.0, 0.0);
    let mut params = [FILLER; CHUNK];
    let mut info = [0.0_f64; CHUNK];
    for (chunk, items) in bank.chunks(CHUNK).enumerate() {
        let mut polytomous = false;
        for (slot, item) in params.iter_mut().zip(items) {
            *slot = match item {
                Item::Dichotomous(p) => *p,
                Item::Polytomous(_) => {
                    polytomous = true;
                    FILLER
                }
            };
        }
        for (value, p) in info.iter_mut().zip(&params[..items.len()]) {
            *value = information(p, theta, scaling);
        }
        if polytomous {
            for (value, item) in info.iter_mut().zip(items) {
                if let Item::Polytomous(_) = item {
                    *value = item.information(theta, scaling);
                }
            }
        }
        let base = chunk * CHUNK;
        for (j, &value) in info[..items.len()].iter().enumerate() {
            if value >= top.threshold && eligible.get(base + j).copied().unwrap_or(false) {
                top.offer(value, base + j);
            }
        }
    }
}

/// The largest Fisher information at `theta` among the eligible items (0 when
/// none is eligible or all are NaN): the `max_information_left` input of the
/// minimum-information stopping rule ([`crate::irt::StopInputs`]). Uses the
/// index when it was built for a bank of this length and `scaling`.
#[must_use]
pub fn best_information(
    bank: &[Item],
    eligible: &[bool],
    theta: f64,
    scaling: f64,
    index: Option<&InformationIndex>,
) -> f64 {
    let ranking = match index.filter(|ix| ix.len() == bank.len() && ix.scaling() == scaling) {
        Some(index) => index.most_informative(bank, eligible, theta, 1),
        None => {
            let mut top = TopK::new(1);
            scan_items(bank, eligible, theta, scaling, &mut top);
            Ranking::from_top(top, IndexPath::FullScan)
        }
    };
    ranking
        .information()
        .first()
        .copied()
        .unwrap_or(0.0)
        .max(0.0)
}

/// Picks the next dichotomous item by maximum Fisher information: uniformly at
/// random among the `randomesque` eligible items with the largest information
/// at `theta` (see [`information`], scaling constant `D = scaling`).
///
/// The original dichotomous entry point, kept for callers with a plain
/// `&[ItemParams]` bank; [`super::select_item`] with [`super::SelectionRule::MaxInfo`] gives
/// the same choice for the same bank.
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
/// comparison. No allocation.
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
    let n = bank.len().min(administered.len());
    scan_params(
        &bank[..n],
        theta,
        scaling,
        |position| position,
        |i| !administered[i],
        &mut top,
    );
    top.pick(rng)
}

/// Items per block of the vectorized information loop.
pub(super) const CHUNK: usize = 256;

/// Offers every item of `params` to `top` under its bank index
/// `bank_index(position)`, skipping those for which `eligible(bank index)` is
/// false.
///
/// Two passes per chunk: a branch-free (vectorizable) information loop, then
/// a cheap scan against the current `k`-th best.
#[inline]
pub(super) fn scan_params(
    params: &[ItemParams],
    theta: f64,
    scaling: f64,
    bank_index: impl Fn(usize) -> usize,
    eligible: impl Fn(usize) -> bool,
    top: &mut TopK,
) {
    let mut info = [0.0_f64; CHUNK];
    for (chunk, items) in params.chunks(CHUNK).enumerate() {
        for (slot, item) in info.iter_mut().zip(items) {
            *slot = information(item, theta, scaling);
        }
        let base = chunk * CHUNK;
        for (j, &value) in info[..items.len()].iter().enumerate() {
            if value >= top.threshold {
                let i = bank_index(base + j);
                if eligible(i) {
                    top.offer(value, i);
                }
            }
        }
    }
}
