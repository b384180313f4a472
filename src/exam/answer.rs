//! The answer path: the conditional one-statement write from the cached state, the locked
//! fallback with every check in order, and what follows the commit (local delivery, Redis
//! state, events, exposure selections). See the module order of operations in `exam`.
//!
//! Owns recording answers; must not decide items or estimates (that is `engine`, through
//! `step`) nor shape API payloads.

use std::sync::Arc;

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection};

use super::*;
use crate::auth::Caller;
use crate::engine::EngineState;
use crate::error::{AppError, AppResult};
use crate::ids::{ExamId, ItemId};
use crate::metrics::AnswerPath;
use crate::storage::bank_cache::Bank;
use crate::storage::events::{EventKind, ThetaEvent};
use crate::storage::queries::{self, AttemptRow, ExamSessionRow};
use crate::storage::session_cache::SessionFacts;

impl ExamService {
    /// Records an answer (or replays a recorded one) and moves the exam on.
    pub async fn submit_answer(
        &self,
        caller: &Caller,
        exam_session_id: ExamId,
        item_id: ItemId,
        response: &str,
    ) -> AppResult<Answered> {
        let item_id = item_id.0;
        let exam_session_id = exam_session_id.0;
        if response.len() > MAX_TEXT_LEN {
            return Err(AppError::bad_input(format!(
                "the response is longer than {MAX_TEXT_LEN} bytes"
            )));
        }
        check_text(response, "response")?;
        // The cached state is read before Postgres is touched. When it is there and this
        // instance knows the session, the answer is one conditional statement (no lock
        // held across round trips); otherwise, or when that statement finds the session
        // elsewhere than the state said, the locked transaction below decides.
        let cached = self.cached_state(exam_session_id).await;
        // A pooled connection may have died with a Postgres restart: the statement then
        // fails before anything is committed (or, if the commit itself was cut, the retry
        // finds the attempt and replays it), so one retry on a fresh connection is safe.
        let mut retried = false;
        let outcome = loop {
            let mut conn = self.db.get().await?;
            let result = self
                .db
                .run_on(&mut conn, async |conn| {
                    let fast = self
                        .answer_from_cache(
                            conn,
                            caller,
                            exam_session_id,
                            item_id,
                            response,
                            cached.as_ref(),
                        )
                        .await?;
                    if let Some(new) = fast {
                        return Ok((Recorded::New(Box::new(new)), AnswerPath::Fast));
                    }
                    let recorded = conn
                        .transaction(async |conn| {
                            self.record_answer(
                                conn,
                                caller,
                                exam_session_id,
                                item_id,
                                response,
                                cached.as_ref(),
                            )
                            .await
                        })
                        .await?;
                    Ok((recorded, AnswerPath::Locked))
                })
                .await;
            match result {
                Err(AppError::Unavailable(_)) if !retried => retried = true,
                other => break other?,
            }
        };
        let (outcome, path) = outcome;
        match outcome {
            Recorded::New(new) => {
                abort_after_commit_for_tests();
                let NewAnswer {
                    answered,
                    state,
                    event,
                    exposure,
                } = *new;
                self.metrics.answer_recorded(path);
                if answered.completed {
                    self.metrics
                        .exam_completed(answered.stop_reason.map(|r| StopCode::from(r).as_str()));
                }
                if let Some((bank_id, selected)) = exposure {
                    self.exposure.record_selections(bank_id, &selected).await;
                }
                // This instance's subscribers first (even with Redis down), then the fleet.
                self.events.deliver_local(&event);
                let event = event.to_json();
                if answered.completed {
                    if let Err(e) = self.states.complete(exam_session_id, Some(&event)).await {
                        tracing::warn!(exam.id = exam_session_id, error = %e, "cannot drop the completed exam's state");
                    }
                } else {
                    self.save_state(exam_session_id, &state, Some(&event)).await;
                }
                Ok(answered)
            }
            Recorded::Replay(answered) => {
                self.metrics.answers_replayed.inc();
                Ok(*answered)
            }
        }
    }

