//! Item selection rules, the exact information index, content balancing, enemy
//! items and exposure control.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use adaptive_engine::irt::{
    ContentBalance, EstimatorSettings, ExposureControl, ExposureCounts, ExposureMethod,
    IndexOptions, IndexPath, InformationIndex, IrtError, Item, ItemParams, MAX_RANDOMESQUE,
    SelectionContext, SelectionRule, best_information, criterion_values, draw_ineligible_items,
    eligibility_probability, estimate_items, exclude_enemies, exclude_enemies_indexed,
    group_indices, information, probability, progressive_weight, proportional_exponent,
    restrict_to_content_area, restrict_to_content_area_indexed, select_item, select_next_item,
    sympson_hetter_probability, sympson_hetter_select,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A random 3PL/4PL item.
fn random_params<R: Rng>(rng: &mut R) -> ItemParams {
    ItemParams::new(
        rng.random_range(0.3..2.8),
        rng.random_range(-4.0..4.0),
        rng.random_range(0.0..0.3),
        if rng.random::<f64>() < 0.2 {
            rng.random_range(0.9..1.0)
        } else {
            1.0
        },
    )
}

/// A random polytomous item.
fn random_polytomous<R: Rng>(rng: &mut R) -> Item {
    let m = rng.random_range(1..5);
    let mut thresholds: Vec<f64> = (0..m).map(|_| rng.random_range(-3.0..3.0)).collect();
    if rng.random::<bool>() {
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        Item::grm(rng.random_range(0.5..2.5), thresholds)
    } else {
        Item::gpcm(rng.random_range(0.5..2.5), thresholds)
    }
}

/// A bank of `n` items: mostly dichotomous, with a share of polytomous items,
/// invalid items and exact duplicates (ties).
fn mixed_bank(seed: u64, n: usize, polytomous: f64, invalid: f64, duplicates: f64) -> Vec<Item> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bank: Vec<Item> = Vec::with_capacity(n);
    for _ in 0..n {
        let u: f64 = rng.random();
        let item = if u < polytomous {
            random_polytomous(&mut rng)
        } else if u < polytomous + invalid {
            // Outside the 4PL domain: negative slope or c >= d.
            if rng.random::<bool>() {
                Item::Dichotomous(ItemParams::new(-1.2, 0.3, 0.1, 1.0))
            } else {
                Item::Dichotomous(ItemParams::new(1.0, 0.0, 0.6, 0.4))
            }
        } else if u < polytomous + invalid + duplicates && !bank.is_empty() {
            bank[rng.random_range(0..bank.len())].clone()
        } else {
            Item::Dichotomous(random_params(&mut rng))
        };
        bank.push(item);
    }
    bank
}

/// A bank of `n` random 3PL items.
fn three_pl_bank(seed: u64, n: usize) -> Vec<ItemParams> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            ItemParams::three_pl(
                rng.random_range(0.5..2.5),
                rng.random_range(-3.0..3.0),
                rng.random_range(0.0..0.3),
            )
        })
        .collect()
}

fn items(params: &[ItemParams]) -> Vec<Item> {
    params.iter().copied().map(Item::from).collect()
}

/// The exact top `k` by brute force: larger value first, lower index first
/// among ties, NaN never.
fn brute_top(values: &[(usize, f64)], k: usize) -> Vec<(usize, f64)> {
    let mut v: Vec<(usize, f64)> = values
        .iter()
        .copied()
        .filter(|(_, x)| !x.is_nan())
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

/// Information of every eligible item, by the public per-item function.
fn eligible_information(
    bank: &[Item],
    eligible: &[bool],
    theta: f64,
    scaling: f64,
) -> Vec<(usize, f64)> {
    bank.iter()
        .enumerate()
        .filter(|(i, _)| eligible.get(*i).copied().unwrap_or(false))
        .map(|(i, item)| (i, item.information(theta, scaling)))
        .collect()
}

/// The top `k` of a rule's criterion (as `select_item` ranks it).
fn criterion_top(rule: SelectionRule, ctx: &SelectionContext<'_>, k: usize) -> Vec<usize> {
    let sign = if rule.larger_is_better() { 1.0 } else { -1.0 };
    let values: Vec<(usize, f64)> = criterion_values(rule, ctx)
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i, sign * v))
        .collect();
    brute_top(&values, k).into_iter().map(|(i, _)| i).collect()
}

#[expect(
    clippy::too_many_arguments,
    reason = "a test shorthand for the context fields"
)]
fn context<'a>(
    bank: &'a [Item],
    eligible: &'a [bool],
    administered: &'a [usize],
    responses: &'a [u32],
    theta: f64,
    estimator: &'a EstimatorSettings,
    max_items: usize,
    index: Option<&'a InformationIndex>,
) -> SelectionContext<'a> {
    SelectionContext {
        bank,
        eligible,
        administered,
        responses,
        theta,
        standard_error: 0.5,
        estimator,
        max_items,
        index,
        tables: None,
    }
}

/// catR's `integrate.catR` on the nodes.
fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    (0..x.len() - 1)
        .map(|k| (x[k + 1] - x[k]) * (y[k] + y[k + 1]) / 2.0)
        .sum()
}

/// R's `seq(-4, 4, length = 33)`.
fn catr_nodes() -> Vec<f64> {
    (0..33).map(|k| -4.0 + 0.25 * f64::from(k)).collect()
}

