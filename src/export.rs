//! `adaptive-engine export`: the answers of every exam of one assessment (any status), for
//! calibration and analysis tools (mirt, catR, pandas…), in one of three forms:
//! - `csv` (default): one row per attempt, columns [`COLUMNS`];
//! - `jsonl`: the same rows as JSON objects, one per line, with the same field names;
//! - `matrix`: the response matrix, one row per exam with at least one answer, one column
//!   per item answered in any exam (in item id order), cells the score or empty.
//!
//! Numbers are written at full precision: the shortest text that reads back as the same
//! `f64` (Rust's `{}`, serde_json's). Times are RFC 3339 in UTC with the stored
//! microseconds.
//!
//! Owns the formats and the order of a run (snapshot transaction, header, rows). Must not
//! write SQL (rows come from [`crate::storage::export_rows`]), hold more than one page of
//! rows (or, for the matrix, one exam's row) in memory, nor change the database.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chrono::SecondsFormat;
use diesel_async::AsyncPgConnection;
use serde::Serialize;

use crate::storage::export_rows::{self, AnsweredItem, ExportAttempt};

/// The columns of the `csv` form, and the field names of the `jsonl` form, in order.
pub const COLUMNS: [&str; 11] = [
    "examSessionId",
    "studentId",
    "assessmentId",
    "position",
    "itemId",
    "externalId",
    "response",
    "score",
    "theta",
    "standardError",
    "answeredAt",
];

/// The output form of an export (the variants' docs are the CLI's `--format` help).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CSV, one row per answer: examSessionId, studentId, assessmentId, position, itemId,
    /// externalId, response, score, theta, standardError, answeredAt.
    #[default]
    Csv,
    /// JSON Lines: the same rows as JSON objects, one per line, with the same field names;
    /// ids are strings (as GraphQL IDs), position, score, theta and standardError numbers.
    Jsonl,
    /// CSV response matrix: one row per exam with at least one answer; columns
    /// examSessionId, studentId, then the externalId of each item answered in any exam (in
    /// item id order); cells the score, empty when the item was not given.
    Matrix,
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Exams with at least one answer.
    pub exams: u64,
    /// Attempts (answers).
    pub attempts: u64,
}

/// Writes the export of `assessment_id` to `out`, in one read-only `REPEATABLE READ`
/// transaction (a consistent snapshot even while exams are being answered), reading the
/// attempts page by page. Returns `out` (flushed) and what was written.
///
/// # Errors
/// `assessment N does not exist`, database errors, and write errors of `out`.
pub async fn export<W: Write + Send>(
    conn: &mut AsyncPgConnection,
    assessment_id: i64,
    format: Format,
    out: W,
) -> anyhow::Result<(W, ExportSummary)> {
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async move |conn| {
            anyhow::ensure!(
                export_rows::assessment_exists(conn, assessment_id).await?,
                "assessment {assessment_id} does not exist"
            );
            let items = match format {
                Format::Matrix => export_rows::answered_items(conn, assessment_id).await?,
                Format::Csv | Format::Jsonl => Vec::new(),
            };
            let mut writer = RowWriter::new(format, out, &items)?;
            export_rows::for_each_page(conn, assessment_id, |page| {
                page.iter().try_for_each(|row| writer.write(row))
            })
            .await?;
            writer.finish()
        })
        .await
}

