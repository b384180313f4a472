//! Response patterns as the estimators see them ([`Pattern`]): the 4PL fast
//! path ([`Binary`]) and any mix of dichotomous and polytomous items ([`Mixed`]),
//! their score and information sums, and the log-likelihood on a grid.
//!
//! Owns: the per-item arithmetic of estimation. Must not: choose an estimator
//! or know about priors (that is [`super`] and [`super::super::quadrature`]).

use super::super::item::{
    CategoryTerms, InformationTerms, Item, MAX_CATEGORIES, PolytomousItem,
    add_log_probabilities_on_grid, polytomous_terms,
};
use super::super::model::{ItemParams, ItemTerms, information, response_probability};

/// A response pattern as the estimators see it: everything they compute from
/// the items and the responses. Two implementations: [`Binary`] (4PL items and
/// right/wrong answers, the fast path of [`estimate`]) and [`Mixed`] (any
/// items and category scores).
pub(super) trait Pattern: Copy {
    /// No answers.
    fn is_empty(self) -> bool;
    /// `Some(true)` when every response is its item's highest category,
    /// `Some(false)` when every one is the lowest, `None` otherwise.
    fn constant(self) -> Option<bool>;
    /// Test information `Σ I_i(θ)`.
    fn information(self, theta: f64, scaling: f64) -> f64;
    /// The sums of the modal estimators at `theta`.
    fn sums(self, theta: f64, scaling: f64) -> Sums;
    /// `(log L(θ), I(θ))`, for the objective of [`Equation::objective`].
    fn log_likelihood_and_information(self, theta: f64, scaling: f64) -> (f64, f64);
    /// Writes `log L` at every node into `out` (`nodes.len() == out.len() ≤`
    /// [`MAX_QUADRATURE_POINTS`]).
    fn log_likelihood(self, nodes: &[f64], scaling: f64, out: &mut [f64]);
}

/// A dichotomous item, stored as [`ItemParams`] or as [`Item::Dichotomous`].
pub(super) trait AsParams {
    /// The 4PL parameters.
    fn params(&self) -> &ItemParams;
}

impl AsParams for ItemParams {
    #[inline(always)]
    fn params(&self) -> &ItemParams {
        self
    }
}

impl AsParams for Item {
    #[inline(always)]
    fn params(&self) -> &ItemParams {
        match self {
            Item::Dichotomous(p) => p,
            // `Binary` over `Item`s is only built after checking that every
            // item is dichotomous (`estimate_items`).
            Item::Polytomous(_) => unreachable!("Binary pattern with a polytomous item"),
        }
    }
}

/// A right/wrong response, stored as `bool` or as a category score.
pub(super) trait AsCorrect: Copy {
    /// Whether the answer is right.
    fn correct(self) -> bool;
}

impl AsCorrect for bool {
    #[inline(always)]
    fn correct(self) -> bool {
        self
    }
}

impl AsCorrect for u32 {
    #[inline(always)]
    fn correct(self) -> bool {
        self != 0
    }
}

/// Dichotomous items and right/wrong responses (same lengths).
pub(super) struct Binary<'a, T, R> {
    /// The items.
    pub(super) items: &'a [T],
    /// The responses.
    pub(super) responses: &'a [R],
}

// Not derived: the derive would require `T: Copy` and `R: Copy`.
impl<T, R> Clone for Binary<'_, T, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, R> Copy for Binary<'_, T, R> {}

