//! One adaptive-testing step: select the next item among those left in a bank
//! of N random 3PL items and re-estimate ability by EAP (33 nodes, N(0, 1)
//! prior) from 20 answers.
//!
//! * `step_5000`, `step_50000`: maximum information through the bank's
//!   [`InformationIndex`] (the service's path), randomesque 1.
//! * `scan_5000`, `scan_50000`: the same step with a full scan (no index), for
//!   comparison.
//! * `rule_<name>_5000`: the same step with every other selection rule.
//! * `index_build_5000`, `index_build_50000`: building the index once.

use std::hint::black_box;
use std::time::Duration;

use adaptive_engine::irt::{
    EstimatorSettings, InformationIndex, Item, ItemParams, SelectionContext, SelectionRule,
    estimate_items, probability, select_item,
};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Bank of `n` random 3PL items, 20 of them administered and answered by a
/// simulee of ability 0.5 (fixed seeds).
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

fn scenario(n: usize) -> Scenario {
    let mut rng = StdRng::seed_from_u64(20_240_601);
    let params: Vec<ItemParams> = (0..n)
        .map(|_| {
            ItemParams::three_pl(
                rng.random_range(0.5..2.5),
                rng.random_range(-3.0..3.0),
                rng.random_range(0.0..0.3),
            )
        })
        .collect();
    let bank: Vec<Item> = params.iter().copied().map(Item::from).collect();
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
            max_items: 21,
            index: Some(&index),
        };
        let next =
            select_item(SelectionRule::MaxInfo, &ctx, 1, &mut rng).expect("bank not exhausted");
        eligible[next] = false;
        administered.push(next);
        items.push(bank[next].clone());
        responses.push(u32::from(
            rng.random::<f64>() < probability(&params[next], 0.5, 1.0),
        ));
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

fn bench_step(c: &mut Criterion, name: &str, s: &Scenario, rule: SelectionRule, use_index: bool) {
    let settings = EstimatorSettings::default();
    let mut rng = StdRng::seed_from_u64(7);
    c.bench_function(name, |b| {
        b.iter(|| {
            let ctx = SelectionContext {
                bank: black_box(&s.bank),
                eligible: black_box(&s.eligible),
                administered: &s.administered,
                responses: &s.responses,
                theta: black_box(s.theta),
                standard_error: s.standard_error,
                estimator: &settings,
                max_items: 21,
                index: use_index.then_some(&s.index),
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
}

fn steps(c: &mut Criterion) {
    let small = scenario(5_000);
    bench_step(c, "step_5000", &small, SelectionRule::MaxInfo, true);
    let large = scenario(50_000);
    bench_step(c, "step_50000", &large, SelectionRule::MaxInfo, true);
    bench_step(c, "scan_5000", &small, SelectionRule::MaxInfo, false);
    bench_step(c, "scan_50000", &large, SelectionRule::MaxInfo, false);
}

fn rules(c: &mut Criterion) {
    let s = scenario(5_000);
    for (rule, name) in [
        (SelectionRule::Urry, "rule_urry_5000"),
        (SelectionRule::Kl, "rule_kl_5000"),
        (SelectionRule::Klp, "rule_klp_5000"),
        (SelectionRule::Mlwi, "rule_mlwi_5000"),
        (SelectionRule::Mpwi, "rule_mpwi_5000"),
        (SelectionRule::Mepv, "rule_mepv_5000"),
        (SelectionRule::Progressive, "rule_progressive_5000"),
        (SelectionRule::Proportional, "rule_proportional_5000"),
        (SelectionRule::Random, "rule_random_5000"),
    ] {
        bench_step(c, name, &s, rule, false);
    }
}

fn index_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_build");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for n in [5_000, 50_000] {
        let bank: Vec<Item> = scenario_bank(n);
        group.bench_function(format!("index_build_{n}"), |b| {
            b.iter(|| InformationIndex::new(black_box(&bank), 1.0));
        });
    }
    group.finish();
}

/// The scenario's bank alone.
fn scenario_bank(n: usize) -> Vec<Item> {
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

criterion_group!(benches, steps, rules, index_build);
criterion_main!(benches);
