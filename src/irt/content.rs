//! Content balancing and enemy items.
//!
//! This module owns the two content constraints applied to the eligibility
//! mask before an item is selected:
//!
//! * **Content balancing** by the constrained CAT of Kingsbury & Zara (1989)
//!   (catR's `cbControl`): before each selection, the content area whose
//!   administered proportion is furthest below its target is chosen and only
//!   its items stay eligible.
//! * **Enemy items**: items that must never appear together in one exam
//!   (e.g. one gives away the answer to another). Once one item of an enemy
//!   group is administered, the rest of the group is excluded.
//!
//! Both work on string labels ([`restrict_to_content_area`],
//! [`exclude_enemies`]) or, faster for large banks, on small integer labels
//! computed once per bank ([`ContentBalance::area_indices`],
//! [`restrict_to_content_area_indexed`], [`group_indices`],
//! [`exclude_enemies_indexed`]).
//!
//! Kingsbury, G. G. & Zara, A. R. (1989). Procedures for selecting items for
//! computerized adaptive tests. *Applied Measurement in Education*, 2(4),
//! 359–375.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::IrtError;

/// Target proportions of content areas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentBalance {
    /// `(area, target proportion)`: non-empty distinct area names, finite
    /// proportions `>= 0` with a positive sum (they are normalized to sum to 1,
    /// as catR does).
    pub targets: Vec<(String, f64)>,
}

impl ContentBalance {
    /// Checks that there is at least one area, that names are non-empty and
    /// distinct, that proportions are finite and `>= 0`, and that their sum
    /// is positive.
    ///
    /// # Errors
    /// [`IrtError::ContentBalance`] naming the violated condition.
    pub fn validate(&self) -> Result<(), IrtError> {
        let fail = |reason| Err(IrtError::ContentBalance(reason));
        if self.targets.is_empty() {
            return fail("at least one content area is needed");
        }
        if self.targets.iter().any(|(area, _)| area.is_empty()) {
            return fail("content area names must not be empty");
        }
        if self
            .targets
            .iter()
            .any(|(_, p)| !(p.is_finite() && *p >= 0.0))
        {
            return fail("target proportions must be finite and >= 0");
        }
        let total: f64 = self.targets.iter().map(|(_, p)| p).sum();
        if !(total > 0.0 && total.is_finite()) {
            return fail("target proportions must have a positive sum");
        }
        for (i, (area, _)) in self.targets.iter().enumerate() {
            if self.targets[..i].iter().any(|(other, _)| other == area) {
                return fail("content areas must be distinct");
            }
        }
        Ok(())
    }

    /// The targets normalized to sum to 1, in the order of `targets`.
    #[must_use]
    pub fn proportions(&self) -> Vec<f64> {
        let total: f64 = self.targets.iter().map(|(_, p)| p).sum();
        self.targets.iter().map(|(_, p)| p / total).collect()
    }

    /// For every item, the position in `targets` of its area (`None` for an
    /// item without an area or in an area without a target). Compute once per
    /// bank for [`restrict_to_content_area_indexed`].
    #[must_use]
    pub fn area_indices(&self, item_area: &[Option<&str>]) -> Vec<Option<usize>> {
        let lookup: HashMap<&str, usize> = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, (area, _))| (area.as_str(), i))
            .collect();
        item_area
            .iter()
            .map(|area| area.and_then(|a| lookup.get(a).copied()))
            .collect()
    }
}

/// Kingsbury & Zara (1989): restricts `eligible` to the content area whose
/// administered proportion is furthest below its target, among the areas that
/// still have eligible items, and returns that area (`None`, with every item
/// made ineligible, when no targeted area has an eligible item left).
///
/// With `n_a` the administered items in area `a` (items outside every
/// targeted area are not counted), `n = Σ n_a` and `t_a` the normalized
/// targets, the chosen area maximizes
///
/// ```text
/// t_a − n_a/(n + 1)      ⇔      (n + 1)·t_a − n_a
/// ```
///
/// the shortfall of the area once the item being chosen is counted in the
/// test length. Before the first item this is Kingsbury and Zara's (and catR's
/// `cbControl`) largest target; afterwards it differs from their
/// `t_a − n_a/n` only in the denominator, and it balances better: in
/// simulations of up to 60 items with random targets every area stays within
/// one item of `n·t_a` with up to five areas (about 1.08 items with eight),
/// where `t_a − n_a/n` drifts up to 1.6 items. Ties go to the area listed
/// first (catR draws among tied areas at random). Items without an area, or in
/// an area without a target, are excluded.
///
/// `item_area[i]` is the area of bank item `i`; missing entries count as no
/// area. Cost: one hash lookup per item and an `N`-long temporary; with the
/// areas numbered once per bank ([`ContentBalance::area_indices`]),
/// [`restrict_to_content_area_indexed`] is several times faster.
pub fn restrict_to_content_area(
    balance: &ContentBalance,
    item_area: &[Option<&str>],
    administered: &[usize],
    eligible: &mut [bool],
) -> Option<String> {
    let areas = balance.area_indices(item_area);
    restrict_to_content_area_indexed(balance, &areas, administered, eligible)
        .map(|a| balance.targets[a].0.clone())
}

