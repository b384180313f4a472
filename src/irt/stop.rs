//! When a test ends.
//!
//! This module owns the stopping rule of an adaptive test and the normal
//! quantile it needs: a maximum length, a precision target (standard error),
//! a classification against a cut score, a minimum-information rule, a time
//! limit, and the exhaustion of the item bank. These are catR's `stop` rules
//! `"length"`, `"precision"`, `"classification"` and `"minInfo"`
//! (`checkStopRule`; Magis & Barrada, 2017) plus the time limit and bank
//! exhaustion of a live service.

use serde::{Deserialize, Serialize};

use super::IrtError;

/// The stopping rule of a test.
///
/// Serialized with every field after `se_target` optional (`#[serde(default)]`),
/// so rules stored before they existed still deserialize.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoppingRule {
    /// The test ends once this many items are completed (`>= 1`).
    pub max_items: usize,
    /// The precision, classification and minimum-information rules are
    /// ignored before this many items are completed (`<= max_items`).
    pub min_items: usize,
    /// The test ends once the standard error is at most this (finite, `> 0`);
    /// `None` for no precision rule.
    pub se_target: Option<f64>,
    /// The test ends once the confidence interval of `θ` lies entirely on one
    /// side of this cut score (finite); `None` for no classification rule.
    #[serde(default)]
    pub cut_score: Option<f64>,
    /// Confidence level of that interval, in `(0, 1)` (default 0.95).
    #[serde(default = "default_confidence_level")]
    pub confidence_level: f64,
    /// The test ends once no eligible item has more than this information at
    /// `θ̂` (finite, `>= 0`); `None` for no such rule.
    #[serde(default)]
    pub min_information: Option<f64>,
    /// The test ends once this many seconds have elapsed (finite, `> 0`);
    /// `None` for no time limit.
    #[serde(default)]
    pub max_duration_seconds: Option<f64>,
}

/// Serde default of [`StoppingRule::confidence_level`].
fn default_confidence_level() -> f64 {
    0.95
}

impl Default for StoppingRule {
    /// 20 items, at least 1, no other rule, confidence level 0.95.
    fn default() -> Self {
        Self {
            max_items: 20,
            min_items: 1,
            se_target: None,
            cut_score: None,
            confidence_level: default_confidence_level(),
            min_information: None,
            max_duration_seconds: None,
        }
    }
}

/// What the stopping rule looks at after each answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StopInputs {
    /// Items answered so far.
    pub items_completed: usize,
    /// Current ability estimate.
    pub theta: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// Eligible items left in the bank.
    pub items_left: usize,
    /// Information at `theta` of the most informative eligible item (see
    /// [`super::best_information`]); only read when
    /// [`StoppingRule::min_information`] is set.
    pub max_information_left: f64,
    /// Seconds since the test started.
    pub elapsed_seconds: f64,
}

/// Why a test ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopReason {
    /// [`StoppingRule::max_items`] items were completed.
    MaxItems,
    /// The standard error reached [`StoppingRule::se_target`].
    SeTarget,
    /// The confidence interval excludes [`StoppingRule::cut_score`].
    Classification,
    /// No eligible item is informative enough
    /// ([`StoppingRule::min_information`]).
    MinInformation,
    /// [`StoppingRule::max_duration_seconds`] elapsed.
    MaxDuration,
    /// No eligible item is left in the bank.
    BankExhausted,
}

impl StoppingRule {
    /// Whether the test is complete; `None` means go on. The rules are
    /// checked in this order and the first that holds is reported:
    ///
    /// 1. `items_completed >= max_items` → [`StopReason::MaxItems`];
    /// 2. with `items_completed >= min_items` only:
    ///    * `standard_error <= se_target` → [`StopReason::SeTarget`];
    ///    * `θ − z·SE >= cut_score` or `θ + z·SE <= cut_score`, with
    ///      `z = Φ⁻¹((1 + confidence_level)/2)` ([`normal_quantile`]; catR's
    ///      `qnorm(1 − α/2)`, 1.959964 at 95 %) → [`StopReason::Classification`];
    ///    * `items_left > 0` and `max_information_left <= min_information`
    ///      (catR `"minInfo"`: `max(info) <= thr`) → [`StopReason::MinInformation`];
    /// 3. `elapsed_seconds >= max_duration_seconds` → [`StopReason::MaxDuration`];
    /// 4. `items_left == 0` → [`StopReason::BankExhausted`].
    ///
    /// Comparisons with NaN are false: a NaN standard error or estimate never
    /// stops a test by precision or classification.
    #[must_use]
    pub fn check(&self, inputs: &StopInputs) -> Option<StopReason> {
        if inputs.items_completed >= self.max_items {
            return Some(StopReason::MaxItems);
        }
        if inputs.items_completed >= self.min_items {
            let se = inputs.standard_error;
            if self.se_target.is_some_and(|target| se <= target) {
                return Some(StopReason::SeTarget);
            }
            if let Some(cut) = self.cut_score {
                let z = normal_quantile(0.5 * (1.0 + self.confidence_level));
                let (theta, half) = (inputs.theta, z * se);
                if theta - half >= cut || theta + half <= cut {
                    return Some(StopReason::Classification);
                }
            }
            if inputs.items_left > 0
                && self
                    .min_information
                    .is_some_and(|floor| inputs.max_information_left <= floor)
            {
                return Some(StopReason::MinInformation);
            }
        }
        if self
            .max_duration_seconds
            .is_some_and(|limit| inputs.elapsed_seconds >= limit)
        {
            return Some(StopReason::MaxDuration);
        }
        if inputs.items_left == 0 {
            return Some(StopReason::BankExhausted);
        }
        None
    }

