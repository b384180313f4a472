//! The plain selection rules, as `src/irt/select.rs` and `src/irt/select/grid.rs`
//! computed them before the per-bank grid tables and the pruned paths existed:
//! every eligible item evaluated by its defining formula at every quadrature
//! node. Copied here verbatim (only the crate's private helpers are restated
//! from their public equivalents) so that the fast paths are proved against
//! today's behaviour, ties and random draws included. Nothing here is fast on
//! purpose; do not "improve" it.

use adaptive_engine::irt::{
    EstimatorSettings, Item, ItemParams, MAX_CATEGORIES, MAX_QUADRATURE_POINTS, MAX_RANDOMESQUE,
    MIN_QUADRATURE_POINTS, Prior, SelectionContext, SelectionRule, progressive_weight,
    proportional_exponent,
};
use rand::Rng;

fn is_eligible(ctx: &SelectionContext<'_>, i: usize) -> bool {
    ctx.eligible.get(i).copied().unwrap_or(false)
}

fn answered(ctx: &SelectionContext<'_>) -> usize {
    ctx.administered.len().min(ctx.responses.len())
}

/// The `k` best `(index, signed value)` pairs of a deterministic rule, best
/// first (the sign makes larger better), exactly as the plain scan ranks them.
pub fn top_k(rule: SelectionRule, ctx: &SelectionContext<'_>, k: usize) -> Vec<(usize, f64)> {
    let mut top = TopK::new(k);
    let theta = ctx.theta;
    let scaling = ctx.estimator.scaling;
    match rule {
        SelectionRule::MaxInfo | SelectionRule::Progressive | SelectionRule::Proportional => {
            for (i, item) in ctx.bank.iter().enumerate() {
                if is_eligible(ctx, i) {
                    top.offer(item.information(theta, scaling), i);
                }
            }
        }
        SelectionRule::Urry => {
            for (i, item) in ctx.bank.iter().enumerate() {
                if is_eligible(ctx, i) {
                    top.offer(-(item.location() - theta).abs(), i);
                }
            }
        }
        SelectionRule::Kl
        | SelectionRule::Klp
        | SelectionRule::Mlwi
        | SelectionRule::Mpwi
        | SelectionRule::Mepv => {
            let posterior = Posterior::new(ctx, rule);
            let sign = if rule.larger_is_better() { 1.0 } else { -1.0 };
            for (i, item) in ctx.bank.iter().enumerate() {
                if is_eligible(ctx, i) {
                    top.offer(sign * posterior.criterion(item, theta), i);
                }
            }
        }
        SelectionRule::Random => {}
    }
    top.entries()
}

/// The plain `select_item`.
pub fn select_item<R: Rng + ?Sized>(
    rule: SelectionRule,
    ctx: &SelectionContext<'_>,
    randomesque: usize,
    rng: &mut R,
) -> Option<usize> {
    let k = randomesque.clamp(1, MAX_RANDOMESQUE);
    let scaling = ctx.estimator.scaling;
    let theta = ctx.theta;
    match rule {
        SelectionRule::MaxInfo
        | SelectionRule::Urry
        | SelectionRule::Kl
        | SelectionRule::Klp
        | SelectionRule::Mlwi
        | SelectionRule::Mpwi
        | SelectionRule::Mepv => pick(&top_k(rule, ctx, k), rng),
        SelectionRule::Progressive => {
            let weight = progressive_weight(answered(ctx), ctx.max_items);
            if weight >= 1.0 {
                return pick(&top_k(SelectionRule::MaxInfo, ctx, k), rng);
            }
            let max_info = ctx
                .bank
                .iter()
                .enumerate()
                .filter(|&(i, _)| is_eligible(ctx, i))
                .map(|(_, item)| item.information(theta, scaling))
                .fold(f64::NEG_INFINITY, f64::max);
            if max_info == f64::NEG_INFINITY {
                return None;
            }
            let mut top = TopK::new(k);
            for (i, item) in ctx.bank.iter().enumerate() {
                if is_eligible(ctx, i) {
                    let info = item.information(theta, scaling);
                    // catR: runif(0, itemMaxInfo), drawn for every item.
                    let noise = rng.random::<f64>() * max_info;
                    top.offer(info * weight + noise * (1.0 - weight), i);
                }
            }
            pick(&top.entries(), rng)
        }
        SelectionRule::Proportional => {
            let exponent = proportional_exponent(answered(ctx), ctx.max_items);
            proportional_draw(ctx, exponent, rng)
        }
        SelectionRule::Random => {
            let count = (0..ctx.bank.len()).filter(|&i| is_eligible(ctx, i)).count();
            if count == 0 {
                return None;
            }
            let target = rng.random_range(0..count);
            (0..ctx.bank.len())
                .filter(|&i| is_eligible(ctx, i))
                .nth(target)
        }
    }
}

