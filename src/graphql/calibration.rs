//! The bank-maintenance calibration API: `calibrateItems`, `calibrationRun`, `promoteItems`
//! (admin only), `pretestItems` (staff) and their types.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::{caller, gql, parse_id, service};
use crate::auth::Caller;
use crate::exam::calibration::{CalibrationRunView, ItemEstimate};
use crate::ids::ItemId;
use crate::irt;

/// How pretest items are calibrated.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "irt::CalibrationMethod")]
pub enum CalibrationMethod {
    /// Abilities fixed at each candidate's operational EAP (Stocking, 1988).
    FixedTheta,
    /// One EM cycle with the operational posteriors (Wainer & Mislevy, 1990).
    Oem,
    /// EM cycles with posteriors updated by the pretest answers, to convergence (Ban et
    /// al., 2001).
    Mem,
}

/// The model fitted to each pretest item.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "irt::CalibrationModel")]
pub enum CalibrationModel {
    /// `a`, `b`.
    TwoPl,
    /// `a`, `b`, `c` (Beta(6, 16) prior on `c`).
    ThreePl,
}

/// Where a calibration run is.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crate::storage::enums::CalibrationStatus")]
pub enum CalibrationStatus {
    /// Reading answers and estimating.
    Running,
    /// Estimates stored.
    Done,
    /// Stopped by an error.
    Failed,
}

/// One pretest item's result.
#[derive(SimpleObject)]
pub struct ItemCalibration {
    /// The item.
    pub item_id: ID,
    /// Its author's id.
    pub external_id: String,
    /// Pretest answers it had.
    pub responses: i32,
    /// Discrimination (null under the run's minimum responses).
    pub a: Option<f64>,
    /// Difficulty.
    pub b: Option<f64>,
    /// Lower asymptote (0 for the 2PL).
    pub c: Option<f64>,
    /// Standard error of `a`.
    pub se_a: Option<f64>,
    /// Standard error of `b`.
    pub se_b: Option<f64>,
    /// Standard error of `c` (3PL).
    pub se_c: Option<f64>,
    /// Item fit: RMSD between observed and fitted proportions correct over the ability grid.
    pub fit: Option<f64>,
    /// Whether the estimation converged inside the parameter bounds.
    pub converged: Option<bool>,
}

impl From<&ItemEstimate> for ItemCalibration {
    fn from(e: &ItemEstimate) -> Self {
        Self {
            item_id: ID(e.item_id.to_string()),
            external_id: e.external_id.clone(),
            responses: i32::try_from(e.responses).unwrap_or(i32::MAX),
            a: e.a,
            b: e.b,
            c: e.c,
            se_a: e.se_a,
            se_b: e.se_b,
            se_c: e.se_c,
            fit: e.fit,
            converged: e.converged,
        }
    }
}

/// One calibration of a bank's pretest items.
pub struct CalibrationRun(pub CalibrationRunView);

#[Object]
impl CalibrationRun {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.row.id.to_string())
    }
    /// The bank.
    async fn item_bank_id(&self) -> ID {
        ID(self.0.row.item_bank_id.to_string())
    }
    /// The method.
    async fn method(&self) -> CalibrationMethod {
        match self.0.row.method.as_str() {
            "FIXED_THETA" => CalibrationMethod::FixedTheta,
            "OEM" => CalibrationMethod::Oem,
            _ => CalibrationMethod::Mem,
        }
    }
    /// The model.
    async fn model(&self) -> CalibrationModel {
        match self.0.row.model.as_str() {
            "THREE_PL" => CalibrationModel::ThreePl,
            _ => CalibrationModel::TwoPl,
        }
    }
    /// Items with fewer pretest answers get no estimate.
    async fn min_responses(&self) -> i32 {
        self.0.row.min_responses
    }
    /// Running, done or failed.
    async fn status(&self) -> CalibrationStatus {
        self.0.row.status.into()
    }
    /// Who asked.
    async fn created_by(&self) -> &str {
        &self.0.row.created_by
    }
    /// When it was asked for.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.row.created_at
    }
    /// When it ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.row.finished_at
    }
    /// EM cycles run.
    async fn cycles(&self) -> Option<i32> {
        self.0.row.cycles
    }
    /// Why it failed.
    async fn error(&self) -> Option<&str> {
        self.0.row.error.as_deref()
    }
    /// Every live dichotomous pretest item of the bank, with its estimates when it had
    /// enough answers.
    async fn items(&self) -> Vec<ItemCalibration> {
        self.0.items.iter().map(Into::into).collect()
    }
}