/// [`export`] into the file `path`, which appears only once complete: the rows go to a
/// temporary file next to it, renamed to `path` at the end (and removed on failure).
///
/// # Errors
/// As [`export`], and when the file cannot be created or renamed.
pub async fn export_to_file(
    conn: &mut AsyncPgConnection,
    assessment_id: i64,
    format: Format,
    path: &Path,
) -> anyhow::Result<ExportSummary> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let partial = path.with_file_name(format!(
        ".{}.partial-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let file = std::fs::File::create(&partial).with_context(|| {
        format!(
            "cannot write {} (creating {})",
            path.display(),
            partial.display()
        )
    })?;
    let written = async {
        let (out, summary) =
            export(conn, assessment_id, format, std::io::BufWriter::new(file)).await?;
        let file = out
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        anyhow::Ok(summary)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Formats export rows, given in exam then position order, onto a writer.
pub struct RowWriter<W: Write> {
    sink: Sink<W>,
    summary: ExportSummary,
    last_exam: Option<i64>,
}

enum Sink<W: Write> {
    Csv(csv::Writer<W>),
    Jsonl(W),
    Matrix(Matrix<W>),
}

/// The response matrix being written: the columns, and the current exam's row.
struct Matrix<W: Write> {
    csv: csv::Writer<W>,
    column_of: HashMap<i64, usize>,
    /// The current exam and its student.
    exam: Option<(i64, String)>,
    /// Its scores, one cell per column.
    cells: Vec<Option<i32>>,
}

impl<W: Write> Matrix<W> {
    /// Writes the current exam's row, if any.
    fn flush_exam(&mut self) -> anyhow::Result<()> {
        if let Some((exam, student)) = self.exam.take() {
            let mut record = Vec::with_capacity(self.cells.len() + 2);
            record.push(exam.to_string());
            record.push(student);
            record.extend(
                self.cells
                    .iter_mut()
                    .map(|cell| cell.take().map_or_else(String::new, |s| s.to_string())),
            );
            self.csv.write_record(&record)?;
        }
        Ok(())
    }
}

/// One attempt as a JSON Lines object (the field order of [`COLUMNS`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonRow<'a> {
    exam_session_id: String,
    student_id: &'a str,
    assessment_id: String,
    position: i32,
    item_id: String,
    external_id: &'a str,
    response: &'a str,
    score: i32,
    theta: f64,
    standard_error: f64,
    answered_at: String,
}

/// `answeredAt` as written: RFC 3339, UTC, with as many fraction digits as needed.
pub fn format_time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The cells of one attempt in the `csv` form, in [`COLUMNS`] order.
pub fn csv_record(row: &ExportAttempt) -> [String; 11] {
    [
        row.exam_session_id.to_string(),
        row.student_id.clone(),
        row.assessment_id.to_string(),
        row.position.to_string(),
        row.item_id.to_string(),
        row.external_id.clone(),
        row.response.clone(),
        row.score.to_string(),
        row.theta.to_string(),
        row.standard_error.to_string(),
        format_time(&row.answered_at),
    ]
}

