//! The modal estimators (MLE, MAP, WLE): the root of the estimating equation
//! by a scan for a sign change and Brent's method, and their standard errors.

use super::super::quadrature::grid;
use super::pattern::{Pattern, Sums};
use super::{Estimate, EstimatorSettings, Prior, SeType};

/// Largest distance between two points of the root scan grid.
const SCAN_STEP: f64 = 0.25;
/// Largest number of scan intervals (very wide ranges get a coarser scan).
const MAX_SCAN_INTERVALS: usize = 400;
/// Absolute tolerance passed to Brent's method.
const ROOT_TOLERANCE: f64 = 1e-13;
/// Iteration cap of Brent's method (it converges in far fewer).
const ROOT_MAX_ITERATIONS: usize = 500;

/// The estimating equation of a modal estimator.
#[derive(Clone, Copy, Debug)]
pub(super) enum Equation {
    /// `S(θ) = 0`.
    Mle,
    /// `S(θ) + (μ − θ)/σ² = 0`.
    MapNormal {
        /// Prior mean.
        mean: f64,
        /// Prior SD.
        sd: f64,
    },
    /// `S(θ) = 0` on the prior's support intersected with the range.
    MapUniform,
    /// `S(θ) + I'(θ)/(2 I(θ)) = 0`.
    MapJeffreys,
    /// `S(θ) + J(θ)/(2 I(θ)) = 0`.
    Wle,
}

impl Equation {
    /// The estimating function `T(θ)` whose root is the estimate.
    fn value(self, s: &Sums, theta: f64) -> f64 {
        match self {
            Self::Mle | Self::MapUniform => s.score,
            Self::MapNormal { mean, sd } => s.score + (mean - theta) / (sd * sd),
            Self::MapJeffreys => s.score + s.over_two_info(s.terms.d_info),
            Self::Wle => s.score + s.over_two_info(s.terms.j),
        }
    }

    /// The objective used to choose among several roots (see the module doc),
    /// from `(log L(θ), I(θ))`.
    fn objective(self, (log_lik, info): (f64, f64), theta: f64) -> f64 {
        match self {
            Self::Mle | Self::MapUniform => log_lik,
            Self::MapNormal { mean, sd } => {
                let u = (theta - mean) / sd;
                log_lik - 0.5 * u * u
            }
            Self::MapJeffreys | Self::Wle => log_lik + 0.5 * info.ln(),
        }
    }

    /// Standard error at the estimate (table in the module doc).
    fn standard_error(self, s: &Sums, se_type: SeType) -> f64 {
        let t = &s.terms;
        let i = t.info;
        let classic = 1.0 / i.sqrt();
        // Denominator `−T'(θ̂)` of the estimating function.
        let denominator = match self {
            Self::Mle | Self::MapUniform => return classic,
            Self::MapNormal { sd, .. } => i + 1.0 / (sd * sd),
            Self::MapJeffreys => i - (t.d2_info * i - t.d_info * t.d_info) / (2.0 * i * i),
            Self::Wle => match se_type {
                SeType::Classic => return classic,
                SeType::Sandwich => i - (t.d_j * i - t.j * t.d_info) / (2.0 * i * i),
            },
        };
        let se = match se_type {
            SeType::Classic => 1.0 / denominator.sqrt(),
            SeType::Sandwich => i.sqrt() / denominator.abs(),
        };
        if se.is_finite() && se > 0.0 {
            se
        } else {
            classic
        }
    }
}

