//! Unit tests of the item models against finite differences, the 2PL and sampling.

use super::*;

fn numeric<F: Fn(f64) -> f64>(f: F, x: f64) -> f64 {
    let h = 1e-5;
    (f(x + h) - f(x - h)) / (2.0 * h)
}

fn test_items() -> Vec<Item> {
    vec![
        Item::grm(1.4, vec![-1.0, 0.2, 1.5]),
        Item::grm(0.6, vec![0.3]),
        Item::gpcm(0.9, vec![0.5, -0.3, 1.1, 2.0]),
        Item::gpcm(2.2, vec![-0.4]),
        Item::Dichotomous(ItemParams::new(1.1, 0.3, 0.2, 0.95)),
    ]
}

#[test]
fn category_probabilities_sum_to_one_and_information_is_the_score_variance() {
    for item in &test_items() {
        for &theta in &[-3.0, -0.7, 0.0, 0.9, 2.5] {
            let mut p = [0.0; MAX_CATEGORIES];
            item.category_probabilities(theta, 1.0, &mut p);
            let m = item.categories();
            let total: f64 = p[..m].iter().sum();
            assert!((total - 1.0).abs() < 1e-12, "{item:?} at {theta}");
            // Fisher information = E[(∂ ln P_K/∂θ)²], by finite differences.
            let expected: f64 = (0..m)
                .map(|k| {
                    let score = numeric(|t| item.category_probability(t, 1.0, k).ln(), theta);
                    p[k] * score * score
                })
                .sum();
            let info = item.information(theta, 1.0);
            assert!(
                (info - expected).abs() < 1e-6,
                "{item:?} at {theta}: {info} vs {expected}"
            );
        }
    }
}

#[test]
fn category_terms_match_finite_differences_and_probabilities() {
    for item in &test_items() {
        let m = item.categories();
        for &d in &[1.0, 1.702] {
            for &theta in &[-2.5, -0.3, 0.0, 0.8, 2.7] {
                let mut terms = [CategoryTerms::default(); MAX_CATEGORIES];
                item.category_terms(theta, d, &mut terms);
                let mut probs = [0.0; MAX_CATEGORIES];
                item.category_probabilities(theta, d, &mut probs);
                for k in 0..m {
                    let t = terms[k];
                    let at = |x: f64| {
                        let mut buf = [CategoryTerms::default(); MAX_CATEGORIES];
                        item.category_terms(x, d, &mut buf);
                        buf[k]
                    };
                    let ctx = format!("{item:?} D={d} θ={theta} k={k}");
                    assert!((t.p - probs[k]).abs() < 1e-15, "P {ctx}");
                    assert!(((t.log_p.exp() - t.p) / t.p).abs() < 1e-14, "ln P {ctx}");
                    assert!((t.log_p - item.log_probability(theta, d, k)).abs() < 1e-15);
                    assert!((t.d1_log - item.score(theta, d, k)).abs() < 1e-15);
                    let l1 = numeric(|x| at(x).log_p, theta);
                    let l2 = numeric(|x| at(x).d1_log, theta);
                    let l3 = numeric(|x| at(x).d2_log, theta);
                    assert!((t.d1_log - l1).abs() < 1e-7, "ℓ' {ctx}");
                    assert!((t.d2_log - l2).abs() < 1e-7, "ℓ'' {ctx}");
                    assert!((t.d3_log - l3).abs() < 1e-7, "ℓ''' {ctx}");
                    let dp = numeric(|x| at(x).p, theta);
                    let d2p = numeric(|x| at(x).d1(), theta);
                    let d3p = numeric(|x| at(x).d2(), theta);
                    assert!((t.d1() - dp).abs() < 1e-7, "P' {ctx}");
                    assert!((t.d2() - d2p).abs() < 1e-7, "P'' {ctx}");
                    assert!((t.d3() - d3p).abs() < 1e-7, "P''' {ctx}");
                }
                let it = item.information_terms(theta, d);
                let from = InformationTerms::from_categories(&terms[..m]);
                let ctx = format!("{item:?} D={d} θ={theta}");
                assert!(
                    (it.info - item.information(theta, d)).abs() < 1e-14,
                    "I {ctx}"
                );
                for (a, b) in [
                    (it.info, from.info),
                    (it.d_info, from.d_info),
                    (it.d2_info, from.d2_info),
                    (it.j, from.j),
                    (it.d_j, from.d_j),
                ] {
                    assert!((a - b).abs() < 1e-12, "{a} vs {b}: {ctx}");
                }
                let di = numeric(|x| item.information(x, d), theta);
                let d2i = numeric(|x| item.information_terms(x, d).d_info, theta);
                let dj = numeric(|x| item.information_terms(x, d).j, theta);
                assert!((it.d_info - di).abs() < 1e-7, "I' {ctx}");
                assert!((it.d2_info - d2i).abs() < 1e-7, "I'' {ctx}");
                assert!((it.d_j - dj).abs() < 1e-7, "J' {ctx}");
                let j: f64 = (0..m)
                    .map(|k| terms[k].d1() * terms[k].d2() / terms[k].p)
                    .sum();
                assert!((it.j - j).abs() < 1e-12, "J {ctx}");
            }
        }
    }
}

