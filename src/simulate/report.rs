//! What a simulation shows: the summary table (stdout), the `--out` directory
//! (`summary.json`, `examinees.csv`, `items.csv`, and `bank.json`: the bank in
//! `import-bank`'s format, readable again by `--bank`) and its SVG plots (conditional bias
//! and RMSE, exposure histogram, test information of the bank). The calibration study's
//! section and files are drawn by `calibration` and written here.
//!
//! Owns formats and plots; must not compute statistics (that is `stats`) nor run exams.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use super::Simulation;
use super::bank::SimBank;
use super::calibration::{self, Study};
use super::stats::{self, Summary};
use crate::irt::Item;

/// The summary as a table for a terminal.
pub fn table(summary: &Summary) -> String {
    let d = &summary.design;
    let estimator = d.estimator.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Simulated {} examinees on bank {:?} ({} items), seed {}, {} threads",
        summary.examinees, summary.bank, summary.bank_items, summary.seed, summary.threads
    );
    let mut design = format!(
        "Design: {} to {} items, {}, {}, randomesque {}",
        d.min_items.unwrap_or(crate::design::DEFAULT_MIN_ITEMS),
        d.max_items.unwrap_or(crate::design::DEFAULT_MAX_ITEMS),
        enum_name(&d.selection_rule.unwrap_or_default()),
        enum_name(&estimator.method.unwrap_or_default()),
        d.randomesque.unwrap_or(crate::design::DEFAULT_RANDOMESQUE),
    );
    if let Some(se) = d.se_target {
        let _ = write!(design, ", SE target {se}");
    }
    if let Some(cut) = d.cut_score {
        let _ = write!(design, ", cut score {cut}");
    }
    match &d.exposure {
        Some(e) => {
            let _ = write!(
                design,
                ", {} at {}",
                enum_name(&e.method.unwrap_or_default()),
                e.max_rate
            );
        }
        None => design.push_str(", no exposure control"),
    }
    let _ = writeln!(out, "{design}\n");
    let correlation = summary
        .correlation
        .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.4}"));
    let _ = writeln!(
        out,
        "  accuracy   bias {:+.4}   RMSE {:.4}   correlation {}   mean SE {:.4}",
        summary.bias, summary.rmse, correlation, summary.mean_se
    );
    let stops: Vec<String> = summary
        .stop_reasons
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "  length     mean {:.2}   sd {:.2}   stops: {}",
        summary.mean_length,
        summary.sd_length,
        stops.join(", ")
    );
    let _ = writeln!(
        out,
        "  exposure   max {:.4}   mean {:.4}   overlap {:.4}   unused items {} of {}",
        summary.max_exposure,
        summary.mean_exposure,
        summary.overlap_rate,
        summary.unused_items,
        summary.bank_items
    );
    let _ = writeln!(out, "\n  by decile of true theta:");
    let _ = writeln!(
        out,
        "    {:>8} {:>8} {:>6} {:>8} {:>7} {:>7}",
        "theta >=", "<=", "n", "bias", "RMSE", "length"
    );
    for row in &summary.conditional {
        let _ = writeln!(
            out,
            "    {:>8.3} {:>8.3} {:>6} {:>+8.4} {:>7.4} {:>7.2}",
            row.theta_lo, row.theta_hi, row.n, row.bias, row.rmse, row.mean_length
        );
    }
    if let Some(study) = &summary.calibration {
        out.push_str(&calibration::table(study));
    }
    let _ = writeln!(
        out,
        "\n  {} exams in {:.2} s ({:.0} exams/s)",
        summary.examinees, summary.elapsed_s, summary.exams_per_second
    );
    out
}

