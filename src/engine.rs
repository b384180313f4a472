//! An exam's adaptive engine: the exam design, the psychometric view of a bank, the state
//! of one exam, and the single function that decides each step ("answers so far →
//! estimate → stop, or next item").
//!
//! Pure: no I/O, no clock. The server (`exam`) and the simulator call the same
//! [`decide`], so a design studied offline behaves identically live, and a rebuild from
//! Postgres reproduces every estimate (estimates are a function of the responses) and every
//! item choice that does not depend on live exposure counts (randomesque draws come from a
//! generator seeded by the exam's seed and the step number, never from global state).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::irt::{
    self, ContentBalance, Estimate, EstimatorSettings, ExposureControl, ExposureCounts,
    ExposureMethod, InformationIndex, Item, ItemParams, SelectionContext, SelectionRule,
    SelectionTables, StopInputs, StopReason, StoppingRule, TablesKey,
};

/// Most grid-table sets one bank keeps (one per quadrature grid and rule family in use);
/// designs past it select by the plain scan.
const MAX_TABLE_SETS: usize = 8;
/// Most bytes of grid tables one bank keeps; a set that would exceed it is not built.
pub const TABLES_BUDGET: usize = 1 << 30;

/// One bank's grid tables, each built once on first use (outside the map's lock, so
/// building one grid's tables does not hold up exams on another).
type TableCache = HashMap<TablesKey, Arc<OnceLock<Option<Arc<SelectionTables>>>>>;

/// Everything that defines how an exam runs; stored with the session as JSON so a
/// rebuild from Postgres behaves exactly like the original engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExamDesign {
    /// When the exam stops.
    pub stopping: StoppingRule,
    /// Theta before any answer (drives the first item choice).
    pub initial_theta: f64,
    /// Choose at random among this many best items of the selection rule (1 = the best).
    pub randomesque: u32,
    /// The ability estimator, including the bank's scaling constant D.
    pub estimator: EstimatorSettings,
    /// The item selection rule.
    #[serde(default)]
    pub selection_rule: SelectionRule,
    /// Fleet-wide exposure control, if any.
    #[serde(default)]
    pub exposure: Option<ExposureControl>,
    /// Content balancing targets, if any.
    #[serde(default)]
    pub content_balance: Option<ContentBalance>,
    /// Items given first, in this order (bank item ids).
    #[serde(default)]
    pub start_item_ids: Vec<i64>,
    /// Items this examinee may not see (item-eligibility exposure control, drawn at start).
    #[serde(default)]
    pub ineligible_item_ids: Vec<i64>,
    /// The pretest items of this exam and their positions (drawn at start): presented
    /// between operational items, recorded, never part of the engine's history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pretest: Vec<PretestSlot>,
    /// Seed of the exam's random draws.
    pub seed: u64,
}

/// A pretest item of an exam and the position it is presented at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PretestSlot {
    /// 1-based position among every item the exam presents.
    pub position: u32,
    /// The item (bank item id).
    pub item_id: i64,
}

impl ExamDesign {
    /// The pretest item presented at `position` (1-based), if the plan has one there.
    pub fn pretest_at(&self, position: usize) -> Option<i64> {
        self.pretest
            .iter()
            .find(|slot| slot.position as usize == position)
            .map(|slot| slot.item_id)
    }

    /// The estimate before any answer: the initial theta, with the prior's spread as SE.
    pub fn initial_estimate(&self) -> Estimate {
        Estimate {
            theta: self.initial_theta,
            standard_error: self.estimator.prior_standard_deviation(),
        }
    }
}

