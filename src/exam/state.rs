//! The engine state of an exam: built from a view and a history, cached in Redis, read
//! back, rebuilt from the Postgres attempts when Redis lost it; and the session facts
//! cached per instance.
//!
//! Owns the translation between rows, histories and `EngineState`; must not write Postgres.

use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use serde::Deserialize;

use super::*;
use crate::engine::{EngineState, ExamDesign};
use crate::error::{AppError, AppResult};
use crate::metrics::Lookup;
use crate::storage::bank_cache::Bank;
use crate::storage::queries::{self, AttemptRow, ExamSessionRow};
use crate::storage::session_cache::SessionFacts;

impl ExamService {
    /// The fixed facts of a session, from this instance's cache or else from its row
    /// (and then kept).
    pub(super) fn facts_of(&self, row: &ExamSessionRow) -> AppResult<Arc<SessionFacts>> {
        if let Some(facts) = self.sessions.get(row.id) {
            return Ok(facts);
        }
        let facts = Arc::new(SessionFacts::new(row, design_of(row)?));
        self.sessions.insert(row.id, Arc::clone(&facts));
        Ok(facts)
    }

    /// The engine state of an exam, rebuilt from its attempts in Postgres.
    pub(super) async fn rebuild_state(
        &self,
        conn: &mut AsyncPgConnection,
        row: &ExamSessionRow,
        design: ExamDesign,
    ) -> AppResult<EngineState> {
        self.metrics.cache.rebuilds.inc();
        let bank = self.bank(conn, row.item_bank_id, row.bank_revision).await?;
        let attempts = queries::list_attempts(conn, row.id).await?;
        let answers = history_from_attempts(&attempts, &bank, row.current_item_id)?;
        let exam = self.view(row.clone(), design, &bank)?;
        Ok(state_of(&exam, &bank, &answers))
    }

    /// The cached engine state of an exam, if Redis has a readable one (counted as a
    /// cache hit, miss or error).
    pub(super) async fn cached_state(&self, exam_session_id: i64) -> Option<EngineState> {
        let loaded = self.states.load(exam_session_id).await;
        let state = match loaded {
            Ok(Some(ref json)) => parse_state(exam_session_id, json),
            Ok(None) => None,
            Err(ref e) => {
                tracing::debug!(exam.id = exam_session_id, error = %e, "engine state unavailable");
                None
            }
        };
        self.metrics
            .cache
            .lookup(lookup_result(&loaded, state.is_some()));
        state
    }

    pub(super) async fn save_state(
        &self,
        exam_session_id: i64,
        state: &EngineState,
        event: Option<&str>,
    ) {
        let Ok(json) = state_json(state) else {
            return;
        };
        if let Err(e) = self
            .states
            .save(
                exam_session_id,
                &json,
                i64::from(state.items_completed),
                event,
            )
            .await
        {
            tracing::warn!(exam.id = exam_session_id, error = %e, "engine state not cached");
        }
    }
}

/// How a read of a state ended: `loaded` is what Redis answered, `readable` whether the
/// state it held parsed.
pub(super) fn lookup_result<T, E>(loaded: &Result<Option<T>, E>, readable: bool) -> Lookup {
    match loaded {
        Ok(Some(_)) if readable => Lookup::Hit,
        Ok(None) => Lookup::Miss,
        Ok(Some(_)) | Err(_) => Lookup::Error,
    }
}

pub(super) fn design_of(row: &ExamSessionRow) -> AppResult<ExamDesign> {
    // Deserialized from the borrowed value: no copy of the JSON tree on every answer.
    ExamDesign::deserialize(&row.config)
        .map_err(|e| AppError::internal("stored exam design is unreadable", e))
}

pub(super) fn parse_state(exam_session_id: i64, json: &str) -> Option<EngineState> {
    match serde_json::from_str::<EngineState>(json) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!(exam.id = exam_session_id, error = %e, "unreadable engine state ignored");
            None
        }
    }
}

pub(super) fn state_json(state: &EngineState) -> AppResult<String> {
    serde_json::to_string(state).map_err(|e| AppError::internal("cannot serialize engine state", e))
}

/// An exam's answers so far, split as the engine and the pretest plan need them.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Answers {
    /// Bank indices of the operational items answered, in order (the engine's history).
    pub administered: Vec<usize>,
    /// Their category scores.
    pub scores: Vec<u32>,
    /// Ids of the pretest items answered, in order.
    pub pretest: Vec<i64>,
    /// The operational item the engine chose last (presented now unless a pretest item is
    /// due first); `None` once the exam has stopped.
    pub next_item_id: Option<i64>,
}

impl Answers {
    /// Items answered, operational and pretest.
    pub fn count(&self) -> usize {
        self.administered.len() + self.pretest.len()
    }
}

/// The engine state of an exam after `answers`.
pub(super) fn state_of(exam: &ExamView, bank: &Bank, answers: &Answers) -> EngineState {
    let administered = &answers.administered;
    let polytomous = administered.iter().any(|&i| bank.items[i].categories != 2);
    let seeds = !exam.design.pretest.is_empty();
    EngineState {
        theta: exam.row.theta,
        standard_error: exam.row.standard_error,
        item_params_list: administered
            .iter()
            .map(|&i| bank.engine.items[i].clone())
            .collect(),
        responses: administered
            .iter()
            .zip(&answers.scores)
            .map(|(&i, &s)| s + 1 == bank.items[i].categories)
            .collect(),
        scores: polytomous.then(|| answers.scores.clone()),
        max_items: exam.design.stopping.max_items as u32,
        items_completed: answers.count() as u32,
        item_ids: administered.iter().map(|&i| bank.items[i].id).collect(),
        pretest_item_ids: answers.pretest.clone(),
        next_item_id: answers.next_item_id.filter(|_| seeds),
    }
}

/// The answers a cached state holds, when it is consistent with itself and the bank (an
/// exam that seeds pretest items also needs the engine's pending choice).
pub(super) fn history_from_state(
    state: &EngineState,
    bank: &Bank,
    design: &ExamDesign,
) -> Option<Answers> {
    let scores = state.category_scores();
    if state.item_ids.len() != scores.len()
        || state.item_ids.len() + state.pretest_item_ids.len() != state.items_completed as usize
        || (!design.pretest.is_empty() && state.next_item_id.is_none())
    {
        return None;
    }
    let administered = state
        .item_ids
        .iter()
        .map(|&id| bank.index_of(id))
        .collect::<Option<Vec<usize>>>()?;
    Some(Answers {
        administered,
        scores,
        pretest: state.pretest_item_ids.clone(),
        next_item_id: state.next_item_id,
    })
}

/// The answers of an exam from its attempts in position order; `start_item_id` is the item
/// the exam presented first (the engine's pending choice before any answer).
pub(super) fn history_from_attempts(
    attempts: &[AttemptRow],
    bank: &Bank,
    start_item_id: Option<i64>,
) -> AppResult<Answers> {
    let mut answers = Answers {
        next_item_id: attempts.last().map_or(start_item_id, |a| a.next_item_id),
        ..Answers::default()
    };
    for attempt in attempts {
        if attempt.pretest {
            answers.pretest.push(attempt.item_id);
            continue;
        }
        let index = bank.index_of(attempt.item_id).ok_or_else(|| {
            AppError::internal("attempted item is not in the bank", attempt.item_id)
        })?;
        answers.administered.push(index);
        answers.scores.push(attempt.score.max(0) as u32);
    }
    Ok(answers)
}
