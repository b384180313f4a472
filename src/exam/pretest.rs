//! Pretest seeding: which of a bank's live pretest items an exam presents, and where.
//!
//! At start an exam of a design with `pretest` draws its plan ([`draw_plan`]): the
//! least-answered live pretest items first (ties at random), never two of one enemy group,
//! at distinct random positions of the allowed range. The plan is stored with the exam's
//! design (`ExamDesign::pretest`), so every instance presents the same items at the same
//! positions. The answer path then presents the plan's item at its position and records its
//! answer as a pretest attempt without an engine step (see `answer`).
//!
//! Least-answered is read from Postgres (the partial index of pretest attempts) at most
//! every [`COUNTS_MAX_AGE`] per bank and instance; the items this instance seeded since then
//! are counted on top, so a burst of starts spreads over the items instead of all taking the
//! same least-answered ones.
//!
//! Owns the plan; must not present or record anything.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};

use crate::design::PretestPlanRange;
use crate::engine::PretestSlot;
use crate::error::AppResult;
use crate::storage::bank_cache::Bank;
use crate::storage::calibration_rows as rows;
use crate::storage::enums::ItemStatus;

/// How long an instance uses a bank's pretest answer counts before reading them again.
pub const COUNTS_MAX_AGE: Duration = Duration::from_secs(5);

/// A live pretest item the plan may take, with its answers so far.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Bank item id.
    pub item_id: i64,
    /// Pretest answers recorded (plus seedings not yet answered, as this instance knows them).
    pub answers: i64,
    /// Its enemy group.
    pub enemy_group: Option<String>,
}

/// The pretest plan of one exam: up to `range.per_exam` candidates, fewest answers first
/// (ties in random order), skipping any that shares an enemy group with one already taken,
/// each at a distinct position of `[range.first, range.last]` drawn uniformly, in random
/// order (so the position says nothing about the count). Sorted by position.
pub fn draw_plan(
    candidates: &[Candidate],
    range: PretestPlanRange,
    rng: &mut StdRng,
) -> Vec<PretestSlot> {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.shuffle(rng);
    // Stable: the shuffle decides among equal counts.
    order.sort_by_key(|c| c.answers);
    let mut groups = HashSet::new();
    let mut chosen = Vec::with_capacity(range.per_exam);
    for candidate in order {
        if chosen.len() == range.per_exam {
            break;
        }
        if let Some(group) = &candidate.enemy_group
            && !groups.insert(group.as_str())
        {
            continue;
        }
        chosen.push(candidate.item_id);
    }
    chosen.shuffle(rng);
    let positions: Vec<u32> = (range.first..=range.last).collect();
    let mut taken: Vec<u32> = positions
        .choose_multiple(rng, chosen.len())
        .copied()
        .collect();
    taken.sort_unstable();
    let mut plan: Vec<PretestSlot> = taken
        .into_iter()
        .zip(chosen)
        .map(|(position, item_id)| PretestSlot { position, item_id })
        .collect();
    plan.sort_by_key(|slot| slot.position);
    plan
}

/// The generator of a plan's draws: a function of the exam's seed only.
pub fn plan_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ 0x7072_6574_6573_7400)
}

/// Operational items that share an enemy group with an item of `plan`: the exam never
/// selects them, so no exam holds two enemies, pretest or not.
pub fn enemies_of_plan(bank: &Bank, plan: &[PretestSlot]) -> Vec<i64> {
    let groups: HashSet<&str> = plan
        .iter()
        .filter_map(|slot| bank.index_of(slot.item_id))
        .filter_map(|i| bank.items[i].enemy_group.as_deref())
        .collect();
    if groups.is_empty() {
        return Vec::new();
    }
    bank.items
        .iter()
        .filter(|item| item.status == ItemStatus::Operational)
        .filter(|item| {
            item.enemy_group
                .as_deref()
                .is_some_and(|g| groups.contains(g))
        })
        .map(|item| item.id)
        .collect()
}

/// The live pretest items of a bank (not retired).
fn live_pretest(bank: &Bank) -> Vec<(i64, Option<String>)> {
    bank.items
        .iter()
        .filter(|item| item.status == ItemStatus::Pretest && !item.retired)
        .map(|item| (item.id, item.enemy_group.clone()))
        .collect()
}

/// A bank's pretest answer counts as this instance knows them.
struct Counts {
    /// When they were read from Postgres.
    read_at: Instant,
    /// Bank revision they were read at (a new revision may have new items).
    revision: i64,
    /// Answers per item id (plus this instance's seedings since).
    answers: HashMap<i64, i64>,
}