/// The psychometric view of an item bank: models, ids, content areas and enemy groups,
/// indexed alike, plus the lazily built fast index of maximum-information selection and
/// the lazily built grid tables of the integrating selection rules.
#[derive(Debug)]
pub struct EngineBank {
    /// The scaling constant D of the bank.
    pub scaling: f64,
    /// IRT model of each item.
    pub items: Vec<Item>,
    /// Database id of each item.
    pub ids: Vec<i64>,
    /// Content area of each item.
    pub areas: Vec<Option<String>>,
    /// Enemy group of each item.
    pub enemy_groups: Vec<Option<String>>,
    /// Index of each item's content area in `area_labels` (precomputed: balancing runs
    /// every step and must not hash strings per item).
    area_index: Vec<Option<usize>>,
    /// The distinct content areas.
    area_labels: Vec<String>,
    /// Each item's enemy group as a small integer.
    enemy_index: Vec<Option<usize>>,
    /// Built on first use of maximum-information selection.
    index: OnceLock<InformationIndex>,
    /// Grid tables of `KL`, `KLP`, `MLWI`, `MPWI` and `MEPV`, per grid and rule family,
    /// built on first use, with the bytes reserved for them so far.
    tables: Mutex<(TableCache, usize)>,
    /// Item id → index.
    positions: HashMap<i64, usize>,
    /// `false`: [`EngineBank::selection_tables`] gives none, so the integrating rules scan
    /// the bank plainly (`simulate --plain-selection`, for checking and benchmarking).
    fast_selection: bool,
}

impl EngineBank {
    /// A bank from its columns (all of the same length).
    pub fn new(
        scaling: f64,
        items: Vec<Item>,
        ids: Vec<i64>,
        areas: Vec<Option<String>>,
        enemy_groups: Vec<Option<String>>,
    ) -> Self {
        let positions = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let area_refs: Vec<Option<&str>> = areas.iter().map(Option::as_deref).collect();
        let area_index = irt::group_indices(&area_refs);
        let mut area_labels =
            vec![String::new(); area_index.iter().flatten().max().map_or(0, |m| m + 1)];
        for (label, index) in area_refs.iter().zip(&area_index) {
            if let (Some(label), Some(index)) = (label, index) {
                area_labels[*index] = (*label).to_owned();
            }
        }
        let enemy_refs: Vec<Option<&str>> = enemy_groups.iter().map(Option::as_deref).collect();
        let enemy_index = irt::group_indices(&enemy_refs);
        Self {
            scaling,
            items,
            ids,
            areas,
            enemy_groups,
            area_index,
            area_labels,
            enemy_index,
            index: OnceLock::new(),
            tables: Mutex::new((HashMap::new(), 0)),
            positions,
            fast_selection: true,
        }
    }

    /// A bank of dichotomous items numbered 1..=n with no areas or enemies (tests, simulations).
    pub fn from_params(scaling: f64, params: &[ItemParams]) -> Self {
        let n = params.len();
        Self::new(
            scaling,
            params.iter().copied().map(Item::from).collect(),
            (1..=n as i64).collect(),
            vec![None; n],
            vec![None; n],
        )
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the bank has no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The index of an item id.
    pub fn index_of(&self, id: i64) -> Option<usize> {
        self.positions.get(&id).copied()
    }

    /// Each item's content area as an index into `balance.targets` (None: no target).
    fn target_areas(&self, balance: &ContentBalance) -> Vec<Option<usize>> {
        let label_to_target: Vec<Option<usize>> = self
            .area_labels
            .iter()
            .map(|label| balance.targets.iter().position(|(area, _)| area == label))
            .collect();
        self.area_index
            .iter()
            .map(|a| a.and_then(|a| label_to_target[a]))
            .collect()
    }

    /// Whether the grid tables `rule` needs under `estimator` fit in [`TABLES_BUDGET`] on
    /// their own (they may still be refused when other grids of the bank took the budget).
    /// Cheap once the tables are reserved (every engine step asks, through
    /// `design::design_cost`): a map lookup instead of a pass over the bank.
    pub fn selection_tables_fit(&self, estimator: &EstimatorSettings, rule: SelectionRule) -> bool {
        let Some(key) = TablesKey::new(estimator, rule).filter(|_| self.fast_selection) else {
            return false;
        };
        let reserved = self
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .contains_key(&key);
        reserved || SelectionTables::estimated_bytes(&self.items, estimator, rule) <= TABLES_BUDGET
    }

    /// Turns the grid tables of the integrating rules on (the default) or off: off, every
    /// `KL`, `KLP`, `MLWI`, `MPWI` and `MEPV` step scans the bank plainly, with the same
    /// choices (the tables are exact), only slower.
    pub fn set_fast_selection(&mut self, on: bool) {
        self.fast_selection = on;
    }

    /// The fast maximum-information index (built once, on first use).
    pub fn information_index(&self) -> &InformationIndex {
        self.index
            .get_or_init(|| InformationIndex::new(&self.items, self.scaling))
    }

    /// The grid tables `rule` needs under `estimator` (built once per grid and rule
    /// family, on first use); `None` for the rules that need none, or past
    /// `MAX_TABLE_SETS` sets or `TABLES_BUDGET` bytes (selection then scans the bank plainly,
    /// with the same result).
    pub fn selection_tables(
        &self,
        estimator: &EstimatorSettings,
        rule: SelectionRule,
    ) -> Option<Arc<SelectionTables>> {
        if !self.fast_selection {
            return None;
        }
        let key = TablesKey::new(estimator, rule)?;
        let cell = {
            let mut guard = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
            let (map, reserved) = &mut *guard;
            match map.get(&key) {
                Some(cell) => Arc::clone(cell),
                None => {
                    let bytes = SelectionTables::estimated_bytes(&self.items, estimator, rule);
                    if map.len() >= MAX_TABLE_SETS || *reserved + bytes > TABLES_BUDGET {
                        return None;
                    }
                    *reserved += bytes;
                    let cell = Arc::new(OnceLock::new());
                    map.insert(key, Arc::clone(&cell));
                    cell
                }
            }
        };
        cell.get_or_init(|| SelectionTables::new(&self.items, estimator, rule).map(Arc::new))
            .clone()
    }
}

/// What an exam has done so far.
#[derive(Clone, Copy, Debug)]
pub struct History<'a> {
    /// Bank indices of the items answered, in order.
    pub administered: &'a [usize],
    /// Their category scores (0/1 for dichotomous items).
    pub scores: &'a [u32],
    /// The estimate before the last answer (step rules for constant patterns start there).
    pub previous_theta: f64,
    /// Seconds since the exam started.
    pub elapsed_seconds: f64,
}

