//! `adaptive-engine simulate`: CAT design studies on the very engine that serves exams.
//!
//! Every simulated examinee runs the server's loop: [`engine::decide`] on the answers so
//! far, a response drawn with [`irt::draw_response`] from the examinee's true theta under
//! the bank's own item model, until `decide` stops the exam. The design is read with the
//! API's defaults and checked by `design::ExamDesignInput::to_engine_design`; the bank is parsed and checked
//! as `import-bank` does. Pure and in-process: no database, no Redis, no clock in the
//! results.
//!
//! Reproducibility: the true thetas come from one generator seeded by `--seed` (or from a
//! file); examinee `i`'s exam seed and response generator are functions of `(seed, i)` only.
//! Exposure counts are shared across the population like a live fleet: examinees run in
//! batches of [`BATCH_SIZE`] in parallel, each reading the counts as of the end of the
//! previous batch; a batch's counts are then added in examinee order. So the results are
//! the same for any number of threads.
//!
//! With `--pretest-items N`, pretest items with known generating parameters are answered
//! besides the exams and calibrated afterwards by FIXED_THETA, OEM and MEM, to report how
//! well online calibration recovers them ([`calibration`]). Their responses come from
//! streams of their own, so the exams are the same with or without them.
//!
//! Owns the simulation loop, its options and its outputs (submodules: [`design`] file,
//! [`bank`] and thetas, [`stats`], [`report`], the [`calibration`] study). Must not change how the engine decides
//! (that is `engine` and `irt`), nor touch storage beyond building the in-memory bank.

pub mod bank;
pub mod calibration;
pub mod design;
pub mod report;
pub mod stats;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use bank::{SimBank, ThetaDist};
pub use calibration::{CalibrationSummary, PretestDesign, PretestModel};
pub use design::{EstimatorMethod, ExamDesignInput, SimDesign};
pub use stats::{ConditionalRow, Summary};

use crate::engine::{self, EngineBank, ExamDesign, History};
use crate::irt::{self, ExposureCounts, SelectionRule, StopReason};

/// Examinees per batch: the exposure counts an examinee sees are those at the end of the
/// previous batch (fixed, whatever the number of threads, so results do not depend on it).
pub const BATCH_SIZE: usize = 64;

/// Largest number of examinees of one run.
pub const MAX_EXAMINEES: usize = 10_000_000;

