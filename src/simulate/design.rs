//! The exam design of a simulation: the very [`ExamDesignInput`] JSON an admin sends inside
//! `createAssessment` (camelCase, enum values spelled as in the schema, the same defaults),
//! checked by [`ExamDesignInput::to_engine_design`] exactly as `createAssessment` checks it.
//! The one difference: `startItemIds` name the bank file's `externalId`s, since a
//! simulated bank has no database ids.
//!
//! Owns the translation of start items only; it must not validate a design itself (that is
//! `design`'s job) nor run anything.

use super::bank::SimBank;
pub use crate::design::{
    ConstantPatternRule, ContentBalanceInput, EstimatorInput, EstimatorMethod, ExamDesignInput,
    ExposureInput, ExposureMethod, PriorDistribution, SelectionRule, StandardErrorType,
};
use crate::engine::ExamDesign;
use crate::error::AppError;

/// A design that a simulation can run.
pub trait SimDesign {
    /// The engine design on `bank`, checked as `createAssessment` checks it; seed 0 (each
    /// simulated exam sets its own).
    ///
    /// # Errors
    /// Whatever `createAssessment` would refuse, with the API's message, or a start item
    /// that is not an `externalId` of the bank.
    fn to_design(&self, bank: &SimBank) -> anyhow::Result<ExamDesign>;
}

impl SimDesign for ExamDesignInput {
    fn to_design(&self, bank: &SimBank) -> anyhow::Result<ExamDesign> {
        self.to_engine_design(&bank.bank, 0, |external| {
            bank.id_of(external).ok_or_else(|| {
                AppError::bad_input(format!(
                    "startItemIds: no item of the bank has externalId {external:?}"
                ))
            })
        })
        .map_err(|e| anyhow::anyhow!("invalid design: {e}"))
    }
}
