//! Tests of `adaptive-engine simulate` (`adaptive_engine::simulate`): agreement with an
//! independent CAT implementation written here, reproducibility across thread counts with
//! exposure control, the design file and bank file formats, the statistics' definitions,
//! the command line (JSON keys, `--out` files), and the calibration study of
//! `--pretest-items` (thread count, exams untouched, estimates equal to `irt::calibrate` on
//! data rebuilt from the `--out` files, option errors). No database, no Redis.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use adaptive_engine::exam;
use adaptive_engine::irt::{ItemParams, StopReason};
use adaptive_engine::simulate::{
    self, ExamDesignInput, ExamineeResult, Options, SimBank, SimDesign, Simulation, ThetaDist,
    stats,
};
use clap::Parser;

// ---------------------------------------------------------------------------------------
// An independent reference: plain loops, its own random numbers.
// ---------------------------------------------------------------------------------------

/// SplitMix64: the reference's own generator (not the crate's).
struct Rng64(u64);

impl Rng64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// 3PL probability of a right answer, D = 1.
fn p3(item: &ItemParams, theta: f64) -> f64 {
    item.c + (1.0 - item.c) / (1.0 + (-item.a * (theta - item.b)).exp())
}

/// 3PL Fisher information (Lord 1980): a²(P − c)²(1 − P) / ((1 − c)² P).
fn info3(item: &ItemParams, theta: f64) -> f64 {
    let p = p3(item, theta);
    item.a * item.a * (p - item.c).powi(2) * (1.0 - p) / ((1.0 - item.c).powi(2) * p)
}

/// EAP on 33 points of [-4, 4] with a N(0, 1) prior: posterior mean and SD.
fn eap(items: &[ItemParams], right: &[bool]) -> (f64, f64) {
    let nodes: Vec<f64> = (0..33).map(|k| -4.0 + 8.0 * k as f64 / 32.0).collect();
    let log_post: Vec<f64> = nodes
        .iter()
        .map(|&x| {
            let mut lp = -0.5 * x * x;
            for (item, &r) in items.iter().zip(right) {
                let p = p3(item, x);
                lp += if r { p.ln() } else { (1.0 - p).ln() };
            }
            lp
        })
        .collect();
    let top = log_post.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_post.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = w.iter().sum();
    let mean = nodes.iter().zip(&w).map(|(x, w)| x * w).sum::<f64>() / total;
    let var = nodes
        .iter()
        .zip(&w)
        .map(|(x, w)| (x - mean).powi(2) * w)
        .sum::<f64>()
        / total;
    (mean, var.sqrt())
}

/// One 20-item maximum-information CAT with EAP from theta 0: (estimate, SE).
fn reference_exam(
    bank: &[ItemParams],
    true_theta: f64,
    length: usize,
    rng: &mut Rng64,
) -> (f64, f64) {
    let mut used = vec![false; bank.len()];
    let (mut items, mut right) = (Vec::new(), Vec::new());
    let (mut theta, mut se) = (0.0, 1.0);
    for _ in 0..length {
        let mut best = None;
        let mut best_info = f64::NEG_INFINITY;
        for (i, item) in bank.iter().enumerate() {
            if !used[i] {
                let info = info3(item, theta);
                if info > best_info {
                    best_info = info;
                    best = Some(i);
                }
            }
        }
        let i = best.expect("bank larger than the test");
        used[i] = true;
        items.push(bank[i]);
        right.push(rng.uniform() < p3(&bank[i], true_theta));
        (theta, se) = eap(&items, &right);
    }
    (theta, se)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn var(v: &[f64]) -> f64 {
    let m = mean(v);
    v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)
}

/// |mean(x) − mean(y)| within `k` standard errors of the difference of two independent means.
fn assert_same_mean(what: &str, x: &[f64], y: &[f64], k: f64) {
    let diff = mean(x) - mean(y);
    let se = (var(x) / x.len() as f64 + var(y) / y.len() as f64).sqrt();
    eprintln!(
        "{what}: engine {:.5}, reference {:.5}, diff {diff:+.5}, SE {se:.5}",
        mean(x),
        mean(y)
    );
    assert!(
        diff.abs() <= k * se,
        "{what}: engine {} vs reference {} (diff {diff}, {k} SE = {})",
        mean(x),
        mean(y),
        k * se
    );
}

