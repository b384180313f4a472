//! Calibration runs of a bank's pretest items and their promotion: a run reads the pretest
//! answers and, for every exam that gave any, its operational answers (in chunks of exams,
//! once per EM pass, so memory does not grow with the answers), estimates each dichotomous
//! pretest item with enough responses by [`irt::calibrate()`] on the bank's scale, and stores
//! the estimates for inspection; `promoteItems` then makes chosen items operational with them.
//!
//! Owns the runs (start, background work, storage) and promotion; must not estimate
//! anything itself (that is `irt::calibrate`) nor touch Redis.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ExamService;
use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::ids::{BankId, ItemId};
use crate::irt::{self, CalibrationMethod, CalibrationModel, CalibrationSettings, Examinee, Item};
use crate::storage::bank_cache::Bank;
use crate::storage::calibration_rows::{self as rows, CalibrationRunRow, NewCalibrationRun};
use crate::storage::db::Db;
use crate::storage::enums::{CalibrationStatus, ItemStatus};
use crate::storage::queries;

/// Exams whose answers are read per round trip.
const EXAMS_PER_CHUNK: usize = 2_000;

/// One pretest item's result in a run, as stored (`calibration_runs.items`) and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemEstimate {
    /// The item.
    pub item_id: i64,
    /// Its author's id.
    pub external_id: String,
    /// Pretest answers it had.
    pub responses: i64,
    /// Estimates (none under the run's minimum responses).
    pub a: Option<f64>,
    /// Difficulty.
    pub b: Option<f64>,
    /// Lower asymptote (0 for the 2PL).
    pub c: Option<f64>,
    /// Standard error of `a`.
    pub se_a: Option<f64>,
    /// Of `b`.
    pub se_b: Option<f64>,
    /// Of `c` (3PL).
    pub se_c: Option<f64>,
    /// RMSD item fit.
    pub fit: Option<f64>,
    /// Whether the estimation converged inside the parameter bounds.
    pub converged: Option<bool>,
}

/// A run as the API shows it.
#[derive(Clone, Debug)]
pub struct CalibrationRunView {
    /// The stored run.
    pub row: CalibrationRunRow,
    /// Its items, parsed.
    pub items: Vec<ItemEstimate>,
}

impl CalibrationRunView {
    fn new(row: CalibrationRunRow) -> AppResult<Self> {
        let items = serde_json::from_value(row.items.clone())
            .map_err(|e| AppError::internal("stored calibration results are unreadable", e))?;
        Ok(Self { row, items })
    }
}

/// The spelling of a method, as stored and in the API.
fn method_name(method: CalibrationMethod) -> &'static str {
    match method {
        CalibrationMethod::FixedTheta => "FIXED_THETA",
        CalibrationMethod::Oem => "OEM",
        CalibrationMethod::Mem => "MEM",
    }
}

/// A pretest item and the pretest answers it has.
#[derive(Clone, Debug, PartialEq)]
pub struct PretestItemView {
    /// The item.
    pub item_id: i64,
    /// Its author's id.
    pub external_id: String,
    /// Pretest answers recorded.
    pub responses: i64,
    /// Whether it was retired (no longer seeded).
    pub retired: bool,
}

/// The spelling of a model.
fn model_name(model: CalibrationModel) -> &'static str {
    match model {
        CalibrationModel::TwoPl => "TWO_PL",
        CalibrationModel::ThreePl => "THREE_PL",
    }
}

impl ExamService {
    /// Starts a calibration of a bank's pretest items (admin) and returns it `RUNNING`; the
    /// work goes on in the background (see [`run_calibration`]).
    pub async fn calibrate_items(
        &self,
        caller: &Caller,
        bank_id: BankId,
        method: CalibrationMethod,
        model: CalibrationModel,
        min_responses: i32,
    ) -> AppResult<CalibrationRunView> {
        let run = start_run(&self.db, bank_id, method, model, min_responses, &caller.sub).await?;
        let (db, started) = (self.db.clone(), run.clone());
        tokio::spawn(async move {
            if let Err(e) = run_calibration(&db, started).await {
                tracing::warn!(error = %e, "calibration run could not be stored");
            }
        });
        CalibrationRunView::new(run)
    }

