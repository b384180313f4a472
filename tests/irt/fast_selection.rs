//! The fast selection paths (grid tables, index) against the plain rules of
//! `reference.rs`: the same ranking (ties, NaN and the randomesque group
//! included), the same values bit for bit, the same random draws.

use adaptive_engine::irt::{
    EstimatorSettings, InformationIndex, Item, ItemParams, MAX_QUADRATURE_POINTS, Prior,
    SelectionContext, SelectionRule, SelectionTables, TablesKey, best_items, criterion_values,
    draw_response, estimate_items, select_item,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::reference;

/// The rules that integrate on the grid.
const GRID_RULES: [SelectionRule; 5] = [
    SelectionRule::Kl,
    SelectionRule::Klp,
    SelectionRule::Mlwi,
    SelectionRule::Mpwi,
    SelectionRule::Mepv,
];

/// A random item: mostly 3PL/4PL, some GRM/GPCM, some invalid, some far off
/// the grid.
fn random_item<R: Rng>(rng: &mut R, polytomous: f64) -> Item {
    let u: f64 = rng.random();
    if u < 0.03 {
        return if rng.random::<bool>() {
            Item::Dichotomous(ItemParams::new(-1.2, 0.3, 0.1, 1.0))
        } else {
            Item::Dichotomous(ItemParams::new(1.0, 0.0, 0.6, 0.4))
        };
    }
    let far = rng.random::<f64>() < 0.05;
    let location = |rng: &mut R| {
        if far {
            rng.random_range(-12.0..12.0)
        } else {
            rng.random_range(-4.0..4.0)
        }
    };
    if u < 0.03 + polytomous {
        let m = rng.random_range(1..5);
        let mut thresholds: Vec<f64> = (0..m).map(|_| location(rng)).collect();
        let a = rng.random_range(0.3..2.8);
        if rng.random::<bool>() {
            thresholds.sort_by(f64::total_cmp);
            thresholds.dedup();
            Item::grm(a, thresholds)
        } else {
            Item::gpcm(a, thresholds)
        }
    } else {
        let b = location(rng);
        Item::Dichotomous(ItemParams::new(
            rng.random_range(0.3..2.8),
            b,
            if rng.random::<f64>() < 0.2 {
                0.0
            } else {
                rng.random_range(0.0..0.3)
            },
            if rng.random::<f64>() < 0.2 {
                rng.random_range(0.9..1.0)
            } else {
                1.0
            },
        ))
    }
}

/// A bank of `n` random items with a share of exact duplicates (ties).
fn random_bank(seed: u64, n: usize, polytomous: f64) -> Vec<Item> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bank: Vec<Item> = Vec::with_capacity(n);
    for _ in 0..n {
        let item = if !bank.is_empty() && rng.random::<f64>() < 0.05 {
            bank[rng.random_range(0..bank.len())].clone()
        } else {
            random_item(&mut rng, polytomous)
        };
        bank.push(item);
    }
    bank
}

/// Random estimator settings: grid, range, scaling and prior.
fn random_settings(rng: &mut StdRng) -> EstimatorSettings {
    let points = [2, 3, 5, 11, 21, 33, 33, 41, 61, 101][rng.random_range(0..10)];
    let (theta_min, theta_max) = if rng.random::<bool>() {
        (-4.0, 4.0)
    } else {
        (rng.random_range(-6.0..-1.0), rng.random_range(1.0..6.0))
    };
    let prior = match rng.random_range(0..4) {
        0 | 1 => Prior::Normal {
            mean: rng.random_range(-1.0..1.0),
            sd: rng.random_range(0.5..2.0),
        },
        2 => {
            let lower = rng.random_range(theta_min..0.0);
            Prior::Uniform {
                lower,
                upper: rng.random_range(0.5..theta_max + 0.5),
            }
        }
        _ => Prior::Jeffreys,
    };
    EstimatorSettings {
        prior,
        quadrature_points: points,
        theta_min,
        theta_max,
        scaling: if rng.random::<bool>() { 1.0 } else { 1.702 },
        ..EstimatorSettings::default()
    }
}

/// A random state of an exam on `bank`.
struct Exam {
    eligible: Vec<bool>,
    administered: Vec<usize>,
    responses: Vec<u32>,
    theta: f64,
}

