//! The calibration study of `simulate --pretest-items N` (issue 16): pretest items with
//! known generating parameters are seeded into the simulated exams, then calibrated by
//! FIXED_THETA, OEM and MEM ([`irt::calibrate`], the service's own estimation) from the
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
//!   with the bank's `D`), and their pretest responses, go to [`irt::calibrate`] with
//!   [`CalibrationSettings::new`] (the service's defaults: N(0, 1) prior on 61 nodes of
//!   [-6, 6], Beta(6, 16) on `c`). The operational log-likelihoods are kept for the whole
//!   run: 61 numbers per examinee.
//!
//! Everything is a function of the seed and of the exams, so the study is the same for
//! any number of threads (the per-examinee work and the nine calibrations run in parallel,
//! each one deterministic).
//!
//! Owns the pretest seeding, the study and its outputs (the summary's `calibration`
//! section, `calibration.json`, `calibration.svg`, the pretest columns of
//! `examinees.csv`). Must not change the operational exams nor how items are calibrated
//! (that is `irt::calibrate`).

use std::fmt::Write as _;
use std::time::Instant;

use plotters::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use rand_distr::{StandardNormal, Uniform};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::report::{PLOT_SIZE, padded_range, plot_error, tick};
use super::stats::mean;
use super::{ExamineeResult, Stream, derive_seed};
use crate::engine::EngineBank;
use crate::irt::{
    self, Calibration, CalibrationMethod, CalibrationModel, CalibrationSettings, Examinee, Item,
    ItemParams, StandardErrors,
};

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
    /// The calibration model of [`irt::calibrate`].
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
    let mut sizes: Vec<(usize, usize)> = SAMPLE_PERCENTS
        .iter()
        .map(|&p| (p, (results.len() * p).div_ceil(100)))
        .collect();
    sizes.dedup_by_key(|s| s.1);
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

/// The name of a method as the API spells it (`FIXED_THETA`, `OEM`, `MEM`).
pub fn method_name(method: CalibrationMethod) -> &'static str {
    match method {
        CalibrationMethod::FixedTheta => "FIXED_THETA",
        CalibrationMethod::Oem => "OEM",
        CalibrationMethod::Mem => "MEM",
    }
}

/// The calibration section of the summary table.
pub fn table(summary: &CalibrationSummary) -> String {
    let three = summary.model == PretestModel::ThreePl;
    let model = if three { "3PL" } else { "2PL" };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n  calibration of {} pretest {model} items, {} per exam ({}), in {:.2} s:",
        summary.pretest_items, summary.per_exam, summary.generating, summary.elapsed_s
    );
    let mut header = format!(
        "    {:<11} {:>9} {:>9} {:>8} {:>7} {:>7} {:>8} {:>7} {:>7}",
        "method", "examinees", "resp/item", "bias a", "RMSE a", "SE a", "bias b", "RMSE b", "SE b"
    );
    if three {
        let _ = write!(header, " {:>8} {:>7} {:>7}", "bias c", "RMSE c", "SE c");
    }
    let _ = writeln!(out, "{header} {:>7} {:>6}", "RMSD", "cycles");
    let se = |s: Option<f64>| s.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.4}"));
    for run in &summary.runs {
        let responses = if run.min_responses == run.max_responses {
            run.min_responses.to_string()
        } else {
            format!("{}-{}", run.min_responses, run.max_responses)
        };
        let _ = write!(
            out,
            "    {:<11} {:>9} {:>9} {:>+8.4} {:>7.4} {:>7} {:>+8.4} {:>7.4} {:>7}",
            method_name(run.method),
            run.examinees,
            responses,
            run.a.bias,
            run.a.rmse,
            se(run.a.mean_se),
            run.b.bias,
            run.b.rmse,
            se(run.b.mean_se),
        );
        if let Some(c) = &run.c {
            let _ = write!(
                out,
                " {:>+8.4} {:>7.4} {:>7}",
                c.bias,
                c.rmse,
                se(c.mean_se)
            );
        }
        let cycles = if run.converged {
            run.cycles.to_string()
        } else {
            format!("{}!", run.cycles)
        };
        let _ = writeln!(out, " {:>7.4} {:>6}", run.mean_rmsd, cycles);
    }
    let uncalibrated: usize = summary
        .runs
        .iter()
        .map(|r| summary.pretest_items - r.calibrated)
        .sum();
    let stuck: usize = summary.runs.iter().map(|r| r.items_not_converged).sum();
    if uncalibrated > 0 {
        let _ = writeln!(
            out,
            "    {uncalibrated} item estimates missing over these runs (items without a \
             response)"
        );
    }
    if stuck > 0 {
        let _ = writeln!(
            out,
            "    {stuck} item estimates over these runs at a parameter bound or not converged \
             (calibration.json: converged false)"
        );
    }
    if summary.runs.iter().any(|r| !r.converged) {
        let _ = writeln!(
            out,
            "    cycles!: MEM stopped at its cycle limit unconverged"
        );
    }
    out
}

/// One pretest item in `calibration.json`.
#[derive(Serialize)]
struct ItemReport<'a> {
    id: String,
    #[serde(rename = "true")]
    truth: &'a ItemParams,
    estimate: Option<&'a ItemParams>,
    standard_errors: Option<&'a StandardErrors>,
    responses: u64,
    correct: u64,
    rmsd: Option<f64>,
    converged: Option<bool>,
}