/// The plain `criterion_values`.
pub fn criterion_values(rule: SelectionRule, ctx: &SelectionContext<'_>) -> Vec<f64> {
    let scaling = ctx.estimator.scaling;
    let theta = ctx.theta;
    let eligible = |i: usize| is_eligible(ctx, i);
    match rule {
        SelectionRule::MaxInfo | SelectionRule::Progressive | SelectionRule::Proportional => ctx
            .bank
            .iter()
            .enumerate()
            .map(|(i, item)| {
                if eligible(i) {
                    item.information(theta, scaling)
                } else {
                    f64::NAN
                }
            })
            .collect(),
        SelectionRule::Urry => ctx
            .bank
            .iter()
            .enumerate()
            .map(|(i, item)| {
                if eligible(i) {
                    (item.location() - theta).abs()
                } else {
                    f64::NAN
                }
            })
            .collect(),
        SelectionRule::Kl
        | SelectionRule::Klp
        | SelectionRule::Mlwi
        | SelectionRule::Mpwi
        | SelectionRule::Mepv => {
            let posterior = Posterior::new(ctx, rule);
            ctx.bank
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    if eligible(i) {
                        posterior.criterion(item, theta)
                    } else {
                        f64::NAN
                    }
                })
                .collect()
        }
        SelectionRule::Random => (0..ctx.bank.len())
            .map(|i| if eligible(i) { 0.0 } else { f64::NAN })
            .collect(),
    }
}

fn pick<R: Rng + ?Sized>(entries: &[(usize, f64)], rng: &mut R) -> Option<usize> {
    match entries.len() {
        0 => None,
        1 => Some(entries[0].0),
        len => Some(entries[rng.random_range(0..len)].0),
    }
}

fn proportional_draw<R: Rng + ?Sized>(
    ctx: &SelectionContext<'_>,
    exponent: f64,
    rng: &mut R,
) -> Option<usize> {
    let scaling = ctx.estimator.scaling;
    let infos: Vec<(usize, f64)> = ctx
        .bank
        .iter()
        .enumerate()
        .filter(|&(i, _)| is_eligible(ctx, i))
        .map(|(i, item)| (i, item.information(ctx.theta, scaling)))
        .filter(|(_, info)| !info.is_nan())
        .collect();
    if infos.is_empty() {
        return None;
    }
    let max = infos
        .iter()
        .map(|(_, v)| *v)
        .fold(f64::NEG_INFINITY, f64::max);
    let weight = |info: f64| -> f64 {
        if exponent == 0.0 {
            1.0
        } else if info <= 0.0 {
            0.0
        } else {
            (exponent * (info.ln() - max.ln())).exp()
        }
    };
    let total: f64 = infos.iter().map(|(_, v)| weight(*v)).sum();
    if !(total > 0.0 && total.is_finite()) {
        return Some(infos[rng.random_range(0..infos.len())].0);
    }
    let mut target = rng.random::<f64>() * total;
    let mut last = None;
    for &(i, info) in &infos {
        let w = weight(info);
        if w > 0.0 {
            last = Some(i);
            if target < w {
                return Some(i);
            }
            target -= w;
        }
    }
    last
}

/// The plain top-`k` group: larger value first, lower index first among
/// equal values, NaN never.
struct TopK {
    k: usize,
    len: usize,
    threshold: f64,
    value: [f64; MAX_RANDOMESQUE],
    index: [usize; MAX_RANDOMESQUE],
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k: k.clamp(1, MAX_RANDOMESQUE),
            len: 0,
            threshold: f64::NEG_INFINITY,
            value: [0.0; MAX_RANDOMESQUE],
            index: [0; MAX_RANDOMESQUE],
        }
    }

    fn offer(&mut self, value: f64, index: usize) {
        if value.is_nan() || value < self.threshold {
            return;
        }
        if self.len == self.k {
            let last = self.k - 1;
            if value == self.value[last] && index > self.index[last] {
                return;
            }
        }
        let pos = self.value[..self.len]
            .iter()
            .zip(&self.index[..self.len])
            .position(|(&v, &i)| value > v || (value == v && index < i))
            .unwrap_or(self.len);
        let end = if self.len < self.k {
            self.len
        } else {
            self.k - 1
        };
        self.value.copy_within(pos..end, pos + 1);
        self.index.copy_within(pos..end, pos + 1);
        self.value[pos] = value;
        self.index[pos] = index;
        if self.len < self.k {
            self.len += 1;
        }
        if self.len == self.k {
            self.threshold = self.value[self.k - 1];
        }
    }

    fn entries(&self) -> Vec<(usize, f64)> {
        self.index[..self.len]
            .iter()
            .copied()
            .zip(self.value[..self.len].iter().copied())
            .collect()
    }
}

