//! Rows and queries of the Postgres tables. Every function takes `&mut AsyncPgConnection`
//! and returns diesel's `QueryResult`, so callers compose them inside one transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::enums::{AssessmentStatus, ExamStatus};
use super::schema::{assessments, attempts, exam_sessions, item_banks, items};

pub use super::rows::{
    AssessmentRow, AttemptRow, ExamSessionRow, ItemBankRow, ItemRow, NewAssessment, NewAttempt,
    NewExamSession, NewItem, NewItemBank, SessionProgress,
};

/// The status an answer's conditional write requires (a `'static` bind parameter).
const ACTIVE: ExamStatus = ExamStatus::Active;

/// Rows inserted per statement: Postgres allows 65,535 bind parameters, an item has 13.
const INSERT_CHUNK: usize = 4_000;

/// Inserts a bank and its items (call inside a transaction).
pub async fn insert_item_bank(
    conn: &mut AsyncPgConnection,
    bank: &NewItemBank<'_>,
    new_items: Vec<NewItem>,
) -> QueryResult<(ItemBankRow, usize)> {
    let row: ItemBankRow = diesel::insert_into(item_banks::table)
        .values(bank)
        .returning(ItemBankRow::as_returning())
        .get_result(conn)
        .await?;
    let mut inserted = 0;
    let rows: Vec<NewItem> = new_items
        .into_iter()
        .map(|item| NewItem {
            item_bank_id: row.id,
            ..item
        })
        .collect();
    for chunk in rows.chunks(INSERT_CHUNK) {
        inserted += diesel::insert_into(items::table)
            .values(chunk)
            .execute(conn)
            .await?;
    }
    Ok((row, inserted))
}

/// Adds items to a bank as its next revision (call inside a transaction): the bank row is
/// locked by the revision's increment, so concurrent changes of one bank queue. `None`
/// when the bank does not exist.
pub async fn add_bank_items(
    conn: &mut AsyncPgConnection,
    bank_id: i64,
    new_items: Vec<NewItem>,
) -> QueryResult<Option<(ItemBankRow, usize)>> {
    let Some(row) = bump_bank_revision(conn, bank_id).await? else {
        return Ok(None);
    };
    let rows: Vec<NewItem> = new_items
        .into_iter()
        .map(|item| NewItem {
            item_bank_id: row.id,
            added_revision: row.revision,
            ..item
        })
        .collect();
    let mut inserted = 0;
    for chunk in rows.chunks(INSERT_CHUNK) {
        inserted += diesel::insert_into(items::table)
            .values(chunk)
            .execute(conn)
            .await?;
    }
    Ok(Some((row, inserted)))
}

