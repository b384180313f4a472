//! The rows of `adaptive-engine export`: every attempt of every exam of one assessment
//! (any status), with its exam, student and item, read through a server-side cursor so
//! that an export of any size holds one page in memory.
//!
//! Owns the export's SQL; knows nothing of output formats (that is `crate::export`).
//! Read-only: must never write.

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel::sql_types::{BigInt, Double, Integer, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Rows fetched from the cursor per round trip.
pub const PAGE_SIZE: usize = 10_000;

/// Name of the cursor (one per transaction, closed at its end).
const CURSOR: &str = "adaptive_engine_export";

/// One attempt, as exported: the answer and the estimate after it.
#[derive(Clone, Debug, PartialEq, diesel::QueryableByName)]
pub struct ExportAttempt {
    /// The exam.
    #[diesel(sql_type = BigInt)]
    pub exam_session_id: i64,
    /// The exam's student.
    #[diesel(sql_type = Text)]
    pub student_id: String,
    /// The exam's assessment.
    #[diesel(sql_type = BigInt)]
    pub assessment_id: i64,
    /// 1-based position of the answer in the exam.
    #[diesel(sql_type = Integer)]
    pub position: i32,
    /// The item answered.
    #[diesel(sql_type = BigInt)]
    pub item_id: i64,
    /// Its author's id.
    #[diesel(sql_type = Text)]
    pub external_id: String,
    /// The response given, as sent.
    #[diesel(sql_type = Text)]
    pub response: String,
    /// Its score (0/1 for dichotomous items, the category for polytomous ones).
    #[diesel(sql_type = Integer)]
    pub score: i32,
    /// The ability estimate after this answer.
    #[diesel(sql_type = Double)]
    pub theta: f64,
    /// Its standard error.
    #[diesel(sql_type = Double)]
    pub standard_error: f64,
    /// When the answer was recorded.
    #[diesel(sql_type = Timestamptz)]
    pub answered_at: DateTime<Utc>,
}

/// An item answered in some exam of the assessment (a column of the response matrix).
#[derive(Clone, Debug, PartialEq, diesel::QueryableByName)]
pub struct AnsweredItem {
    /// The item's id.
    #[diesel(sql_type = BigInt)]
    pub item_id: i64,
    /// Its author's id.
    #[diesel(sql_type = Text)]
    pub external_id: String,
}

/// Whether the assessment exists.
pub async fn assessment_exists(
    conn: &mut AsyncPgConnection,
    assessment_id: i64,
) -> QueryResult<bool> {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let found: Found = diesel::sql_query("SELECT count(*) AS n FROM assessments WHERE id = $1")
        .bind::<BigInt, _>(assessment_id)
        .get_result(conn)
        .await?;
    Ok(found.n > 0)
}

/// The items answered in at least one exam of the assessment, in item id order.
pub async fn answered_items(
    conn: &mut AsyncPgConnection,
    assessment_id: i64,
) -> QueryResult<Vec<AnsweredItem>> {
    diesel::sql_query(
        "SELECT i.id AS item_id, i.external_id
           FROM items i
          WHERE i.id IN (SELECT a.item_id
                           FROM attempts a JOIN exam_sessions e ON e.id = a.exam_session_id
                          WHERE e.assessment_id = $1)
          ORDER BY i.id",
    )
    .bind::<BigInt, _>(assessment_id)
    .load(conn)
    .await
}

/// Reads every attempt of every exam of the assessment, ordered by exam id then position,
/// and hands them to `on_page` [`PAGE_SIZE`] rows at a time (a server-side cursor: the
/// query runs once, one page is in memory at a time).
///
/// Must run inside a transaction (the cursor lives until its end); run it in the same
/// `REPEATABLE READ` transaction as [`answered_items`] for the two to agree.
///
/// # Errors
/// The first database error, or the first error of `on_page` (which stops the reading).
pub async fn for_each_page<E, F>(
    conn: &mut AsyncPgConnection,
    assessment_id: i64,
    mut on_page: F,
) -> Result<(), E>
where
    E: From<diesel::result::Error>,
    F: FnMut(&[ExportAttempt]) -> Result<(), E>,
{
    // `assessment_id` is an integer: formatting it into the statement cannot inject SQL.
    diesel::sql_query(format!(
        "DECLARE {CURSOR} NO SCROLL CURSOR FOR
         SELECT a.exam_session_id, e.student_id, e.assessment_id, a.position, a.item_id,
                i.external_id, a.response, a.score, a.theta, a.standard_error,
                a.created_at AS answered_at
           FROM attempts a
           JOIN exam_sessions e ON e.id = a.exam_session_id
           JOIN items i ON i.id = a.item_id
          WHERE e.assessment_id = {assessment_id}
          ORDER BY a.exam_session_id, a.position"
    ))
    .execute(conn)
    .await?;
    let fetch = format!("FETCH FORWARD {PAGE_SIZE} FROM {CURSOR}");
    loop {
        let page: Vec<ExportAttempt> = diesel::sql_query(&fetch).load(conn).await?;
        if !page.is_empty() {
            on_page(&page)?;
        }
        if page.len() < PAGE_SIZE {
            break;
        }
    }
    diesel::sql_query(format!("CLOSE {CURSOR}"))
        .execute(conn)
        .await?;
    Ok(())
}
