//! The expected a posteriori estimate (catR `eapEst`/`eapSem`) on the
//! quadrature grid of [`super::super::quadrature`].

use super::super::estimate::{Estimate, EstimatorSettings, MAX_QUADRATURE_POINTS};
use super::super::quadrature::{self, LogPrior};
use super::clamp_to_range;
use super::pattern::Pattern;

/// EAP estimate and posterior SD (catR `eapEst`/`eapSem`), or `None` when the
/// posterior has no mass on the nodes (only with invalid settings or items).
pub(super) fn eap<P: Pattern>(settings: &EstimatorSettings, pattern: P) -> Option<Estimate> {
    let n = settings.quadrature_len();
    let scaling = settings.scaling;
    let mut node_buf = [0.0_f64; MAX_QUADRATURE_POINTS];
    let nodes = &mut node_buf[..n];
    for (x, value) in nodes.iter_mut().zip(settings.quadrature_nodes()) {
        *x = value;
    }
    let nodes: &[f64] = nodes;

    // Log posterior (up to a constant) at every node.
    let mut buffer = [0.0_f64; MAX_QUADRATURE_POINTS];
    let log_post = &mut buffer[..n];
    pattern.log_likelihood(nodes, scaling, log_post);
    if quadrature::add_log_prior(settings.prior, nodes, log_post) == LogPrior::Jeffreys {
        for (lp, &theta) in log_post.iter_mut().zip(nodes) {
            *lp += 0.5 * pattern.information(theta, scaling).ln();
        }
    }

    let max = log_post.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return None;
    }
    for lp in log_post.iter_mut() {
        *lp = (*lp - max).exp();
    }
    let weights: &[f64] = log_post;
    let mass = quadrature::integrate(nodes, |k| weights[k]);
    if !(mass > 0.0 && mass.is_finite()) {
        return None;
    }
    // A convex combination of the nodes, but rounding can put it an ulp
    // outside the range when the posterior sits on an end node.
    let theta = clamp_to_range(
        quadrature::integrate(nodes, |k| nodes[k] * weights[k]) / mass,
        settings.theta_min,
        settings.theta_max,
    );
    let variance = quadrature::integrate(nodes, |k| {
        let u = nodes[k] - theta;
        u * u * weights[k]
    }) / mass;
    Some(Estimate {
        theta,
        standard_error: variance.sqrt(),
    })
}