/// The JSON spelling of a serde enum value (`MAX_INFO`, `EAP`…).
fn enum_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// Writes `summary.json`, `examinees.csv`, `items.csv`, `bank.json`, `conditional.svg`,
/// `exposure.svg` and `information.svg` into `dir` (created if missing), and with a
/// calibration `study` `calibration.json` and `calibration.svg`.
///
/// `items.csv` is a report (parameters next to exposure statistics); `bank.json` is the
/// bank itself as `import-bank` and `simulate --bank` read it (see
/// [`SimBank::to_bank_json`]).
///
/// # Errors
/// When a file cannot be written.
pub fn write_dir(
    dir: &Path,
    bank: &SimBank,
    simulation: &Simulation,
    summary: &Summary,
    study: Option<&Study>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, contents: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))
    };
    let mut json = serde_json::to_string_pretty(summary)?;
    json.push('\n');
    write("summary.json", json.as_bytes())?;
    write("examinees.csv", &examinees_csv(bank, simulation, study)?)?;
    write("items.csv", &items_csv(bank, simulation)?)?;
    let mut bank_json = serde_json::to_string_pretty(&bank.to_bank_json())?;
    bank_json.push('\n');
    write("bank.json", bank_json.as_bytes())?;
    write("conditional.svg", conditional_svg(simulation)?.as_bytes())?;
    write(
        "exposure.svg",
        exposure_svg(
            &stats::exposure_rates(simulation, bank.len()),
            summary.design.exposure.as_ref().map(|e| e.max_rate),
        )?
        .as_bytes(),
    )?;
    write("information.svg", information_svg(bank)?.as_bytes())?;
    if let Some(study) = study {
        let scaling = bank.engine().scaling;
        write(
            "calibration.json",
            calibration::json(study, scaling)?.as_bytes(),
        )?;
        write(
            "calibration.svg",
            calibration::svg(&study.summary)?.as_bytes(),
        )?;
    }
    Ok(())
}

/// `examinees.csv`: one row per examinee, in order; with a calibration `study`, also the
/// pretest items each answered and their scores (`pretest_items`, `pretest_scores`).
///
/// # Errors
/// Only if the CSV writer fails (it writes to memory).
pub fn examinees_csv(
    bank: &SimBank,
    simulation: &Simulation,
    study: Option<&Study>,
) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        "true_theta",
        "estimate",
        "se",
        "length",
        "items",
        "stop_reason",
        "scores",
    ];
    if study.is_some() {
        header.extend(["pretest_items", "pretest_scores"]);
    }
    w.write_record(&header)?;
    for (e, r) in simulation.results.iter().enumerate() {
        let items: Vec<&str> = r.items.iter().map(|&i| bank.external_id(i)).collect();
        let scores: Vec<String> = r.scores.iter().map(u32::to_string).collect();
        let mut row = vec![
            r.true_theta.to_string(),
            r.estimate.to_string(),
            r.standard_error.to_string(),
            r.items.len().to_string(),
            items.join(";"),
            stats::stop_reason_name(r.stop_reason).to_owned(),
            scores.join(";"),
        ];
        if let Some(study) = study {
            row.extend(calibration::csv_columns(study, e));
        }
        w.write_record(&row)?;
    }
    Ok(w.into_inner()?)
}

/// `items.csv`: one row per bank item, in bank order, with its exposure.
///
/// # Errors
/// Only if the CSV writer fails (it writes to memory).
pub fn items_csv(bank: &SimBank, simulation: &Simulation) -> anyhow::Result<Vec<u8>> {
    let rates = stats::exposure_rates(simulation, bank.len());
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "external_id",
        "model",
        "a",
        "b",
        "c",
        "d",
        "thresholds",
        "content_area",
        "exposure_rate",
        "administered",
    ])?;
    for (i, item) in bank.engine().items.iter().enumerate() {
        let (a, b, c, d, thresholds) = match item {
            Item::Dichotomous(p) => (
                p.a.to_string(),
                p.b.to_string(),
                p.c.to_string(),
                p.d.to_string(),
                String::new(),
            ),
            Item::Polytomous(p) => {
                let t: Vec<String> = p.thresholds.iter().map(f64::to_string).collect();
                (
                    p.a.to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                    t.join(";"),
                )
            }
        };
        w.write_record([
            bank.external_id(i).to_owned(),
            bank.model_name(i).to_owned(),
            a,
            b,
            c,
            d,
            thresholds,
            bank.engine().areas[i].clone().unwrap_or_default(),
            rates[i].to_string(),
            simulation
                .counts
                .administered
                .get(i)
                .copied()
                .unwrap_or(0)
                .to_string(),
        ])?;
    }
    Ok(w.into_inner()?)
}

/// Size of every plot, in pixels.
pub(super) const PLOT_SIZE: (u32, u32) = (800, 500);

