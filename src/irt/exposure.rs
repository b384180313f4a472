//! Item exposure control: the pure mathematics of two fleet-wide methods.
//!
//! This module owns the probabilities and draws of exposure control; the
//! counts themselves ([`ExposureCounts`]) are kept by the caller (in the
//! service, fleet-wide in Redis) and passed in. The exposure rate of item `i`
//! is `a_i / n` (`a_i` = `administered_i`, `n` = `examinees`); both methods
//! keep it at most `r = max_rate`.
//!
//! * **Item eligibility** (van der Linden & Veldkamp, 2004, 2007): at the
//!   start of each exam, item `i` is made eligible with probability
//!   `P(E_i)` and stays ineligible for the whole exam otherwise. An item can
//!   only be administered when eligible, so `P(A_i) = P(A_i | E_i)·P(E_i)`, and
//!   `P(A_i) ≤ r` holds for `P(E_i) ≤ r / P(A_i | E_i)`. Their recursion
//!   `P^{j+1}(E_i) = r·P^j(E_i)/P^j(A_i)` estimates the probabilities from the
//!   exams so far; from fleet counts (`e_i` = `eligible_i`, exams in which the
//!   item was eligible) that is `P(E_i) = r·e_i/a_i`. That ratio alone has no
//!   memory of past overshoot: an item given to every examinee for whom it is
//!   eligible gets `P(E_i) = r` for ever and its realized rate is a binomial
//!   proportion scattered around `r` (±0.01 after 2,000 exams at `r = 0.25`).
//!   The recursion's feedback is restored here by aiming the *expected count
//!   after the next exam* at `r·(n + 1)`: with `P(A | E) ≈ a_i/e_i`,
//!
//!   ```text
//!   P(E_i) = clamp((r·(n + 1) − a_i) · e_i / a_i, 0, 1)      (1 when a_i = 0)
//!          = r·e_i/a_i · (1 + n·(1 − (a_i/n)/r))
//!   ```
//!
//!   which is exactly van der Linden and Veldkamp's `r·e_i/a_i` when the rate
//!   is on target (`a_i = r·n`), larger when the item is under-exposed and 0
//!   once `a_i ≥ r·(n + 1)`. Since an exam gives an item at most once, by
//!   induction `a_i < r·n + 1` after every exam, i.e. `a_i ≤ ⌈r·n⌉`: the rate
//!   never exceeds `⌈r·n⌉/n < r + 1/n`, and not `r` itself whenever `r·n` is
//!   an integer (at most 500 of 2,000 exams at `r = 0.25`). `n` is the count
//!   *before* the exam whose eligibility is drawn.
//! * **Sympson–Hetter** (Sympson & Hetter, 1985), run online: the selection
//!   rule proposes items in its order and each proposal of item `i` is
//!   accepted with probability `K_i`; a rejected item is skipped (the
//!   original method removes it for the rest of the exam) and the rule
//!   proposes the next one. With `P(S_i)` the probability of being proposed,
//!   `P(A_i) = P(S_i)·K_i ≤ r` for `K_i = min(1, r/P(S_i))`, estimated online
//!   by `P(S_i) = s_i/n` where `s_i` (`selected_i`) counts *every* proposal of
//!   item `i`, accepted or not (counting only first proposals underestimates
//!   `P(S_i)` and lets items drift above `r`). The original method iterates
//!   simulations offline until the `K_i` converge; online the counts move and
//!   the `K_i` follow. A ceiling makes the bound hard: `K_i = 0` while
//!   `a_i ≥ r·n`, where here `n` *includes* the current exam (a count that
//!   excludes it only makes the ceiling stricter; `n = 0` counts as 1), so
//!   again `a_i < r·n + 1` after every exam.
//!
//! Both bounds assume the counts are current when read (a sequential fleet);
//! with `c` exams in flight on stale counts the bound loosens to `r + c/n`.
//! Exposure control cannot work when the bank is too small for it: an exam of
//! `T` items needs at least `T/r` items in the bank (80 for 20 items at 25 %).
//!
//! References:
//! * Sympson, J. B. & Hetter, R. D. (1985). Controlling item-exposure rates in
//!   computerized adaptive testing. *Proceedings of the 27th annual meeting of
//!   the Military Testing Association*, 973–977.
//! * van der Linden, W. J. & Veldkamp, B. P. (2004). Constraining item exposure
//!   in computerized adaptive testing with shadow tests. *Journal of
//!   Educational and Behavioral Statistics*, 29(3), 273–291.
//! * van der Linden, W. J. & Veldkamp, B. P. (2007). Conditional item-exposure
//!   control in adaptive testing using item-ineligibility probabilities.
//!   *Journal of Educational and Behavioral Statistics*, 32(4), 398–418.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::IrtError;

/// The exposure control method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExposureMethod {
    /// Sympson–Hetter acceptance lottery on every proposal.
    SympsonHetter,
    /// Van der Linden–Veldkamp item-eligibility draw at the start of each exam.
    ItemEligibility,
}

/// Exposure control settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExposureControl {
    /// The method.
    pub method: ExposureMethod,
    /// Largest exposure rate `r_max` of any item, in `(0, 1]`.
    pub max_rate: f64,
}

impl ExposureControl {
    /// Checks `0 < max_rate <= 1`.
    ///
    /// # Errors
    /// [`IrtError::Exposure`] when it does not hold.
    pub fn validate(&self) -> Result<(), IrtError> {
        if self.max_rate > 0.0 && self.max_rate <= 1.0 {
            Ok(())
        } else {
            Err(IrtError::Exposure("max_rate must be in (0, 1]"))
        }
    }
}