/// One calibration in `calibration.json`: its figures and its items.
#[derive(Serialize)]
struct RunReport<'a> {
    #[serde(flatten)]
    run: &'a CalibrationRun,
    items: Vec<ItemReport<'a>>,
}

/// The settings of every calibration in `calibration.json`.
#[derive(Serialize)]
struct GridReport {
    theta_min: f64,
    theta_max: f64,
    nodes: usize,
    prior: irt::Prior,
    guessing_prior: (f64, f64),
    max_cycles: usize,
    tolerance: f64,
}

/// `calibration.json`.
#[derive(Serialize)]
struct FileReport<'a> {
    pretest_items: usize,
    per_exam: usize,
    model: PretestModel,
    generating: &'a str,
    scaling_constant: f64,
    grid: GridReport,
    elapsed_s: f64,
    runs: Vec<RunReport<'a>>,
}

/// `calibration.json`: the design, the calibration grid, and per method and sample size
/// the figures of the summary with every item's true and estimated parameters, standard
/// errors, responses and fit.
///
/// # Errors
/// Only if serialization fails.
pub fn json(study: &Study, scaling: f64) -> anyhow::Result<String> {
    let grid = CalibrationSettings::new(
        CalibrationMethod::Mem,
        study.design.model.calibration_model(),
        scaling,
    );
    let runs: Vec<RunReport<'_>> = study
        .summary
        .runs
        .iter()
        .zip(&study.calibrations)
        .map(|(run, calibration)| RunReport {
            run,
            items: study
                .truth
                .iter()
                .zip(&calibration.items)
                .enumerate()
                .map(|(j, (truth, c))| ItemReport {
                    id: study.design.item_id(j),
                    truth,
                    estimate: c.as_ref().map(|c| &c.params),
                    standard_errors: c.as_ref().map(|c| &c.standard_errors),
                    responses: c.as_ref().map_or(0, |c| c.responses),
                    correct: c.as_ref().map_or(0, |c| c.correct),
                    rmsd: c.as_ref().map(|c| c.rmsd),
                    converged: c.as_ref().map(|c| c.converged),
                })
                .collect(),
        })
        .collect();
    let s = &study.summary;
    let report = FileReport {
        pretest_items: s.pretest_items,
        per_exam: s.per_exam,
        model: s.model,
        generating: &s.generating,
        scaling_constant: scaling,
        grid: GridReport {
            theta_min: grid.ability.theta_min,
            theta_max: grid.ability.theta_max,
            nodes: grid.ability.nodes().count(),
            prior: grid.ability.prior,
            guessing_prior: grid.guessing_prior,
            max_cycles: grid.max_cycles,
            tolerance: grid.tolerance,
        },
        elapsed_s: s.elapsed_s,
        runs,
    };
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    Ok(text)
}

/// The pretest columns of `examinees.csv` for examinee `index`: the items' ids and the
/// scores (0/1), `;`-separated.
pub fn csv_columns(study: &Study, index: usize) -> [String; 2] {
    let answers = &study.responses[index];
    let items: Vec<String> = answers
        .iter()
        .map(|&(j, _)| study.design.item_id(j))
        .collect();
    let scores: Vec<&str> = answers
        .iter()
        .map(|&(_, r)| if r { "1" } else { "0" })
        .collect();
    [items.join(";"), scores.join(";")]
}

/// `calibration.svg`: RMSE of `b` (left) and of `a` (right) against the mean responses per
/// item, one line per method.
///
/// # Errors
/// When plotters fails.
pub fn svg(summary: &CalibrationSummary) -> anyhow::Result<String> {
    let colors = [RED, BLUE, RGBColor(0, 140, 0)];
    let series = |param: fn(&CalibrationRun) -> f64| -> Vec<Vec<(f64, f64)>> {
        METHODS
            .iter()
            .map(|&m| {
                summary
                    .runs
                    .iter()
                    .filter(|r| r.method == m)
                    .map(|r| (r.responses_per_item, param(r)))
                    .collect()
            })
            .collect()
    };
    let panels = [("b", series(|r| r.b.rmse)), ("a", series(|r| r.a.rmse))];
    let (x_lo, x_hi) = padded_range(summary.runs.iter().map(|r| r.responses_per_item), 0.0);
    let x_pad = (x_hi - x_lo).max(1.0) * 0.05;
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_SIZE.0 + 400, PLOT_SIZE.1)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let root = root
            .titled(
                &format!(
                    "Calibration of {} pretest items ({} per exam): RMSE against responses per item",
                    summary.pretest_items, summary.per_exam
                ),
                ("sans-serif", 20),
            )
            .map_err(plot_error)?;
        for (area, (name, lines)) in root.split_evenly((1, 2)).iter().zip(&panels) {
            let top = lines
                .iter()
                .flatten()
                .map(|p| p.1)
                .filter(|v| v.is_finite())
                .fold(0.0, f64::max)
                .max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("RMSE of {name}"), ("sans-serif", 18))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d((x_lo - x_pad)..(x_hi + x_pad), 0.0..top * 1.1)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc("responses per item")
                .y_desc(format!("RMSE of {name}"))
                .x_label_formatter(&|v| tick(*v, 0))
                .y_label_formatter(&|v| tick(*v, 2))
                .draw()
                .map_err(plot_error)?;
            for ((method, points), color) in METHODS.iter().zip(lines).zip(colors) {
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(plot_error)?
                    .label(method_name(*method))
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(plot_error)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.9))
                .draw()
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}
