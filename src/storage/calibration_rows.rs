//! The SQL of calibration runs: the pretest answers a bank has, the answers of the exams
//! that gave them (read in chunks of exams, once per EM pass), the runs themselves, and the
//! promotion of calibrated items.
//!
//! Owns that SQL; must not estimate anything (that is `irt::calibrate`, driven by
//! `exam::calibration`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::enums::{CalibrationStatus, ItemModel, ItemStatus};
use super::schema::{calibration_runs, items};

/// A calibration run as stored.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = calibration_runs)]
pub struct CalibrationRunRow {
    /// Primary key.
    pub id: i64,
    /// The bank whose pretest items it calibrates.
    pub item_bank_id: i64,
    /// `FIXED_THETA`, `OEM` or `MEM`.
    pub method: String,
    /// `TWO_PL` or `THREE_PL`.
    pub model: String,
    /// Items with fewer responses get no estimate.
    pub min_responses: i32,
    /// Running, done or failed.
    pub status: CalibrationStatus,
    /// Who asked (token subject, or `cli`).
    pub created_by: String,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// EM cycles run.
    pub cycles: Option<i32>,
    /// One object per pretest item (see `exam::calibration::ItemEstimate`).
    pub items: serde_json::Value,
    /// Why it failed.
    pub error: Option<String>,
}

/// A new run.
#[derive(Debug, Insertable)]
#[diesel(table_name = calibration_runs)]
pub struct NewCalibrationRun<'a> {
    /// The bank.
    pub item_bank_id: i64,
    /// The method's spelling.
    pub method: &'a str,
    /// The model's spelling.
    pub model: &'a str,
    /// Minimum responses for an estimate.
    pub min_responses: i32,
    /// Who asks.
    pub created_by: &'a str,
}

/// Stores a new run, `RUNNING`.
pub async fn insert_run(
    conn: &mut AsyncPgConnection,
    run: &NewCalibrationRun<'_>,
) -> QueryResult<CalibrationRunRow> {
    diesel::insert_into(calibration_runs::table)
        .values(run)
        .returning(CalibrationRunRow::as_returning())
        .get_result(conn)
        .await
}

/// Ends a run: its status, cycles, per-item results and error.
pub async fn finish_run(
    conn: &mut AsyncPgConnection,
    id: i64,
    status: CalibrationStatus,
    cycles: Option<i32>,
    results: serde_json::Value,
    error: Option<&str>,
) -> QueryResult<CalibrationRunRow> {
    diesel::update(calibration_runs::table.find(id))
        .set((
            calibration_runs::status.eq(status),
            calibration_runs::finished_at.eq(Some(Utc::now())),
            calibration_runs::cycles.eq(cycles),
            calibration_runs::items.eq(results),
            calibration_runs::error.eq(error),
        ))
        .returning(CalibrationRunRow::as_returning())
        .get_result(conn)
        .await
}

/// One run.
pub async fn find_run(
    conn: &mut AsyncPgConnection,
    id: i64,
) -> QueryResult<Option<CalibrationRunRow>> {
    calibration_runs::table
        .find(id)
        .select(CalibrationRunRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The newest finished run of a bank.
pub async fn latest_done_run(
    conn: &mut AsyncPgConnection,
    bank_id: i64,
) -> QueryResult<Option<CalibrationRunRow>> {
    calibration_runs::table
        .filter(calibration_runs::item_bank_id.eq(bank_id))
        .filter(calibration_runs::status.eq(CalibrationStatus::Done))
        .order(calibration_runs::id.desc())
        .select(CalibrationRunRow::as_select())
        .first(conn)
        .await
        .optional()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    item_id: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Pretest answers per item, for the items of `item_ids` that have any.
pub async fn pretest_counts(
    conn: &mut AsyncPgConnection,
    item_ids: &[i64],
) -> QueryResult<Vec<(i64, i64)>> {
    let counts: Vec<Count> = diesel::sql_query(
        "SELECT item_id, count(*) AS n FROM attempts \
         WHERE pretest AND item_id = ANY($1) GROUP BY item_id",
    )
    .bind::<Array<BigInt>, _>(item_ids)
    .load(conn)
    .await?;
    Ok(counts.into_iter().map(|c| (c.item_id, c.n)).collect())
}

#[derive(QueryableByName)]
struct ExamId {
    #[diesel(sql_type = BigInt)]
    exam_session_id: i64,
}

/// The exams that answered any of `item_ids` as pretest items, in id order.
pub async fn pretest_exams(
    conn: &mut AsyncPgConnection,
    item_ids: &[i64],
) -> QueryResult<Vec<i64>> {
    let rows: Vec<ExamId> = diesel::sql_query(
        "SELECT DISTINCT exam_session_id FROM attempts \
         WHERE pretest AND item_id = ANY($1) ORDER BY exam_session_id",
    )
    .bind::<Array<BigInt>, _>(item_ids)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.exam_session_id).collect())
}

/// One answer as calibration reads it.
#[derive(Clone, Debug, QueryableByName)]
pub struct CalibrationAnswer {
    /// The exam.
    #[diesel(sql_type = BigInt)]
    pub exam_session_id: i64,
    /// The item.
    #[diesel(sql_type = BigInt)]
    pub item_id: i64,
    /// Its category score.
    #[diesel(sql_type = Integer)]
    pub score: i32,
    /// Whether it was a pretest answer.
    #[diesel(sql_type = Bool)]
    pub pretest: bool,
}

/// Every answer of the exams `exam_ids`, by exam then position.
pub async fn answers_of(
    conn: &mut AsyncPgConnection,
    exam_ids: &[i64],
) -> QueryResult<Vec<CalibrationAnswer>> {
    diesel::sql_query(
        "SELECT exam_session_id, item_id, score, pretest FROM attempts \
         WHERE exam_session_id = ANY($1) ORDER BY exam_session_id, position",
    )
    .bind::<Array<BigInt>, _>(exam_ids)
    .load(conn)
    .await
}

/// Makes a pretest item operational with calibrated 3PL parameters (call inside a
/// transaction). `None` when it is not a live pretest item of `bank_id`.
pub async fn promote_item(
    conn: &mut AsyncPgConnection,
    bank_id: i64,
    item_id: i64,
    (a, b, c): (f64, f64, f64),
) -> QueryResult<Option<i64>> {
    diesel::update(
        items::table
            .find(item_id)
            .filter(items::item_bank_id.eq(bank_id))
            .filter(items::status.eq(ItemStatus::Pretest))
            .filter(items::retired_at.is_null()),
    )
    .set((
        items::status.eq(ItemStatus::Operational),
        items::a.eq(a),
        items::b.eq(b),
        items::c.eq(c),
        items::d.eq(1.0),
        items::model.eq(ItemModel::Dichotomous),
    ))
    .returning(items::id)
    .get_result(conn)
    .await
    .optional()
}

/// The bank of an item (`None`: no such item).
pub async fn bank_of_item(conn: &mut AsyncPgConnection, item_id: i64) -> QueryResult<Option<i64>> {
    items::table
        .find(item_id)
        .select(items::item_bank_id)
        .first(conn)
        .await
        .optional()
}