/// A pretest item and the pretest answers seeding has gathered for it.
#[derive(SimpleObject)]
pub struct PretestItem {
    /// The item.
    pub item_id: ID,
    /// Its author's id.
    pub external_id: String,
    /// Pretest answers recorded so far.
    pub responses: i32,
    /// Whether it was retired (no longer seeded into new exams).
    pub retired: bool,
}

/// Calibration queries.
#[derive(Default)]
pub struct CalibrationQuery;

#[Object]
impl CalibrationQuery {
    /// Every pretest item of a bank with its pretest answers so far (admin, proctor):
    /// watch seeding gather responses before calibrating.
    async fn pretest_items(&self, ctx: &Context<'_>, item_bank_id: ID) -> Result<Vec<PretestItem>> {
        caller(ctx).and_then(Caller::require_staff).map_err(gql)?;
        let bank = parse_id(&item_bank_id, "itemBankId").map_err(gql)?;
        let items = service(ctx)
            .map_err(gql)?
            .pretest_items(bank)
            .await
            .map_err(gql)?;
        Ok(items
            .into_iter()
            .map(|item| PretestItem {
                item_id: ID(item.item_id.to_string()),
                external_id: item.external_id,
                responses: i32::try_from(item.responses).unwrap_or(i32::MAX),
                retired: item.retired,
            })
            .collect())
    }

    /// One calibration run (admin).
    async fn calibration_run(&self, ctx: &Context<'_>, id: ID) -> Result<CalibrationRun> {
        caller(ctx).and_then(Caller::require_admin).map_err(gql)?;
        let id: i64 = parse_id(&id, "id").map_err(gql)?;
        let view = service(ctx)
            .map_err(gql)?
            .calibration_run(id)
            .await
            .map_err(gql)?;
        Ok(CalibrationRun(view))
    }
}

/// Calibration mutations.
#[derive(Default)]
pub struct CalibrationMutation;

#[Object]
impl CalibrationMutation {
    /// Calibrates a bank's live dichotomous pretest items from their pretest answers and
    /// the candidates' operational answers (admin). Returns the run, `RUNNING`; read it
    /// with `calibrationRun` until it is `DONE` (or `FAILED`).
    async fn calibrate_items(
        &self,
        ctx: &Context<'_>,
        item_bank_id: ID,
        #[graphql(default_with = "CalibrationMethod::Mem")] method: CalibrationMethod,
        #[graphql(default_with = "CalibrationModel::TwoPl")] model: CalibrationModel,
        #[graphql(default = 200)] min_responses: i32,
    ) -> Result<CalibrationRun> {
        let caller = caller(ctx).map_err(gql)?;
        caller.require_admin().map_err(gql)?;
        let bank = parse_id(&item_bank_id, "itemBankId").map_err(gql)?;
        let view = service(ctx)
            .map_err(gql)?
            .calibrate_items(caller, bank, method.into(), model.into(), min_responses)
            .await
            .map_err(gql)?;
        Ok(CalibrationRun(view))
    }

    /// Makes pretest items operational with the estimates of their bank's newest finished
    /// calibration run (admin); all or none. New exams select them from then on.
    async fn promote_items(&self, ctx: &Context<'_>, item_ids: Vec<ID>) -> Result<Vec<ID>> {
        caller(ctx).and_then(Caller::require_admin).map_err(gql)?;
        let ids = item_ids
            .iter()
            .map(|id| parse_id::<ItemId>(id, "itemIds"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(gql)?;
        let promoted = service(ctx)
            .map_err(gql)?
            .promote_items(ids)
            .await
            .map_err(gql)?;
        Ok(promoted.into_iter().map(|id| ID(id.to_string())).collect())
    }
}