fn normal_density(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

// ---------------------------------------------------------------------------
// The information index: always equal to the full scan
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random banks (dichotomous, polytomous, invalid items and exact ties),
    /// random index grids (tiny lists force every fallback), random masks,
    /// random abilities inside and outside the grid, k up to 64: the ranking
    /// is bit-for-bit the brute-force top k, and `select_item` draws the same
    /// item with or without the index.
    #[test]
    fn index_ranking_equals_the_full_scan(
        seed in any::<u64>(),
        n in 1usize..300,
        list_len in 1usize..48,
        step in 0.02f64..0.6,
        lo in -6.0f64..-0.5,
        width in 0.5f64..8.0,
        scaling in prop::sample::select(vec![1.0, 1.702]),
        polytomous in prop::sample::select(vec![0.0, 0.0, 0.05, 0.3]),
        duplicates in prop::sample::select(vec![0.0, 0.2]),
    ) {
        let bank = mixed_bank(seed, n, polytomous, 0.02, duplicates);
        let options = IndexOptions { theta_min: lo, theta_max: lo + width, step, list_len };
        let index = InformationIndex::with_options(&bank, scaling, options);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        for _ in 0..12 {
            let density = [0.02, 0.1, 0.5, 0.9, 1.0][rng.random_range(0..5)];
            let eligible: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < density).collect();
            let theta = if rng.random::<f64>() < 0.15 {
                rng.random_range(-12.0..12.0)
            } else {
                rng.random_range(lo..lo + width)
            };
            let k = rng.random_range(1..=MAX_RANDOMESQUE);
            let ranking = index.most_informative(&bank, &eligible, theta, k);
            let expected = brute_top(&eligible_information(&bank, &eligible, theta, scaling), k);
            let got: Vec<(usize, f64)> = ranking
                .items()
                .iter()
                .copied()
                .zip(ranking.information().iter().copied())
                .collect();
            prop_assert_eq!(
                got.iter().map(|(i, v)| (*i, v.to_bits())).collect::<Vec<_>>(),
                expected.iter().map(|(i, v)| (*i, v.to_bits())).collect::<Vec<_>>(),
                "theta {} k {} path {:?}", theta, k, ranking.path()
            );
            // select_item: same rng state in, same item out.
            let settings = EstimatorSettings { scaling, ..EstimatorSettings::default() };
            let with = context(&bank, &eligible, &[], &[], theta, &settings, 20, Some(&index));
            let without = SelectionContext { index: None, ..with };
            let draw_seed = rng.random::<u64>();
            let a = select_item(SelectionRule::MaxInfo, &with, k, &mut StdRng::seed_from_u64(draw_seed));
            let b = select_item(SelectionRule::MaxInfo, &without, k, &mut StdRng::seed_from_u64(draw_seed));
            prop_assert_eq!(a, b);
        }
    }
}

#[test]
fn the_index_takes_each_path_and_stays_exact() {
    let bank = items(&three_pl_bank(11, 3_000));
    let index = InformationIndex::new(&bank, 1.0);
    let check = |eligible: &[bool], theta: f64, k: usize| -> IndexPath {
        let ranking = index.most_informative(&bank, eligible, theta, k);
        let expected = brute_top(&eligible_information(&bank, eligible, theta, 1.0), k);
        let expected: Vec<usize> = expected.iter().map(|(i, _)| *i).collect();
        assert_eq!(ranking.items(), &expected[..], "theta {theta} k {k}");
        ranking.path()
    };
    let all = vec![true; bank.len()];
    let mut paths = BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..200 {
        let theta = rng.random_range(-4.0..4.0);
        let path = check(&all, theta, rng.random_range(1..=8));
        *paths
            .entry(format!("{path:?}").split(' ').next().unwrap().to_owned())
            .or_insert(0) += 1;
        assert!(
            matches!(path, IndexPath::Proven { evaluated } if evaluated < 300),
            "dense eligibility is proven from the list: {path:?}"
        );
    }
    // Sparse masks leave few candidates on a node's list: those queries take
    // the branch and bound over difficulty buckets, still exact.
    let mut pruned = 0;
    for (step, density) in [1, 2, 3, 5, 10, 20, 50].into_iter().enumerate() {
        let sparse: Vec<bool> = (0..bank.len()).map(|i| i % 100 < density).collect();
        for k in 1..=12 {
            let theta = -2.0 + 0.37 * (step * 12 + k) as f64 / 6.0;
            if matches!(check(&sparse, theta, k), IndexPath::Pruned { .. }) {
                pruned += 1;
            }
        }
    }
    assert!(pruned > 0, "no query took the pruned path");
    // Far outside the grid, and fewer eligible items than k.
    for theta in [-25.0, 25.0] {
        assert!(matches!(check(&all, theta, 3), IndexPath::Pruned { .. }));
    }
    let three: Vec<bool> = (0..bank.len())
        .map(|i| i == 3 || i == 900 || i == 2_999)
        .collect();
    assert!(matches!(
        check(&three, 0.0, 10),
        IndexPath::Pruned { evaluated: 3 }
    ));
    assert_eq!(
        index.most_informative(&bank, &three, 0.0, 10).items().len(),
        3
    );
    // A non-finite theta is left to the full scan.
    assert_eq!(check(&all, f64::INFINITY, 2), IndexPath::FullScan);
    // Nothing eligible, NaN theta.
    assert!(
        index
            .most_informative(&bank, &[], 0.0, 1)
            .items()
            .is_empty()
    );
    assert!(
        index
            .most_informative(&bank, &all, f64::NAN, 1)
            .items()
            .is_empty()
    );
}

#[test]
fn max_info_through_every_path_matches_the_dichotomous_entry_point() {
    let params = three_pl_bank(3, 500);
    let bank = items(&params);
    let settings = EstimatorSettings::default();
    let index = InformationIndex::new(&bank, settings.scaling);
    let mut rng = StdRng::seed_from_u64(9);
    for _ in 0..100 {
        let administered: Vec<bool> = (0..params.len())
            .map(|_| rng.random::<f64>() < 0.3)
            .collect();
        let eligible: Vec<bool> = administered.iter().map(|a| !a).collect();
        let theta = rng.random_range(-3.0..3.0);
        let k = rng.random_range(1..6);
        let seed = rng.random::<u64>();
        let old = select_next_item(
            &params,
            &administered,
            theta,
            1.0,
            k,
            &mut StdRng::seed_from_u64(seed),
        );
        let ctx = context(
            &bank,
            &eligible,
            &[],
            &[],
            theta,
            &settings,
            20,
            Some(&index),
        );
        let new = select_item(
            SelectionRule::MaxInfo,
            &ctx,
            k,
            &mut StdRng::seed_from_u64(seed),
        );
        assert_eq!(old, new);
        let best = best_information(&bank, &eligible, theta, 1.0, Some(&index));
        let slow = best_information(&bank, &eligible, theta, 1.0, None);
        assert_eq!(best.to_bits(), slow.to_bits());
        let top = old.map(|i| information(&params[i], theta, 1.0));
        if k == 1 {
            assert_eq!(top, Some(best));
        }
    }
    // An index built for another scaling constant or bank length is ignored.
    let other = InformationIndex::new(&bank, 1.702);
    let eligible = vec![true; bank.len()];
    let ctx = context(&bank, &eligible, &[], &[], 0.2, &settings, 20, Some(&other));
    let plain = SelectionContext { index: None, ..ctx };
    let mut rng = StdRng::seed_from_u64(1);
    assert_eq!(
        select_item(SelectionRule::MaxInfo, &ctx, 1, &mut rng),
        select_item(SelectionRule::MaxInfo, &plain, 1, &mut rng)
    );
}

// ---------------------------------------------------------------------------
// Rules with a known answer
// ---------------------------------------------------------------------------