/// MAP, MLE or WLE: the root of `equation` on the range (see the module doc)
/// and its standard error.
pub(super) fn modal<P: Pattern>(
    settings: &EstimatorSettings,
    pattern: P,
    equation: Equation,
) -> Estimate {
    let (mut lo, mut hi) = (settings.theta_min, settings.theta_max);
    if let (Equation::MapUniform, Prior::Uniform { lower, upper }) = (equation, settings.prior) {
        let (l, u) = (lo.max(lower), hi.min(upper));
        if l < u {
            (lo, hi) = (l, u);
        }
    }
    let scaling = settings.scaling;
    let t = |theta: f64| equation.value(&pattern.sums(theta, scaling), theta);
    let objective = |theta: f64| {
        equation.objective(
            pattern.log_likelihood_and_information(theta, scaling),
            theta,
        )
    };

    // Best candidate so far and its objective (computed only when needed).
    let mut best: Option<(f64, Option<f64>)> = None;
    let mut consider = |theta: f64| match best {
        None => best = Some((theta, None)),
        Some((b, b_obj)) => {
            let b_obj = b_obj.unwrap_or_else(|| objective(b));
            let obj = objective(theta);
            best = Some(if obj > b_obj {
                (theta, Some(obj))
            } else {
                (b, Some(b_obj))
            });
        }
    };

    let intervals = (((hi - lo) / SCAN_STEP).ceil() as usize).clamp(1, MAX_SCAN_INTERVALS);
    let mut prev = (lo, t(lo));
    if prev.1 <= 0.0 {
        consider(lo);
    }
    for x in grid(lo, hi, intervals + 1).skip(1) {
        let fx = t(x);
        if prev.1 > 0.0 && fx <= 0.0 {
            consider(brent(&t, prev.0, x, prev.1, fx));
        }
        prev = (x, fx);
    }
    let last = prev.1;
    if last >= 0.0 {
        consider(hi);
    }
    // Only reachable when T is NaN somewhere (invalid items): stay in range.
    let theta = best.map_or(0.5 * (lo + hi), |(b, _)| b);
    let sums = pattern.sums(theta, scaling);
    Estimate {
        theta,
        standard_error: equation.standard_error(&sums, settings.se_type),
    }
}

/// Brent's root finder (Brent, 1973, ch. 4; the `zeroin` of R's `uniroot`)
/// on `[a, b]` with `f(a) = fa`, `f(b) = fb` of opposite signs (or one zero).
fn brent(f: &impl Fn(f64) -> f64, a: f64, b: f64, fa: f64, fb: f64) -> f64 {
    let (mut a, mut b, mut fa, mut fb) = (a, b, fa, fb);
    if fa == 0.0 {
        return a;
    }
    if fb == 0.0 {
        return b;
    }
    let (mut c, mut fc) = (a, fa);
    for _ in 0..ROOT_MAX_ITERATIONS {
        let prev_step = b - a;
        if fc.abs() < fb.abs() {
            (a, b, c) = (b, c, b);
            (fa, fb, fc) = (fb, fc, fb);
        }
        let tol_act = 2.0 * f64::EPSILON * b.abs() + ROOT_TOLERANCE / 2.0;
        let mut new_step = (c - b) / 2.0;
        if new_step.abs() <= tol_act || fb == 0.0 {
            return b;
        }
        if prev_step.abs() >= tol_act && fa.abs() > fb.abs() {
            let cb = c - b;
            let (mut p, mut q);
            if a == c {
                // Secant step.
                let t1 = fb / fa;
                p = cb * t1;
                q = 1.0 - t1;
            } else {
                // Inverse quadratic interpolation.
                let qq = fa / fc;
                let t1 = fb / fc;
                let t2 = fb / fa;
                p = t2 * (cb * qq * (qq - t1) - (b - a) * (t1 - 1.0));
                q = (qq - 1.0) * (t1 - 1.0) * (t2 - 1.0);
            }
            if p > 0.0 {
                q = -q;
            } else {
                p = -p;
            }
            if p < 0.75 * cb * q - (tol_act * q).abs() / 2.0 && p < (prev_step * q / 2.0).abs() {
                new_step = p / q;
            }
        }
        if new_step.abs() < tol_act {
            new_step = if new_step > 0.0 { tol_act } else { -tol_act };
        }
        (a, fa) = (b, fb);
        b += new_step;
        fb = f(b);
        if (fb > 0.0 && fc > 0.0) || (fb < 0.0 && fc < 0.0) {
            (c, fc) = (a, fa);
        }
    }
    b
}