    /// Checks `max_items >= 1`, `min_items <= max_items`, and when set: a
    /// finite `se_target > 0`, a finite `cut_score`, a finite
    /// `min_information >= 0`, a finite `max_duration_seconds > 0`; and
    /// `confidence_level` in `(0, 1)` whenever `cut_score` is set.
    ///
    /// # Errors
    /// [`IrtError::StoppingRule`] naming the violated condition.
    pub fn validate(&self) -> Result<(), IrtError> {
        let fail = |reason| Err(IrtError::StoppingRule(reason));
        if self.max_items == 0 {
            return fail("max_items must be at least 1");
        }
        if self.min_items > self.max_items {
            return fail("min_items must not exceed max_items");
        }
        if self.se_target.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
            return fail("se_target must be finite and > 0");
        }
        if self.cut_score.is_some_and(|c| !c.is_finite()) {
            return fail("cut_score must be finite");
        }
        if self.cut_score.is_some() && !(self.confidence_level > 0.0 && self.confidence_level < 1.0)
        {
            return fail("confidence_level must be in (0, 1)");
        }
        if self
            .min_information
            .is_some_and(|m| !(m.is_finite() && m >= 0.0))
        {
            return fail("min_information must be finite and >= 0");
        }
        if self
            .max_duration_seconds
            .is_some_and(|s| !(s.is_finite() && s > 0.0))
        {
            return fail("max_duration_seconds must be finite and > 0");
        }
        Ok(())
    }
}

/// The standard normal quantile `Φ⁻¹(p)` (R's `qnorm(p)`), by Wichura's
/// algorithm AS 241 (`PPND16`, relative accuracy about 1e−16).
///
/// Wichura, M. J. (1988). Algorithm AS 241: the percentage points of the
/// normal distribution. *Applied Statistics*, 37(3), 477–484.
///
/// `p = 0` gives `−∞`, `p = 1` gives `+∞`, `p` outside `[0, 1]` or NaN gives
/// NaN.
#[must_use]
pub fn normal_quantile(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&AS241_A, r) / poly(&AS241_B, r);
    }
    let r = if q < 0.0 { p } else { 1.0 - p };
    let r = (-r.ln()).sqrt();
    let value = if r <= 5.0 {
        let r = r - 1.6;
        poly(&AS241_C, r) / poly(&AS241_D, r)
    } else {
        let r = r - 5.0;
        poly(&AS241_E, r) / poly(&AS241_F, r)
    };
    if q < 0.0 { -value } else { value }
}

/// `Σ c_i x^i` by Horner's rule.
fn poly(coefficients: &[f64; 8], x: f64) -> f64 {
    coefficients.iter().rev().fold(0.0, |acc, &c| acc * x + c)
}

/// AS 241 coefficients for `|p − 0.5| <= 0.425` (numerator).
#[expect(clippy::excessive_precision, reason = "the published AS 241 digits")]
const AS241_A: [f64; 8] = [
    3.3871328727963666080e0,
    1.3314166789178437745e+2,
    1.9715909503065514427e+3,
    1.3731693765509461125e+4,
    4.5921953931549871457e+4,
    6.7265770927008700853e+4,
    3.3430575583588128105e+4,
    2.5090809287301226727e+3,
];
/// AS 241 coefficients for `|p − 0.5| <= 0.425` (denominator).
#[expect(clippy::excessive_precision, reason = "the published AS 241 digits")]
const AS241_B: [f64; 8] = [
    1.0,
    4.2313330701600911252e+1,
    6.8718700749205790830e+2,
    5.3941960214247511077e+3,
    2.1213794301586595867e+4,
    3.9307895800092710610e+4,
    2.8729085735721942674e+4,
    5.2264952788528545610e+3,
];
/// AS 241 coefficients for the intermediate tail (numerator).
#[expect(clippy::excessive_precision, reason = "the published AS 241 digits")]
const AS241_C: [f64; 8] = [
    1.42343711074968357734e0,
    4.63033784615654529590e0,
    5.76949722146069140550e0,
    3.64784832476320460504e0,
    1.27045825245236838258e0,
    2.41780725177450611770e-1,
    2.27238449892691845833e-2,
    7.74545014278341407640e-4,
];
/// AS 241 coefficients for the intermediate tail (denominator).
#[expect(clippy::excessive_precision, reason = "the published AS 241 digits")]
const AS241_D: [f64; 8] = [
    1.0,
    2.05319162663775882187e0,
    1.67638483018380384940e0,
    6.89767334985100004550e-1,
    1.48103976427480074590e-1,
    1.51986665636164571966e-2,
    5.47593808499534494600e-4,
    1.05075007164441684324e-9,
];
/// AS 241 coefficients for the far tail (numerator).
#[expect(clippy::excessive_precision, reason = "the published AS 241 digits")]
const AS241_E: [f64; 8] = [
    6.65790464350110377720e0,
    5.46378491116411436990e0,
    1.78482653991729133580e0,
    2.96560571828504891230e-1,
    2.65321895265761230930e-2,
    1.24266094738807843860e-3,
    2.71155556874348757815e-5,
    2.01033439929228813265e-7,
];
/// AS 241 coefficients for the far tail (denominator).
#[expect(clippy::excessive_precision, reason = "the published AS 241 digits")]
const AS241_F: [f64; 8] = [
    1.0,
    5.99832206555887937690e-1,
    1.36929880922735805310e-1,
    1.48753612908506148525e-2,
    7.86869131145613259100e-4,
    1.84631831751005468180e-5,
    1.42151175831644588870e-7,
    2.04426310338993978564e-15,
];