#[test]
fn urry_picks_the_closest_difficulty_and_polytomous_locations() {
    let bank = vec![
        Item::from(ItemParams::three_pl(2.0, -2.0, 0.2)),
        Item::from(ItemParams::three_pl(0.4, 0.4, 0.0)), // weak but closest
        Item::from(ItemParams::three_pl(2.5, 1.1, 0.1)),
        Item::gpcm(1.0, vec![0.2, 0.7]), // location 0.45
        Item::from(ItemParams::three_pl(0.9, 0.4, 0.1)), // ties with item 1
    ];
    let settings = EstimatorSettings::default();
    let all = vec![true; bank.len()];
    let mut rng = StdRng::seed_from_u64(0);
    let pick = |eligible: &[bool], theta: f64, rng: &mut StdRng| {
        let ctx = context(&bank, eligible, &[], &[], theta, &settings, 20, None);
        select_item(SelectionRule::Urry, &ctx, 1, rng)
    };
    assert_eq!(
        pick(&all, 0.38, &mut rng),
        Some(1),
        "|0.4 − 0.38| is smallest, lowest index of the tie"
    );
    assert_eq!(
        pick(&all, 0.47, &mut rng),
        Some(3),
        "GPCM location (0.2 + 0.7)/2"
    );
    assert_eq!(
        pick(&[true, false, true, false, true], 0.38, &mut rng),
        Some(4)
    );
    assert_eq!(pick(&all, 9.0, &mut rng), Some(2));
    assert_eq!(pick(&all, -9.0, &mut rng), Some(0));
    // MaxInfo would not pick the weak item.
    let ctx = context(&bank, &all, &[], &[], 0.38, &settings, 20, None);
    assert_ne!(
        select_item(SelectionRule::MaxInfo, &ctx, 1, &mut rng),
        Some(1)
    );
}

/// A small mixed bank and an answered pattern for the integrating rules.
fn integrating_fixture() -> (Vec<Item>, Vec<usize>, Vec<u32>) {
    let bank = vec![
        Item::from(ItemParams::three_pl(1.2, -0.5, 0.2)), // answered 1
        Item::grm(1.4, vec![-1.0, 0.2, 1.5]),             // answered 2
        Item::from(ItemParams::new(0.8, 0.9, 0.1, 0.95)), // answered 0
        Item::from(ItemParams::three_pl(1.9, 0.6, 0.15)),
        Item::from(ItemParams::two_pl(0.7, -0.2)),
        Item::from(ItemParams::three_pl(2.3, -1.4, 0.25)),
        Item::gpcm(0.9, vec![0.5, -0.3, 1.1]),
        Item::grm(1.8, vec![-0.4, 0.9]),
        Item::from(ItemParams::three_pl(1.1, 2.2, 0.0)),
    ];
    (bank, vec![0, 1, 2], vec![1, 2, 0])
}

/// `P(K = k | θ)` computed independently of the library's selection code.
fn category_probability(item: &Item, theta: f64, k: usize) -> f64 {
    match item {
        Item::Dichotomous(p) => {
            let p1 = probability(p, theta, 1.0);
            if k == 1 { p1 } else { 1.0 - p1 }
        }
        Item::Polytomous(_) => item.category_probability(theta, 1.0, k),
    }
}

#[test]
fn kl_klp_mlwi_mpwi_match_an_independent_integration() {
    let (bank, administered, responses) = integrating_fixture();
    let settings = EstimatorSettings::default(); // 33 nodes on [-4, 4], N(0, 1)
    let eligible: Vec<bool> = (0..bank.len()).map(|i| i >= 3).collect();
    let theta_hat = 0.35;
    let ctx = context(
        &bank,
        &eligible,
        &administered,
        &responses,
        theta_hat,
        &settings,
        20,
        None,
    );

    let x = catr_nodes();
    let likelihood: Vec<f64> = x
        .iter()
        .map(|&t| {
            administered
                .iter()
                .zip(&responses)
                .map(|(&i, &r)| category_probability(&bank[i], t, r as usize))
                .product()
        })
        .collect();
    let posterior: Vec<f64> = x
        .iter()
        .zip(&likelihood)
        .map(|(&t, l)| l * normal_density(t))
        .collect();
    let weighted = |weights: &[f64], f: &dyn Fn(f64) -> f64| -> f64 {
        let y: Vec<f64> = x.iter().zip(weights).map(|(&t, w)| w * f(t)).collect();
        trapezoid(&x, &y) / trapezoid(&x, weights)
    };
    let kl = |item: &Item, t: f64| -> f64 {
        (0..item.categories())
            .map(|k| {
                let p = category_probability(item, theta_hat, k);
                p * (p / category_probability(item, t, k)).ln()
            })
            .sum()
    };
    for (rule, weights, kind) in [
        (SelectionRule::Mlwi, &likelihood, "info"),
        (SelectionRule::Mpwi, &posterior, "info"),
        (SelectionRule::Kl, &likelihood, "kl"),
        (SelectionRule::Klp, &posterior, "kl"),
    ] {
        let values = criterion_values(rule, &ctx);
        let mut best = (usize::MAX, f64::NEG_INFINITY);
        for (j, item) in bank.iter().enumerate() {
            if !eligible[j] {
                assert!(values[j].is_nan());
                continue;
            }
            let expected = if kind == "info" {
                weighted(weights, &|t| item.information(t, 1.0))
            } else {
                weighted(weights, &|t| kl(item, t))
            };
            assert!(
                close(values[j], expected, 1e-10),
                "{rule:?} item {j}: {} vs {expected}",
                values[j]
            );
            if expected > best.1 {
                best = (j, expected);
            }
        }
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            select_item(rule, &ctx, 1, &mut rng),
            Some(best.0),
            "{rule:?}"
        );
    }
}

#[test]
fn a_hand_computed_mlwi_case() {
    // Two nodes (−1, 1), one 2PL item answered correctly: the likelihood is
    // L(−1) = 1/(1 + e), L(1) = e/(1 + e), so MLWI = Σ L·I / Σ L.
    let answered = ItemParams::two_pl(1.0, 0.0);
    let candidate = ItemParams::two_pl(2.0, 1.0);
    let bank = vec![Item::from(answered), Item::from(candidate)];
    let settings = EstimatorSettings {
        quadrature_points: 2,
        theta_min: -1.0,
        theta_max: 1.0,
        ..EstimatorSettings::default()
    };
    let ctx = context(&bank, &[false, true], &[0], &[1], 0.0, &settings, 20, None);
    let e = 1f64.exp();
    let (l_lo, l_hi) = (1.0 / (1.0 + e), e / (1.0 + e));
    // I = a²·P·Q for the 2PL: at −1, P = 1/(1 + e⁴); at 1, P = 1/2.
    let i_lo = 4.0 * (1.0 / (1.0 + e.powi(4))) * (e.powi(4) / (1.0 + e.powi(4)));
    let i_hi = 4.0 * 0.25;
    let expected = (l_lo * i_lo + l_hi * i_hi) / (l_lo + l_hi);
    let got = criterion_values(SelectionRule::Mlwi, &ctx)[1];
    assert!(close(got, expected, 1e-14), "{got} vs {expected}");
}

