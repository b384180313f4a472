//! The calibration study of `simulate --pretest-items N` (issue 16): pretest items with
//! known generating parameters are seeded into the simulated exams, then calibrated by
//! FIXED_THETA, OEM and MEM ([`irt::calibrate()`], the service's own estimation) from the
//! responses of the first 25 %, 50 % and 100 % of the examinees, and their estimates are
//! compared with the truth.
//!
//! * Generating parameters: `a ~ U(0.8, 2)`, `b ~ N(0, 1)` and, for the 3PL,
//!   `c ~ U(0.1, 0.3)` (`c` is drawn for the 2PL too and then set to 0, so both models get
//!   the same `a` and `b` for a seed), from one generator seeded by
//!   `derive_seed(seed, Stream::PretestItems, 0)`, on the bank's scale (its scaling
//!   constant `D`).
//! * Assignment: examinee `e` answers pretest items `(e·K + k) mod N` for `k < K`: any
//!   first `m` examinees give every item `⌊m·K/N⌋` or `⌈m·K/N⌉` responses, and nobody
//!   answers an item twice (`K ≤ N`).
//! * Responses: drawn as [`irt::draw_response`] draws them, from the examinee's true theta,
//!   with a generator of their own seeded by `derive_seed(seed, Stream::PretestResponses,
//!   e)`. The operational exam never sees them: its items, scores and estimates are those
//!   of the same run without pretest items. Since a pretest answer changes nothing
//!   operational, answering the pretest items besides the exam is equivalent to seeding
//!   them at random positions in it.
//! * Calibration: each examinee's operational log-likelihood on the calibration grid
//!   ([`irt::log_likelihood_on_grid`] over the items they were given and their scores,
//!   with the bank's `D`), and their pretest responses, go to [`irt::calibrate()`] with
//!   [`CalibrationSettings::new`] (its defaults: N(0, 1) ability prior on 61 nodes of
//!   [-6, 6], whatever `--theta-dist` is; Beta(6, 16) on `c`; MEM to 1e-5 in at most 200
//!   cycles). The operational log-likelihoods are kept for the whole run: 61 numbers per
//!   examinee.
//!
//! Everything is a function of the seed and of the exams, so the study is the same for
//! any number of threads (the per-examinee work and the nine calibrations run in parallel,
//! each one deterministic).
//!
//! Owns the pretest seeding, the study and its figures; its outputs (the summary's
//! `calibration` section, `calibration.json`, `calibration.svg`, the pretest columns of
//! `examinees.csv`) are drawn by the submodule `output`. Must not change the operational
//! exams nor how items are calibrated (that is `irt::calibrate`).

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use rand_distr::{StandardNormal, Uniform};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::stats::mean;
use super::{ExamineeResult, Stream, derive_seed};
use crate::engine::EngineBank;

mod output;

use crate::irt::{
    self, Calibration, CalibrationMethod, CalibrationModel, CalibrationSettings, Examinee, Item,
    ItemParams, StandardErrors,
};
pub use output::{csv_columns, json, method_name, svg, table};

/// Largest `--pretest-items`.
pub const MAX_PRETEST_ITEMS: usize = 10_000;
/// Largest `--pretest-per-exam`.
pub const MAX_PRETEST_PER_EXAM: usize = 100;
/// The sample sizes calibrated: these percentages of the examinees, the first ones in
/// order (rounded up).
pub const SAMPLE_PERCENTS: [usize; 3] = [25, 50, 100];
/// The methods compared, in report order.
pub const METHODS: [CalibrationMethod; 3] = [
    CalibrationMethod::FixedTheta,
    CalibrationMethod::Oem,
    CalibrationMethod::Mem,
];
/// The generating distributions, as reports spell them.
const GENERATING_2PL: &str = "a ~ U(0.8, 2), b ~ N(0, 1)";
const GENERATING_3PL: &str = "a ~ U(0.8, 2), b ~ N(0, 1), c ~ U(0.1, 0.3)";

/// The model of the pretest items, generated and calibrated (`--pretest-model`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum PretestModel {
    /// `a`, `b`.
    #[default]
    #[value(name = "2pl")]
    #[serde(rename = "2PL")]
    TwoPl,
    /// `a`, `b`, `c`.
    #[value(name = "3pl")]
    #[serde(rename = "3PL")]
    ThreePl,
}

impl PretestModel {
    /// The calibration model of [`irt::calibrate()`].
    pub fn calibration_model(self) -> CalibrationModel {
        match self {
            Self::TwoPl => CalibrationModel::TwoPl,
            Self::ThreePl => CalibrationModel::ThreePl,
        }
    }
}

