//! What the calibration study shows: its section of the summary table,
//! `calibration.json`, `calibration.svg` and the pretest columns of `examinees.csv`.
//!
//! Owns these formats; must not compute the study's figures (that is its parent,
//! `simulate::calibration`) nor write files (`simulate::report` does).

use std::fmt::Write as _;

use plotters::prelude::*;
use serde::Serialize;

use super::{CalibrationRun, CalibrationSummary, METHODS, PretestModel, Study};
use crate::irt::{self, CalibrationMethod, CalibrationSettings, ItemParams, StandardErrors};
use crate::simulate::report::{PLOT_SIZE, padded_range, plot_error, tick};
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
