//! The quadrature grid shared by estimation (EAP, [`mod@super::estimate`]) and the
//! selection rules that integrate over ability (KL, KLP, MLWI, MPWI, MEPV,
//! [`mod@super::select`]): its nodes, catR's trapezoid rule, and the prior on it
//! (log density, centre, spread).
//!
//! Owns: where the nodes are and how a function on them is integrated, so that
//! an estimate and a selection criterion computed from the same settings see the
//! same grid to the bit. Must not: know about items or responses (the likelihood
//! is the caller's; so is Jeffreys' prior, which depends on the items).

use super::estimate::{EstimatorSettings, MAX_QUADRATURE_POINTS, MIN_QUADRATURE_POINTS, Prior};

/// `n.max(2)` equally spaced values from `lo` to `hi`, the last exactly `hi`
/// (R's `seq(lo, hi, length.out = n)`).
pub(crate) fn grid(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
    let n = n.max(2);
    let step = (hi - lo) / (n - 1) as f64;
    (0..n).map(move |k| if k + 1 == n { hi } else { lo + k as f64 * step })
}

impl EstimatorSettings {
    /// The EAP quadrature nodes: `quadrature_points` equally spaced values
    /// from `theta_min` to `theta_max` (R's `seq(theta_min, theta_max,
    /// length.out = quadrature_points)`, the last one exactly `theta_max`).
    pub fn nodes(&self) -> impl Iterator<Item = f64> + use<> {
        grid(self.theta_min, self.theta_max, self.quadrature_points)
    }

    /// The number of nodes estimation and selection integrate over:
    /// `quadrature_points` clamped to [`MIN_QUADRATURE_POINTS`]..=[`MAX_QUADRATURE_POINTS`].
    pub fn quadrature_len(&self) -> usize {
        self.quadrature_points
            .clamp(MIN_QUADRATURE_POINTS, MAX_QUADRATURE_POINTS)
    }

    /// The nodes estimation and selection integrate over ([`Self::nodes`] with
    /// [`Self::quadrature_len`] points).
    pub fn quadrature_nodes(&self) -> impl Iterator<Item = f64> + use<> {
        grid(self.theta_min, self.theta_max, self.quadrature_len())
    }

    /// Centre of the prior: the normal mean, the uniform midpoint, the range
    /// midpoint for Jeffreys.
    pub fn prior_center(&self) -> f64 {
        match self.prior {
            Prior::Normal { mean, .. } => mean,
            Prior::Uniform { lower, upper } => 0.5 * (lower + upper),
            Prior::Jeffreys => 0.5 * (self.theta_min + self.theta_max),
        }
    }

    /// Spread of the prior, the standard error before any answer: the normal
    /// SD, `(upper − lower)/√12` for the uniform, the range's `/√12` for Jeffreys.
    pub fn prior_standard_deviation(&self) -> f64 {
        let sqrt12 = 12.0_f64.sqrt();
        match self.prior {
            Prior::Normal { sd, .. } => sd,
            Prior::Uniform { lower, upper } => (upper - lower) / sqrt12,
            Prior::Jeffreys => (self.theta_max - self.theta_min) / sqrt12,
        }
    }
}

/// Whether [`add_log_prior`] added the prior, or left it to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogPrior {
    /// The normal or uniform log density was added.
    Added,
    /// Jeffreys' prior, `½ ln I(θ)`, depends on the items: the caller adds it.
    Jeffreys,
}

/// Adds the prior's log density (up to a constant) at every node to `log`:
/// `−½((θ − μ)/σ)²` for the normal prior, `−∞` outside the support of the
/// uniform one.
pub(crate) fn add_log_prior(prior: Prior, nodes: &[f64], log: &mut [f64]) -> LogPrior {
    match prior {
        Prior::Normal { mean, sd } => {
            for (lp, &theta) in log.iter_mut().zip(nodes) {
                let u = (theta - mean) / sd;
                *lp -= 0.5 * u * u;
            }
            LogPrior::Added
        }
        Prior::Uniform { lower, upper } => {
            for (lp, theta) in log.iter_mut().zip(nodes) {
                if !(lower..=upper).contains(theta) {
                    *lp = f64::NEG_INFINITY;
                }
            }
            LogPrior::Added
        }
        Prior::Jeffreys => LogPrior::Jeffreys,
    }
}

/// catR's `integrate.catR`: `Σ_k (x_{k+1} − x_k)(f_k + f_{k+1})/2` over the
/// nodes `x`.
pub(crate) fn integrate(nodes: &[f64], f: impl Fn(usize) -> f64) -> f64 {
    (0..nodes.len().saturating_sub(1))
        .map(|k| (nodes[k + 1] - nodes[k]) * (f(k) + f(k + 1)) * 0.5)
        .sum()
}

/// Trapezoid weights `t_g` such that `Σ_g t_g y_g` equals [`integrate`]
/// (up to rounding): `t_g = (x_{g+1} − x_{g−1})/2`, one-sided at the ends.
pub(crate) fn trapezoid_weights(nodes: &[f64]) -> Vec<f64> {
    let n = nodes.len();
    (0..n)
        .map(|g| {
            let left = if g > 0 { nodes[g] - nodes[g - 1] } else { 0.0 };
            let right = if g + 1 < n {
                nodes[g + 1] - nodes[g]
            } else {
                0.0
            };
            0.5 * (left + right)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapezoid_weights_integrate_as_catr_does() {
        let nodes: Vec<f64> = grid(-3.0, 2.5, 17).collect();
        let f = |x: f64| (-0.5 * x * x).exp() * (1.0 + x.sin());
        let weighted: f64 = trapezoid_weights(&nodes)
            .iter()
            .zip(&nodes)
            .map(|(t, &x)| t * f(x))
            .sum();
        let catr = integrate(&nodes, |k| f(nodes[k]));
        assert!(
            (weighted - catr).abs() < 1e-14 * catr.abs(),
            "{weighted} {catr}"
        );
        assert_eq!(nodes.len(), 17);
        assert_eq!(nodes[16], 2.5);
    }

    #[test]
    fn prior_spread_and_centre() {
        let mut s = EstimatorSettings {
            prior: Prior::Uniform {
                lower: -1.0,
                upper: 3.0,
            },
            ..EstimatorSettings::default()
        };
        assert_eq!(s.prior_center(), 1.0);
        assert!((s.prior_standard_deviation() - 4.0 / 12f64.sqrt()).abs() < 1e-15);
        s.prior = Prior::Normal { mean: 0.5, sd: 2.0 };
        assert_eq!((s.prior_center(), s.prior_standard_deviation()), (0.5, 2.0));
        s.quadrature_points = 1;
        assert_eq!(s.quadrature_nodes().count(), MIN_QUADRATURE_POINTS);
    }
}