/// Fleet-wide counts of one bank, per bank item (all vectors as long as the
/// bank; missing entries count as 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureCounts {
    /// Exams started.
    pub examinees: u64,
    /// Times each item was administered (presented).
    pub administered: Vec<u64>,
    /// Times each item was proposed by the selection rule before the
    /// Sympson–Hetter lottery (accepted or not).
    pub selected: Vec<u64>,
    /// Exams for which each item was eligible (item-eligibility method).
    pub eligible: Vec<u64>,
}

impl ExposureCounts {
    /// All-zero counts for a bank of `items` items.
    #[must_use]
    pub fn new(items: usize) -> Self {
        Self {
            examinees: 0,
            administered: vec![0; items],
            selected: vec![0; items],
            eligible: vec![0; items],
        }
    }

    /// `administered_i / examinees` (0 before the first exam).
    #[must_use]
    pub fn exposure_rate(&self, item: usize) -> f64 {
        if self.examinees == 0 {
            0.0
        } else {
            count(&self.administered, item) as f64 / self.examinees as f64
        }
    }
}

/// Entry `i` of a count vector, 0 when missing.
fn count(counts: &[u64], i: usize) -> u64 {
    counts.get(i).copied().unwrap_or(0)
}

/// Item-eligibility probability of `item` for the next exam:
/// `clamp((r·(n + 1) − a_i)·e_i/a_i, 0, 1)`, 1 while the item has never been
/// administered (van der Linden & Veldkamp's `r·e_i/a_i` with the feedback
/// correction of the module doc). `counts` are those before the exam.
#[must_use]
pub fn eligibility_probability(
    control: &ExposureControl,
    counts: &ExposureCounts,
    item: usize,
) -> f64 {
    let administered = count(&counts.administered, item) as f64;
    if administered == 0.0 {
        return 1.0;
    }
    let budget = control.max_rate * (counts.examinees as f64 + 1.0) - administered;
    if budget.is_nan() || budget <= 0.0 {
        return 0.0;
    }
    let eligible = count(&counts.eligible, item) as f64;
    (budget * eligible / administered).min(1.0)
}

/// Sympson–Hetter acceptance probability `K_i` of `item`:
/// `min(1, r·n/s_i)` (1 while the item has never been proposed), and 0 while
/// `a_i ≥ r·n` (the ceiling of the module doc; `n` includes the current exam,
/// `n = 0` counts as 1).
#[must_use]
pub fn sympson_hetter_probability(
    control: &ExposureControl,
    counts: &ExposureCounts,
    item: usize,
) -> f64 {
    let examinees = counts.examinees.max(1) as f64;
    let administered = count(&counts.administered, item) as f64;
    if administered >= control.max_rate * examinees {
        return 0.0;
    }
    let selected = count(&counts.selected, item);
    if selected == 0 {
        return 1.0;
    }
    (control.max_rate * examinees / selected as f64).min(1.0)
}

/// Draws, for one examinee at the start of an exam, the items that are
/// *ineligible* for the whole exam under the item-eligibility method: item `i`
/// is ineligible with probability `1 − P(E_i)` ([`eligibility_probability`]),
/// independently, one uniform number per bank item (bank length = the longest
/// count vector). Returns their bank indices in increasing order. The caller
/// then adds 1 to `examinees` and to `eligible_i` for every other item.
///
/// Returns nothing (and draws nothing) for the Sympson–Hetter method.
pub fn draw_ineligible_items<R: Rng + ?Sized>(
    control: &ExposureControl,
    counts: &ExposureCounts,
    rng: &mut R,
) -> Vec<usize> {
    if control.method != ExposureMethod::ItemEligibility {
        return Vec::new();
    }
    let items = counts
        .administered
        .len()
        .max(counts.eligible.len())
        .max(counts.selected.len());
    (0..items)
        .filter(|&i| {
            let p = eligibility_probability(control, counts, i);
            rng.random::<f64>() >= p
        })
        .collect()
}

/// One Sympson–Hetter selection: asks `select` for the best item under the
/// current mask, accepts it with probability `K_i`
/// ([`sympson_hetter_probability`]), and otherwise marks it ineligible in
/// `eligible` and asks again. Every proposed item is appended to `proposed`
/// (the caller adds 1 to `selected_i` for each, and 1 to `administered_i` for
/// the returned item); rejected items stay `false` in `eligible`, which the
/// caller should keep for the rest of the exam as the method prescribes.
///
/// If every eligible item is rejected, the first proposal is returned (the
/// exam goes on rather than stopping for want of items); `None` only when
/// nothing was eligible in the first place.
pub fn sympson_hetter_select<R, F>(
    control: &ExposureControl,
    counts: &ExposureCounts,
    eligible: &mut [bool],
    rng: &mut R,
    proposed: &mut Vec<usize>,
    mut select: F,
) -> Option<usize>
where
    R: Rng + ?Sized,
    F: FnMut(&[bool], &mut R) -> Option<usize>,
{
    let first_proposal = proposed.len();
    while let Some(i) = select(eligible, rng) {
        proposed.push(i);
        if rng.random::<f64>() < sympson_hetter_probability(control, counts, i) {
            return Some(i);
        }
        match eligible.get_mut(i) {
            Some(e) => *e = false,
            None => return Some(i), // cannot be excluded: accept rather than loop
        }
    }
    proposed.get(first_proposal).copied()
}