#[test]
fn gpcm_warm_j_equals_the_information_derivative() {
    let item = Item::gpcm(1.3, vec![0.5, -0.3, 1.1]);
    for &theta in &[-2.0, 0.0, 0.7, 3.0] {
        let t = item.information_terms(theta, 1.702);
        assert!((t.j - t.d_info).abs() < 1e-13, "{t:?}");
        assert!((t.d_j - t.d2_info).abs() < 1e-12, "{t:?}");
    }
}

#[test]
fn log_probabilities_stay_exact_far_in_the_tails() {
    // GRM: ln P_0 at θ far above every boundary is ln σ̄(z_1) = −z_1 − ln(1 + e^−z_1).
    let item = Item::grm(2.0, vec![-1.0, 0.0, 1.0]);
    let lp = item.log_probability(1000.0, 1.0, 0);
    assert!((lp - (-2.0 * 1001.0)).abs() < 1e-9, "{lp}");
    // P_1 = σ(z_1) − σ(z_2): ln ≈ −z_2 + ln(1 − e^−Δ) for large θ.
    let lp = item.log_probability(1000.0, 1.0, 1);
    let expected = -2.0 * 1000.0 + (1.0 - (-2.0_f64).exp()).ln();
    assert!((lp - expected).abs() < 1e-9, "{lp} vs {expected}");
    let gpcm = Item::gpcm(1.0, vec![0.0, 1.0]);
    // ζ = (0, θ, 2θ − 1): ln P_0 ≈ −(2θ − 1) for large θ.
    let lp = gpcm.log_probability(500.0, 1.0, 0);
    assert!((lp + 999.0).abs() < 1e-9, "{lp}");
    for item in &test_items() {
        for theta in [-800.0, -40.0, 40.0, 800.0] {
            let info = item.information(theta, 1.0);
            assert!(info.is_finite() && info >= 0.0);
            let mut terms = [CategoryTerms::default(); MAX_CATEGORIES];
            item.category_terms(theta, 1.0, &mut terms);
            for t in &terms[..item.categories()] {
                assert!(t.log_p.is_finite() && t.d1_log.is_finite() && t.d3_log.is_finite());
            }
        }
    }
}

#[test]
fn one_threshold_items_are_the_2pl() {
    let two_pl = ItemParams::two_pl(1.7, -0.4);
    for item in [Item::grm(1.7, vec![-0.4]), Item::gpcm(1.7, vec![-0.4])] {
        for &theta in &[-3.0, -0.4, 0.1, 2.0] {
            let p = probability(&two_pl, theta, 1.702);
            assert!((item.category_probability(theta, 1.702, 1) - p).abs() < 1e-15);
            let i = dichotomous_information(&two_pl, theta, 1.702);
            assert!((item.information(theta, 1.702) - i).abs() < 1e-14);
            let a = item.information_terms(theta, 1.702);
            let b = Item::Dichotomous(two_pl).information_terms(theta, 1.702);
            assert!((a.d_info - b.d_info).abs() < 1e-13);
            assert!((a.d2_info - b.d2_info).abs() < 1e-13);
            assert!((a.j - b.j).abs() < 1e-13);
            assert!((a.d_j - b.d_j).abs() < 1e-13);
        }
    }
}

