//! Operations on exams: the Redis view of live exams, TTL extension, abandonment, clearing
//! the cache.
//!
//! Owns operator actions; must not record answers.

use chrono::Utc;

use super::*;
use crate::error::{AppError, AppResult};
use crate::ids::ExamId;
use crate::storage::events::{EventKind, ThetaEvent};
use crate::storage::queries::{self};

impl ExamService {
    /// Ids of the exams whose state is live in Redis.
    pub async fn active_sessions(&self) -> AppResult<Vec<i64>> {
        self.states
            .active_sessions()
            .await
            .map_err(redis_unavailable)
    }

    /// Adds seconds to an active exam's state TTL (rebuilding the state first when Redis
    /// lost it); returns the new TTL.
    pub async fn extend_ttl(
        &self,
        exam_session_id: ExamId,
        additional_seconds: i32,
    ) -> AppResult<i64> {
        let exam_session_id = exam_session_id.0;
        if !(1..=7 * 24 * 3600).contains(&additional_seconds) {
            return Err(AppError::bad_input(
                "additionalSeconds must be between 1 and 604800 (one week)",
            ));
        }
        let row = self
            .db
            .run(async |conn| Ok(queries::find_exam_session(conn, exam_session_id).await?))
            .await?
            .ok_or_else(|| exam_not_found(exam_session_id))?;
        let status = row.status;
        if status != ExamStatus::Active {
            return Err(AppError::ExamNotActive(status));
        }
        let additional = i64::from(additional_seconds);
        if let Some(ttl) = self
            .states
            .extend_ttl(exam_session_id, additional)
            .await
            .map_err(redis_unavailable)?
        {
            return Ok(ttl);
        }
        // No state in Redis: rebuild it, then extend.
        let design = design_of(&row)?;
        let state = self
            .db
            .run(async |conn| self.rebuild_state(conn, &row, design).await)
            .await?;
        let json = state_json(&state)?;
        self.states
            .save(
                exam_session_id,
                &json,
                i64::from(state.items_completed),
                None,
            )
            .await
            .map_err(redis_unavailable)?;
        self.states
            .extend_ttl(exam_session_id, additional)
            .await
            .map_err(redis_unavailable)?
            .ok_or_else(|| AppError::Unavailable("the engine state could not be written".into()))
    }

    /// Gives up an active exam (admin): it takes no answer after this, its attempts stay,
    /// its engine state is dropped. An answer racing with it either lands first or gets
    /// `EXAM_NOT_ACTIVE` (both take the row lock).
    pub async fn abandon_exam(&self, exam_session_id: ExamId) -> AppResult<ExamView> {
        let exam_session_id = exam_session_id.0;
        let (row, bank) = self
            .db
            .run(async |conn| {
                let Some(row) =
                    queries::abandon_exam_session(conn, exam_session_id, Utc::now()).await?
                else {
                    let row = queries::find_exam_session(conn, exam_session_id)
                        .await?
                        .ok_or_else(|| exam_not_found(exam_session_id))?;
                    return Err(AppError::ExamNotActive(row.status));
                };
                let bank = self.bank(conn, row.item_bank_id, row.bank_revision).await?;
                Ok((row, bank))
            })
            .await?;
        tracing::info!(exam.id = exam_session_id, "exam abandoned");
        self.metrics.exams_abandoned.inc();
        let event = ThetaEvent {
            kind: EventKind::Abandoned,
            exam_session_id,
            student_id: row.student_id.clone(),
            assessment_id: row.assessment_id,
            origin: self.events.origin(),
            theta: row.theta,
            standard_error: row.standard_error,
            items_completed: row.items_completed,
            completed: false,
            at: row.updated_at,
        };
        self.events.deliver_local(&event);
        // The completion marker also keeps a late state write from bringing it back.
        if let Err(e) = self
            .states
            .complete(exam_session_id, Some(&event.to_json()))
            .await
        {
            tracing::warn!(exam.id = exam_session_id, error = %e, "cannot drop the abandoned exam's state");
        }
        let design = design_of(&row)?;
        self.view(row, design, &bank)
    }

    /// Deletes every engine state; returns how many. Exams go on from Postgres.
    pub async fn clear_engine_cache(&self) -> AppResult<i64> {
        let deleted = self.states.clear().await.map_err(redis_unavailable)?;
        tracing::info!(deleted, "engine cache cleared");
        Ok(deleted)
    }
}

pub(super) fn redis_unavailable(e: crate::storage::redis_pool::RedisUnavailable) -> AppError {
    tracing::warn!(error = %e, "redis unavailable");
    AppError::Unavailable("the engine-state cache (Redis) is unavailable".into())
}
