//! The M-step of every calibration method: one item's parameters maximizing the
//! (expected) complete-data log-likelihood of weighted binomial observations, plus the
//! Beta prior's log density in `c` for the 3PL, by Fisher scoring with step halving; its
//! standard errors; and the starting values.
//!
//! Owns: one item's optimization. Must not: know where the observations come from.

use super::{CalibrationModel, CalibrationSettings, Points};
use crate::irt::model::ItemParams;

/// Bounds of the estimates: an item whose likelihood keeps improving towards one of them
/// (everyone right, say) stops there and is reported as not converged.
const A_RANGE: (f64, f64) = (0.01, 20.0);
const B_RANGE: (f64, f64) = (-15.0, 15.0);
const C_RANGE: (f64, f64) = (1e-6, 0.6);

/// One item's M-step result.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fitted {
    pub(super) params: ItemParams,
    pub(super) standard_errors: [f64; 3],
    pub(super) converged: bool,
}

/// `c + (1 − c)·σ(D·a·(θ − b))` (the 3PL, `d = 1`).
pub(super) fn probability(params: &ItemParams, theta: f64, scaling: f64) -> f64 {
    crate::irt::model::probability(params, theta, scaling)
}

/// Keeps logarithms finite.
pub(super) fn clamp_p(p: f64) -> f64 {
    p.clamp(1e-12, 1.0 - 1e-12)
}

/// Starting values from the overall proportion correct and mean ability: `a = 1`, `c` at
/// its prior's mode (3PL), and the `b` that gives that proportion at the mean ability.
pub(super) fn start_values(points: &Points, settings: &CalibrationSettings) -> Option<ItemParams> {
    let n: f64 = points.n.iter().sum();
    if n <= 0.0 {
        return None;
    }
    let r: f64 = points.r.iter().sum();
    let mean = points
        .theta
        .iter()
        .zip(&points.n)
        .map(|(t, n)| t * n)
        .sum::<f64>()
        / n;
    let c = match settings.model {
        CalibrationModel::TwoPl => 0.0,
        CalibrationModel::ThreePl => {
            let (alpha, beta) = settings.guessing_prior;
            if alpha + beta > 2.0 {
                ((alpha - 1.0) / (alpha + beta - 2.0)).clamp(0.05, 0.35)
            } else {
                0.2
            }
        }
    };
    let p = ((r / n - c) / (1.0 - c)).clamp(0.02, 0.98);
    let b = mean - (p / (1.0 - p)).ln() / settings.ability.scaling;
    Some(ItemParams::three_pl(1.0, b.clamp(B_RANGE.0, B_RANGE.1), c))
}

/// The M-step: maximizes `Σ r ln P + (n − r) ln(1 − P)` (+ the Beta prior's log density
/// in `c` for the 3PL) by Fisher scoring with step halving, from `start`.
pub(super) fn fit(points: &Points, settings: &CalibrationSettings, start: ItemParams) -> Fitted {
    let three = settings.model == CalibrationModel::ThreePl;
    let k = if three { 3 } else { 2 };
    let objective = Objective {
        points,
        scaling: settings.ability.scaling,
        prior: if three {
            settings.guessing_prior
        } else {
            (1.0, 1.0)
        },
        three,
    };
    let mut x = [start.a, start.b, if three { start.c } else { 0.0 }];
    let mut value = objective.value(&x);
    let mut converged = false;
    for _ in 0..200 {
        let (score, info) = objective.derivatives(&x);
        let Some(step) = solve(&info, &score, k) else {
            break;
        };
        let mut scale = 1.0;
        let mut accepted = None;
        while scale > 1e-10 {
            let mut trial = x;
            for i in 0..k {
                trial[i] += scale * step[i];
            }
            clamp_params(&mut trial);
            let trial_value = objective.value(&trial);
            if trial_value >= value - 1e-12 * value.abs().max(1.0) {
                accepted = Some((trial, trial_value));
                break;
            }
            scale *= 0.5;
        }
        let Some((next, next_value)) = accepted else {
            converged = true;
            break;
        };
        let moved = (0..k).map(|i| (next[i] - x[i]).abs()).fold(0.0, f64::max);
        x = next;
        value = next_value;
        if moved < 1e-10 {
            converged = true;
            break;
        }
    }
    let at_bound = x[0] <= A_RANGE.0
        || x[0] >= A_RANGE.1
        || x[1] <= B_RANGE.0
        || x[1] >= B_RANGE.1
        || (three && (x[2] <= C_RANGE.0 || x[2] >= C_RANGE.1));
    let (_, info) = objective.derivatives(&x);
    let mut standard_errors = [f64::NAN; 3];
    for (i, se) in standard_errors.iter_mut().enumerate().take(k) {
        let mut unit = [0.0; 3];
        unit[i] = 1.0;
        if let Some(column) = solve(&info, &unit, k) {
            *se = column[i].max(0.0).sqrt();
        }
    }
    if !three {
        standard_errors[2] = 0.0;
    }
    Fitted {
        params: ItemParams::three_pl(x[0], x[1], if three { x[2] } else { 0.0 }),
        standard_errors,
        converged: converged && !at_bound,
    }
}