fn random_exam(rng: &mut StdRng, bank: &[Item], settings: &EstimatorSettings) -> Exam {
    let n = bank.len();
    let answered = rng.random_range(0..=n.min(30));
    let mut administered: Vec<usize> = Vec::new();
    while administered.len() < answered {
        let i = rng.random_range(0..n);
        if !administered.contains(&i) {
            administered.push(i);
        }
    }
    let truth = rng.random_range(-3.0..3.0);
    let responses: Vec<u32> = administered
        .iter()
        .map(|&i| {
            if rng.random::<f64>() < 0.05 {
                rng.random_range(0..6)
            } else {
                draw_response(&bank[i], truth, settings.scaling, rng)
            }
        })
        .collect();
    let closed = rng.random::<f64>() * 0.6;
    let mut eligible: Vec<bool> = (0..n).map(|_| rng.random::<f64>() >= closed).collect();
    for &i in &administered {
        eligible[i] = false;
    }
    if rng.random::<f64>() < 0.1 {
        eligible.truncate(rng.random_range(0..=n));
    }
    let nodes: Vec<f64> = settings.nodes().collect();
    let theta = match rng.random_range(0..10) {
        // A quadrature node (and, on the default grids, a pivot).
        0 => nodes[rng.random_range(0..nodes.len())],
        // Between two pivots' worth of nodes, or outside the range.
        1 => rng.random_range(settings.theta_min - 2.0..settings.theta_max + 2.0),
        2 if rng.random::<f64>() < 0.2 => f64::NAN,
        3 => settings.theta_min,
        4 => settings.theta_max,
        _ => {
            let items: Vec<Item> = administered.iter().map(|&i| bank[i].clone()).collect();
            estimate_items(settings, &items, &responses, 0.0).theta
        }
    };
    Exam {
        eligible,
        administered,
        responses,
        theta,
    }
}

fn context<'a>(
    bank: &'a [Item],
    exam: &'a Exam,
    settings: &'a EstimatorSettings,
    index: Option<&'a InformationIndex>,
    tables: Option<&'a SelectionTables>,
) -> SelectionContext<'a> {
    SelectionContext {
        bank,
        eligible: &exam.eligible,
        administered: &exam.administered,
        responses: &exam.responses,
        theta: exam.theta,
        standard_error: 0.4,
        estimator: settings,
        max_items: 40,
        index,
        tables,
    }
}

/// The reference top `k` with unsigned values (as [`best_items`] reports them).
fn reference_best(rule: SelectionRule, ctx: &SelectionContext<'_>, k: usize) -> Vec<(usize, f64)> {
    let sign = if rule.larger_is_better() { 1.0 } else { -1.0 };
    reference::top_k(rule, ctx, k)
        .into_iter()
        .map(|(i, v)| (i, sign * v))
        .collect()
}

/// Asserts identical rankings: same items in the same order, same values bit
/// for bit.
fn assert_same(
    fast: &[(usize, f64)],
    plain: &[(usize, f64)],
    what: &str,
) -> Result<(), TestCaseError> {
    let fast_bits: Vec<(usize, u64)> = fast.iter().map(|&(i, v)| (i, v.to_bits())).collect();
    let plain_bits: Vec<(usize, u64)> = plain.iter().map(|&(i, v)| (i, v.to_bits())).collect();
    prop_assert_eq!(
        fast_bits,
        plain_bits,
        "{}: fast {:?} plain {:?}",
        what,
        fast,
        plain
    );
    Ok(())
}

/// Every deterministic rule's top `k` and every rule's draw, with the grid
/// tables and the index, equal the plain rules'.
fn check_step(
    bank: &[Item],
    exam: &Exam,
    settings: &EstimatorSettings,
    index: &InformationIndex,
    tables: &[(SelectionRule, Option<SelectionTables>)],
    k: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    for rule in SelectionRule::ALL {
        let table = tables
            .iter()
            .find(|(r, _)| *r == rule)
            .and_then(|(_, t)| t.as_ref());
        let fast = context(bank, exam, settings, Some(index), table);
        let plain = context(bank, exam, settings, None, None);
        let what = format!("{rule:?} k={k} θ={} settings={settings:?}", exam.theta);
        if let Some(best) = best_items(rule, &fast, k) {
            assert_same(&best, &reference_best(rule, &plain, k), &what)?;
        }
        let mut a = StdRng::seed_from_u64(seed);
        let mut b = StdRng::seed_from_u64(seed);
        let x = select_item(rule, &fast, k, &mut a);
        let y = reference::select_item(rule, &plain, k, &mut b);
        prop_assert_eq!(x, y, "draw of {}", what);
        // The generators are left in the same state.
        prop_assert_eq!(a.random::<u64>(), b.random::<u64>(), "rng of {}", what);
    }
    Ok(())
}