impl<T: AsParams, R: AsCorrect> Pattern for Binary<'_, T, R> {
    fn is_empty(self) -> bool {
        self.responses.is_empty()
    }

    fn constant(self) -> Option<bool> {
        let first = self.responses.first()?.correct();
        self.responses
            .iter()
            .all(|x| x.correct() == first)
            .then_some(first)
    }

    fn information(self, theta: f64, scaling: f64) -> f64 {
        self.items
            .iter()
            .map(|it| information(it.params(), theta, scaling))
            .sum()
    }

    fn sums(self, theta: f64, scaling: f64) -> Sums {
        let mut s = Sums::default();
        for (item, &x) in self.items.iter().zip(self.responses) {
            s.add_dichotomous(&ItemTerms::new(item.params(), theta, scaling), x.correct());
        }
        s
    }

    fn log_likelihood_and_information(self, theta: f64, scaling: f64) -> (f64, f64) {
        let mut log_lik = 0.0;
        let mut info = 0.0;
        for (item, &x) in self.items.iter().zip(self.responses) {
            let t = ItemTerms::new(item.params(), theta, scaling);
            log_lik += t.log_prob(x.correct());
            info += t.info;
        }
        (log_lik, info)
    }

    fn log_likelihood(self, nodes: &[f64], scaling: f64, out: &mut [f64]) {
        for (nodes, out) in nodes
            .chunks(LIKELIHOOD_CHUNK)
            .zip(out.chunks_mut(LIKELIHOOD_CHUNK))
        {
            let mut acc = Likelihood::new(nodes.len());
            for (item, &x) in self.items.iter().zip(self.responses) {
                acc.multiply(item.params(), x.correct(), nodes, scaling);
            }
            acc.write_log(out);
        }
    }
}

/// Items of any model and category scores (same lengths).
#[derive(Clone, Copy)]
pub(super) struct Mixed<'a> {
    /// The items.
    pub(super) items: &'a [Item],
    /// The category scores.
    pub(super) responses: &'a [u32],
}

/// A category score as an index, saturating (it is clamped to the item's
/// categories where it is used).
fn category(response: u32) -> usize {
    usize::try_from(response).unwrap_or(usize::MAX)
}

impl Pattern for Mixed<'_> {
    fn is_empty(self) -> bool {
        self.responses.is_empty()
    }

    fn constant(self) -> Option<bool> {
        let pairs = || self.items.iter().zip(self.responses);
        if pairs().all(|(_, &x)| x == 0) {
            Some(false)
        } else if pairs().all(|(item, &x)| category(x) >= item.categories() - 1) {
            Some(true)
        } else {
            None
        }
    }

    fn information(self, theta: f64, scaling: f64) -> f64 {
        self.items
            .iter()
            .map(|it| it.information(theta, scaling))
            .sum()
    }

    fn sums(self, theta: f64, scaling: f64) -> Sums {
        let mut s = Sums::default();
        for (item, &x) in self.items.iter().zip(self.responses) {
            match item {
                Item::Dichotomous(p) => {
                    s.add_dichotomous(&ItemTerms::new(p, theta, scaling), x != 0);
                }
                Item::Polytomous(p) => {
                    let (response, terms) = polytomous(p, theta, scaling, x);
                    s.score += response.d1_log;
                    s.terms.add(&terms);
                }
            }
        }
        s
    }

    fn log_likelihood_and_information(self, theta: f64, scaling: f64) -> (f64, f64) {
        let mut log_lik = 0.0;
        let mut info = 0.0;
        for (item, &x) in self.items.iter().zip(self.responses) {
            match item {
                Item::Dichotomous(p) => {
                    let t = ItemTerms::new(p, theta, scaling);
                    log_lik += t.log_prob(x != 0);
                    info += t.info;
                }
                Item::Polytomous(p) => {
                    let (response, terms) = polytomous(p, theta, scaling, x);
                    log_lik += response.log_p;
                    info += terms.info;
                }
            }
        }
        (log_lik, info)
    }

    fn log_likelihood(self, nodes: &[f64], scaling: f64, out: &mut [f64]) {
        for (nodes, out) in nodes
            .chunks(LIKELIHOOD_CHUNK)
            .zip(out.chunks_mut(LIKELIHOOD_CHUNK))
        {
            let mut acc = Likelihood::new(nodes.len());
            let mut poly_buf = [0.0_f64; LIKELIHOOD_CHUNK];
            let poly = &mut poly_buf[..nodes.len()];
            for (item, &x) in self.items.iter().zip(self.responses) {
                match item {
                    Item::Dichotomous(p) => acc.multiply(p, x != 0, nodes, scaling),
                    Item::Polytomous(p) => {
                        add_log_probabilities_on_grid(p, category(x), scaling, nodes, poly);
                    }
                }
            }
            acc.write_log(out);
            for (o, &lp) in out.iter_mut().zip(poly.iter()) {
                *o += lp;
            }
        }
    }
}