/// 300 3PL items, 2,000 N(0, 1) examinees (`SIMULATE_REFERENCE_EXAMINEES` sets another
/// number, for a closer look), 20-item MAX_INFO/EAP design: the engine's bias, mean squared
/// error and mean SE agree with the reference's within 3 standard errors of the difference.
#[test]
fn bias_and_rmse_match_an_independent_implementation_within_monte_carlo_error() {
    const ITEMS: usize = 300;
    const LENGTH: usize = 20;
    let examinees: usize = std::env::var("SIMULATE_REFERENCE_EXAMINEES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let mut rng = Rng64(7);
    let params: Vec<ItemParams> = (0..ITEMS)
        .map(|_| {
            let a = 0.8 + 1.2 * rng.uniform();
            let b = rng.normal();
            let c = 0.10 + 0.15 * rng.uniform();
            ItemParams::three_pl(a, b, c)
        })
        .collect();

    // The engine, through the library: default design = 20 items, MAX_INFO, EAP.
    let bank = SimBank::from_params("reference", 1.0, &params).expect("valid bank");
    let design = ExamDesignInput::default()
        .to_design(&bank)
        .expect("valid design");
    assert_eq!(design.stopping.max_items, LENGTH);
    let thetas = ThetaDist::default().draw(examinees, 2024);
    let started = Instant::now();
    let engine = simulate::simulate(bank.engine(), &design, &thetas, 2024, None);
    let engine_time = started.elapsed();
    assert!(
        engine
            .results
            .iter()
            .all(|r| r.items.len() == LENGTH && r.stop_reason == StopReason::MaxItems)
    );

    // The reference, with its own thetas and responses.
    let started = Instant::now();
    let mut rng = Rng64(99);
    let mut reference = Vec::with_capacity(examinees);
    for _ in 0..examinees {
        let theta = rng.normal();
        let (estimate, se) = reference_exam(&params, theta, LENGTH, &mut rng);
        reference.push((theta, estimate, se));
    }
    let reference_time = started.elapsed();
    eprintln!("engine: {examinees} exams in {engine_time:?}; reference: {reference_time:?}");

    let engine_err: Vec<f64> = engine
        .results
        .iter()
        .map(|r| r.estimate - r.true_theta)
        .collect();
    let reference_err: Vec<f64> = reference.iter().map(|(t, e, _)| e - t).collect();
    assert_same_mean("bias", &engine_err, &reference_err, 3.0);
    let sq = |v: &[f64]| v.iter().map(|e| e * e).collect::<Vec<_>>();
    assert_same_mean(
        "mean squared error",
        &sq(&engine_err),
        &sq(&reference_err),
        3.0,
    );
    let engine_se: Vec<f64> = engine.results.iter().map(|r| r.standard_error).collect();
    let reference_se: Vec<f64> = reference.iter().map(|r| r.2).collect();
    assert_same_mean("mean SE", &engine_se, &reference_se, 3.0);

    // The summary reports the same numbers as computed here.
    let summary = stats::summarize(&engine, ITEMS);
    assert!((summary.bias - mean(&engine_err)).abs() < 1e-12);
    assert!((summary.rmse - mean(&sq(&engine_err)).sqrt()).abs() < 1e-12);
    let rmse_ref = mean(&sq(&reference_err)).sqrt();
    eprintln!("RMSE: engine {:.4}, reference {rmse_ref:.4}", summary.rmse);
    assert!(summary.correlation.expect("defined") > 0.9);
}

// ---------------------------------------------------------------------------------------
// Reproducibility
// ---------------------------------------------------------------------------------------

fn in_pool(threads: usize, f: impl FnOnce() -> Simulation + Send) -> Simulation {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool")
        .install(f)
}

#[test]
fn the_same_seed_gives_the_same_results_with_1_or_4_threads_under_exposure_control() {
    let bank = SimBank::synthetic();
    let thetas = ThetaDist::default().draw(200, 5);
    for (method, rule, randomesque) in [
        ("ITEM_ELIGIBILITY", "MAX_INFO", 1),
        ("SYMPSON_HETTER", "MAX_INFO", 3),
    ] {
        let design = ExamDesignInput::from_json(&format!(
            r#"{{"maxItems": 10, "selectionRule": "{rule}", "randomesque": {randomesque},
                "exposure": {{"method": "{method}", "maxRate": 0.2}}}}"#
        ))
        .and_then(|f| f.to_design(&bank))
        .expect("valid design");
        let one = in_pool(1, || {
            simulate::simulate(bank.engine(), &design, &thetas, 11, None)
        });
        let four = in_pool(4, || {
            simulate::simulate(bank.engine(), &design, &thetas, 11, None)
        });
        assert_eq!(one, four, "{method}: 1 thread vs 4 threads");
        assert_eq!(one.counts.examinees, 200);
        // Exposure control is active: some exams had ineligible items or were turned down.
        if method == "ITEM_ELIGIBILITY" {
            assert!(
                one.counts.eligible.iter().any(|&e| e < 200),
                "{method}: no item ever ineligible"
            );
        } else {
            assert!(
                one.counts.selected.iter().sum::<u64>()
                    >= one.counts.administered.iter().sum::<u64>()
            );
        }
        let other_seed = in_pool(2, || {
            simulate::simulate(bank.engine(), &design, &thetas, 12, None)
        });
        assert_ne!(
            one.results, other_seed.results,
            "{method}: another seed changes the draws"
        );
    }
}