/// Tables for every grid rule (only the ones whose family differs are
/// distinct, but each rule gets its own to exercise the key).
fn all_tables(
    bank: &[Item],
    settings: &EstimatorSettings,
) -> Vec<(SelectionRule, Option<SelectionTables>)> {
    GRID_RULES
        .iter()
        .map(|&rule| (rule, SelectionTables::new(bank, settings, rule)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_paths_rank_and_draw_like_the_plain_rules(
        seed in any::<u64>(),
        n in 1_usize..250,
        polytomous in prop_oneof![Just(0.0), Just(0.3), Just(1.0)],
        k in 1_usize..7,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let bank = random_bank(seed, n, polytomous);
        let settings = random_settings(&mut rng);
        let index = InformationIndex::new(&bank, settings.scaling);
        let tables = all_tables(&bank, &settings);
        for _ in 0..3 {
            let exam = random_exam(&mut rng, &bank, &settings);
            check_step(&bank, &exam, &settings, &index, &tables, k, rng.random())?;
        }
    }

    #[test]
    fn criterion_values_are_unchanged(
        seed in any::<u64>(),
        n in 1_usize..80,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let bank = random_bank(seed, n, 0.3);
        let settings = random_settings(&mut rng);
        let exam = random_exam(&mut rng, &bank, &settings);
        let ctx = context(&bank, &exam, &settings, None, None);
        for rule in SelectionRule::ALL {
            let fast: Vec<u64> = criterion_values(rule, &ctx).iter().map(|v| v.to_bits()).collect();
            let plain: Vec<u64> =
                reference::criterion_values(rule, &ctx).iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(fast, plain, "{:?}", rule);
        }
    }
}

/// Whole adaptive tests on larger banks (pruning at work): at every step the
/// fast rankings and draws equal the plain ones.
#[test]
fn whole_tests_on_large_banks_match_the_plain_rules() {
    for (seed, polytomous) in [(11_u64, 0.0), (12, 1.0), (13, 0.2)] {
        let bank = random_bank(seed, 1_500, polytomous);
        let settings = EstimatorSettings::default();
        let index = InformationIndex::new(&bank, settings.scaling);
        let tables = all_tables(&bank, &settings);
        for rule in GRID_RULES {
            let mut rng = StdRng::seed_from_u64(seed ^ 0xA5);
            let truth: f64 = rng.random_range(-2.0..2.0);
            let mut exam = Exam {
                eligible: vec![true; bank.len()],
                administered: Vec::new(),
                responses: Vec::new(),
                theta: 0.0,
            };
            for step in 0..12 {
                let k = 1 + step % 4;
                check_step(&bank, &exam, &settings, &index, &tables, k, step as u64)
                    .unwrap_or_else(|e| panic!("{rule:?} step {step}: {e}"));
                let table = tables
                    .iter()
                    .find(|(r, _)| *r == rule)
                    .and_then(|(_, t)| t.as_ref());
                let ctx = context(&bank, &exam, &settings, Some(&index), table);
                let next = select_item(rule, &ctx, 1, &mut rng).expect("items left");
                exam.eligible[next] = false;
                exam.administered.push(next);
                exam.responses.push(draw_response(
                    &bank[next],
                    truth,
                    settings.scaling,
                    &mut rng,
                ));
                let items: Vec<Item> = exam.administered.iter().map(|&i| bank[i].clone()).collect();
                exam.theta = estimate_items(&settings, &items, &exam.responses, exam.theta).theta;
            }
        }
    }
}

/// Tables are used only where they fit: another grid, another family or
/// another bank length leaves the plain path in charge, with the same result.
#[test]
fn tables_that_do_not_fit_are_ignored() {
    let bank = random_bank(5, 300, 0.2);
    let settings = EstimatorSettings::default();
    let mut rng = StdRng::seed_from_u64(9);
    let exam = random_exam(&mut rng, &bank, &settings);
    let other_grid = EstimatorSettings {
        quadrature_points: 41,
        ..settings.clone()
    };
    let kl = SelectionTables::new(&bank, &other_grid, SelectionRule::Kl).unwrap();
    let mlwi = SelectionTables::new(&bank, &settings, SelectionRule::Mlwi).unwrap();
    let short = SelectionTables::new(&bank[..299], &settings, SelectionRule::Kl).unwrap();
    for (rule, tables) in [
        (SelectionRule::Kl, &kl),
        (SelectionRule::Kl, &mlwi),
        (SelectionRule::Kl, &short),
        (SelectionRule::Mepv, &mlwi),
    ] {
        let fast = context(&bank, &exam, &settings, None, Some(tables));
        let plain = context(&bank, &exam, &settings, None, None);
        assert_eq!(
            best_items(rule, &fast, 3).unwrap(),
            reference_best(rule, &plain, 3)
        );
    }
    // Keys: one per family and grid.
    let key = |s: &EstimatorSettings, r| TablesKey::new(s, r);
    assert_eq!(
        key(&settings, SelectionRule::Kl),
        key(&settings, SelectionRule::Klp)
    );
    assert_eq!(
        key(&settings, SelectionRule::Mlwi),
        key(&settings, SelectionRule::Mpwi)
    );
    assert_ne!(
        key(&settings, SelectionRule::Kl),
        key(&settings, SelectionRule::Mlwi)
    );
    assert_ne!(
        key(&settings, SelectionRule::Kl),
        key(&other_grid, SelectionRule::Kl)
    );
    assert_eq!(key(&settings, SelectionRule::MaxInfo), None);
    let jeffreys = EstimatorSettings {
        prior: Prior::Jeffreys,
        ..settings.clone()
    };
    assert_ne!(
        key(&settings, SelectionRule::Mepv),
        key(&jeffreys, SelectionRule::Mepv)
    );
    assert!(SelectionTables::new(&bank, &settings, SelectionRule::Urry).is_none());
    assert!(mlwi.memory_bytes() > 0 && mlwi.len() == bank.len());
    let estimated = SelectionTables::estimated_bytes(&bank, &settings, SelectionRule::Kl);
    let built = SelectionTables::new(&bank, &settings, SelectionRule::Kl).unwrap();
    assert!(
        built.memory_bytes() <= estimated,
        "{} > {estimated}",
        built.memory_bytes()
    );
}

/// Degenerate steps: every weight zero (a uniform prior outside the grid's
/// mass), a single node of mass, the largest grid, ties everywhere.
#[test]
fn degenerate_steps_match_the_plain_rules() {
    let mut rng = StdRng::seed_from_u64(77);
    // Identical items: every criterion ties, the lowest indices win.
    let same = vec![Item::from(ItemParams::three_pl(1.2, 0.3, 0.1)); 200];
    let mut cases: Vec<(Vec<Item>, EstimatorSettings)> = vec![
        (same, EstimatorSettings::default()),
        (
            random_bank(3, 200, 0.3),
            EstimatorSettings {
                quadrature_points: MAX_QUADRATURE_POINTS,
                ..EstimatorSettings::default()
            },
        ),
        (
            random_bank(4, 200, 0.3),
            EstimatorSettings {
                quadrature_points: 2,
                ..EstimatorSettings::default()
            },
        ),
    ];
    cases.push((
        random_bank(6, 200, 0.3),
        EstimatorSettings {
            prior: Prior::Jeffreys,
            ..EstimatorSettings::default()
        },
    ));
    for (bank, settings) in &cases {
        let index = InformationIndex::new(bank, settings.scaling);
        let tables = all_tables(bank, settings);
        for _ in 0..4 {
            let exam = random_exam(&mut rng, bank, settings);
            for k in [1, 3, 64] {
                check_step(bank, &exam, settings, &index, &tables, k, 1).unwrap();
            }
        }
        // Hundreds of extreme answers: the posterior sits on one node.
        let mut exam = random_exam(&mut rng, bank, settings);
        exam.administered = (0..bank.len()).step_by(2).collect();
        exam.responses = exam.administered.iter().map(|&i| (i % 2) as u32).collect();
        for &i in &exam.administered {
            if let Some(e) = exam.eligible.get_mut(i) {
                *e = false;
            }
        }
        exam.theta = settings.theta_max;
        check_step(bank, &exam, settings, &index, &tables, 2, 2).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// `Progressive` (uniforms drawn first, only the items whose bound can win
    /// evaluated) and `Proportional` draw the plain rules' items and leave the
    /// generator in the same state, at every point of their schedules (`W`
    /// from 0 to 1, `H` from 0 to `T`), on banks large enough to prune.
    #[test]
    fn the_drawing_rules_draw_like_the_plain_rules(
        seed in any::<u64>(),
        n in 1_usize..3_000,
        polytomous in prop_oneof![Just(0.0), Just(0.2), Just(1.0)],
        k in 1_usize..9,
        max_items in 1_usize..60,
        answered in 0_usize..60,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let bank = random_bank(seed, n, polytomous);
        let settings = if rng.random::<bool>() {
            EstimatorSettings::default()
        } else {
            random_settings(&mut rng)
        };
        let index = InformationIndex::new(&bank, settings.scaling);
        let mut exam = random_exam(&mut rng, &bank, &settings);
        // Any number answered (the schedule), indices possibly repeated.
        exam.administered = (0..answered).map(|_| rng.random_range(0..n)).collect();
        exam.responses = exam.administered.iter().map(|&i| (i % 3) as u32).collect();
        for rule in [SelectionRule::Progressive, SelectionRule::Proportional] {
            for with_index in [true, false] {
                let mut fast = context(&bank, &exam, &settings, None, None);
                fast.max_items = max_items;
                if with_index {
                    fast.index = Some(&index);
                }
                let mut plain = context(&bank, &exam, &settings, None, None);
                plain.max_items = max_items;
                let draw_seed: u64 = rng.random();
                let mut a = StdRng::seed_from_u64(draw_seed);
                let mut b = StdRng::seed_from_u64(draw_seed);
                let x = select_item(rule, &fast, k, &mut a);
                let y = reference::select_item(rule, &plain, k, &mut b);
                prop_assert_eq!(x, y, "{:?} k={} T={} t={} θ={}", rule, k, max_items, answered, exam.theta);
                prop_assert_eq!(a.random::<u64>(), b.random::<u64>(), "rng of {:?}", rule);
            }
        }
    }
}

/// Large polytomous and mixed banks, where the blocks' envelopes prune: the
/// maximum-information top `k` and the proportional and progressive draws
/// equal the plain rules' at abilities across and beyond the envelopes' range
/// (their nodes included), late in the schedule (a large exponent: most
/// weights too small to change the sums) and early.
#[test]
fn pruned_polytomous_selection_and_draws_match_the_plain_rules() {
    for (seed, polytomous) in [(21_u64, 1.0), (22, 0.5)] {
        let bank = random_bank(seed, 4_000, polytomous);
        let mut rng = StdRng::seed_from_u64(seed);
        for scaling in [1.0, 1.702] {
            let settings = EstimatorSettings {
                scaling,
                ..EstimatorSettings::default()
            };
            let index = InformationIndex::new(&bank, scaling);
            let mut thetas = vec![-6.0, 6.0, -6.04, 0.0, 0.04, 2.0 - 0.04 * 3.0, 7.5, -9.0];
            thetas.extend((0..10).map(|_| rng.random_range(-6.5..6.5)));
            for theta in thetas {
                let closed = [0.0, 0.3, 0.97][rng.random_range(0..3)];
                let exam = Exam {
                    eligible: (0..bank.len())
                        .map(|_| rng.random::<f64>() >= closed)
                        .collect(),
                    administered: Vec::new(),
                    responses: Vec::new(),
                    theta,
                };
                for k in [1, 4] {
                    let fast = context(&bank, &exam, &settings, Some(&index), None);
                    let plain = context(&bank, &exam, &settings, None, None);
                    let what = format!("θ={theta} D={scaling} k={k} closed={closed}");
                    assert_eq!(
                        best_items(SelectionRule::MaxInfo, &fast, k).unwrap(),
                        reference_best(SelectionRule::MaxInfo, &plain, k),
                        "{what}"
                    );
                }
                for (answered, max_items) in [(20, 40), (39, 40), (2, 40), (1, 200), (60, 61)] {
                    let mut exam = Exam {
                        eligible: exam.eligible.clone(),
                        administered: (0..answered).collect(),
                        responses: vec![1; answered],
                        theta,
                    };
                    for i in 0..answered {
                        exam.eligible[i] = false;
                    }
                    let mut fast = context(&bank, &exam, &settings, Some(&index), None);
                    fast.max_items = max_items;
                    let mut plain = context(&bank, &exam, &settings, None, None);
                    plain.max_items = max_items;
                    for rule in [SelectionRule::Proportional, SelectionRule::Progressive] {
                        for draw in 0..4_u64 {
                            let mut a = StdRng::seed_from_u64(draw);
                            let mut b = StdRng::seed_from_u64(draw);
                            assert_eq!(
                                select_item(rule, &fast, 2, &mut a),
                                reference::select_item(rule, &plain, 2, &mut b),
                                "{rule:?} θ={theta} D={scaling} t={answered} T={max_items}"
                            );
                            assert_eq!(a.random::<u64>(), b.random::<u64>());
                        }
                    }
                }
            }
        }
    }
}
