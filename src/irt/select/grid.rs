//! The likelihood and posterior of the answers so far on the estimator's
//! quadrature grid, and the selection criteria that integrate over it: `Kl`,
//! `Klp`, `Mlwi`, `Mpwi` and `Mepv` (definitions in [`super::criterion_values`]).
//!
//! Self-contained on purpose (only [`Item`]'s public probabilities and
//! information are used), so selection does not depend on the estimators'
//! internals. The log-likelihood is summed per node and the maximum subtracted
//! before exponentiating, so long tests never underflow.

use super::super::item::{Item, MAX_CATEGORIES};
use super::super::model::{ItemParams, logistic_pair};
use super::super::quadrature::{self, LogPrior, trapezoid_weights};
use super::tables::LogRow;
use super::{SelectionContext, SelectionRule};

/// Grid weights of one selection step.
pub(super) struct Posterior {
    /// The rule whose criterion [`Posterior::criterion`] computes.
    rule: SelectionRule,
    /// Scaling constant `D`.
    scaling: f64,
    /// Quadrature nodes `x_g`.
    nodes: Vec<f64>,
    /// Normalized weights `w_g` (trapezoid × likelihood, × prior for the
    /// posterior rules), summing to 1 (NaN when the posterior is degenerate).
    weights: Vec<f64>,
    /// For `Mepv` under Jeffreys' prior, whose prior changes with the
    /// candidate: the answered items' test information per node (the weights
    /// then exclude the prior).
    jeffreys_information: Option<Vec<f64>>,
    /// Centre used to compute variances without cancellation.
    center: f64,
}