impl<W: Write> RowWriter<W> {
    /// Starts an export in `format` onto `out` and writes its header (CSV forms); `items`
    /// are the matrix's columns (ignored by the other forms).
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn new(format: Format, out: W, items: &[AnsweredItem]) -> anyhow::Result<Self> {
        let sink = match format {
            Format::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(COLUMNS)?;
                Sink::Csv(csv)
            }
            Format::Jsonl => Sink::Jsonl(out),
            Format::Matrix => {
                let mut csv = csv::Writer::from_writer(out);
                let header = ["examSessionId", "studentId"]
                    .into_iter()
                    .chain(items.iter().map(|item| item.external_id.as_str()));
                csv.write_record(header)?;
                Sink::Matrix(Matrix {
                    csv,
                    column_of: items
                        .iter()
                        .enumerate()
                        .map(|(k, item)| (item.item_id, k))
                        .collect(),
                    exam: None,
                    cells: vec![None; items.len()],
                })
            }
        };
        Ok(Self {
            sink,
            summary: ExportSummary::default(),
            last_exam: None,
        })
    }

    /// Writes one attempt; attempts must come in exam order.
    ///
    /// # Errors
    /// When `out` cannot be written, or (matrix) the item is not one of the columns.
    pub fn write(&mut self, row: &ExportAttempt) -> anyhow::Result<()> {
        let new_exam = self.last_exam != Some(row.exam_session_id);
        if new_exam {
            self.summary.exams += 1;
            self.last_exam = Some(row.exam_session_id);
        }
        self.summary.attempts += 1;
        match &mut self.sink {
            Sink::Csv(csv) => csv.write_record(csv_record(row))?,
            Sink::Jsonl(out) => {
                serde_json::to_writer(
                    &mut *out,
                    &JsonRow {
                        exam_session_id: row.exam_session_id.to_string(),
                        student_id: &row.student_id,
                        assessment_id: row.assessment_id.to_string(),
                        position: row.position,
                        item_id: row.item_id.to_string(),
                        external_id: &row.external_id,
                        response: &row.response,
                        score: row.score,
                        theta: row.theta,
                        standard_error: row.standard_error,
                        answered_at: format_time(&row.answered_at),
                    },
                )?;
                out.write_all(b"\n")?;
            }
            Sink::Matrix(matrix) => {
                if new_exam {
                    matrix.flush_exam()?;
                    matrix.exam = Some((row.exam_session_id, row.student_id.clone()));
                }
                let column = *matrix.column_of.get(&row.item_id).with_context(|| {
                    format!("item {} is not a column of the matrix", row.item_id)
                })?;
                matrix.cells[column] = Some(row.score);
            }
        }
        Ok(())
    }

    /// Ends the export (the matrix's last row), flushes and returns the writer.
    ///
    /// # Errors
    /// When `out` cannot be written or flushed.
    pub fn finish(self) -> anyhow::Result<(W, ExportSummary)> {
        let out = match self.sink {
            Sink::Csv(csv) => csv.into_inner().map_err(csv::IntoInnerError::into_error)?,
            Sink::Jsonl(mut out) => {
                out.flush()?;
                out
            }
            Sink::Matrix(mut matrix) => {
                matrix.flush_exam()?;
                matrix
                    .csv
                    .into_inner()
                    .map_err(csv::IntoInnerError::into_error)?
            }
        };
        Ok((out, self.summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn row(exam: i64, position: i32, item: i64, score: i32) -> ExportAttempt {
        ExportAttempt {
            exam_session_id: exam,
            student_id: format!("s,{exam}"),
            assessment_id: 7,
            position,
            item_id: item,
            external_id: format!("q{item}"),
            response: "A \"quoted\", answer".into(),
            score,
            theta: 0.1 + 0.2,
            standard_error: 1.0 / 3.0,
            answered_at: Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
        }
    }

    fn written(format: Format, items: &[AnsweredItem], rows: &[ExportAttempt]) -> String {
        let mut writer = RowWriter::new(format, Vec::new(), items).unwrap();
        for r in rows {
            writer.write(r).unwrap();
        }
        let (out, summary) = writer.finish().unwrap();
        assert_eq!(summary.attempts, rows.len() as u64);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_rows_read_back_exactly() {
        let rows = [row(1, 1, 10, 1), row(1, 2, 11, 0), row(2, 1, 11, 1)];
        let text = written(Format::Csv, &[], &rows);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            reader.headers().unwrap(),
            &csv::StringRecord::from(&COLUMNS[..])
        );
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 3);
        for (record, row) in records.iter().zip(&rows) {
            assert_eq!(&record[1], row.student_id);
            assert_eq!(&record[6], row.response);
            assert_eq!(record[8].parse::<f64>().unwrap(), row.theta);
            assert_eq!(record[9].parse::<f64>().unwrap(), row.standard_error);
            assert_eq!(&record[10], "2023-11-14T22:13:20.123456Z");
        }
        assert_eq!(&records[0][8], "0.30000000000000004");
    }

    #[test]
    fn jsonl_has_one_object_per_line_with_the_columns() {
        let text = written(Format::Jsonl, &[], &[row(1, 1, 10, 1), row(2, 1, 11, 0)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        let keys: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns = COLUMNS.to_vec();
        columns.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, columns);
        assert_eq!(first["examSessionId"], "1");
        assert_eq!(first["theta"].as_f64(), Some(0.1 + 0.2));
        assert_eq!(first["score"], 1);
    }

    #[test]
    fn the_matrix_has_one_row_per_exam_and_empty_cells() {
        let items = [
            AnsweredItem {
                item_id: 10,
                external_id: "q10".into(),
            },
            AnsweredItem {
                item_id: 11,
                external_id: "q11".into(),
            },
            AnsweredItem {
                item_id: 12,
                external_id: "q12".into(),
            },
        ];
        let rows = [row(1, 1, 12, 1), row(1, 2, 10, 0), row(2, 1, 11, 2)];
        let text = written(Format::Matrix, &items, &rows);
        assert_eq!(
            text,
            "examSessionId,studentId,q10,q11,q12\n1,\"s,1\",0,,1\n2,\"s,2\",,2,\n"
        );
        // An item outside the columns is a bug, reported rather than dropped.
        let mut writer = RowWriter::new(Format::Matrix, Vec::new(), &items[..1]).unwrap();
        assert!(writer.write(&row(1, 1, 99, 1)).is_err());
        // No rows: the header alone.
        assert_eq!(
            written(Format::Matrix, &[], &[]),
            "examSessionId,studentId\n"
        );
        assert_eq!(written(Format::Csv, &[], &[]).trim_end(), COLUMNS.join(","));
    }
}