#[test]
fn mepv_matches_brute_force_posterior_variances() {
    let (bank, administered, responses) = integrating_fixture();
    let settings = EstimatorSettings::default();
    // The three candidates: 3 (3PL), 6 (GPCM), 7 (GRM).
    let eligible: Vec<bool> = (0..bank.len()).map(|i| [3, 6, 7].contains(&i)).collect();
    let theta_hat = -0.2;
    let ctx = context(
        &bank,
        &eligible,
        &administered,
        &responses,
        theta_hat,
        &settings,
        20,
        None,
    );
    let x = catr_nodes();
    let base: Vec<f64> = x
        .iter()
        .map(|&t| {
            let l: f64 = administered
                .iter()
                .zip(&responses)
                .map(|(&i, &r)| category_probability(&bank[i], t, r as usize))
                .product();
            l * normal_density(t)
        })
        .collect();
    let values = criterion_values(SelectionRule::Mepv, &ctx);
    let mut best = (usize::MAX, f64::INFINITY);
    for j in [3, 6, 7] {
        let item = &bank[j];
        let mut epv = 0.0;
        for k in 0..item.categories() {
            let post: Vec<f64> = x
                .iter()
                .zip(&base)
                .map(|(&t, b)| b * category_probability(item, t, k))
                .collect();
            let mass = trapezoid(&x, &post);
            let mean = trapezoid(
                &x,
                &x.iter().zip(&post).map(|(t, p)| t * p).collect::<Vec<_>>(),
            ) / mass;
            let var = trapezoid(
                &x,
                &x.iter()
                    .zip(&post)
                    .map(|(t, p)| (t - mean).powi(2) * p)
                    .collect::<Vec<_>>(),
            ) / mass;
            epv += category_probability(item, theta_hat, k) * var;
        }
        assert!(
            close(values[j], epv, 1e-10),
            "item {j}: {} vs {epv}",
            values[j]
        );
        // A posterior variance cannot exceed the current one by much, nor be 0.
        assert!(epv > 0.05 && epv < 1.0);
        if epv < best.1 {
            best = (j, epv);
        }
    }
    let mut rng = StdRng::seed_from_u64(2);
    assert_eq!(
        select_item(SelectionRule::Mepv, &ctx, 1, &mut rng),
        Some(best.0)
    );
}

#[test]
fn mepv_posterior_variance_agrees_with_the_eap_standard_error() {
    // catR's EPV is Σ_k P_k(θ̂)·eapSem² with the candidate appended: check one
    // term against the library's EAP.
    let (bank, administered, responses) = integrating_fixture();
    let settings = EstimatorSettings::default();
    let candidate = 3;
    let eligible: Vec<bool> = (0..bank.len()).map(|i| i == candidate).collect();
    let theta_hat = 0.1;
    let ctx = context(
        &bank,
        &eligible,
        &administered,
        &responses,
        theta_hat,
        &settings,
        20,
        None,
    );
    let mut expected = 0.0;
    for k in 0..2u32 {
        let mut items: Vec<Item> = administered.iter().map(|&i| bank[i].clone()).collect();
        items.push(bank[candidate].clone());
        let mut xs = responses.clone();
        xs.push(k);
        let se = estimate_items(&settings, &items, &xs, theta_hat).standard_error;
        expected += category_probability(&bank[candidate], theta_hat, k as usize) * se * se;
    }
    let got = criterion_values(SelectionRule::Mepv, &ctx)[candidate];
    assert!(close(got, expected, 1e-9), "{got} vs {expected}");
}

#[test]
fn progressive_is_uniform_at_the_start_and_max_info_at_the_end() {
    assert_eq!(progressive_weight(0, 20), 0.0);
    assert!(close(progressive_weight(10, 20), 110.0 / 380.0, 1e-15));
    assert_eq!(progressive_weight(19, 20), 1.0);
    assert_eq!(progressive_weight(25, 20), 1.0);
    assert_eq!(proportional_exponent(0, 20), 0.0);
    assert!(close(proportional_exponent(10, 20), 110.0 / 19.0, 1e-15));
    assert_eq!(proportional_exponent(19, 20), 20.0);

    let bank = items(&three_pl_bank(21, 10));
    let settings = EstimatorSettings::default();
    let eligible = vec![true; bank.len()];
    let dummy: Vec<usize> = (100..119).collect();
    let scores = vec![1u32; 19];
    let mut rng = StdRng::seed_from_u64(3);
    // t = 0: the score is U(0, max I), the same law for every item.
    let ctx = context(&bank, &eligible, &[], &[], 0.3, &settings, 20, None);
    let draws = 20_000;
    let mut counts = vec![0usize; bank.len()];
    for _ in 0..draws {
        counts[select_item(SelectionRule::Progressive, &ctx, 1, &mut rng).unwrap()] += 1;
    }
    let sd = (0.1 * 0.9 / draws as f64).sqrt();
    for c in &counts {
        let f = *c as f64 / draws as f64;
        assert!((f - 0.1).abs() < 4.5 * sd, "uniform at t = 0: {counts:?}");
    }
    // t = T − 1: pure information.
    for theta in [-2.0, -0.4, 0.0, 1.3, 2.5] {
        let ctx = context(
            &bank, &eligible, &dummy, &scores, theta, &settings, 20, None,
        );
        let mfi = select_item(SelectionRule::MaxInfo, &ctx, 1, &mut rng);
        for _ in 0..20 {
            assert_eq!(
                select_item(SelectionRule::Progressive, &ctx, 1, &mut rng),
                mfi
            );
        }
    }
    // In between, the most informative item wins most often but not always.
    let ctx = context(
        &bank,
        &eligible,
        &dummy[..10],
        &scores[..10],
        0.3,
        &settings,
        20,
        None,
    );
    let mfi = select_item(SelectionRule::MaxInfo, &ctx, 1, &mut rng).unwrap();
    let hits = (0..2_000)
        .filter(|_| select_item(SelectionRule::Progressive, &ctx, 1, &mut rng) == Some(mfi))
        .count();
    assert!(hits > 300 && hits < 2_000, "{hits}");
}