/// A checked pretest design: `items` pretest items, `per_exam` answered by each examinee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PretestDesign {
    /// Number of pretest items (`N`).
    pub items: usize,
    /// Pretest items per examinee (`K`, `1..=N`).
    pub per_exam: usize,
    /// Their model.
    pub model: PretestModel,
}

impl PretestDesign {
    /// The design of `--pretest-items`, `--pretest-per-exam`, `--pretest-model`; `None`
    /// when `items` is 0 (no study).
    ///
    /// # Errors
    /// `per_exam` 0 or above `items`, or either above its maximum.
    pub fn new(items: usize, per_exam: usize, model: PretestModel) -> anyhow::Result<Option<Self>> {
        if items == 0 {
            return Ok(None);
        }
        anyhow::ensure!(
            items <= MAX_PRETEST_ITEMS,
            "--pretest-items must be at most {MAX_PRETEST_ITEMS} (got {items})"
        );
        anyhow::ensure!(
            per_exam >= 1,
            "--pretest-per-exam must be at least 1 when --pretest-items is set (got 0)"
        );
        anyhow::ensure!(
            per_exam <= MAX_PRETEST_PER_EXAM,
            "--pretest-per-exam must be at most {MAX_PRETEST_PER_EXAM} (got {per_exam})"
        );
        anyhow::ensure!(
            per_exam <= items,
            "--pretest-per-exam {per_exam} exceeds --pretest-items {items}: each examinee \
             answers that many distinct pretest items"
        );
        Ok(Some(Self {
            items,
            per_exam,
            model,
        }))
    }

    /// The generating parameters of the pretest items of a run seeded with `seed`.
    pub fn generating_parameters(&self, seed: u64) -> Vec<ItemParams> {
        let mut rng = StdRng::seed_from_u64(derive_seed(seed, Stream::PretestItems, 0));
        let a = Uniform::new(0.8, 2.0).expect("a valid range");
        let c = Uniform::new(0.1, 0.3).expect("a valid range");
        (0..self.items)
            .map(|_| {
                let a = rng.sample(a);
                let b: f64 = rng.sample(StandardNormal);
                let c = rng.sample(c);
                match self.model {
                    PretestModel::TwoPl => ItemParams::two_pl(a, b),
                    PretestModel::ThreePl => ItemParams::three_pl(a, b, c),
                }
            })
            .collect()
    }

    /// The pretest items examinee `index` answers, in order: `(index·K + k) mod N`.
    pub fn assigned(&self, index: usize) -> impl Iterator<Item = usize> + use<> {
        let (n, k) = (self.items, self.per_exam);
        (0..k).map(move |j| (index * k + j) % n)
    }

    /// Examinee `index`'s pretest responses (item, correct) at `true_theta`.
    pub fn draw_responses(
        &self,
        truth: &[ItemParams],
        true_theta: f64,
        scaling: f64,
        seed: u64,
        index: usize,
    ) -> Vec<(usize, bool)> {
        let mut rng =
            StdRng::seed_from_u64(derive_seed(seed, Stream::PretestResponses, index as u64));
        self.assigned(index)
            .map(|j| {
                let item = Item::Dichotomous(truth[j]);
                (
                    j,
                    irt::draw_response(&item, true_theta, scaling, &mut rng) == 1,
                )
            })
            .collect()
    }

    /// The external id of pretest item `j` in reports: `pretest-001`…
    pub fn item_id(&self, j: usize) -> String {
        let width = self.items.to_string().len().max(3);
        format!("pretest-{:0width$}", j + 1)
    }
}

/// Accuracy of one parameter over the calibrated items.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Mean of (estimate − true value).
    pub bias: f64,
    /// Root mean square of (estimate − true value).
    pub rmse: f64,
    /// Mean of the reported standard errors (`None` when none was finite).
    pub mean_se: Option<f64>,
}

/// One calibration: a method on the responses of the first examinees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRun {
    /// The method.
    pub method: CalibrationMethod,
    /// Percentage of the examinees whose responses were used (the first ones).
    pub percent: usize,
    /// Number of those examinees.
    pub examinees: usize,
    /// Mean number of responses per pretest item.
    pub responses_per_item: f64,
    /// Fewest responses of a pretest item.
    pub min_responses: u64,
    /// Most responses of a pretest item.
    pub max_responses: u64,
    /// Items with an estimate (the others had no response).
    pub calibrated: usize,
    /// Of `a`.
    pub a: Accuracy,
    /// Of `b`.
    pub b: Accuracy,
    /// Of `c` (3PL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<Accuracy>,
    /// Mean RMSD item fit.
    pub mean_rmsd: f64,
    /// EM cycles (1 for FIXED_THETA and OEM).
    pub cycles: usize,
    /// Whether MEM's cycles converged (always true for the others).
    pub converged: bool,
    /// Items whose M-step did not converge inside the parameter bounds.
    pub items_not_converged: usize,
}

