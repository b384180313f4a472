//! An exam's adaptive engine: the exam design, the state of one exam, and the single
//! function that decides each step ("answers so far → estimate → stop or next item").
//!
//! Pure: no I/O, no clock. The server (`exam`) and the simulator call the same
//! [`decide`], so a design studied offline behaves identically live, and a rebuild from
//! Postgres reproduces every estimate and every item choice (randomesque draws come from a
//! generator seeded by the exam's seed and the step number, never from global state).

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::irt::{self, Estimate, EstimatorSettings, ItemParams, Prior, StopReason, StoppingRule};

/// Everything that defines how an exam runs; stored with the session as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExamDesign {
    /// Stop after this many answers.
    pub max_items: u32,
    /// Never stop on precision before this many answers.
    pub min_items: u32,
    /// Stop once the standard error is at or below this.
    pub se_target: Option<f64>,
    /// Theta before any answer (drives the first item choice).
    pub initial_theta: f64,
    /// Choose at random among this many most informative items (1 = always the best).
    pub randomesque: u32,
    /// The ability estimator, including the bank's scaling constant D.
    pub estimator: EstimatorSettings,
    /// Seed of the exam's randomesque draws.
    pub seed: u64,
}

impl ExamDesign {
    /// The stopping rule of this design.
    pub fn stopping_rule(&self) -> StoppingRule {
        StoppingRule {
            max_items: self.max_items as usize,
            min_items: self.min_items as usize,
            se_target: self.se_target,
        }
    }

    /// The estimate before any answer: the initial theta, with the prior's spread as SE.
    pub fn initial_estimate(&self) -> Estimate {
        let standard_error = match self.estimator.prior {
            Prior::Normal { sd, .. } => sd,
            Prior::Uniform { lower, upper } => (upper - lower) / 12f64.sqrt(),
            Prior::Jeffreys => (self.estimator.theta_max - self.estimator.theta_min) / 12f64.sqrt(),
        };
        Estimate {
            theta: self.initial_theta,
            standard_error,
        }
    }
}

/// What the engine decided after the answers so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// The estimate from all answers so far.
    pub estimate: Estimate,
    /// Why the exam stops now, if it does.
    pub stop: Option<StopReason>,
    /// The bank index of the next item, when the exam goes on.
    pub next_item: Option<usize>,
}

/// Decides one step: estimates from `administered` (bank indices, in order) and their
/// `responses`, checks the stopping rule, and otherwise picks the next item.
///
/// `previous_theta` is the estimate before the last answer (used by step-wise rules for
/// constant response patterns).
pub fn decide(
    design: &ExamDesign,
    bank: &[ItemParams],
    administered: &[usize],
    responses: &[bool],
    previous_theta: f64,
) -> Decision {
    debug_assert_eq!(administered.len(), responses.len());
    let estimate = if responses.is_empty() {
        design.initial_estimate()
    } else {
        let items: Vec<ItemParams> = administered.iter().map(|&i| bank[i]).collect();
        irt::estimate(&design.estimator, &items, responses, previous_theta)
    };
    let mut used = vec![false; bank.len()];
    for &i in administered {
        used[i] = true;
    }
    let items_left = bank.len() - administered.len();
    let stop =
        design
            .stopping_rule()
            .check(administered.len(), estimate.standard_error, items_left);
    let next_item = match stop {
        Some(_) => None,
        None => {
            let mut rng = step_rng(design.seed, administered.len());
            irt::select_next_item(
                bank,
                &used,
                estimate.theta,
                design.estimator.scaling,
                design.randomesque.max(1) as usize,
                &mut rng,
            )
        }
    };
    Decision {
        estimate,
        stop: stop.or(next_item.is_none().then_some(StopReason::BankExhausted)),
        next_item,
    }
}

/// The generator of one step's random draws: a function of the exam's seed and the step
/// only, so a rebuilt engine draws the same items.
fn step_rng(seed: u64, step: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One live exam's engine state, as cached in Redis (`{prefix}:{id}`, JSON).
///
/// The first six fields are the contract's; the rest let an instance continue the exam
/// without Postgres reads and let the summary be served from the cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// The exam this state belongs to.
    pub exam_session_id: i64,
    /// The current estimate.
    pub theta: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// Parameters of the administered items, in order.
    pub item_params_list: Vec<ItemParams>,
    /// Whether each administered item was answered correctly, in order.
    pub responses: Vec<bool>,
    /// The exam's maximum length.
    pub max_items: u32,
    /// Answers recorded; also the state's version (a write never replaces a larger one).
    pub items_completed: u32,
    /// Ids of the administered items, in order.
    pub item_ids: Vec<i64>,
    /// The item presented now, if any.
    pub presented_item_id: Option<i64>,
    /// The exam's owner, so the summary can be authorized from the cache.
    pub student_id: String,
    /// The bank the items come from.
    pub item_bank_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn design(max_items: u32, randomesque: u32) -> ExamDesign {
        ExamDesign {
            max_items,
            min_items: 1,
            se_target: None,
            initial_theta: 0.0,
            randomesque,
            estimator: EstimatorSettings::default(),
            seed: 42,
        }
    }

    fn bank() -> Vec<ItemParams> {
        (0..30)
            .map(|i| ItemParams {
                a: 1.0 + (i % 3) as f64 * 0.3,
                b: -3.0 + i as f64 * 0.2,
                c: 0.1,
                d: 1.0,
            })
            .collect()
    }

    #[test]
    fn the_first_step_uses_the_initial_theta_and_prior_sd() {
        let d = decide(&design(5, 1), &bank(), &[], &[], 0.0);
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
        let mut responses = Vec::new();
        let mut theta = design.initial_theta;
        for step in 0..8 {
            let first = decide(&design, &bank, &administered, &responses, theta);
            let again = decide(&design, &bank, &administered, &responses, theta);
            assert_eq!(first, again, "step {step}");
            let next = first.next_item.expect("exam goes on");
            assert!(!administered.contains(&next));
            theta = first.estimate.theta;
            administered.push(next);
            responses.push(step % 2 == 0);
        }
    }

    #[test]
    fn the_exam_stops_at_max_items_and_when_the_bank_runs_out() {
        let bank = bank();
        let d = decide(&design(2, 1), &bank, &[0, 1], &[true, false], 0.0);
        assert_eq!(d.stop, Some(StopReason::MaxItems));
        assert_eq!(d.next_item, None);
        let all: Vec<usize> = (0..bank.len()).collect();
        let responses: Vec<bool> = all.iter().map(|i| i % 2 == 0).collect();
        let d = decide(&design(100, 1), &bank, &all, &responses, 0.0);
        assert_eq!(d.stop, Some(StopReason::BankExhausted));
    }
}