    /// The answer path without a lock: the history comes from the cached engine state and
    /// the session's fixed facts from this instance's memory, and the write only happens
    /// if Postgres still has the session where that state left it (active, as many answers,
    /// this item presented). `None` when anything is missing or doubtful (no state, a
    /// repeated or unknown item, an unscorable response, the session moved on): the locked
    /// path then gives the answer or the precise error.
    pub(super) async fn answer_from_cache(
        &self,
        conn: &mut AsyncPgConnection,
        caller: &Caller,
        exam_session_id: i64,
        item_id: i64,
        response: &str,
        cached: Option<&EngineState>,
    ) -> AppResult<Option<NewAnswer>> {
        let (Some(state), Some(facts)) = (cached, self.sessions.get(exam_session_id)) else {
            return Ok(None);
        };
        may_act(caller, &facts.student_id, exam_session_id)?;
        if state.item_ids.contains(&item_id) || state.pretest_item_ids.contains(&item_id) {
            return Ok(None);
        }
        let bank = self
            .bank(conn, facts.item_bank_id, facts.bank_revision)
            .await?;
        let Some(index) = bank.index_of(item_id) else {
            return Ok(None);
        };
        let Ok(score) = bank.items[index].score(response) else {
            return Ok(None);
        };
        let Some(answers) = history_from_state(state, &bank, &facts.design) else {
            return Ok(None);
        };
        let before = Before {
            answers,
            theta: state.theta,
            standard_error: state.standard_error,
        };
        let answer = Answer {
            index,
            score,
            response,
        };
        self.write_answer(conn, exam_session_id, &facts, &bank, before, answer)
            .await
    }

    /// The answer path under the row lock (inside the caller's transaction): every check,
    /// in order, then the same write as [`Self::answer_from_cache`].
    pub(super) async fn record_answer(
        &self,
        conn: &mut AsyncPgConnection,
        caller: &Caller,
        exam_session_id: i64,
        item_id: i64,
        response: &str,
        cached: Option<&EngineState>,
    ) -> AppResult<Recorded> {
        let row = queries::lock_exam_session(conn, exam_session_id)
            .await?
            .ok_or_else(|| exam_not_found(exam_session_id))?;
        may_act(caller, &row.student_id, exam_session_id)?;
        let bank = self.bank(conn, row.item_bank_id, row.bank_revision).await?;
        let status = row.status;
        // The presented item of an active exam has no answer yet by construction: only any
        // other item can be a repeat, so only then is it worth a look for the attempt.
        let presented = status == ExamStatus::Active && row.current_item_id == Some(item_id);
        if !presented
            && let Some(attempt) = queries::find_attempt(conn, exam_session_id, item_id).await?
        {
            if attempt.response != response {
                return Err(AppError::AlreadyAnswered);
            }
            let design = design_of(&row)?;
            let exam = self.view(row, design, &bank)?;
            return Ok(Recorded::Replay(Box::new(replay(&attempt, exam, &bank))));
        }
        if status != ExamStatus::Active {
            return Err(AppError::ExamNotActive(status));
        }
        if row.current_item_id != Some(item_id) {
            return Err(AppError::ItemNotPresented);
        }
        let index = bank
            .index_of(item_id)
            .ok_or_else(|| AppError::internal("presented item is not in the bank", item_id))?;
        let score = bank.items[index]
            .score(response)
            .map_err(|e| AppError::bad_input(e.to_string()))?;
        let facts = self.facts_of(&row)?;
        let answers = match cached
            .filter(|s| s.items_completed as i32 == row.items_completed)
            .and_then(|s| history_from_state(s, &bank, &facts.design))
        {
            Some(answers) => answers,
            None => {
                // The cache could not serve the history (missing, stale or unreadable).
                self.metrics.cache.rebuilds.inc();
                let attempts = queries::list_attempts(conn, exam_session_id).await?;
                history_from_attempts(&attempts, &bank, row.current_item_id)?
            }
        };
        let before = Before {
            answers,
            theta: row.theta,
            standard_error: row.standard_error,
        };
        let answer = Answer {
            index,
            score,
            response,
        };
        self.write_answer(conn, exam_session_id, &facts, &bank, before, answer)
            .await?
            .map(|new| Recorded::New(Box::new(new)))
            .ok_or_else(|| AppError::internal("the locked session moved on", exam_session_id))
    }