fn clamp_params(x: &mut [f64; 3]) {
    x[0] = x[0].clamp(A_RANGE.0, A_RANGE.1);
    x[1] = x[1].clamp(B_RANGE.0, B_RANGE.1);
    x[2] = if x[2] == 0.0 {
        0.0
    } else {
        x[2].clamp(C_RANGE.0, C_RANGE.1)
    };
}

/// One item's M-step objective.
struct Objective<'a> {
    points: &'a Points,
    scaling: f64,
    /// Beta(α, β) on `c`.
    prior: (f64, f64),
    three: bool,
}

impl Objective<'_> {
    fn params(&self, x: &[f64; 3]) -> ItemParams {
        ItemParams::three_pl(x[0], x[1], if self.three { x[2] } else { 0.0 })
    }

    fn value(&self, x: &[f64; 3]) -> f64 {
        let params = self.params(x);
        let p = self.points;
        let mut value = 0.0;
        for i in 0..p.theta.len() {
            let prob = clamp_p(probability(&params, p.theta[i], self.scaling));
            value += p.r[i] * prob.ln() + (p.n[i] - p.r[i]) * (1.0 - prob).ln();
        }
        if self.three {
            let (alpha, beta) = self.prior;
            value += (alpha - 1.0) * x[2].ln() + (beta - 1.0) * (1.0 - x[2]).ln();
        }
        value
    }

    /// The score and the expected information (with the prior's curvature).
    fn derivatives(&self, x: &[f64; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
        let (a, b, c) = (x[0], x[1], if self.three { x[2] } else { 0.0 });
        let d = self.scaling;
        let p = self.points;
        let mut score = [0.0; 3];
        let mut info = [[0.0; 3]; 3];
        for i in 0..p.theta.len() {
            let psi = 1.0 / (1.0 + (-d * a * (p.theta[i] - b)).exp());
            let prob = clamp_p(c + (1.0 - c) * psi);
            let slope = (1.0 - c) * psi * (1.0 - psi);
            let grad = [slope * d * (p.theta[i] - b), -slope * d * a, 1.0 - psi];
            let pq = prob * (1.0 - prob);
            let residual = (p.r[i] - p.n[i] * prob) / pq;
            for (s, g) in score.iter_mut().zip(&grad) {
                *s += residual * g;
            }
            for (row, gi) in info.iter_mut().zip(&grad) {
                for (cell, gj) in row.iter_mut().zip(&grad) {
                    *cell += p.n[i] * gi * gj / pq;
                }
            }
        }
        if self.three {
            let (alpha, beta) = self.prior;
            score[2] += (alpha - 1.0) / c - (beta - 1.0) / (1.0 - c);
            info[2][2] += (alpha - 1.0) / (c * c) + (beta - 1.0) / ((1.0 - c) * (1.0 - c));
        }
        (score, info)
    }
}