#[test]
fn draw_response_follows_the_category_probabilities() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for item in &test_items() {
        let theta = 0.4;
        let n = 200_000;
        let mut counts = [0_usize; MAX_CATEGORIES];
        for _ in 0..n {
            counts[draw_response(item, theta, 1.0, &mut rng) as usize] += 1;
        }
        for (k, &count) in counts.iter().enumerate().take(item.categories()) {
            let p = item.category_probability(theta, 1.0, k);
            let freq = count as f64 / n as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (freq - p).abs() < 5.0 * sd + 1e-12,
                "{item:?} k={k}: {freq} vs {p}"
            );
        }
        assert_eq!(counts[item.categories()..].iter().sum::<usize>(), 0);
    }
}

#[test]
fn serde_keeps_the_contract_shape_for_dichotomous_items() {
    let item = Item::Dichotomous(ItemParams::three_pl(1.5, 0.2, 0.2));
    assert_eq!(
        serde_json::to_string(&item).unwrap(),
        r#"{"a":1.5,"b":0.2,"c":0.2}"#
    );
    let poly: Item =
        serde_json::from_str(r#"{"model":"GPCM","a":1.0,"thresholds":[0.0,1.0]}"#).unwrap();
    assert_eq!(poly, Item::gpcm(1.0, vec![0.0, 1.0]));
    let back: Item = serde_json::from_str(r#"{"a":1.5,"b":0.2,"c":0.2}"#).unwrap();
    assert_eq!(back, item);
}

/// The vectorized grid log-probabilities are the scalar ones within a few ulp
/// of their terms, on nodes far into both tails (clamped exponentials) and
/// across chunks of nodes, for random GRM and GPCM items of every size.
#[test]
fn grid_log_probabilities_match_the_scalar_ones() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    let mut nodes: Vec<f64> = (0..150)
        .map(|i| -9.0 + 18.0 * f64::from(i) / 149.0)
        .collect();
    nodes.extend([-800.0, -40.0, -1e-300, 0.0, 40.0, 800.0]);
    let mut worst = 0.0_f64;
    for round in 0..400 {
        let m = rng.random_range(1..MAX_CATEGORIES.min(9));
        let mut t: Vec<f64> = (0..m).map(|_| rng.random_range(-4.0..4.0)).collect();
        let a = rng.random_range(0.1..4.0);
        let item = if round % 2 == 0 {
            t.sort_by(f64::total_cmp);
            t.dedup();
            Item::grm(a, t)
        } else {
            Item::gpcm(a, t)
        };
        let Item::Polytomous(p) = &item else {
            unreachable!()
        };
        for k in 0..=m + 1 {
            for scaling in [1.0, 1.702] {
                let mut scalar = vec![0.5; nodes.len()];
                let mut grid = scalar.clone();
                add_log_probabilities(p, k, scaling, &nodes, &mut scalar);
                add_log_probabilities_on_grid(p, k, scaling, &nodes, &mut grid);
                for ((x, s), g) in nodes.iter().zip(&scalar).zip(&grid) {
                    // Terms as large as |z|·m: relative to the largest.
                    let scale = 1.0 + scaling * a * (x.abs() + 4.0) * m as f64;
                    let err = (s - g).abs() / scale;
                    worst = worst.max(err);
                    assert!(err < 1e-14, "{item:?} k={k} θ={x}: {s} vs {g}");
                }
            }
        }
    }
    assert!(worst > 0.0, "identical: not the fast path");
}
