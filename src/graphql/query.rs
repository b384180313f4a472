//! Queries: exam sessions, engine summaries, assessments, banks and live sessions.

use async_graphql::{Context, ID, Object, Result};

use super::types::{Assessment, EngineSummary, ExamSession, ItemBank};
use super::{caller, gql, parse_id, service};

/// Read-only operations.
#[derive(Default)]
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// The engine's numbers for one exam, from the Redis cache when it is current, else
    /// from Postgres (owner, proctor or admin).
    async fn engine_summary(
        &self,
        ctx: &Context<'_>,
        exam_session_id: ID,
    ) -> Result<EngineSummary> {
        let caller = caller(ctx).map_err(gql)?;
        let id = parse_id(&exam_session_id, "examSessionId").map_err(gql)?;
        let summary = service(ctx)
            .map_err(gql)?
            .engine_summary(caller, id)
            .await
            .map_err(gql)?;
        Ok(EngineSummary::new(summary, caller))
    }

    /// One exam session (owner, proctor or admin).
    async fn exam_session(&self, ctx: &Context<'_>, id: ID) -> Result<ExamSession> {
        let caller = caller(ctx).map_err(gql)?;
        let id = parse_id(&id, "id").map_err(gql)?;
        let view = service(ctx)
            .map_err(gql)?
            .exam_session(caller, id)
            .await
            .map_err(gql)?;
        Ok(ExamSession::new(view, caller))
    }

    /// Ids of the exams whose engine state is live in Redis (admin, proctor; uses SCAN).
    /// This is the cache's view: after `clearEngineCache` or a Redis restart it lists only
    /// the exams answered since.
    async fn active_sessions(&self, ctx: &Context<'_>) -> Result<Vec<ID>> {
        caller(ctx).and_then(|c| c.require_staff()).map_err(gql)?;
        let ids = service(ctx)
            .map_err(gql)?
            .active_sessions()
            .await
            .map_err(gql)?;
        Ok(ids.into_iter().map(ID::from).collect())
    }

    /// One item bank (any authenticated caller: no parameters or keys are shown).
    async fn item_bank(&self, ctx: &Context<'_>, id: ID) -> Result<ItemBank> {
        caller(ctx).map_err(gql)?;
        let id = parse_id(&id, "id").map_err(gql)?;
        Ok(service(ctx)
            .map_err(gql)?
            .item_bank(id)
            .await
            .map_err(gql)?
            .into())
    }

    /// Every item bank, newest first (admin, proctor).
    async fn item_banks(&self, ctx: &Context<'_>) -> Result<Vec<ItemBank>> {
        caller(ctx).and_then(|c| c.require_staff()).map_err(gql)?;
        let banks = service(ctx).map_err(gql)?.item_banks().await.map_err(gql)?;
        Ok(banks.into_iter().map(Into::into).collect())
    }

    /// One assessment (any authenticated caller; its `design` is staff-only).
    async fn assessment(&self, ctx: &Context<'_>, id: ID) -> Result<Assessment> {
        caller(ctx).map_err(gql)?;
        let id = parse_id(&id, "id").map_err(gql)?;
        let view = service(ctx)
            .map_err(gql)?
            .assessment(id)
            .await
            .map_err(gql)?;
        Ok(Assessment(view))
    }

    /// Every assessment, newest first (admin, proctor).
    async fn assessments(&self, ctx: &Context<'_>) -> Result<Vec<Assessment>> {
        caller(ctx).and_then(|c| c.require_staff()).map_err(gql)?;
        let views = service(ctx)
            .map_err(gql)?
            .assessments()
            .await
            .map_err(gql)?;
        Ok(views.into_iter().map(Assessment).collect())
    }
}