/// What the engine decided after the answers so far.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The estimate from all answers so far.
    pub estimate: Estimate,
    /// Why the exam stops now, if it does.
    pub stop: Option<StopReason>,
    /// The bank index of the next item, when the exam goes on.
    pub next_item: Option<usize>,
    /// Every item the selection rule proposed this step, in order: the next item alone,
    /// or under Sympson–Hetter the ones its lottery turned down before it (all count as
    /// selections in the exposure counts).
    pub proposed: Vec<usize>,
}

/// Decides one step: estimates from the history, checks the stopping rules, and
/// otherwise picks the next item. `exposure` holds the live fleet-wide counts when the
/// design uses exposure control.
pub fn decide(
    design: &ExamDesign,
    bank: &EngineBank,
    history: &History<'_>,
    exposure: Option<&ExposureCounts>,
) -> Decision {
    let n = history.administered.len();
    debug_assert_eq!(n, history.scores.len());
    let estimate = if n == 0 {
        design.initial_estimate()
    } else {
        let items: Vec<Item> = history
            .administered
            .iter()
            .map(|&i| bank.items[i].clone())
            .collect();
        irt::estimate_items(
            &design.estimator,
            &items,
            history.scores,
            history.previous_theta,
        )
    };
    let mut eligible = vec![true; bank.len()];
    for &i in history.administered {
        eligible[i] = false;
    }
    for id in &design.ineligible_item_ids {
        if let Some(i) = bank.index_of(*id) {
            eligible[i] = false;
        }
    }
    if bank.enemy_index.iter().any(Option::is_some) {
        irt::exclude_enemies_indexed(&bank.enemy_index, history.administered, &mut eligible);
    }
    let items_left = eligible.iter().filter(|e| **e).count();
    // Maximum information, and the methods built on the information of every item (the
    // index evaluates polytomous items in blocks, and the progressive method's last items
    // are chosen by maximum information).
    let uses_index = matches!(
        design.selection_rule,
        SelectionRule::MaxInfo | SelectionRule::Progressive | SelectionRule::Proportional
    );
    let max_information_left = match design.stopping.min_information {
        Some(_) => irt::best_information(
            &bank.items,
            &eligible,
            estimate.theta,
            bank.scaling,
            Some(bank.information_index()),
        ),
        None => f64::INFINITY,
    };
    let stop = design.stopping.check(&StopInputs {
        items_completed: n,
        theta: estimate.theta,
        standard_error: estimate.standard_error,
        items_left,
        max_information_left,
        elapsed_seconds: history.elapsed_seconds,
    });
    if stop.is_some() {
        return Decision {
            estimate,
            stop,
            next_item: None,
            proposed: Vec::new(),
        };
    }
    // Fixed start items come first, as long as they are still eligible.
    if let Some(i) = design
        .start_item_ids
        .get(n)
        .and_then(|id| bank.index_of(*id))
        .filter(|&i| eligible[i])
    {
        return Decision {
            estimate,
            stop: None,
            next_item: Some(i),
            proposed: vec![i],
        };
    }
    if let Some(balance) = &design.content_balance {
        let areas = bank.target_areas(balance);
        irt::restrict_to_content_area_indexed(balance, &areas, history.administered, &mut eligible);
    }
    let mut rng = step_rng(design.seed, n);
    let tables = bank.selection_tables(&design.estimator, design.selection_rule);
    let select = |eligible: &[bool], rng: &mut StdRng| {
        let ctx = SelectionContext {
            bank: &bank.items,
            eligible,
            administered: history.administered,
            responses: history.scores,
            theta: estimate.theta,
            standard_error: estimate.standard_error,
            estimator: &design.estimator,
            max_items: design.stopping.max_items,
            index: uses_index.then(|| bank.information_index()),
            tables: tables.as_deref(),
        };
        irt::select_item(
            design.selection_rule,
            &ctx,
            design.randomesque.max(1) as usize,
            rng,
        )
    };
    let mut proposed = Vec::new();
    let next_item = match (&design.exposure, exposure) {
        // Sympson–Hetter: the proposed item is given with probability K_i, else the rule
        // proposes again without it (for this step).
        (Some(control), Some(counts)) if control.method == ExposureMethod::SympsonHetter => {
            irt::sympson_hetter_select(
                control,
                counts,
                &mut eligible,
                &mut rng,
                &mut proposed,
                select,
            )
        }
        _ => {
            let next = select(&eligible, &mut rng);
            proposed.extend(next);
            next
        }
    };
    Decision {
        estimate,
        stop: next_item.is_none().then_some(StopReason::BankExhausted),
        next_item,
        proposed,
    }
}