/// Pretest answer counts per bank, per instance (see the module doc).
#[derive(Default)]
pub struct PretestCounts {
    banks: Mutex<HashMap<i64, Counts>>,
}

impl PretestCounts {
    /// The candidates of a new exam of `bank`: its live pretest items with their counts,
    /// read from Postgres when this instance's copy is older than [`COUNTS_MAX_AGE`].
    pub async fn candidates(
        &self,
        conn: &mut AsyncPgConnection,
        bank: &Bank,
    ) -> AppResult<Vec<Candidate>> {
        let live = live_pretest(bank);
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let fresh = {
            let banks = self.banks.lock().expect("pretest counts lock");
            banks.get(&bank.id).is_some_and(|c| {
                c.read_at.elapsed() < COUNTS_MAX_AGE && c.revision >= bank.revision
            })
        };
        if !fresh {
            let ids: Vec<i64> = live.iter().map(|(id, _)| *id).collect();
            let answers: HashMap<i64, i64> = rows::pretest_counts(conn, &ids)
                .await?
                .into_iter()
                .collect();
            self.banks.lock().expect("pretest counts lock").insert(
                bank.id,
                Counts {
                    read_at: Instant::now(),
                    revision: bank.revision,
                    answers,
                },
            );
        }
        let banks = self.banks.lock().expect("pretest counts lock");
        let answers = banks.get(&bank.id).map(|c| &c.answers);
        Ok(live
            .into_iter()
            .map(|(item_id, enemy_group)| Candidate {
                item_id,
                answers: answers.and_then(|a| a.get(&item_id)).copied().unwrap_or(0),
                enemy_group,
            })
            .collect())
    }

    /// Counts the items of a new exam's plan until the next read.
    pub fn seeded(&self, bank_id: i64, plan: &[PretestSlot]) {
        let mut banks = self.banks.lock().expect("pretest counts lock");
        if let Some(counts) = banks.get_mut(&bank_id) {
            for slot in plan {
                *counts.answers.entry(slot.item_id).or_default() += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(item_id: i64, answers: i64, group: Option<&str>) -> Candidate {
        Candidate {
            item_id,
            answers,
            enemy_group: group.map(str::to_owned),
        }
    }

    fn range(per_exam: usize, first: u32, last: u32) -> PretestPlanRange {
        PretestPlanRange {
            per_exam,
            first,
            last,
        }
    }

    #[test]
    fn the_least_answered_items_are_taken_at_distinct_positions_in_range() {
        let candidates: Vec<Candidate> = (0..10).map(|i| candidate(i, 100 - i, None)).collect();
        for seed in 0..200 {
            let plan = draw_plan(&candidates, range(3, 4, 9), &mut plan_rng(seed));
            let mut items: Vec<i64> = plan.iter().map(|s| s.item_id).collect();
            items.sort_unstable();
            assert_eq!(items, vec![7, 8, 9], "seed {seed}");
            let positions: Vec<u32> = plan.iter().map(|s| s.position).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
            assert!(
                positions.iter().all(|p| (4..=9).contains(p)),
                "{positions:?}"
            );
        }
    }

    #[test]
    fn ties_are_broken_at_random_and_every_position_is_used() {
        let candidates: Vec<Candidate> = (0..6).map(|i| candidate(i, 0, None)).collect();
        let mut items = HashSet::new();
        let mut positions = HashSet::new();
        for seed in 0..200 {
            for slot in draw_plan(&candidates, range(1, 2, 6), &mut plan_rng(seed)) {
                items.insert(slot.item_id);
                positions.insert(slot.position);
            }
        }
        assert_eq!(items.len(), 6);
        assert_eq!(positions, (2..=6).collect());
    }

    #[test]
    fn never_two_enemies_and_fewer_items_when_the_bank_has_fewer() {
        let candidates = vec![
            candidate(1, 0, Some("g")),
            candidate(2, 0, Some("g")),
            candidate(3, 5, Some("g")),
            candidate(4, 9, None),
        ];
        for seed in 0..100 {
            let plan = draw_plan(&candidates, range(3, 2, 10), &mut plan_rng(seed));
            let items: HashSet<i64> = plan.iter().map(|s| s.item_id).collect();
            assert_eq!(plan.len(), 2, "one of group g and item 4: {plan:?}");
            assert!(items.contains(&4));
            assert_eq!(items.iter().filter(|&&i| i != 4).count(), 1);
        }
        assert!(draw_plan(&[], range(2, 2, 5), &mut plan_rng(1)).is_empty());
    }
}