    /// One calibration run (admin).
    pub async fn calibration_run(&self, id: i64) -> AppResult<CalibrationRunView> {
        let row = self
            .db
            .run(async |conn| Ok(rows::find_run(conn, id).await?))
            .await?
            .ok_or_else(|| AppError::NotFound(format!("calibration run {id} does not exist")))?;
        CalibrationRunView::new(row)
    }

    /// Every pretest item of a bank (live or retired) with its pretest answers so far,
    /// counted in Postgres: what seeding has gathered towards a calibration.
    pub async fn pretest_items(&self, bank_id: BankId) -> AppResult<Vec<PretestItemView>> {
        self.db
            .run(async |conn| {
                // Items added on another instance count too.
                let bank = self.newest_bank(conn, bank_id.0).await?;
                let items: Vec<&crate::storage::bank_cache::BankItem> = bank
                    .items
                    .iter()
                    .filter(|item| item.status == ItemStatus::Pretest)
                    .collect();
                let ids: Vec<i64> = items.iter().map(|item| item.id).collect();
                let counts: HashMap<i64, i64> = rows::pretest_counts(conn, &ids)
                    .await?
                    .into_iter()
                    .collect();
                Ok(items
                    .into_iter()
                    .map(|item| PretestItemView {
                        item_id: item.id,
                        external_id: item.external_id.clone(),
                        responses: counts.get(&item.id).copied().unwrap_or(0),
                        retired: item.retired,
                    })
                    .collect())
            })
            .await
    }

    /// Makes pretest items operational with the estimates of their bank's newest finished
    /// run (admin), all or none: an item that is not a live pretest item, or that run did
    /// not estimate, is `BAD_USER_INPUT` and nothing changes. Returns the promoted ids. New
    /// exams select them from then on; running exams never do.
    pub async fn promote_items(&self, item_ids: Vec<ItemId>) -> AppResult<Vec<i64>> {
        if item_ids.is_empty() || item_ids.len() > 10_000 {
            return Err(AppError::bad_input("promote 1 to 10000 items at once"));
        }
        let ids: Vec<i64> = item_ids.iter().map(|i| i.0).collect();
        let banks = self
            .db
            .run(async |conn| {
                diesel_async::AsyncConnection::transaction(conn, async |conn| {
                    promote(conn, &ids).await
                })
                .await
            })
            .await?;
        for bank in banks {
            self.banks.forget(bank);
        }
        tracing::info!(items = ids.len(), "pretest items promoted");
        Ok(ids)
    }
}

/// Promotes `ids` inside the caller's transaction; returns the banks changed.
async fn promote(conn: &mut diesel_async::AsyncPgConnection, ids: &[i64]) -> AppResult<Vec<i64>> {
    let mut estimates: HashMap<i64, HashMap<i64, ItemEstimate>> = HashMap::new();
    let mut banks = Vec::new();
    for &id in ids {
        let bank = rows::bank_of_item(conn, id)
            .await?
            .ok_or_else(|| AppError::bad_input(format!("item {id} does not exist")))?;
        if let std::collections::hash_map::Entry::Vacant(slot) = estimates.entry(bank) {
            let run = rows::latest_done_run(conn, bank).await?;
            let items: Vec<ItemEstimate> = match run {
                Some(run) => serde_json::from_value(run.items).map_err(|e| {
                    AppError::internal("stored calibration results are unreadable", e)
                })?,
                None => Vec::new(),
            };
            slot.insert(items.into_iter().map(|e| (e.item_id, e)).collect());
        }
        let estimate = estimates[&bank]
            .get(&id)
            .and_then(|e| Some((e.a?, e.b?, e.c?)));
        let Some(params) = estimate else {
            return Err(AppError::bad_input(format!(
                "item {id} has no estimate in its bank's newest finished calibration run"
            )));
        };
        if rows::promote_item(conn, bank, id, params).await?.is_none() {
            return Err(AppError::bad_input(format!(
                "item {id} is not a pretest item in use (operational or retired)"
            )));
        }
        if !banks.contains(&bank) {
            queries::bump_bank_revision(conn, bank).await?;
            banks.push(bank);
        }
    }
    Ok(banks)
}