/// The summary's `calibration` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSummary {
    /// Number of pretest items.
    pub pretest_items: usize,
    /// Pretest items per examinee.
    pub per_exam: usize,
    /// Their model.
    pub model: PretestModel,
    /// The generating distributions.
    pub generating: String,
    /// One entry per sample size and method (sizes outer, methods inner).
    pub runs: Vec<CalibrationRun>,
    /// Wall-clock seconds of the study (log-likelihoods, pretest draws, calibrations).
    pub elapsed_s: f64,
}

/// A finished study: the summary, and what `calibration.json` and `examinees.csv` show.
#[derive(Clone, Debug)]
pub struct Study {
    /// The design.
    pub design: PretestDesign,
    /// The summary section.
    pub summary: CalibrationSummary,
    /// The generating parameters.
    pub truth: Vec<ItemParams>,
    /// Each examinee's pretest responses, in examinee order.
    pub responses: Vec<Vec<(usize, bool)>>,
    /// The calibrations, in the order of `summary.runs`.
    pub calibrations: Vec<Calibration>,
}

/// Each examinee's operational `ln L` at the nodes of `settings` (the items of their exam
/// and their scores), in examinee order.
pub fn operational_log_likelihoods(
    bank: &EngineBank,
    results: &[ExamineeResult],
    settings: &irt::EstimatorSettings,
) -> Vec<Vec<f64>> {
    results
        .par_iter()
        .map(|r| {
            let items: Vec<Item> = r.items.iter().map(|&i| bank.items[i].clone()).collect();
            let mut out = Vec::new();
            irt::log_likelihood_on_grid(settings, &items, &r.scores, &mut out);
            out
        })
        .collect()
}

/// Runs the study on the exams of `results` (in the current rayon pool).
pub fn study(
    bank: &EngineBank,
    results: &[ExamineeResult],
    design: PretestDesign,
    seed: u64,
) -> Study {
    let started = Instant::now();
    let model = design.model.calibration_model();
    let truth = design.generating_parameters(seed);
    let grid = CalibrationSettings::new(CalibrationMethod::Mem, model, bank.scaling).ability;
    let operational = operational_log_likelihoods(bank, results, &grid);
    let responses: Vec<Vec<(usize, bool)>> = results
        .par_iter()
        .enumerate()
        .map(|(e, r)| design.draw_responses(&truth, r.true_theta, bank.scaling, seed, e))
        .collect();
    // (percent, examinees); a size reached by several percentages (few examinees) once,
    // under the largest.
    let mut sizes: Vec<(usize, usize)> = Vec::new();
    for p in SAMPLE_PERCENTS {
        let n = (results.len() * p).div_ceil(100);
        match sizes.last_mut() {
            Some(last) if last.1 == n => *last = (p, n),
            _ => sizes.push((p, n)),
        }
    }
    let jobs: Vec<(usize, usize, CalibrationMethod)> = sizes
        .iter()
        .flat_map(|&(p, n)| METHODS.iter().map(move |&m| (p, n, m)))
        .collect();
    let calibrations: Vec<Calibration> = jobs
        .par_iter()
        .map(|&(_, n, method)| {
            let settings = CalibrationSettings::new(method, model, bank.scaling);
            let calibrated = irt::calibrate(design.items, &settings, |visit| {
                for (operational, pretest) in operational[..n].iter().zip(&responses[..n]) {
                    visit(&Examinee {
                        operational,
                        pretest,
                    });
                }
                Ok::<(), std::convert::Infallible>(())
            });
            match calibrated {
                Ok(c) => c,
                Err(never) => match never {},
            }
        })
        .collect();
    let runs = jobs
        .iter()
        .zip(&calibrations)
        .map(|(&(percent, n, method), calibration)| {
            let mut run = run_statistics(&truth, calibration, design.model, method);
            run.percent = percent;
            run.examinees = n;
            let counts = response_counts(&design, n);
            run.responses_per_item = (n * design.per_exam) as f64 / design.items as f64;
            run.min_responses = counts.iter().copied().min().unwrap_or(0);
            run.max_responses = counts.iter().copied().max().unwrap_or(0);
            run
        })
        .collect();
    let summary = CalibrationSummary {
        pretest_items: design.items,
        per_exam: design.per_exam,
        model: design.model,
        generating: generating(design.model).to_owned(),
        runs,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    Study {
        design,
        summary,
        truth,
        responses,
        calibrations,
    }
}

/// The generating distributions of `model`.
fn generating(model: PretestModel) -> &'static str {
    match model {
        PretestModel::TwoPl => GENERATING_2PL,
        PretestModel::ThreePl => GENERATING_3PL,
    }
}