/// The options of `adaptive-engine simulate` (also usable in-process; [`Options::default`]
/// is the command with no arguments).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct Options {
    /// Item bank file, as for import-bank: a JSON list of ItemInput objects, or CSV with the
    /// columns externalId,a,b,c,d,contentArea,content,answerKey (model, thresholds, scoring,
    /// enemyGroup, status optional; PRETEST items are left out). Default: a built-in bank of
    /// 500 3PL items (fixed seed).
    #[arg(long, value_name = "FILE")]
    pub bank: Option<PathBuf>,
    /// The scaling constant D of the bank file's logistic model.
    #[arg(long, default_value_t = 1.0, value_name = "D")]
    pub scaling_constant: f64,
    /// Number of simulated examinees.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub examinees: usize,
    /// Distribution of the true abilities: normal:MEAN,SD or uniform:LOW,HIGH.
    #[arg(long, default_value = "normal:0,1", value_name = "DIST")]
    pub theta_dist: ThetaDist,
    /// File of true abilities, one per line (blank and #-lines skipped); replaces
    /// --examinees and --theta-dist.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["examinees", "theta_dist"])]
    pub thetas: Option<PathBuf>,
    /// Exam design: the JSON of a GraphQL ExamDesignInput, as an admin sends it in
    /// createAssessment (maxItems, minItems, seTarget, estimator {method, priorMean, ...},
    /// selectionRule, exposure {method, maxRate}, contentBalance, startItemIds as externalIds,
    /// cutScore, ...), same defaults. maxDurationSeconds never triggers: simulated time
    /// does not pass.
    #[arg(long, value_name = "FILE")]
    pub design: Option<PathBuf>,
    /// Overrides the design's maxItems.
    #[arg(long, value_name = "N")]
    pub max_items: Option<i32>,
    /// Overrides the design's minItems.
    #[arg(long, value_name = "N")]
    pub min_items: Option<i32>,
    /// Overrides the design's seTarget.
    #[arg(long, value_name = "SE")]
    pub se_target: Option<f64>,
    /// Overrides the design's estimator method.
    #[arg(long, value_enum, ignore_case = true, value_name = "METHOD")]
    pub estimator: Option<EstimatorMethod>,
    /// Overrides the design's randomesque group size.
    #[arg(long, value_name = "K")]
    pub randomesque: Option<i32>,
    /// Overrides the design's selectionRule.
    #[arg(long, value_enum, ignore_case = true, value_name = "RULE")]
    pub selection: Option<design::SelectionRule>,
    /// Seed of the whole run: same seed, same results, whatever the number of threads.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
    /// Print the summary as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run KL, KLP, MLWI, MPWI and MEPV by the plain scan over the bank instead of its
    /// precomputed grid tables: the same results, slower (to check or time the fast path).
    #[arg(long)]
    pub plain_selection: bool,
    /// Also write summary.json, examinees.csv, items.csv, bank.json (the bank in import
    /// format, readable by --bank) and SVG plots (conditional.svg, exposure.svg,
    /// information.svg) into this directory; with --pretest-items also calibration.json
    /// and calibration.svg, and examinees.csv gets the columns pretest_items and
    /// pretest_scores.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Calibration study: seed N pretest items with known parameters (a ~ U(0.8, 2),
    /// b ~ N(0, 1), c ~ U(0.1, 0.3) for 3pl, drawn from --seed), answered by every examinee
    /// besides the exam (they change nothing operational, so this is the same as seeding
    /// them at random positions), then calibrate them by FIXED_THETA, OEM and MEM from the
    /// first 25 %, 50 % and 100 % of the examinees and report bias and RMSE of the
    /// estimates. 0: no study.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub pretest_items: usize,
    /// Pretest items each examinee answers (1 to --pretest-items), spread so that every
    /// pretest item gets the same number of responses (±1).
    #[arg(long, default_value_t = 2, value_name = "K")]
    pub pretest_per_exam: usize,
    /// Model of the pretest items, generated and calibrated (3pl: Beta(6, 16) prior on c).
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        default_value = "2pl",
        value_name = "MODEL"
    )]
    pub pretest_model: PretestModel,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bank: None,
            scaling_constant: 1.0,
            examinees: 1000,
            theta_dist: ThetaDist::default(),
            thetas: None,
            design: None,
            max_items: None,
            min_items: None,
            se_target: None,
            estimator: None,
            randomesque: None,
            selection: None,
            seed: 1,
            threads: None,
            json: false,
            plain_selection: false,
            out: None,
            pretest_items: 0,
            pretest_per_exam: 2,
            pretest_model: PretestModel::TwoPl,
        }
    }
}

impl Options {
    /// The design file (or the API's defaults) with the command-line overrides applied.
    ///
    /// # Errors
    /// When the design file cannot be read or parsed.
    pub fn design_file(&self) -> anyhow::Result<ExamDesignInput> {
        let mut design = match &self.design {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                ExamDesignInput::from_json(&text)
                    .with_context(|| format!("design {}", path.display()))?
            }
            None => ExamDesignInput::default(),
        };
        if let Some(n) = self.max_items {
            design.max_items = Some(n);
        }
        if let Some(n) = self.min_items {
            design.min_items = Some(n);
        }
        if let Some(se) = self.se_target {
            design.se_target = Some(se);
        }
        if let Some(method) = self.estimator {
            design.estimator.get_or_insert_with(Default::default).method = Some(method);
        }
        if let Some(k) = self.randomesque {
            design.randomesque = Some(k);
        }
        if let Some(rule) = self.selection {
            design.selection_rule = Some(rule);
        }
        Ok(design)
    }

    /// The bank: `--bank` or the built-in one.
    ///
    /// # Errors
    /// When the bank file cannot be read, parsed or validated.
    pub fn sim_bank(&self) -> anyhow::Result<SimBank> {
        match &self.bank {
            Some(path) => SimBank::from_file(path, self.scaling_constant),
            None => Ok(SimBank::synthetic()),
        }
    }

    /// The calibration study of `--pretest-items`, `--pretest-per-exam`, `--pretest-model`
    /// (`None` without pretest items).
    ///
    /// # Errors
    /// Values out of range (see [`PretestDesign::new`]).
    pub fn pretest(&self) -> anyhow::Result<Option<PretestDesign>> {
        PretestDesign::new(
            self.pretest_items,
            self.pretest_per_exam,
            self.pretest_model,
        )
    }

    /// The true abilities: `--thetas`, or `--examinees` draws from `--theta-dist`.
    ///
    /// # Errors
    /// When the thetas file cannot be read or parsed, or the count is out of range.
    pub fn true_thetas(&self) -> anyhow::Result<Vec<f64>> {
        let thetas = match &self.thetas {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                bank::parse_thetas(&text).with_context(|| format!("thetas {}", path.display()))?
            }
            None => {
                anyhow::ensure!(
                    (1..=MAX_EXAMINEES).contains(&self.examinees),
                    "--examinees must be between 1 and {MAX_EXAMINEES}"
                );
                self.theta_dist
                    .draw(self.examinees, derive_seed(self.seed, Stream::Thetas, 0))
            }
        };
        anyhow::ensure!(
            thetas.len() <= MAX_EXAMINEES,
            "at most {MAX_EXAMINEES} examinees"
        );
        Ok(thetas)
    }
}