#[test]
fn proportional_frequencies_follow_information_to_the_power_h() {
    let params = [
        ItemParams::three_pl(1.0, 0.0, 0.2),
        ItemParams::three_pl(1.5, 0.5, 0.1),
        ItemParams::two_pl(0.6, -1.0),
        ItemParams::three_pl(2.0, 1.5, 0.2),
    ];
    let bank = items(&params);
    let settings = EstimatorSettings::default();
    let eligible = vec![true; bank.len()];
    let theta = 0.2;
    let mut rng = StdRng::seed_from_u64(4);
    // T = 4, t = 2: H = 2·3/3 = 2.
    let answered = [10, 11];
    let scores = [1, 0];
    assert_eq!(proportional_exponent(2, 4), 2.0);
    for (administered, x, h) in [(&answered[..], &scores[..], 2.0), (&[][..], &[][..], 0.0)] {
        let ctx = context(&bank, &eligible, administered, x, theta, &settings, 4, None);
        let weights: Vec<f64> = params
            .iter()
            .map(|p| information(p, theta, 1.0).powf(h))
            .collect();
        let total: f64 = weights.iter().sum();
        let draws = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..draws {
            counts[select_item(SelectionRule::Proportional, &ctx, 1, &mut rng).unwrap()] += 1;
        }
        for (c, w) in counts.iter().zip(&weights) {
            let p = w / total;
            let f = *c as f64 / draws as f64;
            let sd = (p * (1.0 - p) / draws as f64).sqrt();
            assert!((f - p).abs() < 4.5 * sd, "H = {h}: {f} vs {p}");
        }
    }
    // Large H neither overflows nor loses the order: T = 1000 near the end.
    let many: Vec<usize> = (0..999).collect();
    let ones = vec![1u32; 999];
    let ctx = context(
        &bank, &eligible, &many, &ones, theta, &settings, 1_000, None,
    );
    let mfi = select_item(SelectionRule::MaxInfo, &ctx, 1, &mut rng);
    assert_eq!(
        select_item(SelectionRule::Proportional, &ctx, 1, &mut rng),
        mfi
    );
}

#[test]
fn random_is_uniform_over_the_eligible_items() {
    let bank = items(&three_pl_bank(8, 12));
    let settings = EstimatorSettings::default();
    let eligible: Vec<bool> = (0..12).map(|i| i % 3 != 0).collect();
    let ctx = context(&bank, &eligible, &[], &[], 0.0, &settings, 20, None);
    let mut rng = StdRng::seed_from_u64(6);
    let draws = 16_000;
    let mut counts = [0usize; 12];
    for _ in 0..draws {
        counts[select_item(SelectionRule::Random, &ctx, 1, &mut rng).unwrap()] += 1;
    }
    let sd = (0.125 * 0.875 / draws as f64).sqrt();
    for (i, c) in counts.iter().enumerate() {
        if eligible[i] {
            assert!(
                (*c as f64 / draws as f64 - 0.125).abs() < 4.5 * sd,
                "{counts:?}"
            );
        } else {
            assert_eq!(*c, 0);
        }
    }
}

#[test]
fn randomesque_draws_uniformly_among_the_top_k_of_every_rule() {
    let (mut bank, administered, responses) = integrating_fixture();
    bank.extend(items(&three_pl_bank(12, 9)));
    let settings = EstimatorSettings::default();
    let eligible: Vec<bool> = (0..bank.len()).map(|i| i >= 3).collect();
    let index = InformationIndex::new(&bank, 1.0);
    let mut rng = StdRng::seed_from_u64(7);
    let k = 4;
    for rule in SelectionRule::ALL {
        // Progressive at t = T − 1 is pure information.
        let max_items = if rule == SelectionRule::Progressive {
            4
        } else {
            20
        };
        let ctx = context(
            &bank,
            &eligible,
            &administered,
            &responses,
            0.4,
            &settings,
            max_items,
            Some(&index),
        );
        match rule {
            SelectionRule::Proportional | SelectionRule::Random => {
                // Randomesque adds nothing to a draw.
                let seed = rng.random::<u64>();
                let mut a = StdRng::seed_from_u64(seed);
                let mut b = StdRng::seed_from_u64(seed);
                for _ in 0..50 {
                    assert_eq!(
                        select_item(rule, &ctx, 1, &mut a),
                        select_item(rule, &ctx, k, &mut b)
                    );
                }
            }
            _ => {
                let expected: BTreeSet<usize> = criterion_top(
                    if rule == SelectionRule::Progressive {
                        SelectionRule::MaxInfo
                    } else {
                        rule
                    },
                    &ctx,
                    k,
                )
                .into_iter()
                .collect();
                let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
                for _ in 0..800 {
                    *counts
                        .entry(select_item(rule, &ctx, k, &mut rng).unwrap())
                        .or_insert(0) += 1;
                }
                let seen: BTreeSet<usize> = counts.keys().copied().collect();
                assert_eq!(seen, expected, "{rule:?}");
                assert!(counts.values().all(|&c| c > 130), "{rule:?} {counts:?}");
                // k = 1 is the best of them, deterministically.
                let best = criterion_top(
                    if rule == SelectionRule::Progressive {
                        SelectionRule::MaxInfo
                    } else {
                        rule
                    },
                    &ctx,
                    1,
                );
                assert_eq!(
                    select_item(rule, &ctx, 1, &mut rng),
                    Some(best[0]),
                    "{rule:?}"
                );
            }
        }
    }
}

