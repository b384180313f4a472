//! Online calibration of pretest items: 2PL or 3PL parameters of new items on the
//! operational bank's ability scale, from the responses of candidates whose ability is
//! known only through their operational items.
//!
//! Three methods, as in the online-calibration literature:
//! * **FIXED_THETA** (Stocking, 1988, "method A"): each candidate's ability is fixed at the
//!   EAP of their operational responses, and each item's likelihood is maximized as if those
//!   abilities were true.
//! * **OEM**, one EM cycle (Wainer & Mislevy, 1990): the E-step spreads each response over
//!   the quadrature nodes with the candidate's posterior from the operational items only
//!   (expected counts `n_q`, `r_q` per node), the M-step maximizes each item's expected
//!   complete-data log-likelihood `Σ_q r_q ln P_q + (n_q − r_q) ln(1 − P_q)`.
//! * **MEM**, multiple EM cycles (Ban, Hanson, Wang, Yi & Harris, 2001): cycle 1 is OEM;
//!   from cycle 2 on the posteriors also include the candidate's pretest responses under
//!   the current pretest estimates, until no parameter moves more than the tolerance.
//!
//! The 3PL's lower asymptote gets a Beta(α, β) prior (BILOG-MG's convention; Beta(6, 16),
//! mode 0.25, by default), so the M-step maximizes the posterior in `c`. Standard errors are
//! the square roots of the inverse expected information of the M-step's objective at the
//! solution (the complete-data information: a lower bound on the true sampling error, as
//! BILOG reports under EM). Item fit is the RMSD between the expected counts' proportion
//! correct and the fitted curve at each node, weighted by the expected number of candidates
//! there (the RMSD of PISA's and PIAAC's scaling).
//!
//! Candidates are read through a callback that is run once per cycle ([`calibrate`]), so a
//! caller can stream them from storage each time: memory is `O(items × nodes)` for OEM and
//! MEM, and `O(responses)` for FIXED_THETA (one ability and one response per answer).
//!
//! Owns: the estimation. Must not: read storage, or decide which responses are calibrated
//! (the caller passes the operational log-likelihood of each candidate and their pretest
//! responses).

use serde::{Deserialize, Serialize};

use super::estimate::EstimatorSettings;
use super::model::ItemParams;
use super::quadrature::add_log_prior;

mod m_step;

use m_step::{Fitted, clamp_p, fit, probability, start_values};

/// How pretest items are calibrated (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CalibrationMethod {
    /// Abilities fixed at each candidate's operational EAP.
    FixedTheta,
    /// One EM cycle with the operational posteriors.
    Oem,
    /// EM cycles with posteriors updated by the pretest responses, to convergence.
    Mem,
}

/// The model fitted to each pretest item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CalibrationModel {
    /// `a`, `b` (`c = 0`).
    TwoPl,
    /// `a`, `b`, `c` with a Beta prior on `c`.
    ThreePl,
}

/// How a calibration runs.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationSettings {
    /// The method.
    pub method: CalibrationMethod,
    /// The model.
    pub model: CalibrationModel,
    /// The ability grid (`theta_min`, `theta_max`, `quadrature_points`), the ability
    /// prior and the scaling constant `D`; the other fields are not read. The operational
    /// log-likelihoods passed in must be on these nodes.
    pub ability: EstimatorSettings,
    /// Beta(α, β) prior on the 3PL's `c` (α = β = 1: none).
    pub guessing_prior: (f64, f64),
    /// MEM: at most this many cycles.
    pub max_cycles: usize,
    /// MEM: converged once no parameter moved more than this in a cycle.
    pub tolerance: f64,
}

impl CalibrationSettings {
    /// `method` and `model` on the scale of a bank whose scaling constant is `scaling`:
    /// a N(0, 1) ability prior on 61 nodes over [-6, 6], Beta(6, 16) on `c`, MEM to a
    /// tolerance of 1e-5 in at most 200 cycles.
    #[must_use]
    pub fn new(method: CalibrationMethod, model: CalibrationModel, scaling: f64) -> Self {
        Self {
            method,
            model,
            ability: EstimatorSettings {
                quadrature_points: 61,
                theta_min: -6.0,
                theta_max: 6.0,
                scaling,
                ..EstimatorSettings::default()
            },
            guessing_prior: (6.0, 16.0),
            max_cycles: 200,
            tolerance: 1e-5,
        }
    }
}

/// One candidate, as the calibration sees them.
#[derive(Clone, Copy, Debug)]
pub struct Examinee<'a> {
    /// `ln L` of the candidate's operational responses at each node of
    /// `settings.ability.nodes()` (e.g. from [`super::log_likelihood_on_grid`]); the prior
    /// is added here.
    pub operational: &'a [f64],
    /// The pretest items they answered: (index among the calibrated items, correct).
    pub pretest: &'a [(usize, bool)],
}

/// Standard errors of one item's estimates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StandardErrors {
    /// Of `a`.
    pub a: f64,
    /// Of `b`.
    pub b: f64,
    /// Of `c` (3PL only).
    pub c: Option<f64>,
}