/// The [`CategoryTerms`] of the response `x` to a polytomous item and the
/// item's [`InformationTerms`] at `theta`.
fn polytomous(
    item: &PolytomousItem,
    theta: f64,
    scaling: f64,
    x: u32,
) -> (CategoryTerms, InformationTerms) {
    let mut buf = [CategoryTerms::default(); MAX_CATEGORIES];
    polytomous_terms(item, theta, scaling, &mut buf);
    let m = item.thresholds.len().min(MAX_CATEGORIES - 1);
    (
        buf[category(x).min(m)],
        InformationTerms::from_categories(&buf[..=m]),
    )
}

/// Number of nodes whose likelihood is accumulated at once: the items are
/// looped over once per chunk of nodes, so the accumulators are small stack
/// arrays (cheap to initialize) whatever the number of nodes.
const LIKELIHOOD_CHUNK: usize = 64;

/// The likelihood of dichotomous answers at up to [`LIKELIHOOD_CHUNK`]
/// nodes, as `mantissa · 2^exponent` renormalized after every item: it never
/// underflows and costs no logarithm per item.
struct Likelihood {
    /// Mantissas in `[1, 2)`.
    mantissa: [f64; LIKELIHOOD_CHUNK],
    /// Binary exponents.
    exponent: [i64; LIKELIHOOD_CHUNK],
    /// Number of nodes in use.
    n: usize,
}

impl Likelihood {
    /// The empty product at `n` nodes.
    #[inline(always)]
    fn new(n: usize) -> Self {
        Self {
            mantissa: [1.0; LIKELIHOOD_CHUNK],
            exponent: [0; LIKELIHOOD_CHUNK],
            n: n.min(LIKELIHOOD_CHUNK),
        }
    }

    /// Multiplies in `P` (`correct`) or `Q` of `item` at every node.
    #[inline(always)]
    fn multiply(&mut self, item: &ItemParams, correct: bool, nodes: &[f64], scaling: f64) {
        let n = self.n;
        for ((m, e), &theta) in self.mantissa[..n]
            .iter_mut()
            .zip(self.exponent[..n].iter_mut())
            .zip(nodes)
        {
            let (mm, ee) = split_exponent(*m * response_probability(item, theta, scaling, correct));
            *m = mm;
            *e += ee;
        }
    }

    /// Writes `ln(mantissa · 2^exponent)` into `out`.
    #[inline(always)]
    fn write_log(&self, out: &mut [f64]) {
        let n = self.n;
        for ((lp, &m), &e) in out
            .iter_mut()
            .zip(self.mantissa[..n].iter())
            .zip(self.exponent[..n].iter())
        {
            *lp = m.ln() + e as f64 * std::f64::consts::LN_2;
        }
    }
}

/// Sums over the answered items at one ability value.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sums {
    /// Score `S`.
    pub(super) score: f64,
    /// `I`, `I'`, `I''`, `J`, `J'`.
    pub(super) terms: InformationTerms,
}

impl Sums {
    /// Adds a 4PL item's terms for a right (`correct`) or wrong answer.
    #[inline(always)]
    fn add_dichotomous(&mut self, t: &ItemTerms, correct: bool) {
        self.score += t.score(correct);
        self.terms.info += t.info;
        self.terms.d_info += t.d_info;
        self.terms.d2_info += t.d2_info;
        self.terms.j += t.j;
        self.terms.d_j += t.d_j;
    }

    /// `a / (2 I)`, 0 when there is no information.
    pub(super) fn over_two_info(&self, a: f64) -> f64 {
        if self.terms.info > 0.0 {
            a / (2.0 * self.terms.info)
        } else {
            0.0
        }
    }
}

/// `x = m·2^e` with `m ∈ [1, 2)`, for a positive normal `x` (bit operations
/// only, so the EAP loop vectorizes).
#[inline(always)]
fn split_exponent(x: f64) -> (f64, i64) {
    const FRACTION: u64 = (1 << 52) - 1;
    const ONE: u64 = 1023 << 52;
    let bits = x.to_bits();
    let exponent = (bits >> 52) as i64 - 1023;
    (f64::from_bits((bits & FRACTION) | ONE), exponent)
}
