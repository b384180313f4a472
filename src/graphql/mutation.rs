//! Mutations: banks, assessments, exams, answers, and cache operations. Proctors get
//! `FORBIDDEN` on every one.

use async_graphql::{Context, ID, Object, Result};

use super::types::{
    Assessment, CreateAssessmentInput, CreateItemBankInput, ExamSession, ItemBank, StartExamInput,
    StartExamPayload, SubmitAnswerInput, SubmitAnswerPayload,
};
use super::{caller, gql, parse_id, service};
use crate::auth::Role;
use crate::error::AppError;
use crate::exam::NewBank;

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
        caller(ctx)
            .and_then(super::super::auth::Caller::require_admin)
            .map_err(gql)?;
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

    /// Adds items to an existing bank (admin), validated as `createItemBank` validates
    /// them; an `externalId` already in the bank is `BAD_USER_INPUT`. Exams already running
    /// never select the new items; new exams may. Returns the bank.
    async fn add_items(
        &self,
        ctx: &Context<'_>,
        item_bank_id: ID,
        items: Vec<super::types::ItemInput>,
    ) -> Result<ItemBank> {
        caller(ctx)
            .and_then(super::super::auth::Caller::require_admin)
            .map_err(gql)?;
        let bank_id = parse_id(&item_bank_id, "itemBankId").map_err(gql)?;
        let info = service(ctx)
            .map_err(gql)?
            .add_items(bank_id, items.into_iter().map(Into::into).collect())
            .await
            .map_err(gql)?;
        Ok(info.into())
    }

    /// Retires an item (admin): exams started from now on never present it; running exams
    /// are unaffected and its recorded answers stay. `false` when it was retired already.
    async fn retire_item(&self, ctx: &Context<'_>, item_id: ID) -> Result<bool> {
        caller(ctx)
            .and_then(super::super::auth::Caller::require_admin)
            .map_err(gql)?;
        let id = parse_id(&item_id, "itemId").map_err(gql)?;
        service(ctx)
            .map_err(gql)?
            .retire_item(id)
            .await
            .map_err(gql)
    }

    /// Stores a new assessment: a bank, the design its exams run on, the feedback policy,
    /// the window and the attempt limit; the design is validated now (admin).
    async fn create_assessment(
        &self,
        ctx: &Context<'_>,
        input: CreateAssessmentInput,
    ) -> Result<Assessment> {
        let caller = caller(ctx).map_err(gql)?;
        caller.require_admin().map_err(gql)?;
        let bank_id = parse_id(&input.item_bank_id, "itemBankId").map_err(gql)?;
        let view = service(ctx)
            .map_err(gql)?
            .create_assessment(caller, input.into_new(bank_id))
            .await
            .map_err(gql)?;
        Ok(Assessment(view))
    }

    /// Archives an assessment: no new exam starts; running exams can still be finished
    /// (admin).
    async fn archive_assessment(&self, ctx: &Context<'_>, id: ID) -> Result<Assessment> {
        caller(ctx)
            .and_then(super::super::auth::Caller::require_admin)
            .map_err(gql)?;
        let id = parse_id(&id, "id").map_err(gql)?;
        let view = service(ctx)
            .map_err(gql)?
            .archive_assessment(id)
            .await
            .map_err(gql)?;
        Ok(Assessment(view))
    }

    /// Starts an exam of an assessment for the caller (a student; an admin names the
    /// student with `studentId`), or returns the student's running exam of it (resume).
    async fn start_exam(
        &self,
        ctx: &Context<'_>,
        input: StartExamInput,
    ) -> Result<StartExamPayload> {
        let caller = caller(ctx).map_err(gql)?;
        let student_id = match (caller.role, input.student_id) {
            (Role::Student, None) => caller.sub.clone(),
            (Role::Admin, Some(student)) => student,
            (Role::Student, Some(_)) => {
                return Err(gql(AppError::Forbidden(
                    "only an admin starts an exam on a student's behalf (studentId)".into(),
                )));
            }
            (Role::Admin, None) => {
                return Err(gql(AppError::bad_input(
                    "an admin starts exams on a student's behalf: studentId is required",
                )));
            }
            (Role::Proctor, _) => {
                return Err(gql(AppError::Forbidden(
                    "proctors watch exams; they do not start them".into(),
                )));
            }
        };
        let assessment_id = parse_id(&input.assessment_id, "assessmentId").map_err(gql)?;
        let started = service(ctx)
            .map_err(gql)?
            .start_exam(&student_id, assessment_id)
            .await
            .map_err(gql)?;
        Ok(StartExamPayload::new(started, caller))
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
        Ok(SubmitAnswerPayload::new(answered, caller))
    }

    /// Adds seconds to an active exam's engine-state TTL; returns the new TTL (admin).
    async fn extend_exam_ttl(
        &self,
        ctx: &Context<'_>,
        exam_session_id: ID,
        additional_seconds: i32,
    ) -> Result<i32> {
        caller(ctx)
            .and_then(super::super::auth::Caller::require_admin)
            .map_err(gql)?;
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
        let caller = caller(ctx).map_err(gql)?;
        caller.require_admin().map_err(gql)?;
        let id = parse_id(&exam_session_id, "examSessionId").map_err(gql)?;
        let view = service(ctx)
            .map_err(gql)?
            .abandon_exam(id)
            .await
            .map_err(gql)?;
        Ok(ExamSession::new(view, caller))
    }

    /// Deletes every engine state from Redis and returns how many; exams go on, rebuilt
    /// from Postgres (admin).
    async fn clear_engine_cache(&self, ctx: &Context<'_>) -> Result<i32> {
        caller(ctx)
            .and_then(super::super::auth::Caller::require_admin)
            .map_err(gql)?;
        let deleted = service(ctx)
            .map_err(gql)?
            .clear_engine_cache()
            .await
            .map_err(gql)?;
        Ok(i32::try_from(deleted).unwrap_or(i32::MAX))
    }
}