/// The outcome of one simulated exam.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExamineeResult {
    /// The examinee's true ability.
    pub true_theta: f64,
    /// The final estimate.
    pub estimate: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// Bank indices of the items given, in order.
    pub items: Vec<usize>,
    /// The category scores drawn, in order.
    pub scores: Vec<u32>,
    /// Why the exam stopped.
    pub stop_reason: StopReason,
}

/// A simulated population: every examinee's result, in order, and the final exposure counts
/// (counted as the service counts them live: exams started, items ineligible per exam,
/// items chosen by the selection rule, items presented).
#[derive(Clone, Debug, PartialEq)]
pub struct Simulation {
    /// One result per examinee, in the order of the true thetas.
    pub results: Vec<ExamineeResult>,
    /// The counts after the last exam.
    pub counts: ExposureCounts,
}

/// The independent random streams of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// The true thetas (one generator for the run).
    Thetas = 1,
    /// Exam seeds (`ExamDesign::seed`: randomesque, exposure and selection draws).
    Exams = 2,
    /// Response draws (one generator per examinee).
    Responses = 3,
    /// Generating parameters of the pretest items (one generator for the run).
    PretestItems = 4,
    /// Pretest response draws (one generator per examinee).
    PretestResponses = 5,
}

/// SplitMix64's output function: a bijective mix of 64 bits.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of `stream` for examinee `index` of a run seeded with `seed`: a function of
/// these three numbers only.
pub fn derive_seed(seed: u64, stream: Stream, index: u64) -> u64 {
    splitmix64(splitmix64(seed ^ splitmix64(stream as u64)) ^ index)
}

/// The exam seed of examinee `index` of a run seeded with `seed`.
pub fn exam_seed(seed: u64, index: u64) -> u64 {
    derive_seed(seed, Stream::Exams, index)
}

/// Simulates one exam per true theta with `design` (its seed is replaced by each examinee's
/// exam seed) on `bank`, in the current rayon thread pool, batch by batch (see the module
/// doc). `progress` is advanced by each batch.
pub fn simulate(
    bank: &EngineBank,
    design: &ExamDesign,
    thetas: &[f64],
    seed: u64,
    progress: Option<&ProgressBar>,
) -> Simulation {
    if design.selection_rule == SelectionRule::MaxInfo {
        bank.information_index(); // build it once, before the workers need it
    }
    let mut counts = ExposureCounts::new(bank.len());
    let mut results = Vec::with_capacity(thetas.len());
    for (b, chunk) in thetas.chunks(BATCH_SIZE).enumerate() {
        let first = b * BATCH_SIZE;
        let snapshot = &counts;
        let traces: Vec<Trace> = chunk
            .par_iter()
            .enumerate()
            .map(|(k, &theta)| run_exam(bank, design, theta, seed, (first + k) as u64, snapshot))
            .collect();
        for trace in traces {
            trace.add_to(&mut counts);
            results.push(trace.result);
        }
        if let Some(bar) = progress {
            bar.inc(chunk.len() as u64);
        }
    }
    Simulation { results, counts }
}

/// One exam and what the service would have added to the exposure counts.
struct Trace {
    result: ExamineeResult,
    ineligible: Vec<usize>,
    selected: Vec<usize>,
}

