//! One adaptive-testing step: select the next item among those left in a bank
//! of N random items and re-estimate ability by EAP (33 nodes, N(0, 1) prior)
//! from 20 answers.
//!
//! Two kinds of bank: dichotomous (random 3PL items) and polytomous (random
//! GRM and GPCM items with 3 to 5 categories). The first 20 items are chosen by
//! maximum information and answered by a simulee of ability 0.5 (fixed
//! seeds); the test length is 40, so the progressive and proportional rules
//! are mid-way through their schedules.
//!
//! * `step_5000`, `step_50000`: maximum information through the bank's
//!   [`InformationIndex`] (the service's path), randomesque 1.
//! * `scan_5000`, `scan_50000`: the same step with a full scan (no index), for
//!   comparison.
//! * `rule_<name>_<n>`: the same step with every selection rule on the
//!   dichotomous bank, `poly_<name>_<n>` on the polytomous bank;
//!   `rule_plain_<name>_<n>`, `poly_plain_<name>_<n>`: the integrating rules
//!   without their grid tables (the plain scan every step took before them).
//! * `index_build_5000`, `index_build_50000`: building the index once;
//!   `tables_<family>_<n>`: building the grid tables of the integrating rules
//!   once (`information`: MLWI/MPWI, `divergence`: KL/KLP, `variance`: MEPV).
//!
//! The index is passed to `MaxInfo`, `Progressive` and `Proportional` and the
//! grid tables to the rules that use them, as the engine does; both are built outside the measurement (once
//! per bank).

use std::hint::black_box;
use std::time::Duration;

