//! Mutations: banks, exams, answers, and cache operations.

use async_graphql::{Context, ID, Object, Result};

use super::types::{
    CreateItemBankInput, ExamSession, ItemBank, SelectionRule, StartExamInput, StartExamPayload,
    SubmitAnswerInput, SubmitAnswerPayload,
};
use super::{caller, gql, parse_id, service};
use crate::exam::{ExamRequest, NewBank};
use crate::irt::EstimatorSettings;

/// Operations that change state.
#[derive(Default)]
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Creates an item bank with all its items, atomically (admin).
    async fn create_item_bank(
        &self,
        ctx: &Context<'_>,
        input: CreateItemBankInput,
    ) -> Result<ItemBank> {
        caller(ctx).and_then(|c| c.require_admin()).map_err(gql)?;
        let bank = NewBank {
            name: input.name,
            scaling_constant: input.scaling_constant.unwrap_or(1.0),
            items: input.items.into_iter().map(Into::into).collect(),
        };
        let info = service(ctx)
            .map_err(gql)?
            .create_item_bank(bank)
            .await
            .map_err(gql)?;
        Ok(info.into())
    }

    /// Starts an exam owned by the caller (the token's `sub`) and presents its first item.
    async fn start_exam(
        &self,
        ctx: &Context<'_>,
        input: StartExamInput,
    ) -> Result<StartExamPayload> {
        let caller = caller(ctx).map_err(gql)?;
        let request = ExamRequest {
            item_bank_id: parse_id(&input.item_bank_id, "itemBankId").map_err(gql)?,
            max_items: input.max_items.unwrap_or(20),
            min_items: input.min_items.unwrap_or(1),
            se_target: input.se_target,
            initial_theta: input.initial_theta.unwrap_or(0.0),
            randomesque: input.randomesque.unwrap_or(1),
            estimator: input
                .estimator
                .as_ref()
                .map_or_else(EstimatorSettings::default, |e| e.settings()),
            selection_rule: input
                .selection_rule
                .unwrap_or(SelectionRule::MaxInfo)
                .into(),
            exposure: input.exposure.as_ref().map(Into::into),
            content_balance: input.content_balance.as_ref().map(|targets| {
                targets
                    .iter()
                    .map(|t| (t.content_area.clone(), t.proportion))
                    .collect()
            }),
            start_item_ids: input
                .start_item_ids
                .iter()
                .flatten()
                .map(|id| parse_id(id, "startItemIds"))
                .collect::<Result<_, _>>()
                .map_err(gql)?,
            cut_score: input.cut_score,
            confidence_level: input.confidence_level.unwrap_or(0.95),
            min_information: input.min_information,
            max_duration_seconds: input.max_duration_seconds,
        };
        let started = service(ctx)
            .map_err(gql)?
            .start_exam(&caller.sub, request)
            .await
            .map_err(gql)?;
        let next_item = started.exam.current_item.clone().map(Into::into);
        Ok(StartExamPayload {
            exam_session: started.exam.into(),
            next_item,
        })
    }

    /// Records the answer to the presented item and returns the new estimate and the next
    /// item. Sending the same response again returns the recorded result (owner).
    async fn submit_answer(
        &self,
        ctx: &Context<'_>,
        input: SubmitAnswerInput,
    ) -> Result<SubmitAnswerPayload> {
        let caller = caller(ctx).map_err(gql)?;
        let exam_id = parse_id(&input.exam_session_id, "examSessionId").map_err(gql)?;
        let item_id = parse_id(&input.item_id, "itemId").map_err(gql)?;
        let answered = service(ctx)
            .map_err(gql)?
            .submit_answer(caller, exam_id, item_id, &input.response)
            .await
            .map_err(gql)?;
        Ok(answered.into())
    }

    /// Adds seconds to an active exam's engine-state TTL; returns the new TTL (admin).
    async fn extend_exam_ttl(
        &self,
        ctx: &Context<'_>,
        exam_session_id: ID,
        additional_seconds: i32,
    ) -> Result<i32> {
        caller(ctx).and_then(|c| c.require_admin()).map_err(gql)?;
        let id = parse_id(&exam_session_id, "examSessionId").map_err(gql)?;
        let ttl = service(ctx)
            .map_err(gql)?
            .extend_ttl(id, additional_seconds)
            .await
            .map_err(gql)?;
        Ok(i32::try_from(ttl).unwrap_or(i32::MAX))
    }

    /// Gives up an active exam: it takes no more answers (`EXAM_NOT_ACTIVE`), keeps its
    /// attempts and drops its engine state; returns the session, status `ABANDONED` (admin).
    async fn abandon_exam(&self, ctx: &Context<'_>, exam_session_id: ID) -> Result<ExamSession> {
        caller(ctx).and_then(|c| c.require_admin()).map_err(gql)?;
        let id = parse_id(&exam_session_id, "examSessionId").map_err(gql)?;
        let view = service(ctx)
            .map_err(gql)?
            .abandon_exam(id)
            .await
            .map_err(gql)?;
        Ok(view.into())
    }

    /// Deletes every engine state from Redis and returns how many; exams go on, rebuilt
    /// from Postgres (admin).
    async fn clear_engine_cache(&self, ctx: &Context<'_>) -> Result<i32> {
        caller(ctx).and_then(|c| c.require_admin()).map_err(gql)?;
        let deleted = service(ctx)
            .map_err(gql)?
            .clear_engine_cache()
            .await
            .map_err(gql)?;
        Ok(i32::try_from(deleted).unwrap_or(i32::MAX))
    }
}
