//! The statistics of a simulation: recovery of the true abilities (bias, RMSE,
//! correlation, conditional on true theta), test length and item exposure (rates, test
//! overlap). Pure functions of the per-examinee results and the exposure counts (the
//! calibration study's figures are `calibration`'s).
//!
//! Owns the definitions of the summary's numbers; must not run exams or do I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::calibration::CalibrationSummary;
use super::{ExamineeResult, Simulation};
use crate::design::ExamDesignInput;
use crate::irt::StopReason;

/// Number of groups of the conditional statistics (deciles of the true theta).
pub const CONDITIONAL_GROUPS: usize = 10;

/// The summary of a simulation (`--json` prints it; `summary.json` holds it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of simulated examinees.
    pub examinees: usize,
    /// Mean of (estimate − true theta).
    pub bias: f64,
    /// Root mean square of (estimate − true theta).
    pub rmse: f64,
    /// Pearson correlation of estimates and true thetas (`None`, `null` in JSON, when
    /// either is constant).
    pub correlation: Option<f64>,
    /// Mean test length.
    pub mean_length: f64,
    /// Standard deviation of the test length (n − 1 denominator; 0 for one examinee).
    pub sd_length: f64,
    /// Mean of the final standard errors.
    pub mean_se: f64,
    /// Largest item exposure rate (share of examinees who were given the item).
    pub max_exposure: f64,
    /// Mean item exposure rate over the bank (= mean length / bank size).
    pub mean_exposure: f64,
    /// Test overlap rate: see [`overlap_rate`].
    pub overlap_rate: f64,
    /// Items never administered.
    pub unused_items: usize,
    /// The statistics per decile of the true theta.
    pub conditional: Vec<ConditionalRow>,
    /// Wall-clock seconds of the simulation proper (bank and files excluded).
    pub elapsed_s: f64,
    /// Examinees simulated per second of `elapsed_s`.
    pub exams_per_second: f64,
    /// Number of exams that ended for each reason (spelled as the API's `stopReason`).
    pub stop_reasons: BTreeMap<String, usize>,
    /// Number of items in the bank.
    pub bank_items: usize,
    /// The bank's name (file name, or `synthetic`).
    pub bank: String,
    /// The run's seed.
    pub seed: u64,
    /// Worker threads used.
    pub threads: usize,
    /// The design that ran, with every default written out.
    pub design: ExamDesignInput,
    /// The calibration study of `--pretest-items` (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationSummary>,
}

/// The statistics of one group of examinees by true theta.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConditionalRow {
    /// Smallest true theta of the group.
    pub theta_lo: f64,
    /// Largest true theta of the group.
    pub theta_hi: f64,
    /// Number of examinees.
    pub n: usize,
    /// Mean of (estimate − true theta).
    pub bias: f64,
    /// Root mean square of (estimate − true theta).
    pub rmse: f64,
    /// Mean test length.
    pub mean_length: f64,
}

/// The API's spelling of a stop reason (`ExamSession.stopReason`).
pub fn stop_reason_name(reason: StopReason) -> &'static str {
    crate::storage::enums::StopCode::from(reason).as_str()
}

/// The summary of `simulation` on a bank of `bank_items` items. Timing, bank name, seed,
/// threads and design are left empty for the caller to fill.
pub fn summarize(simulation: &Simulation, bank_items: usize) -> Summary {
    let results = &simulation.results;
    let n = results.len();
    let errors: Vec<f64> = results.iter().map(|r| r.estimate - r.true_theta).collect();
    let lengths: Vec<f64> = results.iter().map(|r| r.items.len() as f64).collect();
    let rates = exposure_rates(simulation, bank_items);
    let mut stop_reasons = BTreeMap::new();
    for r in results {
        *stop_reasons
            .entry(stop_reason_name(r.stop_reason).to_owned())
            .or_insert(0) += 1;
    }
    Summary {
        examinees: n,
        bias: mean(&errors),
        rmse: mean_square(&errors).sqrt(),
        correlation: correlation(
            &results.iter().map(|r| r.estimate).collect::<Vec<_>>(),
            &results.iter().map(|r| r.true_theta).collect::<Vec<_>>(),
        ),
        mean_length: mean(&lengths),
        sd_length: sample_sd(&lengths),
        mean_se: mean(&results.iter().map(|r| r.standard_error).collect::<Vec<_>>()),
        max_exposure: rates.iter().copied().fold(0.0, f64::max),
        mean_exposure: mean(&rates),
        overlap_rate: overlap_rate(&simulation.counts.administered, n),
        unused_items: simulation
            .counts
            .administered
            .iter()
            .filter(|a| **a == 0)
            .count(),
        conditional: conditional(results),
        elapsed_s: 0.0,
        exams_per_second: 0.0,
        stop_reasons,
        bank_items,
        bank: String::new(),
        seed: 0,
        threads: 0,
        design: ExamDesignInput::default(),
        calibration: None,
    }
}