    /// Scores nothing and checks nothing: decides what follows `answer` given the history,
    /// writes it with [`queries::record_attempt`] and returns what follows the commit, or
    /// `None` when Postgres did not have the session where `before` says (nothing written).
    pub(super) async fn write_answer(
        &self,
        conn: &mut AsyncPgConnection,
        exam_session_id: i64,
        facts: &SessionFacts,
        bank: &Arc<Bank>,
        before: Before,
        answer: Answer<'_>,
    ) -> AppResult<Option<NewAnswer>> {
        let design = &facts.design;
        let item = &bank.items[answer.index];
        let Before {
            mut answers,
            theta: previous_theta,
            standard_error: previous_standard_error,
        } = before;
        // The write is conditional on this many answers: the history the decision uses.
        let position = answers.count() + 1;
        let items_completed = position as i32;
        let now = Utc::now();
        // A pretest item of the plan, at its position: recorded, never estimated from.
        let pretest = design.pretest_at(position) == Some(item.id);
        let step = if pretest {
            answers.pretest.push(item.id);
            let Some(next) = answers.next_item_id else {
                return Err(AppError::internal(
                    "a pretest item was presented after the exam stopped",
                    exam_session_id,
                ));
            };
            Step {
                estimate: crate::irt::Estimate {
                    theta: previous_theta,
                    standard_error: previous_standard_error,
                },
                next_item_id: Some(next),
                stop: None,
                exposure: None,
            }
        } else {
            answers.administered.push(answer.index);
            answers.scores.push(answer.score);
            self.operational_step(conn, facts, bank, &answers, previous_theta, now)
                .await?
        };
        answers.next_item_id = step.next_item_id;
        let completed = step.next_item_id.is_none();
        // The plan's pretest item at the next position comes first, then the engine's choice.
        let next_item_id = if completed {
            None
        } else {
            design.pretest_at(position + 1).or(step.next_item_id)
        };
        let stop_reason = step.stop.filter(|_| completed);
        let progress = queries::SessionProgress {
            status: if completed {
                ExamStatus::Completed
            } else {
                ExamStatus::Active
            },
            theta: step.estimate.theta,
            standard_error: step.estimate.standard_error,
            items_completed,
            current_item_id: next_item_id,
            stop_reason: stop_reason.map(StopCode::from),
            updated_at: now,
            completed_at: completed.then_some(now),
        };
        let recorded = queries::record_attempt(
            conn,
            &queries::NewAttempt {
                exam_session_id,
                item_id: item.id,
                position: items_completed,
                response: answer.response,
                correct: answer.score + 1 == item.categories,
                score: answer.score as i32,
                theta: step.estimate.theta,
                standard_error: step.estimate.standard_error,
                next_item_id: step.next_item_id,
                completed,
                pretest,
            },
            &progress,
        )
        .await?;
        let Some(answered_at) = recorded else {
            return Ok(None);
        };
        let row = ExamSessionRow {
            id: exam_session_id,
            student_id: facts.student_id.clone(),
            item_bank_id: facts.item_bank_id,
            status: progress.status,
            config: serde_json::Value::Null,
            theta: progress.theta,
            standard_error: progress.standard_error,
            items_completed,
            current_item_id: next_item_id,
            stop_reason: progress.stop_reason,
            created_at: facts.created_at,
            updated_at: now,
            completed_at: progress.completed_at,
            assessment_id: facts.assessment_id,
            attempt_number: facts.attempt_number,
            feedback: facts.feedback,
            bank_revision: facts.bank_revision,
        };
        let exam = self.view(row, design.clone(), bank)?;
        let state = state_of(&exam, bank, &answers);
        let event = ThetaEvent {
            kind: EventKind::Answered,
            exam_session_id,
            student_id: facts.student_id.clone(),
            assessment_id: facts.assessment_id,
            origin: self.events.origin(),
            theta: step.estimate.theta,
            standard_error: step.estimate.standard_error,
            items_completed,
            completed,
            at: answered_at,
        };
        Ok(Some(NewAnswer {
            answered: Answered {
                theta: step.estimate.theta,
                standard_error: step.estimate.standard_error,
                items_completed,
                completed,
                next_item: exam.current_item.clone(),
                stop_reason,
                exam,
                recorded: true,
            },
            state,
            event,
            exposure: step.exposure,
        }))
    }