#[test]
fn exposure_control_lowers_the_largest_exposure_rate() {
    let bank = SimBank::synthetic();
    let thetas = ThetaDist::default().draw(640, 3);
    let run = |json: &str| {
        let design = ExamDesignInput::from_json(json)
            .and_then(|f| f.to_design(&bank))
            .expect("design");
        let sim = simulate::simulate(bank.engine(), &design, &thetas, 1, None);
        stats::summarize(&sim, bank.len())
    };
    let free = run(r#"{"maxItems": 10}"#);
    let controlled = run(r#"{"maxItems": 10, "exposure": {"maxRate": 0.2}}"#);
    eprintln!(
        "max exposure: free {}, controlled {}",
        free.max_exposure, controlled.max_exposure
    );
    assert!(free.max_exposure > 0.5, "{}", free.max_exposure);
    // Stale counts (one batch of 64 in flight) loosen the bound to r + 64/n.
    assert!(
        controlled.max_exposure <= 0.2 + 64.0 / 640.0,
        "{}",
        controlled.max_exposure
    );
    assert!(controlled.overlap_rate < free.overlap_rate);
    assert!(controlled.unused_items < free.unused_items);
}

#[test]
fn run_is_reproducible_and_follows_the_options() {
    let options = Options {
        examinees: 130,
        max_items: Some(8),
        seed: 42,
        threads: Some(1),
        ..Options::default()
    };
    let a = simulate::run(&options).expect("run");
    let b = simulate::run(&Options {
        threads: Some(3),
        ..options.clone()
    })
    .expect("run");
    let strip = |mut s: simulate::Summary| {
        s.elapsed_s = 0.0;
        s.exams_per_second = 0.0;
        s.threads = 0;
        s
    };
    assert_eq!(strip(a.clone()), strip(b));
    assert_eq!(a.examinees, 130);
    assert_eq!(a.mean_length, 8.0);
    assert_eq!(a.sd_length, 0.0);
    assert_eq!(a.design.max_items, Some(8));
    assert_eq!(a.bank, "synthetic");
    assert_eq!(a.bank_items, 500);
    assert_eq!(a.stop_reasons.get("MAX_ITEMS"), Some(&130));
    assert_eq!(a.conditional.len(), 10);
    assert_eq!(a.conditional.iter().map(|r| r.n).sum::<usize>(), 130);
    // Mean exposure is mean length over bank size.
    assert!((a.mean_exposure - 8.0 / 500.0).abs() < 1e-12);
    let table = simulate::render(&a, false);
    for needle in ["RMSE", "bias", "overlap", "MAX_INFO", "EAP", "by decile"] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
}

/// The grid tables change no choice: every integrating rule gives the very same exams
/// (every examinee's items, estimates and stop) with and without them.
#[test]
fn the_grid_tables_change_no_exam_of_any_integrating_rule() {
    use adaptive_engine::design::SelectionRule;
    for rule in [
        SelectionRule::Kl,
        SelectionRule::Klp,
        SelectionRule::Mlwi,
        SelectionRule::Mpwi,
        SelectionRule::Mepv,
    ] {
        let options = Options {
            examinees: 40,
            max_items: Some(12),
            selection: Some(rule),
            seed: 7,
            threads: Some(2),
            ..Options::default()
        };
        let dir = temp_dir(&format!("tables-{rule:?}"));
        let fast_dir = dir.join("fast");
        let plain_dir = dir.join("plain");
        let fast = simulate::run(&Options {
            out: Some(fast_dir.clone()),
            ..options.clone()
        })
        .expect("run");
        let plain = simulate::run(&Options {
            out: Some(plain_dir.clone()),
            plain_selection: true,
            ..options
        })
        .expect("run");
        assert_eq!(fast.mean_length, 12.0, "{rule:?}");
        // Every examinee's administered items and final estimate, to the bit.
        let examinees = |dir: &PathBuf| {
            std::fs::read_to_string(dir.join("examinees.csv")).expect("examinees.csv")
        };
        assert_eq!(examinees(&fast_dir), examinees(&plain_dir), "{rule:?}");
        assert_eq!(fast.rmse, plain.rmse, "{rule:?}");
        assert_eq!(fast.overlap_rate, plain.overlap_rate, "{rule:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// Mean over all pairs of examinees of the shared items over the pair's mean length.
fn brute_force_overlap(results: &[ExamineeResult]) -> (f64, f64) {
    let sets: Vec<BTreeSet<usize>> = results
        .iter()
        .map(|r| r.items.iter().copied().collect())
        .collect();
    let (mut shared, mut lengths, mut ratios, mut pairs) = (0.0, 0.0, 0.0, 0.0);
    for j in 0..sets.len() {
        for k in j + 1..sets.len() {
            let common = sets[j].intersection(&sets[k]).count() as f64;
            let mean_length = (sets[j].len() + sets[k].len()) as f64 / 2.0;
            shared += common;
            lengths += mean_length;
            ratios += common / mean_length;
            pairs += 1.0;
        }
    }
    (shared / lengths, ratios / pairs)
}

#[test]
fn the_overlap_rate_is_exact_for_fixed_and_variable_length() {
    let bank = SimBank::synthetic();
    let thetas = ThetaDist::default().draw(60, 8);
    // Fixed length: the ratio of totals is the mean of the pairs' proportions, and Chen,
    // Ankenmann & Spray's closed form.
    let design = ExamDesignInput::from_json(r#"{"maxItems": 12, "randomesque": 4}"#)
        .and_then(|f| f.to_design(&bank))
        .expect("design");
    let sim = simulate::simulate(bank.engine(), &design, &thetas, 3, None);
    let summary = stats::summarize(&sim, bank.len());
    let (ratio_of_totals, mean_of_ratios) = brute_force_overlap(&sim.results);
    assert!((summary.overlap_rate - mean_of_ratios).abs() < 1e-12);
    assert!((summary.overlap_rate - ratio_of_totals).abs() < 1e-12);
    let n = 60.0;
    let sum_r2: f64 = stats::exposure_rates(&sim, bank.len())
        .iter()
        .map(|r| r * r)
        .sum();
    let chen = (n * sum_r2 / 12.0 - 1.0) / (n - 1.0);
    assert!(
        (summary.overlap_rate - chen).abs() < 1e-12,
        "{} vs {chen}",
        summary.overlap_rate
    );
    // Variable length: exact ratio of totals.
    let design = ExamDesignInput::from_json(r#"{"maxItems": 30, "seTarget": 0.35, "minItems": 5}"#)
        .and_then(|f| f.to_design(&bank))
        .expect("design");
    let sim = simulate::simulate(bank.engine(), &design, &thetas, 3, None);
    let summary = stats::summarize(&sim, bank.len());
    assert!(summary.sd_length > 0.0, "lengths should vary");
    assert!(summary.stop_reasons.contains_key("SE_TARGET"));
    let (ratio_of_totals, _) = brute_force_overlap(&sim.results);
    assert!((summary.overlap_rate - ratio_of_totals).abs() < 1e-12);
}

#[test]
fn stop_reasons_are_spelled_as_the_api_spells_them() {
    for reason in [
        StopReason::MaxItems,
        StopReason::SeTarget,
        StopReason::Classification,
        StopReason::MinInformation,
        StopReason::MaxDuration,
        StopReason::BankExhausted,
    ] {
        assert_eq!(
            exam::StopCode::parse(stats::stop_reason_name(reason)).map(StopReason::from),
            Some(reason)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Design file, bank file, thetas, options
// ---------------------------------------------------------------------------------------

/// The values of an enum of the GraphQL schema.
fn sdl_enum(name: &str) -> BTreeSet<String> {
    let sdl = adaptive_engine::graphql::sdl();
    let start = sdl
        .find(&format!("enum {name} {{"))
        .unwrap_or_else(|| panic!("enum {name} in the SDL"));
    let body = &sdl[start..];
    let body = &body[body.find('{').expect("{") + 1..body.find('}').expect("}")];
    let mut values = BTreeSet::new();
    let mut in_doc = false;
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("\"\"\"") {
            let one_line = line.len() > 3 && line.ends_with("\"\"\"");
            if !one_line {
                in_doc = !in_doc;
            }
        } else if !in_doc && !line.starts_with('"') && !line.starts_with('#') {
            values.insert(line.split_whitespace().next().expect("value").to_owned());
        }
    }
    values
}

/// Every value of `T` spelled as serde spells it must be an API value, and all of them.
fn assert_spellings<T: serde::de::DeserializeOwned + std::fmt::Debug>(name: &str) {
    let values = sdl_enum(name);
    assert!(!values.is_empty(), "{name}");
    for v in &values {
        serde_json::from_value::<T>(serde_json::Value::String(v.clone()))
            .unwrap_or_else(|e| panic!("{name}::{v} is not read: {e}"));
    }
}

#[test]
fn design_enums_use_the_schema_spellings() {
    use adaptive_engine::simulate::design::*;
    assert_spellings::<SelectionRule>("SelectionRule");
    assert_spellings::<EstimatorMethod>("EstimatorMethod");
    assert_spellings::<PriorDistribution>("PriorDistribution");
    assert_spellings::<ConstantPatternRule>("ConstantPatternRule");
    assert_spellings::<StandardErrorType>("StandardErrorType");
    assert_spellings::<ExposureMethod>("ExposureMethod");
}

#[test]
fn an_empty_design_has_the_api_defaults() {
    let bank = SimBank::synthetic();
    let design = ExamDesignInput::default().to_design(&bank).expect("design");
    assert_eq!(
        (
            design.stopping.max_items,
            design.stopping.min_items,
            design.randomesque
        ),
        (20, 1, 1)
    );
    assert_eq!(design.stopping.confidence_level, 0.95);
    assert_eq!(design.initial_theta, 0.0);
    assert_eq!(
        design.estimator,
        adaptive_engine::irt::EstimatorSettings::default()
    );
    assert_eq!(
        design.selection_rule,
        adaptive_engine::irt::SelectionRule::MaxInfo
    );
    assert!(design.exposure.is_none() && design.stopping.se_target.is_none());
    // The SDL states the same defaults.
    let sdl = adaptive_engine::graphql::sdl();
    for default in [
        "maxItems: Int = 20",
        "minItems: Int = 1",
        "randomesque: Int = 1",
        "confidenceLevel: Float = 0.95",
        "selectionRule: SelectionRule = MAX_INFO",
        "method: EstimatorMethod = EAP",
        "quadraturePoints: Int = 33",
    ] {
        assert!(sdl.contains(default), "the SDL no longer says {default:?}");
    }
    // The echo writes the defaults out and reads back as the same design.
    let resolved = ExamDesignInput::default().with_defaults();
    let echoed: ExamDesignInput =
        serde_json::from_str(&serde_json::to_string(&resolved).expect("json")).expect("read back");
    assert_eq!(echoed, resolved);
    assert_eq!(
        echoed.to_design(&bank).expect("design"),
        ExamDesignInput::default().to_design(&bank).expect("design")
    );
}

#[test]
fn a_full_design_file_is_read_and_checked_like_start_exam() {
    let bank = SimBank::synthetic();
    let file = ExamDesignInput::from_json(
        r#"{"maxItems": 15, "minItems": 5, "seTarget": 0.3, "initialTheta": 0.5,
            "randomesque": 2,
            "estimator": {"method": "MAP", "priorMean": 0.1, "priorSd": 1.2, "quadraturePoints": 41,
                          "thetaMin": -5, "thetaMax": 5, "prior": "NORMAL",
                          "constantPatternRule": "STEP", "standardErrorType": "SANDWICH"},
            "selectionRule": "KLP", "exposure": {"method": "SYMPSON_HETTER", "maxRate": 0.3},
            "contentBalance": [{"contentArea": "algebra", "proportion": 0.5},
                               {"contentArea": "geometry", "proportion": 0.5}],
            "startItemIds": ["syn-010", "syn-020"], "cutScore": 0.2, "confidenceLevel": 0.9,
            "minInformation": 0.05, "maxDurationSeconds": 600}"#,
    )
    .expect("design file");
    let design = file.to_design(&bank).expect("valid");
    assert_eq!(design.stopping.max_items, 15);
    assert_eq!(design.start_item_ids, vec![10, 20]);
    assert_eq!(
        design.selection_rule,
        adaptive_engine::irt::SelectionRule::Klp
    );
    assert_eq!(design.estimator.quadrature_points, 41);
    assert_eq!(design.stopping.max_duration_seconds, Some(600.0));
    // It runs, start items first, areas balanced.
    let thetas = ThetaDist::default().draw(20, 1);
    let sim = simulate::simulate(bank.engine(), &design, &thetas, 1, None);
    for r in &sim.results {
        assert_eq!(&r.items[..2], &[9, 19]);
        assert_ne!(
            r.stop_reason,
            StopReason::MaxDuration,
            "simulated time does not pass"
        );
    }
    // null is a default, as in GraphQL.
    let nulls =
        ExamDesignInput::from_json(r#"{"maxItems": null, "seTarget": null}"#).expect("nulls");
    assert_eq!(
        nulls.to_design(&bank).expect("design").stopping.max_items,
        20
    );
    // What startExam refuses, the simulator refuses with the same message.
    let err = |json: &str| {
        ExamDesignInput::from_json(json)
            .and_then(|f| f.to_design(&bank))
            .expect_err(json)
            .to_string()
    };
    assert!(err(r#"{"maxItems": 0}"#).contains("maxItems must be between 1 and 1000"));
    assert!(
        err(r#"{"exposure": {"maxRate": 1.5}}"#).contains("exposure.maxRate must be in (0, 1]")
    );
    assert!(
        err(r#"{"contentBalance": [{"contentArea": "music", "proportion": 1}]}"#).contains("music")
    );
    assert!(err(r#"{"startItemIds": ["nope"]}"#).contains("nope"));
    assert!(err(r#"{"maxitems": 10}"#).contains("unknown field"));
    assert!(err(r#"{"selectionRule": "BEST"}"#).contains("unknown variant"));
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("simulate-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn a_bank_file_is_read_and_validated_like_import_bank() {
    let dir = temp_dir("bank");
    let csv = "externalId,a,b,c,d,contentArea,content,answerKey,model,thresholds,enemyGroup\n\
               q1,1.2,-1,0.2,,algebra,x,A,,,\n\
               q2,0.9,0,0.1,,algebra,x,B,,,g1\n\
               q3,1.5,1,,,geometry,x,C,,,g1\n\
               q4,1.1,0.5,,0.95,geometry,x,D,,,\n\
               p1,1.3,0,,,geometry,essay,2,GRM,-1;0;1,\n\
               p2,0.8,0,,,algebra,likert,3,GPCM,-0.5;0.2;0.4,\n";
    let bank_path = dir.join("small.csv");
    std::fs::write(&bank_path, csv).expect("write");
    let thetas_path = dir.join("thetas.txt");
    std::fs::write(&thetas_path, "# true abilities\n-1\n0\n\n1.5\n2\n").expect("write");
    let design_path = dir.join("design.json");
    std::fs::write(&design_path, r#"{"maxItems": 5, "startItemIds": ["p1"]}"#).expect("write");
    let options = Options {
        bank: Some(bank_path.clone()),
        scaling_constant: 1.702,
        thetas: Some(thetas_path),
        design: Some(design_path),
        out: Some(dir.join("out")),
        ..Options::default()
    };
    let summary = simulate::run(&options).expect("run");
    assert_eq!(summary.examinees, 4);
    assert_eq!(summary.bank, "small");
    assert_eq!(summary.bank_items, 6);
    // Enemies q2 and q3 never share an exam; so 5 of 6 items at most.
    assert!(summary.mean_length <= 5.0);
    let examinees = std::fs::read_to_string(dir.join("out/examinees.csv")).expect("examinees.csv");
    let mut lines = examinees.lines();
    assert_eq!(
        lines.next(),
        Some("true_theta,estimate,se,length,items,stop_reason,scores")
    );
    for line in lines {
        let items = line.split(',').nth(4).expect("items column");
        assert!(items.starts_with("p1"), "{line}");
        assert!(
            !(items.contains("q2") && items.contains("q3")),
            "enemies together: {line}"
        );
    }
    let items = std::fs::read_to_string(dir.join("out/items.csv")).expect("items.csv");
    assert!(items.starts_with(
        "external_id,model,a,b,c,d,thresholds,content_area,exposure_rate,administered\n"
    ));
    assert!(
        items.contains("p1,GRM,1.3,,,,-1;0;1,geometry,1,4"),
        "{items}"
    );
    // The service's rules apply: a duplicate externalId is refused.
    std::fs::write(
        &bank_path,
        "externalId,b,content,answerKey\nq1,0,x,A\nq1,1,x,B\n",
    )
    .expect("write");
    let err = format!("{:#}", simulate::run(&options).expect_err("duplicate"));
    assert!(err.contains("duplicate externalId"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn thetas_and_distributions_are_parsed_strictly() {
    assert_eq!(
        "normal:0,1".parse::<ThetaDist>(),
        Ok(ThetaDist::Normal { mean: 0.0, sd: 1.0 })
    );
    assert_eq!(
        "uniform:-3,3".parse::<ThetaDist>(),
        Ok(ThetaDist::Uniform {
            low: -3.0,
            high: 3.0
        })
    );
    for bad in [
        "normal:0,0",
        "normal:0",
        "gamma:1,1",
        "uniform:2,1",
        "normal:a,1",
    ] {
        assert!(bad.parse::<ThetaDist>().is_err(), "{bad}");
    }
    let draws = ThetaDist::Normal { mean: 1.0, sd: 0.5 }.draw(4000, 1);
    assert!((mean(&draws) - 1.0).abs() < 0.05 && (var(&draws).sqrt() - 0.5).abs() < 0.05);
    assert_eq!(
        simulate::bank::parse_thetas("1\n# c\n\n-2.5\n").expect("ok"),
        vec![1.0, -2.5]
    );
    let err = simulate::bank::parse_thetas("1\nabc\n").expect_err("bad");
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(simulate::bank::parse_thetas("\n").is_err());
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    options: Options,
}

#[test]
fn the_default_options_are_the_command_with_no_arguments() {
    let parsed = Cli::try_parse_from(["simulate"])
        .expect("no arguments")
        .options;
    assert_eq!(parsed, Options::default());
    let parsed = Cli::try_parse_from([
        "simulate",
        "--estimator",
        "mle",
        "--selection",
        "klp",
        "--max-items",
        "12",
        "--theta-dist",
        "uniform:-2,2",
    ])
    .expect("overrides")
    .options;
    let file = parsed.design_file().expect("design");
    assert_eq!(file.max_items, Some(12));
    assert_eq!(
        file.selection_rule,
        Some(simulate::design::SelectionRule::Klp)
    );
    assert_eq!(
        file.estimator.and_then(|e| e.method),
        Some(simulate::EstimatorMethod::Mle)
    );
    assert!(Cli::try_parse_from(["simulate", "--thetas", "t.txt", "--examinees", "5"]).is_err());
}

// ---------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adaptive-engine"));
    // Nothing of the service's environment is needed.
    cmd.env_remove("DATABASE_URL").env_remove("REDIS_URL");
    cmd
}

#[test]
fn the_cli_runs_without_arguments_and_prints_the_json_summary() {
    let dir = temp_dir("cli");
    let output = binary()
        .current_dir(&dir)
        .args(["simulate", "--examinees", "200", "--json"])
        .output()
        .expect("run the binary");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    for key in [
        "examinees",
        "bias",
        "rmse",
        "correlation",
        "mean_length",
        "sd_length",
        "mean_se",
        "max_exposure",
        "mean_exposure",
        "overlap_rate",
        "unused_items",
        "conditional",
        "elapsed_s",
    ] {
        assert!(json.get(key).is_some(), "missing key {key} in {json}");
    }
    assert_eq!(json["examinees"], 200);
    assert_eq!(json["mean_length"], 20.0);
    let rows = json["conditional"].as_array().expect("array");
    assert_eq!(rows.len(), 10);
    for row in rows {
        let keys: BTreeSet<&str> = row
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["theta_lo", "theta_hi", "n", "bias", "rmse", "mean_length"])
        );
    }
    assert!(json["rmse"].as_f64().expect("number") < 0.6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cli_writes_the_out_directory() {
    let dir = temp_dir("out");
    let out = dir.join("run");
    let output = binary()
        .args([
            "simulate",
            "--examinees",
            "100",
            "--max-items",
            "10",
            "--seed",
            "3",
            "--threads",
            "2",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("run the binary");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        table.contains("RMSE") && table.contains("by decile"),
        "{table}"
    );
    for file in ["summary.json", "examinees.csv", "items.csv"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    for svg in ["conditional.svg", "exposure.svg", "information.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).expect(svg);
        assert!(
            text.starts_with("<svg"),
            "{svg} starts with {:?}",
            &text[..text.len().min(40)]
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary"))
            .expect("json");
    assert_eq!(summary["examinees"], 100);
    assert_eq!(summary["design"]["maxItems"], 10);
    assert_eq!(
        std::fs::read_to_string(out.join("examinees.csv"))
            .expect("csv")
            .lines()
            .count(),
        101
    );
    assert_eq!(
        std::fs::read_to_string(out.join("items.csv"))
            .expect("csv")
            .lines()
            .count(),
        501
    );
    // Bad input fails with a message, not a panic.
    let output = binary()
        .args(["simulate", "--examinees", "10", "--max-items", "0"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("maxItems must be between 1 and 1000")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// `--out` writes a bank file that `--bank` and `import-bank` read back
// ---------------------------------------------------------------------------------------

/// The summary without what depends on the machine (time, threads).
fn comparable(mut summary: serde_json::Value) -> serde_json::Value {
    let object = summary.as_object_mut().expect("object");
    for key in ["elapsed_s", "exams_per_second", "threads"] {
        object.remove(key);
    }
    summary
}

#[test]
fn the_out_directory_bank_reads_back_as_the_same_bank() {
    let dir = temp_dir("bank-roundtrip");
    let run = |bank: Option<&std::path::Path>, out: &std::path::Path| {
        let mut cmd = binary();
        cmd.args([
            "simulate",
            "--examinees",
            "60",
            "--max-items",
            "8",
            "--seed",
            "5",
            "--json",
            "--out",
        ])
        .arg(out);
        if let Some(bank) = bank {
            cmd.arg("--bank").arg(bank);
        }
        let output = cmd.output().expect("run the binary");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("summary")
    };
    let first = run(None, &dir.join("a"));
    let bank_file = dir.join("a/bank.json");
    let second = run(Some(&bank_file), &dir.join("b"));
    // Same bank (name included), same design and seed: the same study, item for item.
    assert_eq!(first["bank"], "synthetic");
    assert_eq!(comparable(second), comparable(first));
    for file in ["bank.json", "items.csv", "examinees.csv"] {
        assert_eq!(
            std::fs::read(dir.join("a").join(file)).expect(file),
            std::fs::read(dir.join("b").join(file)).expect(file),
            "{file} differs"
        );
    }
    // In process: the same items, parameters bit for bit.
    let synthetic = SimBank::synthetic();
    let read = SimBank::from_file(&bank_file, 1.0).expect("bank.json reads back");
    assert_eq!(read.len(), simulate::bank::SYNTHETIC_ITEMS);
    assert_eq!(read.engine().items, synthetic.engine().items);
    assert_eq!(read.engine().areas, synthetic.engine().areas);
    for i in 0..read.len() {
        assert_eq!(read.external_id(i), synthetic.external_id(i));
    }
    // It is import-bank's format (the shape of CreateItemBankInput).
    let parsed = adaptive_engine::bank_file::parse_file(&std::fs::read(&bank_file).expect("read"))
        .expect("import-bank reads it");
    assert_eq!(parsed.items.len(), simulate::bank::SYNTHETIC_ITEMS);
    assert_eq!(parsed.scaling_constant, Some(1.0));
    assert_eq!(parsed.name.as_deref(), Some("synthetic"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bank_with_every_field_and_its_scaling_constant_round_trips() {
    let dir = temp_dir("bank-fields");
    let csv = "externalId,a,b,c,d,contentArea,content,answerKey,model,thresholds,scoring,enemyGroup\n\
               q1,1.2,-1,0.2,0.97,algebra,\"{\"\"stem\"\":\"\"2x = 6\"\"}\",3,,,,g1\n\
               q2,0.9,0.1,,,,plain text,B,,,,g1\n\
               p1,1.3,0,,,geometry,essay,all,GRM,-1;0;1,\"{\"\"none\"\":0,\"\"some\"\":1,\"\"all\"\":3}\",\n\
               p2,0.8,0,,,algebra,likert,3,GPCM,-0.5;0.2;0.4,,\n";
    let source = dir.join("source.csv");
    std::fs::write(&source, csv).expect("write");
    let options = Options {
        bank: Some(source.clone()),
        scaling_constant: 1.702,
        examinees: 20,
        max_items: Some(3),
        out: Some(dir.join("out")),
        ..Options::default()
    };
    let first = simulate::run(&options).expect("run");
    let written = dir.join("out/bank.json");
    let original = SimBank::from_file(&source, 1.702).expect("source");
    let read = SimBank::from_file(&written, 1.702).expect("bank.json");
    assert_eq!(read.to_bank_json(), original.to_bank_json());
    assert_eq!(read.engine().items, original.engine().items);
    assert_eq!(read.name, "source");
    // The file states its scaling constant: asking for another is an error, not a silent
    // override.
    let err = format!(
        "{:#}",
        SimBank::from_file(&written, 1.0).expect_err("conflicting D")
    );
    assert!(err.contains("scalingConstant 1.702"), "{err}");
    // The command line takes the file's when --scaling-constant is not given…
    let again = Options {
        bank: Some(written.clone()),
        scaling_constant: 1.702,
        out: None,
        ..options.clone()
    };
    let second = simulate::run(&again).expect("run again");
    assert_eq!(
        (second.bias, second.rmse, second.mean_length),
        (first.bias, first.rmse, first.mean_length)
    );
    let output = binary()
        .args([
            "simulate",
            "--examinees",
            "20",
            "--max-items",
            "3",
            "--json",
            "--bank",
        ])
        .arg(&written)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(summary["rmse"].as_f64(), Some(first.rmse));
    // …and refuses a different one.
    let output = binary()
        .args([
            "simulate",
            "--examinees",
            "5",
            "--scaling-constant",
            "1",
            "--bank",
        ])
        .arg(&written)
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("scalingConstant 1.702"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// The calibration study (`--pretest-items`)
// ---------------------------------------------------------------------------------------

/// A calibration section without its timing.
fn calibration_of(summary: &simulate::Summary) -> simulate::CalibrationSummary {
    let mut section = summary.calibration.clone().expect("a calibration section");
    section.elapsed_s = 0.0;
    section
}

#[test]
fn the_calibration_study_is_the_same_for_1_and_2_threads_and_leaves_the_exams_alone() {
    let options = Options {
        examinees: 300,
        max_items: Some(8),
        seed: 16,
        threads: Some(1),
        pretest_items: 6,
        pretest_per_exam: 2,
        ..Options::default()
    };
    let one = simulate::run(&options).expect("run");
    let two = simulate::run(&Options {
        threads: Some(2),
        ..options.clone()
    })
    .expect("run");
    let section = calibration_of(&one);
    assert_eq!(section, calibration_of(&two), "1 thread vs 2 threads");
    // The pretest answers change nothing operational: the same exams as without them.
    let without = simulate::run(&Options {
        pretest_items: 0,
        ..options.clone()
    })
    .expect("run");
    assert!(without.calibration.is_none());
    let strip = |mut s: simulate::Summary| {
        s.elapsed_s = 0.0;
        s.exams_per_second = 0.0;
        s.threads = 0;
        s.calibration = None;
        s
    };
    assert_eq!(strip(one.clone()), strip(without));
    // Three sample sizes, three methods each; 300 × 2 responses over 6 items.
    assert_eq!(section.runs.len(), 9);
    let sizes: Vec<(usize, usize, u64, u64)> = section
        .runs
        .iter()
        .map(|r| (r.percent, r.examinees, r.min_responses, r.max_responses))
        .collect();
    for (k, expected) in [(25, 75, 25, 25), (50, 150, 50, 50), (100, 300, 100, 100)]
        .into_iter()
        .enumerate()
    {
        assert_eq!(sizes[3 * k..3 * k + 3], [expected; 3]);
    }
    for run in &section.runs {
        assert_eq!(run.calibrated, 6);
        assert!(run.c.is_none(), "2PL: no c");
        assert!(run.a.rmse.is_finite() && run.b.rmse.is_finite());
        assert_eq!(
            run.cycles > 1,
            run.method == adaptive_engine::irt::CalibrationMethod::Mem
        );
    }
    let table = simulate::render(&one, false);
    for needle in [
        "calibration of 6 pretest 2PL items",
        "FIXED_THETA",
        "OEM",
        "MEM",
        "RMSE b",
    ] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
}

/// The per-item estimates of `calibration.json` are those of a direct `irt::calibrate` call
/// on data rebuilt here from the `--out` files alone: operational log-likelihoods from
/// `bank.json` and the items and scores of `examinees.csv`, pretest responses from its
/// pretest columns.
#[test]
fn calibration_json_equals_a_direct_calibrate_call_on_the_out_files() {
    use adaptive_engine::irt::{self, CalibrationMethod, CalibrationModel, CalibrationSettings};
    let dir = temp_dir("calibration-direct");
    let out = dir.join("run");
    let (examinees, pretest_items, per_exam) = (400, 4, 2);
    simulate::run(&Options {
        examinees,
        max_items: Some(6),
        seed: 9,
        threads: Some(2),
        pretest_items,
        pretest_per_exam: per_exam,
        pretest_model: simulate::PretestModel::ThreePl,
        out: Some(out.clone()),
        ..Options::default()
    })
    .expect("run");
    let bank = SimBank::from_file(&out.join("bank.json"), 1.0).expect("bank.json");
    let index: std::collections::HashMap<String, usize> = (0..bank.len())
        .map(|i| (bank.external_id(i).to_owned(), i))
        .collect();
    let settings = |method| CalibrationSettings::new(method, CalibrationModel::ThreePl, 1.0);
    let mut reader = csv::Reader::from_path(out.join("examinees.csv")).expect("examinees.csv");
    let header = reader.headers().expect("header").clone();
    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
    let (items_col, scores_col) = (column("items"), column("scores"));
    let (pretest_col, pretest_scores_col) = (column("pretest_items"), column("pretest_scores"));
    let split = |field: &str| -> Vec<String> { field.split(';').map(str::to_owned).collect() };
    let mut operational = Vec::new();
    let mut pretest = Vec::new();
    let mut counts = vec![0u64; pretest_items];
    for record in reader.records() {
        let record = record.expect("row");
        let items: Vec<irt::Item> = split(&record[items_col])
            .iter()
            .map(|id| bank.engine().items[index[id]].clone())
            .collect();
        let scores: Vec<u32> = split(&record[scores_col])
            .iter()
            .map(|s| s.parse().expect("score"))
            .collect();
        let mut ll = Vec::new();
        irt::log_likelihood_on_grid(
            &settings(CalibrationMethod::Mem).ability,
            &items,
            &scores,
            &mut ll,
        );
        operational.push(ll);
        let answered: Vec<(usize, bool)> = split(&record[pretest_col])
            .iter()
            .zip(split(&record[pretest_scores_col]))
            .map(|(id, score)| {
                let j: usize = id
                    .strip_prefix("pretest-")
                    .and_then(|n| n.parse().ok())
                    .expect("pretest id");
                (j - 1, score == "1")
            })
            .collect();
        let distinct: BTreeSet<usize> = answered.iter().map(|a| a.0).collect();
        assert_eq!(distinct.len(), per_exam, "{answered:?}");
        for &(j, _) in &answered {
            counts[j] += 1;
        }
        pretest.push(answered);
    }
    assert_eq!(operational.len(), examinees);
    // Every pretest item got the same number of responses, ±1.
    let (lo, hi) = (counts.iter().min(), counts.iter().max());
    assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{counts:?}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("calibration.json")).expect("calibration.json"),
    )
    .expect("json");
    assert_eq!(report["model"], "3PL");
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 9);
    let mut compared = 0;
    for run in runs {
        let method: CalibrationMethod =
            serde_json::from_value(run["method"].clone()).expect("method");
        let n = run["examinees"].as_u64().expect("examinees") as usize;
        assert_eq!(
            n,
            (examinees * run["percent"].as_u64().expect("percent") as usize).div_ceil(100)
        );
        let direct = irt::calibrate(pretest_items, &settings(method), |visit| {
            for (operational, pretest) in operational[..n].iter().zip(&pretest[..n]) {
                visit(&irt::Examinee {
                    operational,
                    pretest,
                });
            }
            Ok::<(), ()>(())
        })
        .expect("calibrate");
        assert_eq!(run["cycles"].as_u64(), Some(direct.cycles as u64));
        let items = run["items"].as_array().expect("items");
        assert_eq!(items.len(), pretest_items);
        let (mut squares, mut k) = (0.0, 0.0);
        for (j, (item, got)) in items.iter().zip(&direct.items).enumerate() {
            let got = got.expect("every item answered");
            let estimate = &item["estimate"];
            for (name, value) in [
                ("a", got.params.a),
                ("b", got.params.b),
                ("c", got.params.c),
            ] {
                assert_eq!(estimate[name].as_f64(), Some(value), "item {j} {name}");
            }
            let se = &item["standard_errors"];
            assert_eq!(se["b"].as_f64(), Some(got.standard_errors.b));
            assert_eq!(se["c"].as_f64(), got.standard_errors.c);
            assert_eq!(item["responses"].as_u64(), Some(got.responses));
            assert_eq!(item["rmsd"].as_f64(), Some(got.rmsd));
            squares += (got.params.b - item["true"]["b"].as_f64().expect("b")).powi(2);
            k += 1.0;
            compared += 1;
        }
        let rmse_b = run["b"]["rmse"].as_f64().expect("rmse");
        assert!(((squares / k).sqrt() - rmse_b).abs() < 1e-12, "{rmse_b}");
        assert!(run["c"]["rmse"].as_f64().is_some(), "3PL: c reported");
    }
    assert_eq!(compared, 9 * pretest_items);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mem_rmse_of_b_shrinks_from_a_quarter_to_all_of_the_examinees() {
    let summary = simulate::run(&Options {
        examinees: 2000,
        max_items: Some(10),
        seed: 4,
        pretest_items: 10,
        pretest_per_exam: 5,
        ..Options::default()
    })
    .expect("run");
    let section = summary.calibration.expect("calibration");
    let mem: Vec<(u64, f64)> = section
        .runs
        .iter()
        .filter(|r| r.method == adaptive_engine::irt::CalibrationMethod::Mem)
        .map(|r| (r.min_responses, r.b.rmse))
        .collect();
    eprintln!("MEM: (responses per item, RMSE of b) {mem:?}");
    assert_eq!(
        mem.iter().map(|m| m.0).collect::<Vec<_>>(),
        [250, 500, 1000]
    );
    assert!(mem[2].1 < mem[0].1, "RMSE of b: {mem:?}");
    assert!(mem[2].1 < 0.15, "RMSE of b with 1000 responses: {mem:?}");
}

#[test]
fn the_cli_writes_calibration_json_and_svg() {
    let dir = temp_dir("calibration-cli");
    let out = dir.join("run");
    let output = binary()
        .args([
            "simulate",
            "--examinees",
            "80",
            "--max-items",
            "5",
            "--pretest-items",
            "4",
            "--pretest-model",
            "3PL",
            "--json",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("run the binary");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let section = &summary["calibration"];
    assert_eq!(section["pretest_items"], 4);
    assert_eq!(section["per_exam"], 2);
    assert_eq!(section["model"], "3PL");
    let run = &section["runs"][8];
    assert_eq!(run["method"], "MEM");
    assert_eq!(run["percent"], 100);
    assert_eq!(run["responses_per_item"], 40.0);
    for key in ["bias", "rmse", "mean_se"] {
        for param in ["a", "b", "c"] {
            assert!(run[param][key].is_number(), "{param}.{key} in {run}");
        }
    }
    for key in [
        "mean_rmsd",
        "cycles",
        "converged",
        "calibrated",
        "examinees",
    ] {
        assert!(!run[key].is_null(), "{key} in {run}");
    }
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("calibration.json")).expect("calibration.json"),
    )
    .expect("calibration.json parses");
    assert_eq!(file["runs"].as_array().map(Vec::len), Some(9));
    let item = &file["runs"][8]["items"][0];
    assert_eq!(item["id"], "pretest-001");
    for key in ["true", "estimate", "standard_errors", "responses", "rmsd"] {
        assert!(!item[key].is_null(), "{key} in {item}");
    }
    let svg = std::fs::read_to_string(out.join("calibration.svg")).expect("calibration.svg");
    assert!(svg.starts_with("<svg") && svg.contains("MEM") && svg.contains("RMSE of b"));
    let csv = std::fs::read_to_string(out.join("examinees.csv")).expect("examinees.csv");
    assert!(
        csv.lines()
            .next()
            .is_some_and(|h| h.ends_with(",scores,pretest_items,pretest_scores")),
        "{csv}"
    );
    // Without pretest items neither the section nor the files.
    let plain = dir.join("plain");
    let output = binary()
        .args([
            "simulate",
            "--examinees",
            "10",
            "--max-items",
            "3",
            "--json",
            "--out",
        ])
        .arg(&plain)
        .output()
        .expect("run");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert!(summary.get("calibration").is_none());
    assert!(!plain.join("calibration.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_pretest_options_are_clear_errors() {
    let error = |items: usize, per_exam: usize| {
        let options = Options {
            examinees: 10,
            pretest_items: items,
            pretest_per_exam: per_exam,
            ..Options::default()
        };
        format!("{:#}", simulate::run(&options).expect_err("refused"))
    };
    let e = error(5, 0);
    assert!(e.contains("--pretest-per-exam must be at least 1"), "{e}");
    let e = error(3, 4);
    assert!(
        e.contains("--pretest-per-exam 4 exceeds --pretest-items 3"),
        "{e}"
    );
    let e = error(20_000, 2);
    assert!(e.contains("--pretest-items must be at most 10000"), "{e}");
    // Without pretest items the other two options are not read.
    assert!(
        simulate::PretestDesign::new(0, 0, simulate::PretestModel::ThreePl)
            .expect("no study")
            .is_none()
    );
    // The command line: the same messages, and the model by name.
    let output = binary()
        .args([
            "simulate",
            "--pretest-items",
            "5",
            "--pretest-per-exam",
            "0",
        ])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--pretest-per-exam must be at least 1"),
        "{stderr}"
    );
    let parsed = Cli::try_parse_from([
        "simulate",
        "--pretest-items",
        "20",
        "--pretest-model",
        "3pl",
    ])
    .expect("options")
    .options;
    assert_eq!(
        (
            parsed.pretest_items,
            parsed.pretest_per_exam,
            parsed.pretest_model
        ),
        (20, 2, simulate::PretestModel::ThreePl)
    );
    assert!(Cli::try_parse_from(["simulate", "--pretest-model", "4pl"]).is_err());
}