/// Turns a plotters error into an `anyhow` one.
pub(super) fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the plot: {e}")
}

/// Bias and RMSE by decile of true theta (each decile at the mean true theta of its
/// examinees), with the zero line.
///
/// # Errors
/// When plotters fails.
pub fn conditional_svg(simulation: &Simulation) -> anyhow::Result<String> {
    let results = &simulation.results;
    let rows = stats::conditional(results);
    let centers: Vec<f64> = stats::decile_groups(results)
        .iter()
        .map(|g| stats::mean(&g.iter().map(|&i| results[i].true_theta).collect::<Vec<_>>()))
        .collect();
    let bias: Vec<(f64, f64)> = centers
        .iter()
        .zip(&rows)
        .map(|(x, r)| (*x, r.bias))
        .collect();
    let rmse: Vec<(f64, f64)> = centers
        .iter()
        .zip(&rows)
        .map(|(x, r)| (*x, r.rmse))
        .collect();
    let (x_lo, x_hi) = padded_range(centers.iter().copied(), 0.25);
    let (y_lo, y_hi) = padded_range(bias.iter().chain(&rmse).map(|p| p.1).chain([0.0]), 0.05);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Conditional bias and RMSE by decile of true theta",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("true theta (decile mean)")
            .y_desc("estimate - true theta")
            .y_label_formatter(&|v| tick(*v, 2))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new([(x_lo, 0.0), (x_hi, 0.0)], BLACK.mix(0.4)))
            .map_err(plot_error)?;
        for (name, points, color) in [("bias", &bias, BLUE), ("RMSE", &rmse, RED)] {
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Histogram of the items' exposure rates (20 bins from 0 to the largest rate), with the
/// exposure control's `max_rate` as a dashed line when there is one.
///
/// # Errors
/// When plotters fails.
pub fn exposure_svg(rates: &[f64], max_rate: Option<f64>) -> anyhow::Result<String> {
    const BINS: usize = 20;
    let top = rates
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .max(max_rate.unwrap_or(0.0))
        .max(0.01);
    let unused = rates.iter().filter(|r| **r == 0.0).count();
    let width = top / BINS as f64;
    let mut counts = [0usize; BINS];
    for &r in rates {
        counts[((r / width) as usize).min(BINS - 1)] += 1;
    }
    let highest = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Item exposure rates ({} items, {unused} never given)",
                    rates.len()
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..top, 0.0..highest * 1.05)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("exposure rate (share of examinees given the item)")
            .y_desc("items")
            .y_label_formatter(&|v| tick(*v, 0))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(counts.iter().enumerate().map(|(k, &c)| {
                let x0 = k as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BLUE.mix(0.6).filled())
            }))
            .map_err(plot_error)?;
        if let Some(r) = max_rate {
            chart
                .draw_series(DashedLineSeries::new(
                    [(r, 0.0), (r, highest * 1.05)],
                    6,
                    4,
                    RED.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label("max rate")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperMiddle)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.9))
                .draw()
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Test information of the whole bank, `Σ_i I_i(θ)`, on θ in [-4, 4].
///
/// # Errors
/// When plotters fails.
pub fn information_svg(bank: &SimBank) -> anyhow::Result<String> {
    let engine = bank.engine();
    let curve: Vec<(f64, f64)> = (0..=160)
        .map(|k| {
            let theta = -4.0 + k as f64 * 0.05;
            let info: f64 = engine
                .items
                .iter()
                .map(|item| item.information(theta, engine.scaling))
                .sum();
            (theta, info)
        })
        .collect();
    let highest = curve.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Test information of bank {:?} ({} items)",
                    bank.name,
                    bank.len()
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(-4.0..4.0, 0.0..highest * 1.05)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("theta")
            .y_desc("sum of item information")
            .y_label_formatter(&|v| tick(*v, 0))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(curve, BLUE.stroke_width(2)))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// An axis label with `decimals` decimals, never `-0`.
pub(super) fn tick(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text
        .trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        text.trim_start_matches('-').to_owned()
    } else {
        text
    }
}

/// The range of `values` widened by `pad` on each side (a unit range around 0 when empty).
pub(super) fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (-1.0, 1.0)
    } else if lo == hi {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo - pad, hi + pad)
    }
}