    /// The engine step after an operational answer (already in `answers`): the estimate,
    /// the next operational item or why the exam stops, and the exposure selections.
    async fn operational_step(
        &self,
        conn: &mut AsyncPgConnection,
        facts: &SessionFacts,
        bank: &Arc<Bank>,
        answers: &Answers,
        previous_theta: f64,
        now: chrono::DateTime<Utc>,
    ) -> AppResult<Step> {
        let design = &facts.design;
        let counts = self.exposure_counts(conn, design, bank).await?;
        let history = step::StepHistory {
            administered: &answers.administered,
            scores: &answers.scores,
            previous_theta,
            elapsed_seconds: (now - facts.created_at).num_milliseconds().max(0) as f64 / 1000.0,
            bank_revision: facts.bank_revision,
        };
        let decision = self.step(conn, design, bank, &history, counts).await?;
        ensure_finite(&decision.estimate)?;
        let proposed = || {
            decision
                .proposed
                .iter()
                .map(|&i| bank.items[i].id)
                .collect()
        };
        Ok(Step {
            estimate: decision.estimate,
            next_item_id: decision.next_item.map(|i| bank.items[i].id),
            stop: decision.stop,
            exposure: design.exposure.is_some().then(|| (bank.id, proposed())),
        })
    }
}

/// A newly recorded answer, with what must follow the commit.
pub(super) struct NewAnswer {
    /// The result for the client.
    answered: Answered,
    /// The engine state to cache.
    state: EngineState,
    /// The event to deliver and publish.
    event: ThetaEvent,
    /// Bank and items selected, for the exposure counts (the presented item was counted
    /// when it was reserved).
    exposure: Option<(i64, Vec<i64>)>,
}

/// Where a session stood when an answer came: the answers so far and the estimate after them.
pub(super) struct Before {
    answers: Answers,
    theta: f64,
    standard_error: f64,
}

/// What an answer leads to: the estimate after it, the engine's next operational item
/// (`None`: the exam stops), why it stops, and the exposure selections to count.
struct Step {
    estimate: crate::irt::Estimate,
    next_item_id: Option<i64>,
    stop: Option<crate::irt::StopReason>,
    exposure: Option<(i64, Vec<i64>)>,
}

/// An answer to a bank item, scored.
pub(super) struct Answer<'a> {
    index: usize,
    score: u32,
    response: &'a str,
}

/// What the answer transaction produced.
pub(super) enum Recorded {
    /// A new attempt, with the state to cache and the event to publish.
    New(Box<NewAnswer>),
    /// The same answer again: the recorded result.
    Replay(Box<Answered>),
}

/// The recorded result of an attempt, for a repeated submission.
pub(super) fn replay(attempt: &AttemptRow, exam: ExamView, bank: &Bank) -> Answered {
    // What was presented after it: the plan's pretest item at the next position, if any,
    // else the engine's choice; nothing once the exam stopped.
    let position = attempt.position as usize + 1;
    let next_item = (!attempt.completed)
        .then(|| exam.design.pretest_at(position).or(attempt.next_item_id))
        .flatten()
        .and_then(|id| bank.index_of(id))
        .map(|i| PresentedItem::new(exam.row.id, &bank.items[i], attempt.position + 1));
    let stop_reason = if attempt.completed {
        exam.row.stop_reason.map(Into::into)
    } else {
        None
    };
    Answered {
        theta: attempt.theta,
        standard_error: attempt.standard_error,
        items_completed: attempt.position,
        completed: attempt.completed,
        next_item,
        stop_reason,
        exam,
        recorded: false,
    }
}

/// Refuses to store an estimate that is not a finite number (designs are validated so
/// this cannot happen; if it ever did, the answer fails whole instead of storing NaN).
pub(crate) fn ensure_finite(estimate: &crate::irt::Estimate) -> AppResult<()> {
    if estimate.theta.is_finite() && estimate.standard_error.is_finite() {
        Ok(())
    } else {
        Err(AppError::internal(
            "the engine produced a non-finite estimate; nothing was stored",
            format!("{estimate:?}"),
        ))
    }
}

/// Test-only fault injection, off unless the process was started with
/// `ADAPTIVE_ENGINE_TEST_ABORT_AFTER_COMMIT` set (see `config.rs`; never set it in
/// production): the process then aborts right after an answer's commit, before Redis, the
/// events and the reply, so a test can kill the server exactly between the commit and the
/// reply (`tests/faults.rs`). The variable is read once.
fn abort_after_commit_for_tests() {
    static ABORT: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        std::env::var_os("ADAPTIVE_ENGINE_TEST_ABORT_AFTER_COMMIT").is_some()
    });
    if *ABORT {
        std::process::abort();
    }
}