/// [`restrict_to_content_area`] with the items' areas given as positions in
/// `balance.targets` ([`ContentBalance::area_indices`]); returns the chosen
/// position. No allocation beyond one vector of the number of areas.
pub fn restrict_to_content_area_indexed(
    balance: &ContentBalance,
    item_area: &[Option<usize>],
    administered: &[usize],
    eligible: &mut [bool],
) -> Option<usize> {
    let areas = balance.targets.len();
    let area_of = |i: usize| item_area.get(i).copied().flatten().filter(|&a| a < areas);
    let mut given = vec![0_usize; areas];
    let mut available = vec![false; areas];
    for &i in administered {
        if let Some(a) = area_of(i) {
            given[a] += 1;
        }
    }
    for (i, e) in eligible.iter().enumerate() {
        if *e && let Some(a) = area_of(i) {
            available[a] = true;
        }
    }
    let next = (given.iter().sum::<usize>() + 1) as f64;
    let targets = balance.proportions();
    let mut chosen: Option<(usize, f64)> = None;
    for a in (0..areas).filter(|&a| available[a]) {
        let deficit = next * targets[a] - given[a] as f64;
        if chosen.is_none_or(|(_, best)| deficit > best) {
            chosen = Some((a, deficit));
        }
    }
    let chosen = chosen.map(|(a, _)| a);
    for (i, e) in eligible.iter_mut().enumerate() {
        *e = *e && chosen.is_some() && area_of(i) == chosen;
    }
    chosen
}

/// Enemy items: once an item of an enemy group has been administered, every
/// other item of that group becomes ineligible, so no two items of one group
/// appear in an exam. `enemy_group[i]` is the group of bank item `i` (`None`
/// or a missing entry: no group). Cost: one hash lookup per grouped item;
/// [`exclude_enemies_indexed`] with groups numbered once per bank
/// ([`group_indices`]) is several times faster on large banks.
pub fn exclude_enemies(
    enemy_group: &[Option<&str>],
    administered: &[usize],
    eligible: &mut [bool],
) {
    let used: HashSet<&str> = administered
        .iter()
        .filter_map(|&i| enemy_group.get(i).copied().flatten())
        .collect();
    if used.is_empty() {
        return;
    }
    for (e, group) in eligible.iter_mut().zip(enemy_group) {
        if let Some(g) = group
            && used.contains(g)
        {
            *e = false;
        }
    }
}

/// Numbers the distinct labels `0, 1, …` in order of first appearance (for
/// [`exclude_enemies_indexed`]); compute once per bank.
#[must_use]
pub fn group_indices(labels: &[Option<&str>]) -> Vec<Option<usize>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    labels
        .iter()
        .map(|label| {
            label.map(|l| {
                let next = seen.len();
                *seen.entry(l).or_insert(next)
            })
        })
        .collect()
}

/// [`exclude_enemies`] with the groups given as small integers
/// ([`group_indices`]): one table lookup per grouped item.
pub fn exclude_enemies_indexed(
    enemy_group: &[Option<usize>],
    administered: &[usize],
    eligible: &mut [bool],
) {
    let used_groups = || {
        administered
            .iter()
            .filter_map(|&i| enemy_group.get(i).copied().flatten())
    };
    let Some(largest) = used_groups().max() else {
        return;
    };
    let mut used = vec![false; largest + 1];
    for g in used_groups() {
        used[g] = true;
    }
    for (e, group) in eligible.iter_mut().zip(enemy_group) {
        if let Some(g) = *group
            && used.get(g).copied().unwrap_or(false)
        {
            *e = false;
        }
    }
}