/// Responses per pretest item from the first `examinees` examinees.
fn response_counts(design: &PretestDesign, examinees: usize) -> Vec<u64> {
    let slots = (examinees * design.per_exam) as u64;
    let n = design.items as u64;
    (0..n)
        .map(|j| slots / n + u64::from(j < slots % n))
        .collect()
}

/// The accuracy figures of one calibration (sizes left for the caller).
fn run_statistics(
    truth: &[ItemParams],
    calibration: &Calibration,
    model: PretestModel,
    method: CalibrationMethod,
) -> CalibrationRun {
    let fitted: Vec<(&ItemParams, &irt::ItemCalibration)> = truth
        .iter()
        .zip(&calibration.items)
        .filter_map(|(t, c)| c.as_ref().map(|c| (t, c)))
        .collect();
    let accuracy = |value: fn(&ItemParams) -> f64, se: fn(&StandardErrors) -> Option<f64>| {
        let errors: Vec<f64> = fitted
            .iter()
            .map(|(t, c)| value(&c.params) - value(t))
            .collect();
        let ses: Vec<f64> = fitted
            .iter()
            .filter_map(|(_, c)| se(&c.standard_errors))
            .filter(|s| s.is_finite())
            .collect();
        Accuracy {
            bias: mean(&errors),
            rmse: super::stats::mean_square(&errors).sqrt(),
            mean_se: (!ses.is_empty()).then(|| mean(&ses)),
        }
    };
    CalibrationRun {
        method,
        percent: 0,
        examinees: 0,
        responses_per_item: 0.0,
        min_responses: 0,
        max_responses: 0,
        calibrated: fitted.len(),
        a: accuracy(|p| p.a, |s| Some(s.a)),
        b: accuracy(|p| p.b, |s| Some(s.b)),
        c: (model == PretestModel::ThreePl).then(|| accuracy(|p| p.c, |s| s.c)),
        mean_rmsd: mean(&fitted.iter().map(|(_, c)| c.rmsd).collect::<Vec<_>>()),
        cycles: calibration.cycles,
        converged: calibration.converged,
        items_not_converged: fitted.iter().filter(|(_, c)| !c.converged).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn design(items: usize, per_exam: usize, model: PretestModel) -> PretestDesign {
        PretestDesign::new(items, per_exam, model)
            .expect("valid")
            .expect("a study")
    }

    /// Any first examinees spread their answers evenly (±1), nobody answers an item twice,
    /// and `response_counts` counts what `assigned` hands out.
    #[test]
    fn assignment_is_balanced_for_every_prefix_of_the_examinees() {
        for (n, k) in [(7, 3), (20, 2), (5, 5), (1, 1)] {
            let d = design(n, k, PretestModel::TwoPl);
            let mut counts = vec![0u64; n];
            for e in 0..50 {
                let items: Vec<usize> = d.assigned(e).collect();
                let mut distinct = items.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(distinct.len(), k, "{n} {k} {items:?}");
                for j in items {
                    counts[j] += 1;
                }
                assert_eq!(counts, response_counts(&d, e + 1), "{n} {k} after {e}");
                let (lo, hi) = (counts.iter().min(), counts.iter().max());
                assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{counts:?}");
            }
        }
    }

    /// The generating parameters follow their distributions, and a seed gives the 2PL and
    /// the 3PL the same `a` and `b`.
    #[test]
    fn generating_parameters_follow_their_distributions() {
        let two = design(4000, 2, PretestModel::TwoPl).generating_parameters(3);
        let three = design(4000, 2, PretestModel::ThreePl).generating_parameters(3);
        for (p, q) in two.iter().zip(&three) {
            assert_eq!((p.a, p.b, p.c, p.d), (q.a, q.b, 0.0, 1.0));
            assert!(
                (0.8..2.0).contains(&q.a) && (0.1..0.3).contains(&q.c),
                "{q:?}"
            );
        }
        let b: Vec<f64> = two.iter().map(|p| p.b).collect();
        let sd = super::super::stats::sample_sd(&b);
        assert!(
            mean(&b).abs() < 0.05 && (sd - 1.0).abs() < 0.05,
            "{} {sd}",
            mean(&b)
        );
        assert_ne!(
            two,
            design(4000, 2, PretestModel::TwoPl).generating_parameters(4)
        );
        assert_eq!(design(12, 2, PretestModel::TwoPl).item_id(0), "pretest-001");
        assert_eq!(
            design(1200, 2, PretestModel::TwoPl).item_id(41),
            "pretest-0042"
        );
    }
}