/// Increments a bank's revision, returning the bank as it is now.
pub(crate) async fn bump_bank_revision(
    conn: &mut AsyncPgConnection,
    bank_id: i64,
) -> QueryResult<Option<ItemBankRow>> {
    diesel::update(item_banks::table.find(bank_id))
        .set(item_banks::revision.eq(item_banks::revision + 1))
        .returning(ItemBankRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// Retires an item (call inside a transaction): new exams no longer present it, and its
/// bank's revision moves on. Returns the item's bank and whether it was retired now (a
/// retired item stays as it was), or `None` when there is no such item.
pub async fn retire_item(
    conn: &mut AsyncPgConnection,
    item_id: i64,
    now: DateTime<Utc>,
) -> QueryResult<Option<(i64, bool)>> {
    let retired: Option<i64> = diesel::update(
        items::table
            .find(item_id)
            .filter(items::retired_at.is_null()),
    )
    .set(items::retired_at.eq(now))
    .returning(items::item_bank_id)
    .get_result(conn)
    .await
    .optional()?;
    match retired {
        Some(bank_id) => {
            bump_bank_revision(conn, bank_id).await?;
            Ok(Some((bank_id, true)))
        }
        None => Ok(items::table
            .find(item_id)
            .select(items::item_bank_id)
            .first(conn)
            .await
            .optional()?
            .map(|bank_id| (bank_id, false))),
    }
}

/// One bank by id.
pub async fn find_item_bank(
    conn: &mut AsyncPgConnection,
    bank_id: i64,
) -> QueryResult<Option<ItemBankRow>> {
    item_banks::table
        .find(bank_id)
        .select(ItemBankRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A bank's current revision (`None`: no such bank).
pub async fn bank_revision(conn: &mut AsyncPgConnection, bank_id: i64) -> QueryResult<Option<i64>> {
    item_banks::table
        .find(bank_id)
        .select(item_banks::revision)
        .first(conn)
        .await
        .optional()
}

/// Every bank, newest first.
pub async fn list_item_banks(conn: &mut AsyncPgConnection) -> QueryResult<Vec<ItemBankRow>> {
    item_banks::table
        .order(item_banks::id.desc())
        .select(ItemBankRow::as_select())
        .load(conn)
        .await
}

/// Every bank's number of items, in one query.
pub async fn count_items_by_bank(
    conn: &mut AsyncPgConnection,
) -> QueryResult<std::collections::HashMap<i64, i64>> {
    let counts: Vec<(i64, i64)> = items::table
        .group_by(items::item_bank_id)
        .select((items::item_bank_id, diesel::dsl::count_star()))
        .load(conn)
        .await?;
    Ok(counts.into_iter().collect())
}

/// All items of a bank in id order (the order the engine indexes them by).
pub async fn load_bank_items(
    conn: &mut AsyncPgConnection,
    bank_id: i64,
) -> QueryResult<Vec<ItemRow>> {
    items::table
        .filter(items::item_bank_id.eq(bank_id))
        .order(items::id.asc())
        .select(ItemRow::as_select())
        .load(conn)
        .await
}

/// Inserts a session and returns it.
pub async fn insert_exam_session(
    conn: &mut AsyncPgConnection,
    session: &NewExamSession<'_>,
) -> QueryResult<ExamSessionRow> {
    diesel::insert_into(exam_sessions::table)
        .values(session)
        .returning(ExamSessionRow::as_returning())
        .get_result(conn)
        .await
}

/// One session by id.
pub async fn find_exam_session(
    conn: &mut AsyncPgConnection,
    session_id: i64,
) -> QueryResult<Option<ExamSessionRow>> {
    exam_sessions::table
        .find(session_id)
        .select(ExamSessionRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// One session by id, locked (`FOR UPDATE`) until the transaction ends, so answers to one
/// exam are recorded one at a time whichever instance receives them.
pub async fn lock_exam_session(
    conn: &mut AsyncPgConnection,
    session_id: i64,
) -> QueryResult<Option<ExamSessionRow>> {
    exam_sessions::table
        .find(session_id)
        .select(ExamSessionRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Marks an active session abandoned (no item presented any more); `None` when there is no
/// such active session.
pub async fn abandon_exam_session(
    conn: &mut AsyncPgConnection,
    session_id: i64,
    at: DateTime<Utc>,
) -> QueryResult<Option<ExamSessionRow>> {
    diesel::update(
        exam_sessions::table
            .find(session_id)
            .filter(exam_sessions::status.eq(ExamStatus::Active)),
    )
    .set((
        exam_sessions::status.eq(ExamStatus::Abandoned),
        exam_sessions::current_item_id.eq(None::<i64>),
        exam_sessions::updated_at.eq(at),
    ))
    .returning(ExamSessionRow::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Ids of the sessions that are still active.
pub async fn active_session_ids(conn: &mut AsyncPgConnection) -> QueryResult<Vec<i64>> {
    exam_sessions::table
        .filter(exam_sessions::status.eq(ExamStatus::Active))
        .order(exam_sessions::id.asc())
        .select(exam_sessions::id)
        .load(conn)
        .await
}

/// The recorded answer of a session to one item, if any.
pub async fn find_attempt(
    conn: &mut AsyncPgConnection,
    session_id: i64,
    item_id: i64,
) -> QueryResult<Option<AttemptRow>> {
    attempts::table
        .filter(attempts::exam_session_id.eq(session_id))
        .filter(attempts::item_id.eq(item_id))
        .select(AttemptRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Every recorded answer of a session, in the order given.
pub async fn list_attempts(
    conn: &mut AsyncPgConnection,
    session_id: i64,
) -> QueryResult<Vec<AttemptRow>> {
    attempts::table
        .filter(attempts::exam_session_id.eq(session_id))
        .order(attempts::position.asc())
        .select(AttemptRow::as_select())
        .load(conn)
        .await
}

/// Records one answer and moves its session on, in a single statement, provided the
/// session is still where the caller saw it: active, `attempt.position - 1` answers
/// recorded and `attempt.item_id` presented. Returns when the attempt was recorded, or
/// `None` (nothing written) when the session has moved on or was never there.
///
/// The `UPDATE` takes the row lock, so two answers racing for one exam are serialized by
/// Postgres and the later one re-checks the condition on the new row and writes nothing.
/// Outside a transaction this is the whole answer in one round trip (autocommit); inside
/// one that already holds the lock it cannot miss.
pub async fn record_attempt(
    conn: &mut AsyncPgConnection,
    attempt: &NewAttempt<'_>,
    progress: &SessionProgress,
) -> QueryResult<Option<DateTime<Utc>>> {
    RecordAttempt { attempt, progress }
        .get_result(conn)
        .await
        .optional()
}

/// The statement of [`record_attempt`]: hand-written because diesel has no CTEs, and a
/// type of its own (static query id) so each connection prepares it once and then sends
/// only Bind/Execute/Sync, where `sql_query` would prepare it anew on every answer.
struct RecordAttempt<'a> {
    attempt: &'a NewAttempt<'a>,
    progress: &'a SessionProgress,
}

impl diesel::query_builder::QueryId for RecordAttempt<'_> {
    type QueryId = RecordAttempt<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for RecordAttempt<'_> {
    type SqlType = diesel::sql_types::Timestamptz;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for RecordAttempt<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Bool, Float8, Int4, Int8, Nullable, Text, Timestamptz};
        let (a, p) = (self.attempt, self.progress);
        out.push_sql("WITH session AS (UPDATE exam_sessions SET status = ");
        out.push_bind_param::<Text, _>(&p.status)?;
        out.push_sql(", theta = ");
        out.push_bind_param::<Float8, _>(&p.theta)?;
        out.push_sql(", standard_error = ");
        out.push_bind_param::<Float8, _>(&p.standard_error)?;
        out.push_sql(", items_completed = ");
        out.push_bind_param::<Int4, _>(&p.items_completed)?;
        out.push_sql(", current_item_id = ");
        out.push_bind_param::<Nullable<Int8>, _>(&p.current_item_id)?;
        out.push_sql(", stop_reason = ");
        out.push_bind_param::<Nullable<Text>, _>(&p.stop_reason)?;
        out.push_sql(", updated_at = ");
        out.push_bind_param::<Timestamptz, _>(&p.updated_at)?;
        out.push_sql(", completed_at = ");
        out.push_bind_param::<Nullable<Timestamptz>, _>(&p.completed_at)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Int8, _>(&a.exam_session_id)?;
        out.push_sql(" AND status = ");
        out.push_bind_param::<Text, _>(&ACTIVE)?;
        out.push_sql(" AND items_completed + 1 = ");
        out.push_bind_param::<Int4, _>(&a.position)?;
        out.push_sql(" AND current_item_id = ");
        out.push_bind_param::<Int8, _>(&a.item_id)?;
        out.push_sql(
            " RETURNING id) INSERT INTO attempts (exam_session_id, item_id, position, response, \
             correct, score, theta, standard_error, next_item_id, completed, pretest) SELECT id, ",
        );
        out.push_bind_param::<Int8, _>(&a.item_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Int4, _>(&a.position)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(a.response)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&a.correct)?;
        out.push_sql(", ");
        out.push_bind_param::<Int4, _>(&a.score)?;
        out.push_sql(", ");
        out.push_bind_param::<Float8, _>(&a.theta)?;
        out.push_sql(", ");
        out.push_bind_param::<Float8, _>(&a.standard_error)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Int8>, _>(&a.next_item_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&a.completed)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&a.pretest)?;
        out.push_sql(" FROM session RETURNING created_at");
        Ok(())
    }
}

/// Inserts an assessment and returns it.
pub async fn insert_assessment(
    conn: &mut AsyncPgConnection,
    assessment: &NewAssessment<'_>,
) -> QueryResult<AssessmentRow> {
    diesel::insert_into(assessments::table)
        .values(assessment)
        .returning(AssessmentRow::as_returning())
        .get_result(conn)
        .await
}

/// One assessment by id.
pub async fn find_assessment(
    conn: &mut AsyncPgConnection,
    assessment_id: i64,
) -> QueryResult<Option<AssessmentRow>> {
    assessments::table
        .find(assessment_id)
        .select(AssessmentRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Every assessment, newest first.
pub async fn list_assessments(conn: &mut AsyncPgConnection) -> QueryResult<Vec<AssessmentRow>> {
    assessments::table
        .order(assessments::id.desc())
        .select(AssessmentRow::as_select())
        .load(conn)
        .await
}

/// Archives an open assessment; `None` when there is no open assessment of this id.
pub async fn archive_assessment(
    conn: &mut AsyncPgConnection,
    assessment_id: i64,
    at: DateTime<Utc>,
) -> QueryResult<Option<AssessmentRow>> {
    diesel::update(
        assessments::table
            .find(assessment_id)
            .filter(assessments::status.eq(AssessmentStatus::Open)),
    )
    .set((
        assessments::status.eq(AssessmentStatus::Archived),
        assessments::archived_at.eq(Some(at)),
    ))
    .returning(AssessmentRow::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Serializes the exam starts of one student on one assessment until the transaction ends
/// (a transaction-scoped advisory lock), so the resume check, the attempt count and the
/// insert see one consistent picture however many requests race.
pub async fn lock_student_assessment(
    conn: &mut AsyncPgConnection,
    assessment_id: i64,
    student_id: &str,
) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1::text || ':' || $2, 0))")
        .bind::<diesel::sql_types::Int8, _>(assessment_id)
        .bind::<diesel::sql_types::Text, _>(student_id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The running exam of a student on an assessment, if any.
pub async fn find_active_exam(
    conn: &mut AsyncPgConnection,
    assessment_id: i64,
    student_id: &str,
) -> QueryResult<Option<ExamSessionRow>> {
    exam_sessions::table
        .filter(exam_sessions::assessment_id.eq(assessment_id))
        .filter(exam_sessions::student_id.eq(student_id))
        .filter(exam_sessions::status.eq(ExamStatus::Active))
        .select(ExamSessionRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// How many exams a student has started on an assessment (any status).
pub async fn count_student_exams(
    conn: &mut AsyncPgConnection,
    assessment_id: i64,
    student_id: &str,
) -> QueryResult<i64> {
    exam_sessions::table
        .filter(exam_sessions::assessment_id.eq(assessment_id))
        .filter(exam_sessions::student_id.eq(student_id))
        .count()
        .get_result(conn)
        .await
}

/// Which exams a listing returns.
#[derive(Clone, Debug, Default)]
pub struct ExamFilter {
    /// Only exams of this assessment.
    pub assessment_id: Option<i64>,
    /// Only this student's exams.
    pub student_id: Option<String>,
    /// Only exams with this status.
    pub status: Option<ExamStatus>,
}

fn filtered(filter: &ExamFilter) -> exam_sessions::BoxedQuery<'_, diesel::pg::Pg> {
    let mut query = exam_sessions::table.into_boxed();
    if let Some(id) = filter.assessment_id {
        query = query.filter(exam_sessions::assessment_id.eq(id));
    }
    if let Some(student) = &filter.student_id {
        query = query.filter(exam_sessions::student_id.eq(student));
    }
    if let Some(status) = filter.status {
        query = query.filter(exam_sessions::status.eq(status));
    }
    query
}

/// Up to `limit` exams matching `filter`, newest first, with ids below `before_id` (keyset
/// pagination: the cursor is the last id seen).
pub async fn list_exams(
    conn: &mut AsyncPgConnection,
    filter: &ExamFilter,
    before_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<ExamSessionRow>> {
    let mut query = filtered(filter);
    if let Some(id) = before_id {
        query = query.filter(exam_sessions::id.lt(id));
    }
    query
        .order(exam_sessions::id.desc())
        .limit(limit)
        .select(ExamSessionRow::as_select())
        .load(conn)
        .await
}

/// How many exams match `filter`.
pub async fn count_exams(conn: &mut AsyncPgConnection, filter: &ExamFilter) -> QueryResult<i64> {
    filtered(filter).count().get_result(conn).await
}