/// The items an examinee may not see under item-eligibility exposure control, drawn once
/// at the start of the exam from the live counts.
pub fn draw_ineligible(
    design: &ExamDesign,
    bank: &EngineBank,
    counts: &ExposureCounts,
) -> Vec<i64> {
    match &design.exposure {
        Some(control) if control.method == ExposureMethod::ItemEligibility => {
            let mut rng = step_rng(design.seed, usize::MAX);
            irt::draw_ineligible_items(control, counts, &mut rng)
                .into_iter()
                .filter_map(|i| bank.ids.get(i).copied())
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The generator of one step's random draws: a function of the exam's seed and the step
/// only, so a rebuilt engine draws the same items.
fn step_rng(seed: u64, step: usize) -> StdRng {
    StdRng::seed_from_u64(
        seed ^ (step as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// One live exam's engine state, as cached in Redis (`{prefix}:{id}`, JSON).
///
/// The contract's six fields, plus the item ids (so an instance continues the exam without
/// reading the attempts), for polytomous items the category scores, and for exams that
/// seed pretest items the pretest items answered and the engine's pending choice. Kept this small on
/// purpose (about 1 KB at 20 answers): everything else is in the session row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// The current estimate.
    pub theta: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// Parameters of the administered items, in order (`{"a","b","c"}`, plus `"d"` when
    /// it is not 1; polytomous items as `{"model","a","thresholds"}`).
    pub item_params_list: Vec<Item>,
    /// Whether each administered item got full credit, in order.
    pub responses: Vec<bool>,
    /// Category scores, only when some item is polytomous (else `responses` says it all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Vec<u32>>,
    /// The exam's maximum length.
    pub max_items: u32,
    /// Answers recorded; also the state's version (a write never replaces a larger one).
    pub items_completed: u32,
    /// Ids of the administered items, in order.
    pub item_ids: Vec<i64>,
    /// Ids of the pretest items answered, in order (never part of the estimate; only
    /// for exams that seed pretest items). `items_completed` counts them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pretest_item_ids: Vec<i64>,
    /// The operational item the engine chose last (presented now, or after the pretest
    /// items due now); kept only for exams that seed pretest items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_item_id: Option<i64>,
}

impl EngineState {
    /// The category score of every answer.
    pub fn category_scores(&self) -> Vec<u32> {
        match &self.scores {
            Some(scores) => scores.clone(),
            None => self.responses.iter().map(|r| u32::from(*r)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn design(max_items: usize, randomesque: u32) -> ExamDesign {
        ExamDesign {
            stopping: StoppingRule {
                max_items,
                min_items: 1,
                ..StoppingRule::default()
            },
            initial_theta: 0.0,
            randomesque,
            estimator: EstimatorSettings::default(),
            selection_rule: SelectionRule::MaxInfo,
            exposure: None,
            content_balance: None,
            start_item_ids: Vec::new(),
            ineligible_item_ids: Vec::new(),
            pretest: Vec::new(),
            seed: 42,
        }
    }

    fn bank() -> EngineBank {
        let params: Vec<ItemParams> = (0..30)
            .map(|i| ItemParams {
                a: 1.0 + (i % 3) as f64 * 0.3,
                b: -3.0 + i as f64 * 0.2,
                c: 0.1,
                d: 1.0,
            })
            .collect();
        EngineBank::from_params(1.0, &params)
    }

    fn history<'a>(
        administered: &'a [usize],
        scores: &'a [u32],
        previous_theta: f64,
    ) -> History<'a> {
        History {
            administered,
            scores,
            previous_theta,
            elapsed_seconds: 0.0,
        }
    }

    #[test]
    fn the_first_step_uses_the_initial_theta_and_prior_sd() {
        let d = decide(&design(5, 1), &bank(), &history(&[], &[], 0.0), None);
        assert_eq!(d.estimate.theta, 0.0);
        assert_eq!(d.estimate.standard_error, 1.0);
        assert!(d.stop.is_none());
        assert!(d.next_item.is_some());
    }

    #[test]
    fn the_same_history_gives_the_same_decision_even_with_randomesque() {
        let bank = bank();
        let design = design(10, 5);
        let mut administered = Vec::new();
        let mut scores = Vec::new();
        let mut theta = design.initial_theta;
        for step in 0..8 {
            let first = decide(
                &design,
                &bank,
                &history(&administered, &scores, theta),
                None,
            );
            let again = decide(
                &design,
                &bank,
                &history(&administered, &scores, theta),
                None,
            );
            assert_eq!(first, again, "step {step}");
            let next = first.next_item.expect("exam goes on");
            assert!(!administered.contains(&next));
            theta = first.estimate.theta;
            administered.push(next);
            scores.push(u32::from(step % 2 == 0));
        }
    }

    #[test]
    fn the_exam_stops_at_max_items_and_when_the_bank_runs_out() {
        let bank = bank();
        let d = decide(&design(2, 1), &bank, &history(&[0, 1], &[1, 0], 0.0), None);
        assert_eq!(d.stop, Some(StopReason::MaxItems));
        assert_eq!(d.next_item, None);
        let all: Vec<usize> = (0..bank.len()).collect();
        let scores: Vec<u32> = all.iter().map(|i| (i % 2) as u32).collect();
        let d = decide(&design(100, 1), &bank, &history(&all, &scores, 0.0), None);
        assert_eq!(d.stop, Some(StopReason::BankExhausted));
    }

    #[test]
    fn start_items_come_first_in_order() {
        let bank = bank();
        let mut design = design(5, 1);
        design.start_item_ids = vec![bank.ids[7], bank.ids[3]];
        let first = decide(&design, &bank, &history(&[], &[], 0.0), None);
        assert_eq!(first.next_item, Some(7));
        let second = decide(&design, &bank, &history(&[7], &[1], 0.0), None);
        assert_eq!(second.next_item, Some(3));
    }
}
