//! One engine step as the server runs it, around the pure [`engine::decide`]:
//! - the decision runs off the async workers when the design is heavy (a large bank under
//!   a rule that scans the whole grid), on a bounded number of blocking threads, so a
//!   costly design slows its own exams and never `/health` or other requests;
//! - under exposure control, the chosen item is presented only once
//!   [`ExposureTracker::reserve`](crate::storage::exposure::ExposureTracker::reserve)
//!   granted it (one atomic Lua script per presentation); items at their limit by the
//!   instance's snapshot are left out up front, and a refused one is left out and the step
//!   decided again.
//!
//! Owns how a step is executed and reserved; must not decide anything itself (that is
//! `engine`) nor write to Postgres.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use diesel_async::AsyncPgConnection;

use super::ExamService;
use crate::design::design_cost;
use crate::engine::{self, Decision, ExamDesign, History};
use crate::error::{AppError, AppResult};
use crate::irt::ExposureCounts;
use crate::metrics::StepMode;
use crate::storage::bank_cache::Bank;
use crate::storage::exposure::{Reservation, presentation_cap};

/// Designs costing more than this (see [`design_cost`]) decide on a blocking thread; the
/// cheap ones (maximum information, small banks) stay inline, where a thread hand-off
/// would cost more than the step.
const INLINE_COST: u64 = 100_000;

/// After this many refusals in a row, a step reads the counts afresh and leaves out every
/// item at its limit then (a busy fleet moves the limits faster than the one-second
/// snapshot).
const REFRESH_AFTER_REFUSALS: usize = 4;

/// The answers so far, as a step needs them.
pub(super) struct StepHistory<'a> {
    /// Bank indices of the items answered, in order.
    pub administered: &'a [usize],
    /// Their category scores.
    pub scores: &'a [u32],
    /// Theta before the latest answer.
    pub previous_theta: f64,
    /// Seconds since the exam started.
    pub elapsed_seconds: f64,
    /// The bank revision the exam started at (items added later are never selected).
    pub bank_revision: i64,
}

impl ExamService {
    /// The fleet-wide exposure counts of the bank, when the design uses exposure control.
    pub(super) async fn exposure_counts(
        &self,
        conn: &mut AsyncPgConnection,
        design: &ExamDesign,
        bank: &Bank,
    ) -> AppResult<Option<Arc<ExposureCounts>>> {
        match design.exposure {
            Some(_) => Ok(Some(
                self.exposure.counts(conn, bank.id, &bank.engine).await?,
            )),
            None => Ok(None),
        }
    }

    /// Decides the step and, under exposure control, reserves its item (see the module doc).
    pub(super) async fn step(
        &self,
        conn: &mut AsyncPgConnection,
        design: &ExamDesign,
        bank: &Arc<Bank>,
        history: &StepHistory<'_>,
        counts: Option<Arc<ExposureCounts>>,
    ) -> AppResult<Decision> {
        let mut design = Cow::Borrowed(design);
        let late: Vec<i64> = bank.added_after(history.bank_revision).collect();
        if !late.is_empty() {
            design.to_mut().ineligible_item_ids.extend(late);
        }
        let (Some(control), Some(snapshot)) = (design.exposure, counts.as_ref()) else {
            return self.decide(&design, bank, history, None).await;
        };
        let capped = capped_items(control.max_rate, snapshot, bank, history.administered);
        if !capped.is_empty() {
            design.to_mut().ineligible_item_ids.extend(capped);
        }
        let mut refilled = false;
        let mut refusals = 0;
        // Ends: every refusal leaves one more item out, until one is granted or none is left.
        loop {
            let decision = self.decide(&design, bank, history, counts.clone()).await?;
            let Some(next) = decision.next_item else {
                return Ok(decision);
            };
            let item_id = bank.items[next].id;
            let reservation = self
                .exposure
                .reserve(bank.id, item_id, control.max_rate)
                .await;
            let counter = match reservation {
                Reservation::Granted => &self.metrics.exposure.granted,
                Reservation::Refused => &self.metrics.exposure.refused,
                Reservation::Missing => &self.metrics.exposure.missing,
                Reservation::Unavailable => &self.metrics.exposure.unavailable,
            };
            counter.inc();
            match reservation {
                Reservation::Granted | Reservation::Unavailable => return Ok(decision),
                Reservation::Missing if !refilled => {
                    self.exposure.refill(conn, bank.id, &bank.engine).await?;
                    refilled = true;
                }
                Reservation::Missing => return Ok(decision),
                Reservation::Refused => {
                    refusals += 1;
                    let left_out = &mut design.to_mut().ineligible_item_ids;
                    left_out.push(item_id);
                    if refusals % REFRESH_AFTER_REFUSALS == 0 {
                        let fresh = self
                            .exposure
                            .fresh_counts(conn, bank.id, &bank.engine)
                            .await?;
                        left_out.extend(capped_items(
                            control.max_rate,
                            &fresh,
                            bank,
                            history.administered,
                        ));
                    }
                }
            }
        }
    }

    /// [`engine::decide`], inline for cheap designs, else on a blocking thread (at most
    /// as many at once as there are cores); timed either way.
    async fn decide(
        &self,
        design: &ExamDesign,
        bank: &Arc<Bank>,
        history: &StepHistory<'_>,
        counts: Option<Arc<ExposureCounts>>,
    ) -> AppResult<Decision> {
        let started = Instant::now();
        let inline = design_cost(design, &bank.engine) <= INLINE_COST;
        let decision = self
            .decide_untimed(inline, design, bank, history, counts)
            .await;
        let mode = if inline {
            StepMode::Inline
        } else {
            StepMode::Blocking
        };
        self.metrics.engine_step(mode, started.elapsed());
        decision
    }

    /// [`Self::decide`] without the clock.
    async fn decide_untimed(
        &self,
        inline: bool,
        design: &ExamDesign,
        bank: &Arc<Bank>,
        history: &StepHistory<'_>,
        counts: Option<Arc<ExposureCounts>>,
    ) -> AppResult<Decision> {
        if inline {
            let inline = History {
                administered: history.administered,
                scores: history.scores,
                previous_theta: history.previous_theta,
                elapsed_seconds: history.elapsed_seconds,
            };
            return Ok(engine::decide(
                design,
                &bank.engine,
                &inline,
                counts.as_deref(),
            ));
        }
        let _permit = self
            .heavy_steps
            .acquire()
            .await
            .map_err(|e| AppError::internal("engine thread pool closed", e))?;
        let (design, bank) = (design.clone(), Arc::clone(bank));
        let (administered, scores) = (history.administered.to_vec(), history.scores.to_vec());
        let (previous_theta, elapsed_seconds) = (history.previous_theta, history.elapsed_seconds);
        tokio::task::spawn_blocking(move || {
            let history = History {
                administered: &administered,
                scores: &scores,
                previous_theta,
                elapsed_seconds,
            };
            engine::decide(&design, &bank.engine, &history, counts.as_deref())
        })
        .await
        .map_err(|e| AppError::internal("engine step failed", e))
    }
}

/// Items not yet administered that `counts` shows at their exposure limit.
fn capped_items(
    max_rate: f64,
    counts: &ExposureCounts,
    bank: &Bank,
    administered: &[usize],
) -> Vec<i64> {
    let cap = presentation_cap(max_rate, counts.examinees);
    counts
        .administered
        .iter()
        .enumerate()
        .filter(|&(i, &a)| a >= cap && !administered.contains(&i))
        .map(|(i, _)| bank.items[i].id)
        .collect()
}