use adaptive_engine::irt::{
    EstimatorSettings, InformationIndex, Item, ItemParams, SelectionContext, SelectionRule,
    SelectionTables, draw_response, estimate_items, select_item,
};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Test length `T` of the scenario (the schedule of `Progressive` and
/// `Proportional`).
const MAX_ITEMS: usize = 40;

/// Every rule with its name in the benchmark ids.
const RULES: [(SelectionRule, &str); 10] = [
    (SelectionRule::MaxInfo, "mfi"),
    (SelectionRule::Urry, "urry"),
    (SelectionRule::Kl, "kl"),
    (SelectionRule::Klp, "klp"),
    (SelectionRule::Mlwi, "mlwi"),
    (SelectionRule::Mpwi, "mpwi"),
    (SelectionRule::Mepv, "mepv"),
    (SelectionRule::Progressive, "progressive"),
    (SelectionRule::Proportional, "proportional"),
    (SelectionRule::Random, "random"),
];

/// A bank, 20 of its items administered and answered by a simulee of ability
/// 0.5 (fixed seeds).
struct Scenario {
    bank: Vec<Item>,
    index: InformationIndex,
    eligible: Vec<bool>,
    administered: Vec<usize>,
    items: Vec<Item>,
    responses: Vec<u32>,
    theta: f64,
    standard_error: f64,
}

/// `n` random 3PL items.
fn dichotomous_bank(n: usize) -> Vec<Item> {
    let mut rng = StdRng::seed_from_u64(20_240_601);
    (0..n)
        .map(|_| {
            Item::from(ItemParams::three_pl(
                rng.random_range(0.5..2.5),
                rng.random_range(-3.0..3.0),
                rng.random_range(0.0..0.3),
            ))
        })
        .collect()
}

/// `n` random GRM and GPCM items with 2 to 4 thresholds.
fn polytomous_bank(n: usize) -> Vec<Item> {
    let mut rng = StdRng::seed_from_u64(20_240_602);
    (0..n)
        .map(|_| {
            let m = rng.random_range(2..=4);
            let mut thresholds: Vec<f64> = (0..m).map(|_| rng.random_range(-3.0..3.0)).collect();
            let a = rng.random_range(0.5..2.5);
            if rng.random::<bool>() {
                thresholds.sort_by(f64::total_cmp);
                Item::grm(a, thresholds)
            } else {
                Item::gpcm(a, thresholds)
            }
        })
        .collect()
}

fn scenario(bank: Vec<Item>) -> Scenario {
    let n = bank.len();
    let mut rng = StdRng::seed_from_u64(20_240_603);
    let settings = EstimatorSettings::default();
    let index = InformationIndex::new(&bank, settings.scaling);
    let mut eligible = vec![true; n];
    let (mut administered, mut items, mut responses) = (Vec::new(), Vec::new(), Vec::new());
    let (mut theta, mut standard_error) = (0.0, 1.0);
    for _ in 0..20 {
        let ctx = SelectionContext {
            bank: &bank,
            eligible: &eligible,
            administered: &administered,
            responses: &responses,
            theta,
            standard_error,
            estimator: &settings,
            max_items: MAX_ITEMS,
            index: Some(&index),
            tables: None,
        };
        let next =
            select_item(SelectionRule::MaxInfo, &ctx, 1, &mut rng).expect("bank not exhausted");
        eligible[next] = false;
        administered.push(next);
        items.push(bank[next].clone());
        responses.push(draw_response(&bank[next], 0.5, 1.0, &mut rng));
        let e = estimate_items(&settings, &items, &responses, theta);
        (theta, standard_error) = (e.theta, e.standard_error);
    }
    Scenario {
        bank,
        index,
        eligible,
        administered,
        items,
        responses,
        theta,
        standard_error,
    }
}

/// Which fast paths a measured step may use.
#[derive(Clone, Copy)]
struct Paths {
    /// The maximum-information index.
    index: bool,
    /// The grid tables of the integrating rules.
    tables: bool,
}

fn bench_step(c: &mut Criterion, name: &str, s: &Scenario, rule: SelectionRule, paths: Paths) {
    let settings = EstimatorSettings::default();
    // Built once per bank and grid, as the engine caches them; only for a
    // benchmark that runs (the routine is not called when filtered out).
    let tables = std::cell::OnceCell::new();
    let mut rng = StdRng::seed_from_u64(7);
    // Flat sampling: the same iteration count in every sample, so the slowest
    // steps need 10 iterations rather than 55.
    let mut group = c.benchmark_group("step");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(name, |b| {
        let tables = tables.get_or_init(|| {
            paths
                .tables
                .then(|| SelectionTables::new(&s.bank, &settings, rule))
                .flatten()
        });
        b.iter(|| {
            let ctx = SelectionContext {
                bank: black_box(&s.bank),
                eligible: black_box(&s.eligible),
                administered: &s.administered,
                responses: &s.responses,
                theta: black_box(s.theta),
                standard_error: s.standard_error,
                estimator: &settings,
                max_items: MAX_ITEMS,
                index: paths.index.then_some(&s.index),
                tables: tables.as_ref(),
            };
            let next = select_item(rule, &ctx, 1, &mut rng);
            let e = estimate_items(
                &settings,
                black_box(&s.items),
                black_box(&s.responses),
                s.theta,
            );
            (next, e)
        });
    });
    group.finish();
}

/// Every rule on one bank: the index and the grid tables are passed as the
/// engine passes them (the index to `MaxInfo`, `Progressive` and
/// `Proportional`); then the grid rules once more without their tables
/// (`<prefix>_plain_<name>_<n>`: the plain scan, the path every step took
/// before the tables).
fn bench_rules(c: &mut Criterion, prefix: &str, s: &Scenario) {
    let n = s.bank.len();
    for (rule, name) in RULES {
        let index = matches!(
            rule,
            SelectionRule::MaxInfo | SelectionRule::Progressive | SelectionRule::Proportional
        );
        let paths = Paths {
            index,
            tables: true,
        };
        bench_step(c, &format!("{prefix}_{name}_{n}"), s, rule, paths);
    }
    for (rule, name) in RULES {
        let grid_rule = matches!(
            rule,
            SelectionRule::Kl
                | SelectionRule::Klp
                | SelectionRule::Mlwi
                | SelectionRule::Mpwi
                | SelectionRule::Mepv
        );
        if grid_rule {
            let paths = Paths {
                index: false,
                tables: false,
            };
            bench_step(c, &format!("{prefix}_plain_{name}_{n}"), s, rule, paths);
        }
    }
}

fn steps(c: &mut Criterion) {
    for n in [5_000, 50_000] {
        let s = scenario(dichotomous_bank(n));
        let (indexed, scanned) = (
            Paths {
                index: true,
                tables: false,
            },
            Paths {
                index: false,
                tables: false,
            },
        );
        bench_step(c, &format!("step_{n}"), &s, SelectionRule::MaxInfo, indexed);
        bench_step(c, &format!("scan_{n}"), &s, SelectionRule::MaxInfo, scanned);
        bench_rules(c, "rule", &s);
        let p = scenario(polytomous_bank(n));
        bench_rules(c, "poly", &p);
    }
}

fn index_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_build");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    let settings = EstimatorSettings::default();
    for n in [5_000, 50_000] {
        let bank = dichotomous_bank(n);
        group.bench_function(format!("index_build_{n}"), |b| {
            b.iter(|| InformationIndex::new(black_box(&bank), 1.0));
        });
        for (rule, name) in [
            (SelectionRule::Mlwi, "information"),
            (SelectionRule::Kl, "divergence"),
            (SelectionRule::Mepv, "variance"),
        ] {
            group.bench_function(format!("tables_{name}_{n}"), |b| {
                b.iter(|| SelectionTables::new(black_box(&bank), &settings, rule));
            });
        }
    }
    group.finish();
}

/// Short measurements (the machine is shared; the slowest steps take tens of
/// milliseconds before the grid tables).
fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1_000))
}

criterion_group! {
    name = benches;
    config = config();
    targets = steps, index_build
}
criterion_main!(benches);