/// One calibrated item.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemCalibration {
    /// The estimates (`d = 1`; `c = 0` for the 2PL).
    pub params: ItemParams,
    /// Their standard errors.
    pub standard_errors: StandardErrors,
    /// Responses the item had.
    pub responses: u64,
    /// Of which correct.
    pub correct: u64,
    /// Item fit: RMSD between observed and fitted proportions correct over the nodes.
    pub rmsd: f64,
    /// Whether the M-step converged inside the parameter bounds.
    pub converged: bool,
}

/// The result of [`calibrate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Per item, in index order; `None` for an item nobody answered.
    pub items: Vec<Option<ItemCalibration>>,
    /// EM cycles run (1 for FIXED_THETA and OEM).
    pub cycles: usize,
    /// MEM: whether the cycles converged (always true for the one-pass methods).
    pub converged: bool,
}

/// Calibrates `items` pretest items. `pass` is called once per cycle (once for FIXED_THETA
/// and OEM) and must hand every candidate to the visitor it gets, the same candidates in
/// every call; an error from it ends the calibration.
///
/// # Errors
/// Whatever `pass` returns.
///
/// # Panics
/// If a candidate's `operational` does not have one value per node, or names a pretest
/// index `>= items`.
pub fn calibrate<E>(
    items: usize,
    settings: &CalibrationSettings,
    mut pass: impl FnMut(&mut dyn FnMut(&Examinee<'_>)) -> Result<(), E>,
) -> Result<Calibration, E> {
    let grid = Grid::new(settings);
    match settings.method {
        CalibrationMethod::FixedTheta => {
            let mut points: Vec<Points> = vec![Points::default(); items];
            let mut counts = Counts::new(items, grid.nodes.len());
            let mut weights = Vec::new();
            pass(&mut |examinee| {
                grid.posterior(examinee.operational, &mut weights);
                let eap: f64 = weights.iter().zip(&grid.nodes).map(|(w, t)| w * t).sum();
                let nearest = grid.nearest(eap);
                for &(item, correct) in examinee.pretest {
                    points[item].push(eap, 1.0, f64::from(u8::from(correct)));
                    counts.add_at(item, nearest, correct);
                }
            })?;
            let items = (0..items)
                .map(|j| {
                    let start = start_values(&points[j], settings);
                    let fitted = fit(&points[j], settings, start?);
                    Some(counts.finish(j, &grid, fitted, settings))
                })
                .collect();
            Ok(Calibration {
                items,
                cycles: 1,
                converged: true,
            })
        }
        CalibrationMethod::Oem | CalibrationMethod::Mem => em(items, settings, &grid, pass),
    }
}

/// The EM cycles of OEM (one) and MEM (to convergence).
fn em<E>(
    items: usize,
    settings: &CalibrationSettings,
    grid: &Grid,
    mut pass: impl FnMut(&mut dyn FnMut(&Examinee<'_>)) -> Result<(), E>,
) -> Result<Calibration, E> {
    let q = grid.nodes.len();
    let mut current: Vec<Option<Fitted>> = vec![None; items];
    let mut counts = Counts::new(items, q);
    let mut log_post = Vec::with_capacity(q);
    let mut weights = Vec::with_capacity(q);
    let mut cycles = 0;
    let mut converged = settings.method == CalibrationMethod::Oem;
    loop {
        cycles += 1;
        counts.clear();
        let update = cycles > 1;
        pass(&mut |examinee| {
            log_post.clear();
            log_post.extend_from_slice(examinee.operational);
            if update {
                for &(item, correct) in examinee.pretest {
                    if let Some(fitted) = &current[item] {
                        for (lp, &theta) in log_post.iter_mut().zip(&grid.nodes) {
                            let p = clamp_p(probability(&fitted.params, theta, grid.scaling));
                            *lp += if correct { p.ln() } else { (1.0 - p).ln() };
                        }
                    }
                }
            }
            grid.posterior(&log_post, &mut weights);
            for &(item, correct) in examinee.pretest {
                counts.add(item, &weights, correct);
            }
        })?;
        let mut moved: f64 = 0.0;
        for (j, slot) in current.iter_mut().enumerate() {
            let points = counts.points(j, grid);
            let start = slot
                .map(|f| f.params)
                .or_else(|| start_values(&points, settings));
            let Some(start) = start else { continue };
            let fitted = fit(&points, settings, start);
            moved = moved
                .max((fitted.params.a - start.a).abs())
                .max((fitted.params.b - start.b).abs())
                .max((fitted.params.c - start.c).abs());
            *slot = Some(fitted);
        }
        if settings.method == CalibrationMethod::Oem {
            break;
        }
        if cycles > 1 && moved < settings.tolerance {
            converged = true;
            break;
        }
        if cycles >= settings.max_cycles {
            break;
        }
    }
    let items = current
        .into_iter()
        .enumerate()
        .map(|(j, fitted)| fitted.map(|f| counts.finish(j, grid, f, settings)))
        .collect();
    Ok(Calibration {
        items,
        cycles,
        converged,
    })
}

/// The ability grid with its log prior.
struct Grid {
    nodes: Vec<f64>,
    log_prior: Vec<f64>,
    scaling: f64,
}

impl Grid {
    fn new(settings: &CalibrationSettings) -> Self {
        let nodes: Vec<f64> = settings.ability.nodes().collect();
        let mut log_prior = vec![0.0; nodes.len()];
        // Jeffreys' prior depends on the items: a flat prior instead.
        let _ = add_log_prior(settings.ability.prior, &nodes, &mut log_prior);
        Self {
            nodes,
            log_prior,
            scaling: settings.ability.scaling,
        }
    }

    /// Normalized posterior weights at the nodes from a log-likelihood.
    fn posterior(&self, log_likelihood: &[f64], out: &mut Vec<f64>) {
        assert_eq!(
            log_likelihood.len(),
            self.nodes.len(),
            "one operational log-likelihood value per node"
        );
        out.clear();
        out.extend(
            log_likelihood
                .iter()
                .zip(&self.log_prior)
                .map(|(l, p)| l + p),
        );
        let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for w in out.iter_mut() {
            *w = (*w - max).exp();
            total += *w;
        }
        for w in out.iter_mut() {
            *w /= total;
        }
    }

    /// The node closest to `theta`.
    fn nearest(&self, theta: f64) -> usize {
        let lo = self.nodes[0];
        let step = self.nodes[1] - lo;
        (((theta - lo) / step).round().max(0.0) as usize).min(self.nodes.len() - 1)
    }
}

/// Expected counts per item and node (`n`: candidates, `r`: correct ones), and the raw
/// response counts.
struct Counts {
    q: usize,
    n: Vec<f64>,
    r: Vec<f64>,
    responses: Vec<u64>,
    correct: Vec<u64>,
}

impl Counts {
    fn new(items: usize, q: usize) -> Self {
        Self {
            q,
            n: vec![0.0; items * q],
            r: vec![0.0; items * q],
            responses: vec![0; items],
            correct: vec![0; items],
        }
    }

    fn clear(&mut self) {
        self.n.fill(0.0);
        self.r.fill(0.0);
        self.responses.fill(0);
        self.correct.fill(0);
    }

    fn add(&mut self, item: usize, weights: &[f64], correct: bool) {
        let span = item * self.q..(item + 1) * self.q;
        for (n, w) in self.n[span.clone()].iter_mut().zip(weights) {
            *n += w;
        }
        if correct {
            for (r, w) in self.r[span].iter_mut().zip(weights) {
                *r += w;
            }
        }
        self.responses[item] += 1;
        self.correct[item] += u64::from(correct);
    }

    fn add_at(&mut self, item: usize, node: usize, correct: bool) {
        self.n[item * self.q + node] += 1.0;
        if correct {
            self.r[item * self.q + node] += 1.0;
        }
        self.responses[item] += 1;
        self.correct[item] += u64::from(correct);
    }

    /// An item's expected counts as weighted points at the nodes.
    fn points(&self, item: usize, grid: &Grid) -> Points {
        let mut points = Points::default();
        let span = item * self.q..(item + 1) * self.q;
        for ((&theta, &n), &r) in grid
            .nodes
            .iter()
            .zip(&self.n[span.clone()])
            .zip(&self.r[span])
        {
            if n > 0.0 {
                points.push(theta, n, r);
            }
        }
        points
    }

    /// The reported calibration of `item`: estimates, counts and fit.
    fn finish(
        &self,
        item: usize,
        grid: &Grid,
        fitted: Fitted,
        settings: &CalibrationSettings,
    ) -> ItemCalibration {
        let points = self.points(item, grid);
        let (mut squares, mut total) = (0.0, 0.0);
        for k in 0..points.theta.len() {
            let p = probability(&fitted.params, points.theta[k], grid.scaling);
            let observed = points.r[k] / points.n[k];
            squares += points.n[k] * (observed - p).powi(2);
            total += points.n[k];
        }
        let three = settings.model == CalibrationModel::ThreePl;
        ItemCalibration {
            params: fitted.params,
            standard_errors: StandardErrors {
                a: fitted.standard_errors[0],
                b: fitted.standard_errors[1],
                c: three.then_some(fitted.standard_errors[2]),
            },
            responses: self.responses[item],
            correct: self.correct[item],
            rmsd: if total > 0.0 {
                (squares / total).sqrt()
            } else {
                0.0
            },
            converged: fitted.converged,
        }
    }
}

/// Weighted binomial observations of one item: `r` correct out of `n` at ability `theta`.
#[derive(Clone, Debug, Default)]
struct Points {
    theta: Vec<f64>,
    n: Vec<f64>,
    r: Vec<f64>,
}

impl Points {
    fn push(&mut self, theta: f64, n: f64, r: f64) {
        self.theta.push(theta);
        self.n.push(n);
        self.r.push(r);
    }
}