impl Posterior {
    /// The weights for `rule` from the context's answers and estimator.
    pub(super) fn new(ctx: &SelectionContext<'_>, rule: SelectionRule) -> Self {
        let settings = ctx.estimator;
        let scaling = settings.scaling;
        let nodes: Vec<f64> = settings.quadrature_nodes().collect();
        let n = nodes.len();
        // Each answer with the tables' row of its `ln P` where they hold it
        // bit for bit (the same terms, summed in the same order).
        let tables = ctx.tables.filter(|t| t.fits(ctx, rule));
        let answered: Vec<(&Item, u32, Option<LogRow<'_>>)> = ctx
            .administered
            .iter()
            .zip(ctx.responses)
            .filter_map(|(&i, &x)| {
                let row = tables.and_then(|t| t.log_probabilities(i, x));
                ctx.bank.get(i).map(|item| (item, x, row))
            })
            .collect();

        let mut log_weight: Vec<f64> = nodes
            .iter()
            .enumerate()
            .map(|(g, &theta)| {
                answered
                    .iter()
                    .map(|(item, x, row)| match row {
                        Some(row) => row.at(g),
                        None => log_category_probability(item, theta, scaling, *x),
                    })
                    .sum()
            })
            .collect();
        let posterior_rule = matches!(
            rule,
            SelectionRule::Klp | SelectionRule::Mpwi | SelectionRule::Mepv
        );
        let mut jeffreys_information = None;
        if posterior_rule
            && quadrature::add_log_prior(settings.prior, &nodes, &mut log_weight)
                == LogPrior::Jeffreys
        {
            let info: Vec<f64> = nodes
                .iter()
                .map(|&theta| {
                    answered
                        .iter()
                        .map(|(item, _, _)| item.information(theta, scaling))
                        .sum()
                })
                .collect();
            if rule == SelectionRule::Mepv {
                jeffreys_information = Some(info);
            } else if !answered.is_empty() {
                for (lw, i) in log_weight.iter_mut().zip(&info) {
                    *lw += 0.5 * i.ln();
                }
            }
        }
        let max = log_weight.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let trapezoid = trapezoid_weights(&nodes);
        let mut weights: Vec<f64> = log_weight
            .iter()
            .zip(&trapezoid)
            .map(|(&lw, &t)| t * (lw - max).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        for w in &mut weights {
            *w /= total;
        }
        let center = if n > 0 && total > 0.0 && total.is_finite() {
            weights.iter().zip(&nodes).map(|(w, x)| w * x).sum()
        } else {
            0.0
        };
        Self {
            rule,
            scaling,
            nodes,
            weights,
            jeffreys_information,
            center,
        }
    }

    /// The quadrature nodes `x_g`.
    pub(super) fn nodes(&self) -> &[f64] {
        &self.nodes
    }

    /// The normalized weights `w_g`.
    pub(super) fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The centre of the variances of `Mepv` (the weighted mean of the nodes).
    pub(super) fn center(&self) -> f64 {
        self.center
    }

    /// The answered items' test information per node, for `Mepv` under
    /// Jeffreys' prior.
    pub(super) fn jeffreys_information(&self) -> Option<&[f64]> {
        self.jeffreys_information.as_deref()
    }

    /// The rule's criterion for `item` (`theta` = current estimate `θ̂`).
    pub(super) fn criterion(&self, item: &Item, theta: f64) -> f64 {
        let scaling = self.scaling;
        match self.rule {
            SelectionRule::Mlwi | SelectionRule::Mpwi => self
                .nodes
                .iter()
                .zip(&self.weights)
                .map(|(&x, &w)| w * item.information(x, scaling))
                .sum(),
            SelectionRule::Kl | SelectionRule::Klp => {
                let mut at_estimate = [0.0; MAX_CATEGORIES];
                let m = probabilities(item, theta, scaling, &mut at_estimate);
                let mut at_node = [0.0; MAX_CATEGORIES];
                self.nodes
                    .iter()
                    .zip(&self.weights)
                    .map(|(&x, &w)| {
                        probabilities(item, x, scaling, &mut at_node);
                        let kl: f64 = at_estimate[..m]
                            .iter()
                            .zip(&at_node[..m])
                            .filter(|&(&p, _)| p != 0.0)
                            .map(|(&p, &q)| p * (p.ln() - q.ln()))
                            .sum();
                        w * kl
                    })
                    .sum()
            }
            SelectionRule::Mepv => self.expected_posterior_variance(item, theta),
            _ => f64::NAN,
        }
    }

    /// `Σ_k P_k(θ̂)·Var(θ | answers, k)` (catR `EPV`).
    fn expected_posterior_variance(&self, item: &Item, theta: f64) -> f64 {
        let scaling = self.scaling;
        let mut at_estimate = [0.0; MAX_CATEGORIES];
        let m = probabilities(item, theta, scaling, &mut at_estimate);
        // Per category: Σ w P_k, Σ w P_k (x − c), Σ w P_k (x − c)².
        let mut sums = [[0.0_f64; 3]; MAX_CATEGORIES];
        let mut at_node = [0.0; MAX_CATEGORIES];
        for (g, (&x, &w)) in self.nodes.iter().zip(&self.weights).enumerate() {
            let w = match &self.jeffreys_information {
                Some(info) => w * (info[g] + item.information(x, scaling)).sqrt(),
                None => w,
            };
            probabilities(item, x, scaling, &mut at_node);
            let u = x - self.center;
            for (s, &p) in sums.iter_mut().zip(&at_node[..m]) {
                let wp = w * p;
                s[0] += wp;
                s[1] += wp * u;
                s[2] += wp * u * u;
            }
        }
        at_estimate[..m]
            .iter()
            .zip(&sums[..m])
            .map(|(&p, s)| {
                let mean = s[1] / s[0];
                p * (s[2] / s[0] - mean * mean).max(0.0)
            })
            .sum()
    }
}

/// `(P, Q)` of a 4PL item, both computed without cancellation
/// (`Q = (1 − d) + (d − c)(1 − L)`, never `1 − P`), `z` clamped to ±700 so
/// both stay positive.
fn dichotomous_pq(p: &ItemParams, theta: f64, scaling: f64) -> (f64, f64) {
    let (l, m) = logistic_pair(scaling * p.a * (theta - p.b));
    let g = p.d - p.c;
    (p.c + g * l, (1.0 - p.d) + g * m)
}

/// Writes `P(K = k | θ)` for every category into `out`; returns the number of
/// categories.
pub(super) fn probabilities(
    item: &Item,
    theta: f64,
    scaling: f64,
    out: &mut [f64; MAX_CATEGORIES],
) -> usize {
    match item {
        Item::Dichotomous(p) => {
            let (pp, q) = dichotomous_pq(p, theta, scaling);
            out[0] = q;
            out[1] = pp;
            2
        }
        Item::Polytomous(_) => {
            let m = item.categories().min(MAX_CATEGORIES);
            item.category_probabilities(theta, scaling, &mut out[..]);
            m
        }
    }
}

/// `ln P(K = x | θ)` (for a dichotomous item any `x ≥ 1` counts as correct;
/// a polytomous score past the last category counts as the last one).
fn log_category_probability(item: &Item, theta: f64, scaling: f64, x: u32) -> f64 {
    match item {
        Item::Dichotomous(p) => {
            let (pp, q) = dichotomous_pq(p, theta, scaling);
            if x >= 1 { pp.ln() } else { q.ln() }
        }
        Item::Polytomous(_) => item.category_probability(theta, scaling, x as usize).ln(),
    }
}
