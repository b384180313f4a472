//! Queries: exam sessions, engine summaries, assessments, banks and live sessions.

use async_graphql::{Context, ID, Object, Result};

use super::types::{
    Assessment, EngineSummary, ExamConnection, ExamEdge, ExamFilter, ExamSession, ItemBank,
    PageInfo,
};
use super::{caller, gql, parse_id, service};
use crate::storage::queries;

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
        caller(ctx)
            .and_then(super::super::auth::Caller::require_staff)
            .map_err(gql)?;
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
        caller(ctx)
            .and_then(super::super::auth::Caller::require_staff)
            .map_err(gql)?;
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
        caller(ctx)
            .and_then(super::super::auth::Caller::require_staff)
            .map_err(gql)?;
        let views = service(ctx)
            .map_err(gql)?
            .assessments()
            .await
            .map_err(gql)?;
        Ok(views.into_iter().map(Assessment).collect())
    }

    /// The caller's own exams, newest first (at most 200): what a student's "my results"
    /// page lists; theta/SE per each assessment's feedback policy.
    async fn my_exams(&self, ctx: &Context<'_>) -> Result<Vec<ExamSession>> {
        let caller = caller(ctx).map_err(gql)?;
        let views = service(ctx)
            .map_err(gql)?
            .my_exams(caller)
            .await
            .map_err(gql)?;
        Ok(views
            .into_iter()
            .map(|v| ExamSession::new(v, caller))
            .collect())
    }

    /// Exams from Postgres (the source of truth), newest first, as a Relay connection
    /// (admin, proctor). `filter: {status: ACTIVE}` lists every running exam, whatever
    /// Redis holds.
    async fn exams(
        &self,
        ctx: &Context<'_>,
        filter: Option<ExamFilter>,
        #[graphql(default_with = "Some(50)")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<ExamConnection> {
        let caller = caller(ctx).map_err(gql)?;
        let filter = filter.unwrap_or_default();
        let filter = queries::ExamFilter {
            assessment_id: filter
                .assessment_id
                .as_ref()
                .map(|id| parse_id(id, "filter.assessmentId"))
                .transpose()
                .map_err(gql)?,
            student_id: filter.student_id,
            status: filter.status.map(Into::into),
        };
        let after_id = after
            .as_deref()
            .map(|cursor| parse_id(&ID::from(cursor), "after"))
            .transpose()
            .map_err(gql)?;
        let page = service(ctx)
            .map_err(gql)?
            .exams(caller, &filter, first.unwrap_or(50), after_id)
            .await
            .map_err(gql)?;
        let cursors: Vec<String> = page.exams.iter().map(|e| e.row.id.to_string()).collect();
        let edges: Vec<ExamEdge> = page
            .exams
            .iter()
            .cloned()
            .zip(&cursors)
            .map(|(view, cursor)| ExamEdge {
                cursor: cursor.clone(),
                node: ExamSession::new(view, caller),
            })
            .collect();
        let nodes = page
            .exams
            .into_iter()
            .map(|v| ExamSession::new(v, caller))
            .collect();
        Ok(ExamConnection {
            edges,
            nodes,
            page_info: PageInfo {
                has_previous_page: after_id.is_some(),
                has_next_page: page.has_next,
                start_cursor: cursors.first().cloned(),
                end_cursor: cursors.last().cloned(),
            },
            total_count: i32::try_from(page.total).unwrap_or(i32::MAX),
        })
    }
}