/// The plain grid weights of one step (`grid::Posterior`).
struct Posterior {
    rule: SelectionRule,
    scaling: f64,
    nodes: Vec<f64>,
    weights: Vec<f64>,
    jeffreys_information: Option<Vec<f64>>,
    center: f64,
}

impl Posterior {
    fn new(ctx: &SelectionContext<'_>, rule: SelectionRule) -> Self {
        let settings = ctx.estimator;
        let scaling = settings.scaling;
        let nodes = quadrature_nodes(settings);
        let n = nodes.len();
        let answered: Vec<(&Item, u32)> = ctx
            .administered
            .iter()
            .zip(ctx.responses)
            .filter_map(|(&i, &x)| ctx.bank.get(i).map(|item| (item, x)))
            .collect();

        let mut log_weight: Vec<f64> = nodes
            .iter()
            .map(|&theta| {
                answered
                    .iter()
                    .map(|(item, x)| log_category_probability(item, theta, scaling, *x))
                    .sum()
            })
            .collect();
        let posterior_rule = matches!(
            rule,
            SelectionRule::Klp | SelectionRule::Mpwi | SelectionRule::Mepv
        );
        let mut jeffreys_information = None;
        if posterior_rule {
            match settings.prior {
                Prior::Normal { mean, sd } => {
                    for (lw, &theta) in log_weight.iter_mut().zip(&nodes) {
                        let u = (theta - mean) / sd;
                        *lw -= 0.5 * u * u;
                    }
                }
                Prior::Uniform { lower, upper } => {
                    for (lw, theta) in log_weight.iter_mut().zip(&nodes) {
                        if !(lower..=upper).contains(theta) {
                            *lw = f64::NEG_INFINITY;
                        }
                    }
                }
                Prior::Jeffreys => {
                    let info: Vec<f64> = nodes
                        .iter()
                        .map(|&theta| {
                            answered
                                .iter()
                                .map(|(item, _)| item.information(theta, scaling))
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

    fn criterion(&self, item: &Item, theta: f64) -> f64 {
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

    fn expected_posterior_variance(&self, item: &Item, theta: f64) -> f64 {
        let scaling = self.scaling;
        let mut at_estimate = [0.0; MAX_CATEGORIES];
        let m = probabilities(item, theta, scaling, &mut at_estimate);
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

fn quadrature_nodes(settings: &EstimatorSettings) -> Vec<f64> {
    let n = settings
        .quadrature_points
        .clamp(MIN_QUADRATURE_POINTS, MAX_QUADRATURE_POINTS);
    let (lo, hi) = (settings.theta_min, settings.theta_max);
    let step = (hi - lo) / (n - 1) as f64;
    (0..n)
        .map(|k| if k + 1 == n { hi } else { lo + k as f64 * step })
        .collect()
}

fn trapezoid_weights(nodes: &[f64]) -> Vec<f64> {
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

/// `(P, Q)` of a 4PL item; the exponential is the crate's (`exp_neg`, within a
/// few ulp of `f64::exp`), so that criterion values compare to the bit.
fn dichotomous_pq(p: &ItemParams, theta: f64, scaling: f64) -> (f64, f64) {
    let z = (scaling * p.a * (theta - p.b)).clamp(-700.0, 700.0);
    let e = adaptive_engine::irt::model::exp_neg(-z.abs());
    let big = 1.0 / (1.0 + e);
    let small = e * big;
    let (l, m) = if z >= 0.0 { (big, small) } else { (small, big) };
    let g = p.d - p.c;
    (p.c + g * l, (1.0 - p.d) + g * m)
}

fn probabilities(item: &Item, theta: f64, scaling: f64, out: &mut [f64; MAX_CATEGORIES]) -> usize {
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

fn log_category_probability(item: &Item, theta: f64, scaling: f64, x: u32) -> f64 {
    match item {
        Item::Dichotomous(p) => {
            let (pp, q) = dichotomous_pq(p, theta, scaling);
            if x >= 1 { pp.ln() } else { q.ln() }
        }
        Item::Polytomous(_) => item.category_probability(theta, scaling, x as usize).ln(),
    }
}