/// Stores a new `RUNNING` run after checking its options and its bank.
///
/// # Errors
/// `BAD_USER_INPUT` for `min_responses` outside 1..=1,000,000; `NOT_FOUND` for an unknown
/// bank.
pub async fn start_run(
    db: &Db,
    bank_id: BankId,
    method: CalibrationMethod,
    model: CalibrationModel,
    min_responses: i32,
    created_by: &str,
) -> AppResult<CalibrationRunRow> {
    if !(1..=1_000_000).contains(&min_responses) {
        return Err(AppError::bad_input(
            "minResponses must be between 1 and 1000000",
        ));
    }
    let bank_id = bank_id.0;
    db.run(async |conn| {
        queries::find_item_bank(conn, bank_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("item bank {bank_id} does not exist")))?;
        Ok(rows::insert_run(
            conn,
            &NewCalibrationRun {
                item_bank_id: bank_id,
                method: method_name(method),
                model: model_name(model),
                min_responses,
                created_by,
            },
        )
        .await?)
    })
    .await
}

/// Does a stored `RUNNING` run and stores its outcome (`DONE` with the estimates, or
/// `FAILED` with the reason). The estimation runs on a blocking thread that reads the
/// answers from Postgres through `db` once per pass.
///
/// # Errors
/// Only when the outcome itself cannot be stored.
pub async fn run_calibration(db: &Db, run: CalibrationRunRow) -> AppResult<CalibrationRunRow> {
    let outcome = estimate(db, &run).await;
    let (status, cycles, results, error) = match outcome {
        Ok((cycles, items)) => (
            CalibrationStatus::Done,
            Some(cycles),
            serde_json::to_value(items)
                .map_err(|e| AppError::internal("cannot serialize estimates", e))?,
            None,
        ),
        Err(e) => {
            tracing::warn!(run.id = run.id, error = %e, "calibration failed");
            (
                CalibrationStatus::Failed,
                None,
                serde_json::json!([]),
                Some(e.to_string()),
            )
        }
    };
    let id = run.id;
    let finished = db
        .run(async |conn| {
            Ok(rows::finish_run(conn, id, status, cycles, results, error.as_deref()).await?)
        })
        .await?;
    tracing::info!(
        run.id = id,
        status = finished.status.as_str(),
        "calibration finished"
    );
    Ok(finished)
}