/// Solves the leading `k × k` system `m·x = v` (Gaussian elimination, partial pivoting);
/// `None` when it is singular.
fn solve(m: &[[f64; 3]; 3], v: &[f64; 3], k: usize) -> Option<[f64; 3]> {
    let mut a = *m;
    let mut x = *v;
    for col in 0..k {
        let pivot = (col..k).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 || !a[pivot][col].is_finite() {
            return None;
        }
        a.swap(col, pivot);
        x.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..k {
            let factor = a[row][col] / pivot_row[col];
            for (cell, p) in a[row][col..k].iter_mut().zip(&pivot_row[col..k]) {
                *cell -= factor * p;
            }
            x[row] -= factor * x[col];
        }
    }
    for col in (0..k).rev() {
        let mut sum = x[col];
        for j in col + 1..k {
            sum -= a[col][j] * x[j];
        }
        x[col] = sum / a[col][col];
    }
    x.iter().take(k).all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::super::CalibrationMethod;
    use super::*;

    /// Expected counts exactly on a known curve: the M-step finds that curve.
    fn exact_points(truth: ItemParams, scaling: f64) -> Points {
        let mut points = Points::default();
        for k in 0..41 {
            let theta = -4.0 + 0.2 * f64::from(k);
            let n = 1000.0 * (-0.5 * theta * theta).exp();
            points.push(theta, n, n * probability(&truth, theta, scaling));
        }
        points
    }

    #[test]
    fn the_m_step_recovers_a_curve_from_its_exact_expected_counts() {
        for (truth, model, scaling) in [
            (ItemParams::two_pl(1.4, -0.3), CalibrationModel::TwoPl, 1.0),
            (ItemParams::two_pl(0.6, 1.7), CalibrationModel::TwoPl, 1.702),
            (
                ItemParams::three_pl(1.8, 0.4, 0.22),
                CalibrationModel::ThreePl,
                1.0,
            ),
        ] {
            let mut settings = CalibrationSettings::new(CalibrationMethod::Oem, model, scaling);
            settings.guessing_prior = (1.0, 1.0);
            let points = exact_points(truth, scaling);
            let start = start_values(&points, &settings).expect("responses");
            let fitted = fit(&points, &settings, start);
            assert!(fitted.converged, "{truth:?}");
            for (got, want) in [
                (fitted.params.a, truth.a),
                (fitted.params.b, truth.b),
                (fitted.params.c, truth.c),
            ] {
                assert!(
                    (got - want).abs() < 1e-6,
                    "{:?} vs {truth:?}",
                    fitted.params
                );
            }
            assert!(fitted.standard_errors[0] > 0.0 && fitted.standard_errors[1] > 0.0);
        }
    }

    #[test]
    fn an_item_everyone_answered_right_stops_at_a_bound_and_says_so() {
        let mut points = Points::default();
        for k in 0..10 {
            points.push(-2.0 + 0.4 * f64::from(k), 50.0, 50.0);
        }
        let settings =
            CalibrationSettings::new(CalibrationMethod::Oem, CalibrationModel::TwoPl, 1.0);
        let start = start_values(&points, &settings).expect("responses");
        let fitted = fit(&points, &settings, start);
        assert!(!fitted.converged, "{fitted:?}");
        assert!(fitted.params.a.is_finite() && fitted.params.b.is_finite());
    }

    #[test]
    fn solve_handles_pivoting_and_singular_systems() {
        let m = [[0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(solve(&m, &[4.0, 6.0, 0.0], 2), Some([2.0, 2.0, 0.0]));
        assert_eq!(
            solve(
                &[[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0; 3]],
                &[1.0, 2.0, 0.0],
                2
            ),
            None
        );
    }
}