/// Exposure rate of every bank item: times administered / examinees.
pub fn exposure_rates(simulation: &Simulation, bank_items: usize) -> Vec<f64> {
    let n = simulation.results.len().max(1) as f64;
    (0..bank_items)
        .map(|i| simulation.counts.administered.get(i).copied().unwrap_or(0) as f64 / n)
        .collect()
}

/// The test overlap rate: the expected number of items two distinct random examinees share,
/// divided by the expected length of their tests,
///
/// ```text
/// T = Σ_i a_i (a_i − 1) / ((n − 1) · Σ_i a_i)
/// ```
///
/// where `a_i` is the number of examinees given item `i` and `n` the number of examinees
/// (`Σ_i a_i(a_i − 1)/2` is the number of shared items over all pairs, `(n − 1)·Σ_i a_i/2`
/// the sum over pairs of their mean length). Exact for the simulated population, fixed or
/// variable length. For a fixed length `L` (`Σ_i a_i = n·L`, `r_i = a_i/n`) it is Chen,
/// Ankenmann & Spray's (2003) `T = (n·Σ_i r_i²/L − 1)/(n − 1)`, the mean over pairs of the
/// proportion of shared items. 0 for fewer than two examinees.
pub fn overlap_rate(administered: &[u64], examinees: usize) -> f64 {
    let total: u64 = administered.iter().sum();
    if examinees < 2 || total == 0 {
        return 0.0;
    }
    let shared: f64 = administered
        .iter()
        .map(|&a| a as f64 * (a as f64 - 1.0).max(0.0))
        .sum();
    shared / ((examinees as f64 - 1.0) * total as f64)
}

/// The examinees split into [`CONDITIONAL_GROUPS`] groups of (nearly) equal size by true
/// theta, as index lists into `results` (ties in the order of the examinees; empty groups
/// are dropped when there are fewer examinees than groups).
pub fn decile_groups(results: &[ExamineeResult]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..results.len()).collect();
    order.sort_by(|&i, &j| {
        results[i]
            .true_theta
            .total_cmp(&results[j].true_theta)
            .then(i.cmp(&j))
    });
    let n = order.len();
    (0..CONDITIONAL_GROUPS)
        .map(|g| order[g * n / CONDITIONAL_GROUPS..(g + 1) * n / CONDITIONAL_GROUPS].to_vec())
        .filter(|group| !group.is_empty())
        .collect()
}

/// The statistics per decile of true theta.
pub fn conditional(results: &[ExamineeResult]) -> Vec<ConditionalRow> {
    decile_groups(results)
        .into_iter()
        .map(|group| {
            let errors: Vec<f64> = group
                .iter()
                .map(|&i| results[i].estimate - results[i].true_theta)
                .collect();
            let lengths: Vec<f64> = group
                .iter()
                .map(|&i| results[i].items.len() as f64)
                .collect();
            ConditionalRow {
                theta_lo: results[group[0]].true_theta,
                theta_hi: results[group[group.len() - 1]].true_theta,
                n: group.len(),
                bias: mean(&errors),
                rmse: mean_square(&errors).sqrt(),
                mean_length: mean(&lengths),
            }
        })
        .collect()
}

/// Arithmetic mean (NaN when empty).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean of the squares (NaN when empty).
pub fn mean_square(values: &[f64]) -> f64 {
    values.iter().map(|v| v * v).sum::<f64>() / values.len() as f64
}

/// Sample standard deviation (n − 1 denominator); 0 for fewer than two values.
pub fn sample_sd(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (values.len() as f64 - 1.0)).sqrt()
}

/// Pearson correlation (`None` when either series is constant or shorter than 2).
pub fn correlation(x: &[f64], y: &[f64]) -> Option<f64> {
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if x.len() < 2 || sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some(sxy / (sxx * syy).sqrt())
}
