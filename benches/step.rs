//! One adaptive-testing step: select the next item among those left in a
//! bank of N random 3PL items (maximum information, randomesque 1) and
//! re-estimate ability by EAP (33 nodes, N(0, 1) prior) from 20 answers.

use std::hint::black_box;

use adaptive_engine::irt::{
    EstimatorSettings, ItemParams, estimate, probability, select_next_item,
};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Bank of `n` random 3PL items, 20 of them administered and answered by a
/// simulee of ability 0.5 (fixed seeds).
struct Scenario {
    bank: Vec<ItemParams>,
    administered: Vec<bool>,
    items: Vec<ItemParams>,
    responses: Vec<bool>,
    theta: f64,
}

fn scenario(n: usize) -> Scenario {
    let mut rng = StdRng::seed_from_u64(20_240_601);
    let bank: Vec<ItemParams> = (0..n)
        .map(|_| {
            ItemParams::three_pl(
                rng.random_range(0.5..2.5),
                rng.random_range(-3.0..3.0),
                rng.random_range(0.0..0.3),
            )
        })
        .collect();
    let settings = EstimatorSettings::default();
    let mut administered = vec![false; n];
    let (mut items, mut responses) = (Vec::new(), Vec::new());
    let mut theta = 0.0;
    for _ in 0..20 {
        let next = select_next_item(&bank, &administered, theta, 1.0, 1, &mut rng)
            .expect("bank not exhausted");
        administered[next] = true;
        items.push(bank[next]);
        responses.push(rng.random::<f64>() < probability(&bank[next], 0.5, 1.0));
        theta = estimate(&settings, &items, &responses, theta).theta;
    }
    Scenario {
        bank,
        administered,
        items,
        responses,
        theta,
    }
}

fn bench_step(c: &mut Criterion, name: &str, n: usize) {
    let s = scenario(n);
    let settings = EstimatorSettings::default();
    let mut rng = StdRng::seed_from_u64(7);
    c.bench_function(name, |b| {
        b.iter(|| {
            let next = select_next_item(
                black_box(&s.bank),
                black_box(&s.administered),
                black_box(s.theta),
                1.0,
                1,
                &mut rng,
            );
            let e = estimate(
                &settings,
                black_box(&s.items),
                black_box(&s.responses),
                s.theta,
            );
            (next, e)
        });
    });
}

fn step_5000(c: &mut Criterion) {
    bench_step(c, "step_5000", 5_000);
}

fn step_50000(c: &mut Criterion) {
    bench_step(c, "step_50000", 50_000);
}

criterion_group!(benches, step_5000, step_50000);
criterion_main!(benches);