#[test]
fn ties_go_to_the_lowest_index_nan_is_never_chosen_and_nothing_gives_none() {
    let good = ItemParams::three_pl(1.5, 0.2, 0.1);
    let nan = ItemParams::new(f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    let bank = vec![
        Item::from(nan),
        Item::from(ItemParams::two_pl(0.5, 2.0)),
        Item::from(good),
        Item::from(good),
        Item::from(nan),
    ];
    let settings = EstimatorSettings::default();
    let index = InformationIndex::new(&bank, 1.0);
    let all = vec![true; bank.len()];
    let mut rng = StdRng::seed_from_u64(8);
    for rule in SelectionRule::ALL {
        let ctx = context(&bank, &all, &[2], &[1], 0.2, &settings, 20, Some(&index));
        for _ in 0..30 {
            let pick = select_item(rule, &ctx, 1, &mut rng).expect("some item");
            if rule != SelectionRule::Random {
                assert!(pick != 0 && pick != 4, "{rule:?} chose a NaN item");
            }
            if !matches!(
                rule,
                SelectionRule::Progressive | SelectionRule::Proportional | SelectionRule::Random
            ) {
                assert_eq!(pick, 2, "{rule:?}: the tie goes to the lower index");
            }
        }
        let none = vec![false; bank.len()];
        let ctx = context(&bank, &none, &[], &[], 0.2, &settings, 20, Some(&index));
        assert_eq!(select_item(rule, &ctx, 3, &mut rng), None, "{rule:?}");
        // Only NaN items eligible: nothing to choose (except at random).
        let only_nan = [true, false, false, false, true];
        let ctx = context(&bank, &only_nan, &[], &[], 0.2, &settings, 20, Some(&index));
        if rule != SelectionRule::Random {
            assert_eq!(select_item(rule, &ctx, 1, &mut rng), None, "{rule:?}");
        }
        // A short mask leaves the rest ineligible.
        let ctx = context(
            &bank,
            &[true, true],
            &[],
            &[],
            0.2,
            &settings,
            20,
            Some(&index),
        );
        let pick = select_item(rule, &ctx, 1, &mut rng);
        assert!(
            pick == Some(1) || (rule == SelectionRule::Random && pick == Some(0)),
            "{rule:?} {pick:?}"
        );
    }
}

#[test]
fn every_rule_handles_polytomous_banks() {
    let bank = mixed_bank(31, 60, 0.5, 0.0, 0.0);
    let settings = EstimatorSettings::default();
    let index = InformationIndex::new(&bank, 1.0);
    let administered = [0, 1, 2, 3];
    let responses: Vec<u32> = administered
        .iter()
        .map(|&i| (bank[i].categories() as u32 - 1).min(1))
        .collect();
    let eligible: Vec<bool> = (0..bank.len()).map(|i| i >= 4).collect();
    let mut rng = StdRng::seed_from_u64(10);
    for rule in SelectionRule::ALL {
        let ctx = context(
            &bank,
            &eligible,
            &administered,
            &responses,
            0.7,
            &settings,
            20,
            Some(&index),
        );
        let pick = select_item(rule, &ctx, 2, &mut rng).expect("some item");
        assert!(eligible[pick], "{rule:?}");
    }
    let ctx = context(
        &bank,
        &eligible,
        &administered,
        &responses,
        0.7,
        &settings,
        20,
        Some(&index),
    );
    let best = brute_top(&eligible_information(&bank, &eligible, 0.7, 1.0), 1)[0].0;
    assert_eq!(
        select_item(SelectionRule::MaxInfo, &ctx, 1, &mut rng),
        Some(best)
    );
}

// ---------------------------------------------------------------------------
// Content balancing and enemies
// ---------------------------------------------------------------------------

#[test]
fn content_targets_are_met_within_one_item_per_area() {
    let params = three_pl_bank(41, 300);
    let bank = items(&params);
    let area_names = ["algebra", "geometry", "statistics", "logic", "numbers"];
    // Areas by position, plus some items without an area or with an untargeted one.
    let areas: Vec<Option<&str>> = (0..bank.len())
        .map(|i| match i % 12 {
            11 => None,
            10 => Some("history"),
            j => Some(area_names[j % 5]),
        })
        .collect();
    let settings = EstimatorSettings::default();
    for targets in [
        vec![0.5, 0.3, 0.2, 0.0, 0.0],
        vec![5.0, 3.0, 2.0, 0.0, 0.0], // normalized
        vec![0.25, 0.25, 0.5, 0.0, 0.0],
        vec![0.7, 0.3, 0.0, 0.0, 0.0],
        vec![0.31, 0.07, 0.22, 0.13, 0.27],
        vec![0.05, 0.05, 0.6, 0.1, 0.2],
    ] {
        let balance = ContentBalance {
            targets: area_names
                .iter()
                .map(std::string::ToString::to_string)
                .zip(targets.iter().copied())
                .collect(),
        };
        balance.validate().expect("valid");
        let proportions = balance.proportions();
        let indexed = balance.area_indices(&areas);
        let mut rng = StdRng::seed_from_u64(12);
        for exam in 0..10 {
            let theta_true = rng.random_range(-2.0..2.0);
            let (mut administered, mut scores) = (Vec::new(), Vec::new());
            let mut theta = 0.0;
            for n in 0..20 {
                let mut eligible = vec![true; bank.len()];
                for &i in &administered {
                    eligible[i] = false;
                }
                let mut twin = eligible.clone();
                let area = restrict_to_content_area(&balance, &areas, &administered, &mut eligible)
                    .expect("an area has items");
                let a =
                    restrict_to_content_area_indexed(&balance, &indexed, &administered, &mut twin);
                assert_eq!(eligible, twin);
                assert_eq!(Some(area.as_str()), a.map(|a| area_names[a]));
                for (i, e) in eligible.iter().enumerate() {
                    assert!(!e || areas[i] == Some(area.as_str()));
                }
                let ctx = context(
                    &bank,
                    &eligible,
                    &administered,
                    &scores,
                    theta,
                    &settings,
                    20,
                    None,
                );
                let next = select_item(SelectionRule::MaxInfo, &ctx, 1, &mut rng).unwrap();
                administered.push(next);
                scores.push(u32::from(
                    rng.random::<f64>() < probability(&params[next], theta_true, 1.0),
                ));
                let given: Vec<Item> = administered.iter().map(|&i| bank[i].clone()).collect();
                theta = estimate_items(&settings, &given, &scores, theta).theta;
                // Every prefix stays within one item of its target.
                let total = (n + 1) as f64;
                for (k, name) in area_names.iter().enumerate() {
                    let count = administered
                        .iter()
                        .filter(|&&i| areas[i] == Some(*name))
                        .count() as f64;
                    assert!(
                        (count - total * proportions[k]).abs() <= 1.0,
                        "exam {exam}, {} items: {name} {count} vs {}",
                        n + 1,
                        total * proportions[k]
                    );
                }
            }
        }
    }
}

#[test]
fn content_balancing_skips_exhausted_areas_and_validates() {
    let balance = ContentBalance {
        targets: vec![("a".into(), 0.6), ("b".into(), 0.4)],
    };
    let areas = [Some("a"), Some("b"), Some("b"), None, Some("c")];
    // Area "a" has no eligible item left: "b" even though "a" is further behind.
    let mut eligible = vec![false, true, true, true, true];
    assert_eq!(
        restrict_to_content_area(&balance, &areas, &[], &mut eligible).as_deref(),
        Some("b")
    );
    assert_eq!(eligible, [false, true, true, false, false]);
    // No targeted area left: nothing is eligible.
    let mut eligible = vec![false, false, false, true, true];
    assert_eq!(
        restrict_to_content_area(&balance, &areas, &[1], &mut eligible),
        None
    );
    assert!(eligible.iter().all(|e| !e));
    // After one "a", "b" is further below its target.
    let mut eligible = vec![true; 5];
    assert_eq!(
        restrict_to_content_area(&balance, &areas, &[0], &mut eligible).as_deref(),
        Some("b")
    );
    for (targets, ok) in [
        (vec![], false),
        (vec![("".to_owned(), 1.0)], false),
        (vec![("a".to_owned(), -0.1)], false),
        (vec![("a".to_owned(), f64::NAN)], false),
        (vec![("a".to_owned(), 0.0), ("b".to_owned(), 0.0)], false),
        (vec![("a".to_owned(), 0.5), ("a".to_owned(), 0.5)], false),
        (vec![("a".to_owned(), 0.0), ("b".to_owned(), 2.0)], true),
    ] {
        let result = ContentBalance { targets }.validate();
        assert_eq!(result.is_ok(), ok, "{result:?}");
        if let Err(e) = result {
            assert!(matches!(e, IrtError::ContentBalance(_)));
        }
    }
}

#[test]
fn enemies_never_meet_in_an_exam() {
    let params = three_pl_bank(51, 90);
    let bank = items(&params);
    let labels: Vec<String> = (0..30).map(|g| format!("group-{g}")).collect();
    // Items 0..60 in pairs/triples of enemies, the rest free.
    let groups: Vec<Option<&str>> = (0..bank.len())
        .map(|i| (i < 60).then(|| labels[i / 2 % 30].as_str()))
        .collect();
    let indexed = group_indices(&groups);
    let settings = EstimatorSettings::default();
    let mut rng = StdRng::seed_from_u64(13);
    for exam in 0..60 {
        let rule = if exam % 2 == 0 {
            SelectionRule::MaxInfo
        } else {
            SelectionRule::Random
        };
        let mut administered: Vec<usize> = Vec::new();
        let mut scores = Vec::new();
        for _ in 0..40 {
            let mut eligible = vec![true; bank.len()];
            for &i in &administered {
                eligible[i] = false;
            }
            let mut twin = eligible.clone();
            exclude_enemies(&groups, &administered, &mut eligible);
            exclude_enemies_indexed(&indexed, &administered, &mut twin);
            assert_eq!(eligible, twin);
            let theta = rng.random_range(-2.0..2.0);
            let ctx = context(
                &bank,
                &eligible,
                &administered,
                &scores,
                theta,
                &settings,
                40,
                None,
            );
            let Some(next) = select_item(rule, &ctx, 3, &mut rng) else {
                break;
            };
            administered.push(next);
            scores.push(1);
        }
        let mut seen = HashSet::new();
        for &i in &administered {
            if let Some(g) = groups[i] {
                assert!(seen.insert(g), "exam {exam}: two items of {g}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Exposure control
// ---------------------------------------------------------------------------

#[test]
fn exposure_probabilities_follow_their_formulas() {
    let ie = ExposureControl {
        method: ExposureMethod::ItemEligibility,
        max_rate: 0.25,
    };
    let sh = ExposureControl {
        method: ExposureMethod::SympsonHetter,
        max_rate: 0.25,
    };
    assert!(ie.validate().is_ok());
    for bad in [0.0, -0.1, 1.01, f64::NAN] {
        assert!(matches!(
            ExposureControl {
                max_rate: bad,
                ..ie
            }
            .validate(),
            Err(IrtError::Exposure(_))
        ));
    }
    let counts = ExposureCounts {
        examinees: 1_000,
        administered: vec![0, 250, 200, 100, 251],
        selected: vec![0, 500, 200, 1_000, 300],
        eligible: vec![1_000, 800, 1_000, 400, 1_000],
    };
    // Never administered: eligible.
    assert_eq!(eligibility_probability(&ie, &counts, 0), 1.0);
    // On target (a = r·n): van der Linden & Veldkamp's r·e/a.
    assert!(close(
        eligibility_probability(&ie, &counts, 1),
        0.25 * 800.0 / 250.0,
        1e-15
    ));
    // Under target: capped at 1.
    assert_eq!(eligibility_probability(&ie, &counts, 2), 1.0);
    // (r(n + 1) − a)·e/a = (250.25 − 100)·400/100 > 1.
    assert_eq!(eligibility_probability(&ie, &counts, 3), 1.0);
    // Over the ceiling r·(n + 1) = 250.25: ineligible.
    assert_eq!(eligibility_probability(&ie, &counts, 4), 0.0);
    // Missing entries count as zero.
    assert_eq!(eligibility_probability(&ie, &counts, 99), 1.0);
    assert_eq!(sympson_hetter_probability(&sh, &counts, 0), 1.0);
    assert!(
        close(sympson_hetter_probability(&sh, &counts, 1), 0.0, 0.0),
        "a = r·n: ceiling"
    );
    assert_eq!(sympson_hetter_probability(&sh, &counts, 2), 1.0);
    assert!(close(
        sympson_hetter_probability(&sh, &counts, 3),
        0.25,
        1e-15
    ));
    assert_eq!(sympson_hetter_probability(&sh, &counts, 4), 0.0);
    assert_eq!(
        sympson_hetter_probability(&sh, &ExposureCounts::new(3), 1),
        1.0
    );
    assert_eq!(counts.exposure_rate(1), 0.25);
    assert_eq!(ExposureCounts::new(2).exposure_rate(0), 0.0);

    // The ineligibility draw: frequencies 1 − P(E).
    let mut rng = StdRng::seed_from_u64(14);
    let counts = ExposureCounts {
        examinees: 100,
        administered: vec![0, 25, 30],
        selected: vec![0; 3],
        eligible: vec![100, 40, 100],
    };
    let p: Vec<f64> = (0..3)
        .map(|i| eligibility_probability(&ie, &counts, i))
        .collect();
    assert!(close(p[1], (25.25 - 25.0) * 40.0 / 25.0, 1e-12));
    assert_eq!(p[2], 0.0);
    let draws = 20_000;
    let mut ineligible = [0usize; 3];
    for _ in 0..draws {
        for i in draw_ineligible_items(&ie, &counts, &mut rng) {
            ineligible[i] += 1;
        }
    }
    assert_eq!(ineligible[0], 0);
    assert_eq!(ineligible[2], draws);
    let f = ineligible[1] as f64 / draws as f64;
    assert!((f - (1.0 - p[1])).abs() < 0.01, "{f}");
    assert!(draw_ineligible_items(&sh, &counts, &mut rng).is_empty());
}

#[test]
fn the_sympson_hetter_lottery_walks_the_ranking() {
    let sh = ExposureControl {
        method: ExposureMethod::SympsonHetter,
        max_rate: 0.5,
    };
    // Items 0 and 1 are at their ceiling (K = 0), item 2 has K = 1.
    let counts = ExposureCounts {
        examinees: 10,
        administered: vec![5, 5, 0, 0],
        selected: vec![10, 10, 0, 0],
        eligible: vec![10; 4],
    };
    let mut rng = StdRng::seed_from_u64(15);
    let mut eligible = vec![true; 4];
    let mut proposed = Vec::new();
    // The "rule" ranks by index.
    let rule = |e: &[bool], _: &mut StdRng| e.iter().position(|&x| x);
    let pick = sympson_hetter_select(&sh, &counts, &mut eligible, &mut rng, &mut proposed, rule);
    assert_eq!(pick, Some(2));
    assert_eq!(proposed, [0, 1, 2]);
    assert_eq!(eligible, [false, false, true, true]);
    // Everything rejected: the first proposal is given all the same.
    let full = ExposureCounts {
        examinees: 10,
        administered: vec![5; 4],
        selected: vec![10; 4],
        eligible: vec![10; 4],
    };
    let mut eligible = vec![true, false, true, true];
    proposed.clear();
    let pick = sympson_hetter_select(&sh, &full, &mut eligible, &mut rng, &mut proposed, rule);
    assert_eq!(pick, Some(0));
    assert_eq!(proposed, [0, 2, 3]);
    let mut none = vec![false; 4];
    proposed.clear();
    assert_eq!(
        sympson_hetter_select(&sh, &full, &mut none, &mut rng, &mut proposed, rule),
        None
    );
}

/// Standard normal draw (Box–Muller).
fn normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Outcome of a simulated fleet.
struct Fleet {
    max_exposure: f64,
    rmse: f64,
    counts: ExposureCounts,
}

/// 2,000 examinees θ ~ N(0, 1), 20-item maximum-information CATs with EAP on a
/// 300-item 3PL bank, one after the other, the counts updated as a live fleet
/// would (the same examinees and responses' random stream for every method).
fn simulate_fleet(control: Option<ExposureControl>) -> Fleet {
    let params: Vec<ItemParams> = {
        let mut rng = StdRng::seed_from_u64(2_024);
        (0..300)
            .map(|_| {
                ItemParams::three_pl(
                    rng.random_range(0.6..2.2),
                    normal(&mut rng) * 1.2,
                    rng.random_range(0.05..0.25),
                )
            })
            .collect()
    };
    let bank = items(&params);
    let settings = EstimatorSettings {
        quadrature_points: 21,
        ..EstimatorSettings::default()
    };
    let index = InformationIndex::new(&bank, settings.scaling);
    let mut counts = ExposureCounts::new(bank.len());
    let mut people = StdRng::seed_from_u64(77);
    let mut lottery = StdRng::seed_from_u64(78);
    let (examinees, length) = (2_000, 20);
    let mut squared_error = 0.0;
    for _ in 0..examinees {
        let theta_true = normal(&mut people);
        let mut eligible = vec![true; bank.len()];
        if let Some(c) = control.filter(|c| c.method == ExposureMethod::ItemEligibility) {
            for i in draw_ineligible_items(&c, &counts, &mut lottery) {
                eligible[i] = false;
            }
            for (e, ok) in counts.eligible.iter_mut().zip(&eligible) {
                *e += u64::from(*ok);
            }
        }
        counts.examinees += 1;
        let (mut given, mut administered, mut scores) = (Vec::new(), Vec::new(), Vec::new());
        let mut estimate = (0.0, 1.0);
        for _ in 0..length {
            let select = |e: &[bool], rng: &mut StdRng| {
                let ctx = SelectionContext {
                    bank: &bank,
                    eligible: e,
                    administered: &administered,
                    responses: &scores,
                    theta: estimate.0,
                    standard_error: estimate.1,
                    estimator: &settings,
                    max_items: length,
                    index: Some(&index),
                    tables: None,
                };
                select_item(SelectionRule::MaxInfo, &ctx, 1, rng)
            };
            let next = match control {
                Some(c) if c.method == ExposureMethod::SympsonHetter => {
                    let mut proposed = Vec::new();
                    let next = sympson_hetter_select(
                        &c,
                        &counts,
                        &mut eligible,
                        &mut lottery,
                        &mut proposed,
                        select,
                    );
                    for i in proposed {
                        counts.selected[i] += 1;
                    }
                    next
                }
                _ => select(&eligible, &mut lottery),
            }
            .expect("the bank is large enough");
            eligible[next] = false;
            counts.administered[next] += 1;
            administered.push(next);
            given.push(bank[next].clone());
            scores.push(u32::from(
                people.random::<f64>() < probability(&params[next], theta_true, 1.0),
            ));
            let e = estimate_items(&settings, &given, &scores, estimate.0);
            estimate = (e.theta, e.standard_error);
        }
        squared_error += (estimate.0 - theta_true).powi(2);
    }
    let max_exposure = (0..bank.len())
        .map(|i| counts.exposure_rate(i))
        .fold(0.0, f64::max);
    Fleet {
        max_exposure,
        rmse: (squared_error / f64::from(examinees)).sqrt(),
        counts,
    }
}

#[test]
fn exposure_control_keeps_every_item_at_or_below_the_target_rate() {
    let free = simulate_fleet(None);
    let r_max = 0.25;
    println!(
        "no control: max exposure {:.4}, RMSE {:.4}",
        free.max_exposure, free.rmse
    );
    assert!(free.max_exposure > 0.5, "the simulation must need control");
    for method in [
        ExposureMethod::ItemEligibility,
        ExposureMethod::SympsonHetter,
    ] {
        let fleet = simulate_fleet(Some(ExposureControl {
            method,
            max_rate: r_max,
        }));
        let used = fleet.counts.administered.iter().filter(|&&a| a > 0).count();
        println!(
            "{method:?}: max exposure {:.4}, RMSE {:.4} (+{:.1} %), {used} items used",
            fleet.max_exposure,
            fleet.rmse,
            100.0 * (fleet.rmse / free.rmse - 1.0)
        );
        // r·n = 500 is an integer, so the ceiling holds exactly (module doc of
        // `exposure`): no tolerance.
        assert!(
            fleet.max_exposure <= r_max,
            "{method:?}: {}",
            fleet.max_exposure
        );
        assert!(
            fleet.rmse < 1.10 * free.rmse,
            "{method:?}: {} vs {}",
            fleet.rmse,
            free.rmse
        );
        assert_eq!(fleet.counts.administered.iter().sum::<u64>(), 2_000 * 20);
    }
}