/// The estimation of a run: its pretest items, their counts, the passes.
async fn estimate(db: &Db, run: &CalibrationRunRow) -> AppResult<(i32, Vec<ItemEstimate>)> {
    let method: CalibrationMethod = serde_json::from_value(serde_json::json!(run.method))
        .map_err(|e| AppError::internal("stored method is unreadable", e))?;
    let model: CalibrationModel = serde_json::from_value(serde_json::json!(run.model))
        .map_err(|e| AppError::internal("stored model is unreadable", e))?;
    let bank_id = run.item_bank_id;
    let bank = db
        .run(async |conn| {
            let row = queries::find_item_bank(conn, bank_id)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("item bank {bank_id} does not exist")))?;
            let items = queries::load_bank_items(conn, bank_id).await?;
            Ok(Arc::new(Bank::from_rows(&row, items)))
        })
        .await?;
    // Live dichotomous pretest items.
    let pretest: Vec<usize> = (0..bank.items.len())
        .filter(|&i| {
            let item = &bank.items[i];
            item.status == ItemStatus::Pretest && !item.retired && !item.polytomous
        })
        .collect();
    let ids: Vec<i64> = pretest.iter().map(|&i| bank.items[i].id).collect();
    let counts: HashMap<i64, i64> = db
        .run(async |conn| Ok(rows::pretest_counts(conn, &ids).await?))
        .await?
        .into_iter()
        .collect();
    let calibrated: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| counts.get(id).copied().unwrap_or(0) >= i64::from(run.min_responses))
        .collect();
    let exams = db
        .run(async |conn| Ok(rows::pretest_exams(conn, &calibrated).await?))
        .await?;
    let settings = CalibrationSettings::new(method, model, bank.scaling_constant);
    // Each calibrated item's index among the calibrated ones.
    let slots: HashMap<i64, usize> = calibrated
        .iter()
        .enumerate()
        .map(|(k, &id)| (id, k))
        .collect();
    let (db2, bank2) = (db.clone(), Arc::clone(&bank));
    let handle = tokio::runtime::Handle::current();
    let (calibration, slots) = tokio::task::spawn_blocking(move || {
        let calibration = irt::calibrate(slots.len(), &settings, |visit| {
            visit_exams(&handle, &db2, &bank2, &settings, &slots, &exams, visit)
        });
        (calibration, slots)
    })
    .await
    .map_err(|e| AppError::internal("calibration task failed", e))?;
    let calibration = calibration?;
    let results = ids
        .iter()
        .map(|&id| {
            let index = bank.index_of(id).expect("a pretest item of the bank");
            let estimate = slots.get(&id).and_then(|&k| calibration.items[k]);
            ItemEstimate {
                item_id: id,
                external_id: bank.items[index].external_id.clone(),
                responses: counts.get(&id).copied().unwrap_or(0),
                a: estimate.map(|e| e.params.a),
                b: estimate.map(|e| e.params.b),
                c: estimate.map(|e| e.params.c),
                se_a: estimate.map(|e| e.standard_errors.a),
                se_b: estimate.map(|e| e.standard_errors.b),
                se_c: estimate.and_then(|e| e.standard_errors.c),
                fit: estimate.map(|e| e.rmsd),
                converged: estimate.map(|e| e.converged),
            }
        })
        .collect();
    Ok((
        i32::try_from(calibration.cycles).unwrap_or(i32::MAX),
        results,
    ))
}

/// One pass: every exam that answered a calibrated item, read in chunks, handed to `visit`
/// with its operational log-likelihood on the calibration grid and its pretest answers.
fn visit_exams(
    handle: &tokio::runtime::Handle,
    db: &Db,
    bank: &Bank,
    settings: &CalibrationSettings,
    index: &HashMap<i64, usize>,
    exams: &[i64],
    visit: &mut dyn FnMut(&Examinee<'_>),
) -> AppResult<()> {
    let mut operational: Vec<Item> = Vec::new();
    let mut scores: Vec<u32> = Vec::new();
    let mut pretest: Vec<(usize, bool)> = Vec::new();
    let mut log_likelihood = Vec::new();
    for chunk in exams.chunks(EXAMS_PER_CHUNK) {
        let answers =
            handle.block_on(db.run(async |conn| Ok(rows::answers_of(conn, chunk).await?)))?;
        let mut rest = answers.as_slice();
        while let Some(first) = rest.first() {
            let exam = first.exam_session_id;
            let end = rest
                .iter()
                .position(|a| a.exam_session_id != exam)
                .unwrap_or(rest.len());
            let (mine, next) = rest.split_at(end);
            rest = next;
            operational.clear();
            scores.clear();
            pretest.clear();
            for answer in mine {
                if answer.pretest {
                    if let Some(&k) = index.get(&answer.item_id) {
                        pretest.push((k, answer.score > 0));
                    }
                } else if let Some(i) = bank.index_of(answer.item_id) {
                    operational.push(bank.engine.items[i].clone());
                    scores.push(u32::try_from(answer.score).unwrap_or(0));
                }
            }
            if pretest.is_empty() {
                continue;
            }
            irt::log_likelihood_on_grid(
                &settings.ability,
                &operational,
                &scores,
                &mut log_likelihood,
            );
            visit(&Examinee {
                operational: &log_likelihood,
                pretest: &pretest,
            });
        }
    }
    Ok(())
}
