//! When a test ends.
//!
//! This module owns the stopping rule of an adaptive test: a maximum length,
//! an optional precision target (standard error) honoured only after a
//! minimum length, and the exhaustion of the item bank (catR's `stop` rules
//! `length` and `precision`).

use serde::{Deserialize, Serialize};

use super::IrtError;

/// The stopping rule of a test.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoppingRule {
    /// The test ends once this many items are completed (`>= 1`).
    pub max_items: usize,
    /// The precision target is ignored before this many items are completed
    /// (`<= max_items`).
    pub min_items: usize,
    /// The test ends once the standard error is at most this (finite, `> 0`);
    /// `None` for fixed-length tests.
    pub se_target: Option<f64>,
}

/// Why a test ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopReason {
    /// [`StoppingRule::max_items`] items were completed.
    MaxItems,
    /// The standard error reached [`StoppingRule::se_target`] after at least
    /// [`StoppingRule::min_items`] items.
    SeTarget,
    /// No eligible item is left in the bank.
    BankExhausted,
}

impl StoppingRule {
    /// Whether the test is complete after `items_completed` items, with the
    /// current `standard_error` and `items_left` eligible items; `None` means
    /// go on. Checked in this order (the first that holds is reported):
    /// 1. `items_completed >= max_items` → [`StopReason::MaxItems`];
    /// 2. `se_target` is set, `standard_error <= se_target` and
    ///    `items_completed >= min_items` → [`StopReason::SeTarget`]
    ///    (a NaN standard error never satisfies it);
    /// 3. `items_left == 0` → [`StopReason::BankExhausted`].
    #[must_use]
    pub fn check(
        &self,
        items_completed: usize,
        standard_error: f64,
        items_left: usize,
    ) -> Option<StopReason> {
        if items_completed >= self.max_items {
            Some(StopReason::MaxItems)
        } else if self
            .se_target
            .is_some_and(|target| standard_error <= target && items_completed >= self.min_items)
        {
            Some(StopReason::SeTarget)
        } else if items_left == 0 {
            Some(StopReason::BankExhausted)
        } else {
            None
        }
    }

    /// Checks `max_items >= 1`, `min_items <= max_items` and, when set, a
    /// finite `se_target > 0`.
    ///
    /// # Errors
    /// [`IrtError::StoppingRule`] naming the violated condition.
    pub fn validate(&self) -> Result<(), IrtError> {
        if self.max_items == 0 {
            return Err(IrtError::StoppingRule("max_items must be at least 1"));
        }
        if self.min_items > self.max_items {
            return Err(IrtError::StoppingRule(
                "min_items must not exceed max_items",
            ));
        }
        if let Some(target) = self.se_target {
            if !(target.is_finite() && target > 0.0) {
                return Err(IrtError::StoppingRule("se_target must be finite and > 0"));
            }
        }
        Ok(())
    }
}