impl Trace {
    /// Adds this exam to the counts as `storage::exposure` does live: one exam started,
    /// eligible for every item not drawn ineligible, each selection and each presentation.
    fn add_to(&self, counts: &mut ExposureCounts) {
        counts.examinees += 1;
        for e in &mut counts.eligible {
            *e += 1;
        }
        for &i in &self.ineligible {
            counts.eligible[i] -= 1;
        }
        for &i in &self.selected {
            counts.selected[i] += 1;
        }
        for &i in &self.result.items {
            counts.administered[i] += 1;
        }
    }
}

/// Runs examinee `index`'s exam: the server's loop with simulated answers.
fn run_exam(
    bank: &EngineBank,
    base: &ExamDesign,
    true_theta: f64,
    seed: u64,
    index: u64,
    counts: &ExposureCounts,
) -> Trace {
    let mut design = base.clone();
    design.seed = exam_seed(seed, index);
    let live_counts = design.exposure.is_some().then_some(counts);
    if let Some(counts) = live_counts {
        design.ineligible_item_ids = engine::draw_ineligible(&design, bank, counts);
    }
    let ineligible = design
        .ineligible_item_ids
        .iter()
        .filter_map(|id| bank.index_of(*id))
        .collect();
    let mut rng = StdRng::seed_from_u64(derive_seed(seed, Stream::Responses, index));
    let capacity = design.stopping.max_items.min(bank.len());
    let mut administered = Vec::with_capacity(capacity);
    let mut scores = Vec::with_capacity(capacity);
    let mut selected = Vec::with_capacity(capacity);
    let mut previous_theta = design.initial_theta;
    loop {
        let history = History {
            administered: &administered,
            scores: &scores,
            previous_theta,
            elapsed_seconds: 0.0,
        };
        let decision = engine::decide(&design, bank, &history, live_counts);
        selected.extend(decision.proposed.iter().copied());
        let Some(next) = decision.next_item else {
            return Trace {
                result: ExamineeResult {
                    true_theta,
                    estimate: decision.estimate.theta,
                    standard_error: decision.estimate.standard_error,
                    items: administered,
                    scores,
                    stop_reason: decision.stop.unwrap_or(StopReason::BankExhausted),
                },
                ineligible,
                selected,
            };
        };
        scores.push(irt::draw_response(
            &bank.items[next],
            true_theta,
            bank.scaling,
            &mut rng,
        ));
        administered.push(next);
        previous_theta = decision.estimate.theta;
    }
}

/// Runs `adaptive-engine simulate`: builds the bank, thetas and design from `options`,
/// simulates in a pool of `options.threads` threads (with a progress bar on stderr when it is
/// a terminal), runs the calibration study if `--pretest-items` asks for one, writes `--out`
/// if asked, and returns the summary.
///
/// # Errors
/// Invalid options, bank, design or thetas, and files that cannot be read or written.
pub fn run(options: &Options) -> anyhow::Result<Summary> {
    let mut bank = options.sim_bank()?;
    bank.bank
        .engine
        .set_fast_selection(!options.plain_selection);
    let file = options.design_file()?;
    let design = file.to_design(&bank)?;
    let pretest = options.pretest()?;
    let thetas = options.true_thetas()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.unwrap_or(0))
        .build()
        .context("cannot start the worker threads")?;
    let bar = progress_bar(thetas.len());
    let started = Instant::now();
    let simulation =
        pool.install(|| simulate(bank.engine(), &design, &thetas, options.seed, Some(&bar)));
    let elapsed_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut summary = stats::summarize(&simulation, bank.len());
    summary.elapsed_s = elapsed_s;
    summary.exams_per_second = thetas.len() as f64 / elapsed_s.max(1e-9);
    summary.bank = bank.name.clone();
    summary.seed = options.seed;
    summary.threads = pool.current_num_threads();
    summary.design = file.with_defaults();
    let study = pretest.map(|pretest| {
        pool.install(|| {
            calibration::study(bank.engine(), &simulation.results, pretest, options.seed)
        })
    });
    summary.calibration = study.as_ref().map(|s| s.summary.clone());
    if let Some(dir) = &options.out {
        report::write_dir(dir, &bank, &simulation, &summary, study.as_ref())?;
    }
    Ok(summary)
}

/// The summary as printed: one JSON object (`json`) or the table.
pub fn render(summary: &Summary, json: bool) -> String {
    if json {
        let mut out =
            serde_json::to_string(summary).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        out.push('\n');
        out
    } else {
        report::table(summary)
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(len: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "simulating {bar:40.cyan/blue} {pos}/{len} exams ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}
