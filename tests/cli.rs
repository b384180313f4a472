//! Tests of the `adaptive-engine` binary itself: `export` (CSV, JSON Lines and the response
//! matrix, compared field by field with the attempts read from Postgres), which `.env` is
//! read (the working directory's, never a parent's), the log output (no ANSI codes in a
//! pipe; `LOG_FORMAT=json` gives one JSON object per line), and `schema`, `token` and
//! `migrate`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use adaptive_engine::auth::{Auth, JwtKeys, Role};
use adaptive_engine::storage::schema::{attempts, exam_sessions, item_banks, items};
use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, JoinOnDsl, QueryDsl};
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

/// The binary, in `cwd`, with none of the service's variables inherited from the test's
/// environment (each test sets what it needs).
fn binary(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adaptive-engine"));
    cmd.current_dir(cwd);
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_SECRET",
        "RUST_LOG",
        "LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `cmd` without blocking the test's runtime.
async fn output(cmd: Command) -> Output {
    tokio::process::Command::from(cmd)
        .output()
        .await
        .expect("run the binary")
}

/// A fresh empty directory (removed by the caller).
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(common::unique(&format!("cli_{tag}")));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

// ---------------------------------------------------------------------------------------
// export
// ---------------------------------------------------------------------------------------

/// One attempt as Postgres has it.
#[derive(Clone, Debug, PartialEq)]
struct Stored {
    exam: i64,
    student: String,
    assessment: i64,
    position: i32,
    item: i64,
    external_id: String,
    response: String,
    score: i32,
    theta: f64,
    standard_error: f64,
    answered_at: DateTime<Utc>,
}

type StoredTuple = (
    i64,
    String,
    Option<i64>,
    i32,
    i64,
    String,
    String,
    i32,
    f64,
    f64,
    DateTime<Utc>,
);

/// Every attempt of the assessment's exams, straight from Postgres, in exam and position
/// order.
async fn stored_attempts(app: &common::TestApp, assessment: i64) -> Vec<Stored> {
    let mut conn = app.db.conn().await;
    let rows: Vec<StoredTuple> = attempts::table
        .inner_join(exam_sessions::table)
        .inner_join(items::table.on(items::id.eq(attempts::item_id)))
        .filter(exam_sessions::assessment_id.eq(assessment))
        .order((attempts::exam_session_id.asc(), attempts::position.asc()))
        .select((
            attempts::exam_session_id,
            exam_sessions::student_id,
            exam_sessions::assessment_id,
            attempts::position,
            attempts::item_id,
            items::external_id,
            attempts::response,
            attempts::score,
            attempts::theta,
            attempts::standard_error,
            attempts::created_at,
        ))
        .load(&mut conn)
        .await
        .expect("attempts");
    rows.into_iter()
        .map(|r| Stored {
            exam: r.0,
            student: r.1,
            assessment: r.2.expect("an assessment's exam"),
            position: r.3,
            item: r.4,
            external_id: r.5,
            response: r.6,
            score: r.7,
            theta: r.8,
            standard_error: r.9,
            answered_at: r.10,
        })
        .collect()
}

/// Answers `n` items of an exam whose start (or last answer) payload is `payload`,
/// alternating right and wrong; returns the last payload.
async fn answer_items(
    app: &common::TestApp,
    token: &str,
    exam: &str,
    mut payload: Value,
    n: usize,
) -> Value {
    for k in 0..n {
        let item = payload["nextItem"]["itemId"]
            .as_str()
            .expect("a presented item")
            .to_owned();
        payload = common::answer(app, token, exam, &item, k % 2 == 0).await;
    }
    payload
}

fn parse_time(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw)
        .unwrap_or_else(|e| panic!("answeredAt {raw:?}: {e}"))
        .with_timezone(&Utc)
}

fn number<T: std::str::FromStr>(raw: &str, what: &str) -> T {
    raw.parse()
        .unwrap_or_else(|_| panic!("{what} {raw:?} is not a number"))
}

/// An exported attempt, read back from a CSV record or a JSON object.
fn from_fields(field: impl Fn(&str) -> String) -> Stored {
    Stored {
        exam: number(&field("examSessionId"), "examSessionId"),
        student: field("studentId"),
        assessment: number(&field("assessmentId"), "assessmentId"),
        position: number(&field("position"), "position"),
        item: number(&field("itemId"), "itemId"),
        external_id: field("externalId"),
        response: field("response"),
        score: number(&field("score"), "score"),
        theta: number(&field("theta"), "theta"),
        standard_error: number(&field("standardError"), "standardError"),
        answered_at: parse_time(&field("answeredAt")),
    }
}

const COLUMNS: [&str; 11] = [
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

fn read_csv(bytes: &[u8]) -> Vec<Stored> {
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = reader.headers().expect("header").clone();
    assert_eq!(headers.iter().collect::<Vec<_>>(), COLUMNS);
    reader
        .records()
        .map(|record| {
            let record = record.expect("record");
            from_fields(|name| {
                let at = COLUMNS.iter().position(|c| *c == name).expect("column");
                record[at].to_owned()
            })
        })
        .collect()
}

fn read_jsonl(bytes: &[u8]) -> Vec<Stored> {
    text(bytes)
        .lines()
        .map(|line| {
            let object: Value = serde_json::from_str(line).expect("one JSON object per line");
            let keys: Vec<&str> = object
                .as_object()
                .expect("an object")
                .keys()
                .map(String::as_str)
                .collect();
            let mut expected = COLUMNS.to_vec();
            expected.sort_unstable();
            let mut keys_sorted = keys.clone();
            keys_sorted.sort_unstable();
            assert_eq!(keys_sorted, expected, "{line}");
            // Numbers are JSON numbers; ids, text and times are strings.
            for numeric in ["position", "score", "theta", "standardError"] {
                assert!(object[numeric].is_number(), "{numeric} in {line}");
            }
            from_fields(|name| match &object[name] {
                Value::String(s) => s.clone(),
                // serde_json writes the shortest round-trip text, as Rust's `{}` does.
                other => other.to_string(),
            })
        })
        .collect()
}

#[tokio::test]
async fn export_writes_every_attempt_exactly_as_stored() {
    let app = common::TestApp::spawn().await;
    let bank = app.create_bank(&common::bank_params(20)).await;
    let assessment =
        common::create_assessment(&app, &bank, json!({"maxItems": 5}), json!({})).await;
    // One complete exam, one left ACTIVE after 2 answers.
    let alice = app.student("alice");
    let (alice_exam, payload) = common::start_assessment(&app, &alice, &assessment).await;
    let last = answer_items(&app, &alice, &alice_exam, payload, 5).await;
    assert_eq!(last["completed"], true, "{last}");
    let bob = app.student("bob, \"the second\"");
    let (bob_exam, payload) = common::start_assessment(&app, &bob, &assessment).await;
    let last = answer_items(&app, &bob, &bob_exam, payload, 2).await;
    assert_eq!(last["examSession"]["status"], "ACTIVE", "{last}");
    // Another assessment's answers stay out.
    let other = common::create_assessment(&app, &bank, json!({"maxItems": 3}), json!({})).await;
    let carol = app.student("carol");
    let (carol_exam, payload) = common::start_assessment(&app, &carol, &other).await;
    answer_items(&app, &carol, &carol_exam, payload, 1).await;

    let assessment_id: i64 = assessment.parse().expect("id");
    let stored = stored_attempts(&app, assessment_id).await;
    assert_eq!(stored.len(), 7);
    assert_eq!(
        stored
            .iter()
            .map(|s| s.exam.to_string())
            .collect::<Vec<_>>(),
        [vec![alice_exam.clone(); 5], vec![bob_exam.clone(); 2]].concat()
    );
    let dir = temp_dir("export");
    let export = |format: &str| {
        let mut cmd = binary(&dir);
        cmd.env("DATABASE_URL", &app.db.url).args([
            "export",
            "--assessment",
            &assessment,
            "--format",
            format,
        ]);
        cmd
    };

    // CSV (the default) on stdout.
    let mut cmd = binary(&dir);
    cmd.env("DATABASE_URL", &app.db.url)
        .args(["export", "--assessment", &assessment]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(read_csv(&out.stdout), stored);
    assert!(
        text(&out.stderr).contains("exported 7 answers of 2 exams"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(output(export("csv")).await.stdout, out.stdout);

    // JSON Lines.
    let out = output(export("jsonl")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(read_jsonl(&out.stdout), stored);

    // --out FILE: the same bytes, nothing on stdout, no temporary file left.
    let path = dir.join("answers.jsonl");
    let mut cmd = export("jsonl");
    cmd.arg("--out").arg(&path);
    let to_file = output(cmd).await;
    assert!(to_file.status.success(), "{}", text(&to_file.stderr));
    assert!(to_file.stdout.is_empty());
    assert_eq!(std::fs::read(&path).expect("the file"), out.stdout);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["answers.jsonl"]);

    // The response matrix: one row per exam, one column per answered item (item id order).
    let out = output(export("matrix")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut reader = csv::Reader::from_reader(&out.stdout[..]);
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let mut answered: Vec<(i64, String)> = stored
        .iter()
        .map(|s| (s.item, s.external_id.clone()))
        .collect();
    answered.sort();
    answered.dedup();
    let expected_header: Vec<String> = ["examSessionId", "studentId"]
        .into_iter()
        .map(str::to_owned)
        .chain(answered.iter().map(|(_, external)| external.clone()))
        .collect();
    assert_eq!(header, expected_header);
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.len(), header.len());
        let exam: i64 = number(&row[0], "examSessionId");
        let answers: BTreeMap<&str, &Stored> = stored
            .iter()
            .filter(|s| s.exam == exam)
            .map(|s| (s.external_id.as_str(), s))
            .collect();
        assert!(!answers.is_empty(), "exam {exam} has answers");
        assert_eq!(&row[1], answers.values().next().expect("one").student);
        for (column, external) in header.iter().enumerate().skip(2) {
            match answers.get(external.as_str()) {
                Some(s) => assert_eq!(row[column].parse::<i32>().ok(), Some(s.score)),
                None => assert_eq!(&row[column], "", "{external} was not given to {exam}"),
            }
        }
    }
    assert_eq!(
        rows.iter().map(|r| r[0].to_owned()).collect::<Vec<_>>(),
        [alice_exam, bob_exam]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn export_of_an_unknown_assessment_fails_with_one_line() {
    let app = common::TestApp::spawn().await;
    let dir = temp_dir("unknown");
    let path = dir.join("out.csv");
    for to_file in [false, true] {
        let mut cmd = binary(&dir);
        cmd.env("DATABASE_URL", &app.db.url)
            .args(["export", "--assessment", "987654321"]);
        if to_file {
            cmd.arg("--out").arg(&path);
        }
        let out = output(cmd).await;
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert_eq!(
            stderr.trim_end(),
            "adaptive-engine: assessment 987654321 does not exist"
        );
        assert!(out.stdout.is_empty());
    }
    // No file, not even an empty or partial one.
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
    // An assessment without answers: the header only.
    let bank = app.create_bank(&common::bank_params(5)).await;
    let assessment = common::create_assessment(&app, &bank, json!({}), json!({})).await;
    let mut cmd = binary(&dir);
    cmd.env("DATABASE_URL", &app.db.url).args([
        "export",
        "--assessment",
        &assessment,
        "--format",
        "matrix",
    ]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "examSessionId,studentId\n");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// .env
// ---------------------------------------------------------------------------------------

/// Promise: "configuration comes from the environment or a `.env` file in the working
/// directory (not its parents; the environment wins over the file)": `token` finds
/// `JWT_SECRET` in its working directory's `.env`, not in the parent's, and an exported
/// variable beats the file.
#[test]
fn only_the_working_directorys_env_file_is_read() {
    let parent = temp_dir("dotenv");
    let child = parent.join("child");
    std::fs::create_dir_all(&child).expect("child dir");
    std::fs::write(parent.join(".env"), "JWT_SECRET=parent-secret\n").expect("parent .env");
    let token = |cwd: &Path| {
        binary(cwd)
            .args(["token", "--role", "admin", "--sub", "ops-1"])
            .output()
            .expect("run")
    };
    // The parent's .env is not read from the child.
    let out = token(&child);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "adaptive-engine: JWT_SECRET is not set: a token signed with anything else would be refused"
    );
    // It is, from its own directory.
    let out = token(&parent);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let minted = text(&out.stdout);
    assert!(matches!(
        JwtKeys::new(b"parent-secret").verify(minted.trim()),
        Auth::Caller(ref c) if c.sub == "ops-1" && c.role == Role::Admin
    ));
    // The child's own .env is read.
    std::fs::write(child.join(".env"), "JWT_SECRET=child-secret\n").expect("child .env");
    let out = token(&child);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let minted = text(&out.stdout);
    assert!(matches!(
        JwtKeys::new(b"child-secret").verify(minted.trim()),
        Auth::Caller(_)
    ));
    // The environment wins over the file.
    let out = binary(&child)
        .env("JWT_SECRET", "env-secret")
        .args(["token", "--role", "student", "--sub", "alice"])
        .output()
        .expect("run");
    assert!(matches!(
        JwtKeys::new(b"env-secret").verify(text(&out.stdout).trim()),
        Auth::Caller(_)
    ));
    let _ = std::fs::remove_dir_all(&parent);
}

// ---------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------

/// `migrate` on a database that does not exist yet logs (at info) its creation and the
/// migrations applied.
fn migrate_logs(log_format: Option<&str>) -> (Output, String) {
    let db = common::TestDb::unborn();
    let dir = temp_dir("logs");
    let mut cmd = binary(&dir);
    cmd.env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "info")
        .arg("migrate");
    if let Some(format) = log_format {
        cmd.env("LOG_FORMAT", format);
    }
    let out = cmd.output().expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = text(&out.stderr);
    (out, stderr)
}

#[test]
fn logs_in_a_pipe_have_no_colour_codes_and_json_lines_parse() {
    let (out, stderr) = migrate_logs(None);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("database migrated"), "{stderr}");
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI codes in a pipe: {stderr:?}"
    );

    let (out, stderr) = migrate_logs(Some("json"));
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in &lines {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(event["level"], "INFO", "{line}");
        assert!(event["message"].is_string(), "{line}");
        assert!(event["timestamp"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("database migrated")),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'));

    // An unknown format is refused in one line, before anything runs.
    let dir = temp_dir("log_format");
    let out = binary(&dir)
        .env("LOG_FORMAT", "xml")
        .arg("schema")
        .output()
        .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim_end(),
        "adaptive-engine: LOG_FORMAT: expected json or pretty, got \"xml\""
    );
    assert!(out.stdout.is_empty());
}

// ---------------------------------------------------------------------------------------
// Bank files: `simulate --out`'s bank.json, and JSON errors reported as JSON
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn import_bank_reads_the_bank_json_that_simulate_writes() {
    let db = common::TestDb::new().await;
    let dir = temp_dir("import");
    let mut cmd = binary(&dir);
    cmd.args(["simulate", "--examinees", "10", "--max-items", "2", "--out"])
        .arg(dir.join("run"));
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bank_json = dir.join("run/bank.json");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(&bank_json).expect("bank.json"))
            .expect("json");
    let file_items = file["items"].as_array().expect("items");

    let mut cmd = binary(&dir);
    cmd.env("DATABASE_URL", &db.url)
        .arg("import-bank")
        .arg(&bank_json);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bank_id: i64 = number(text(&out.stdout).trim(), "bank id");
    assert!(
        text(&out.stderr).contains(&format!(
            "created item bank {bank_id} \"synthetic\" with {} items",
            file_items.len()
        )),
        "{}",
        text(&out.stderr)
    );
    let mut conn = db.conn().await;
    let (name, scaling): (String, f64) = item_banks::table
        .find(bank_id)
        .select((item_banks::name, item_banks::scaling_constant))
        .first(&mut conn)
        .await
        .expect("bank");
    assert_eq!((name.as_str(), scaling), ("synthetic", 1.0));
    let stored: Vec<(String, f64, f64, f64, f64, Option<String>)> = items::table
        .filter(items::item_bank_id.eq(bank_id))
        .order(items::id.asc())
        .select((
            items::external_id,
            items::a,
            items::b,
            items::c,
            items::d,
            items::content_area,
        ))
        .load(&mut conn)
        .await
        .expect("items");
    assert_eq!(stored.len(), file_items.len());
    for (row, item) in stored.iter().zip(file_items) {
        assert_eq!(item["externalId"], row.0.as_str());
        assert_eq!(item["a"].as_f64(), Some(row.1));
        assert_eq!(item["b"].as_f64(), Some(row.2));
        assert_eq!(item["c"].as_f64(), Some(row.3));
        assert_eq!(item["d"].as_f64(), Some(row.4));
        assert_eq!(item["contentArea"].as_str(), row.5.as_deref());
    }

    // --scaling-constant must agree with the file's; --name wins over the file's.
    let mut cmd = binary(&dir);
    cmd.env("DATABASE_URL", &db.url)
        .args(["import-bank", "--scaling-constant", "1.702"])
        .arg(&bank_json);
    let out = output(cmd).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has scalingConstant 1 but --scaling-constant is 1.702"),
        "{}",
        text(&out.stderr)
    );
    let mut cmd = binary(&dir);
    cmd.env("DATABASE_URL", &db.url)
        .args([
            "import-bank",
            "--name",
            "renamed",
            "--scaling-constant",
            "1",
        ])
        .arg(&bank_json);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("\"renamed\""));

    // A broken JSON object is reported as JSON, in one line, not as "invalid CSV".
    let broken = dir.join("broken.json");
    std::fs::write(&broken, r#"{"items": [{"externalId": "q1", "b": 0, }]}"#).expect("write");
    let mut cmd = binary(&dir);
    cmd.env("DATABASE_URL", &db.url)
        .arg("import-bank")
        .arg(&broken);
    let out = output(cmd).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("adaptive-engine: invalid JSON bank: ") && stderr.contains("line 1"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// schema, token, migrate
// ---------------------------------------------------------------------------------------

/// Promise: "`schema` prints the GraphQL SDL (the committed `schema.graphql`)": the
/// binary's output is that file byte for byte, with no database or configuration.
#[test]
fn schema_prints_the_committed_schema_graphql() {
    let dir = temp_dir("schema");
    let out = binary(&dir).arg("schema").output().expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql");
    let printed = text(&out.stdout);
    assert!(committed.contains("type Mutation"), "a schema is committed");
    let first_difference = printed
        .lines()
        .zip(committed.lines())
        .position(|(a, b)| a != b);
    assert!(
        printed == committed,
        "`adaptive-engine schema` differs from schema.graphql (first differing line: \
         {first_difference:?}; {} vs {} bytes): regenerate it with \
         `cargo run -- schema > schema.graphql`",
        printed.len(),
        committed.len()
    );
}

/// The header and claims of a JWT, decoded without checking the signature.
fn jwt_parts(token: &str) -> (Value, Value) {
    use base64::Engine as _;
    let part = |n: usize| -> Value {
        let encoded = token.split('.').nth(n).expect("a JWT has three parts");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (part(0), part(1))
}

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
    .expect("seconds")
}

/// Promise: "`token --role student|proctor|admin --sub ID [--ttl-seconds N]` mints an HS256
/// JWT with `JWT_SECRET`": its claims are that role and subject and an `exp` N seconds
/// (default 3600) from now, and the server takes it as exactly that caller (a student
/// starts their own exam and is refused admin operations, a proctor reads live exams but
/// may not clear the cache, an admin may).
#[tokio::test]
async fn token_mints_a_jwt_the_server_accepts_with_its_role_subject_and_lifetime() {
    let app = common::TestApp::spawn().await;
    let dir = temp_dir("token");
    let mint = |args: &[&str]| {
        let mut cmd = binary(&dir);
        cmd.env("JWT_SECRET", common::JWT_SECRET)
            .arg("token")
            .args(args);
        cmd
    };
    let mut tokens = Vec::new();
    for (role, sub, ttl) in [
        ("student", "alice", None),
        ("proctor", "room-12", Some(600)),
        ("admin", "ops-1", Some(7200)),
    ] {
        let mut args = vec!["--role", role, "--sub", sub];
        let ttl_text = ttl.map(|t: i64| t.to_string());
        if let Some(ttl) = &ttl_text {
            args.extend(["--ttl-seconds", ttl]);
        }
        let before = unix_now();
        let out = output(mint(&args)).await;
        let after = unix_now();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let token = text(&out.stdout).trim().to_owned();
        let (header, claims) = jwt_parts(&token);
        assert_eq!(header["alg"], "HS256", "{header}");
        assert_eq!(
            (&claims["role"], &claims["sub"]),
            (&json!(role), &json!(sub))
        );
        let lifetime = ttl.unwrap_or(3600);
        let exp = claims["exp"].as_i64().expect("exp");
        assert!(
            (before + lifetime..=after + lifetime).contains(&exp),
            "{role}: exp {exp} is not {lifetime} s after {before}..{after}"
        );
        let expected_role = match role {
            "student" => Role::Student,
            "proctor" => Role::Proctor,
            _ => Role::Admin,
        };
        assert!(matches!(
            JwtKeys::new(common::JWT_SECRET.as_bytes()).verify(&token),
            Auth::Caller(ref c) if c.sub == sub && c.role == expected_role
        ));
        tokens.push(token);
    }
    let [student, proctor, admin] = <[String; 3]>::try_from(tokens).expect("three tokens");

    // The server takes each as that caller.
    let bank = app.create_bank(&common::bank_params(5)).await;
    let assessment = common::create_assessment(&app, &bank, json!({}), json!({})).await;
    let (exam, started) = common::start_assessment(&app, &student, &assessment).await;
    assert_eq!(started["examSession"]["studentId"], "alice");
    const CLEAR: &str = "mutation { clearEngineCache }";
    for refused in [&student, &proctor] {
        let response = app.gql(Some(refused), CLEAR, json!({})).await;
        assert_eq!(common::error_code(&response), "FORBIDDEN", "{response}");
    }
    let live = app.ok(&proctor, "{ activeSessions }", json!({})).await;
    assert_eq!(live["activeSessions"], json!([exam]));
    let cleared = app.ok(&admin, CLEAR, json!({})).await;
    assert_eq!(cleared["clearEngineCache"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Promise: "`migrate` creates the database if missing and applies pending migrations": on
/// a database that does not exist it creates it and applies every migration of
/// `migrations/` once (one row each in `__diesel_schema_migrations`, the service's tables
/// there); run again, it applies nothing more.
#[tokio::test]
async fn migrate_creates_a_missing_database_and_applies_every_migration_once() {
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    let mut expected: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .expect("migrations/")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.join("up.sql").is_file())
            .map(|path| {
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                let (version, _) = name.split_once('_').expect("<version>_<name>");
                version.replace('-', "")
            })
            .collect();
    expected.sort();
    assert!(expected.len() >= 3, "{expected:?}");
    let db = common::TestDb::unborn();
    let dir = temp_dir("migrate");
    for run in ["first", "second"] {
        let mut cmd = binary(&dir);
        cmd.env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "off")
            .arg("migrate");
        let out = output(cmd).await;
        assert!(out.status.success(), "{run} run: {}", text(&out.stderr));
        let mut conn = db.conn().await;
        let applied: Vec<Version> =
            diesel::sql_query("SELECT version FROM __diesel_schema_migrations ORDER BY version")
                .load(&mut conn)
                .await
                .expect("__diesel_schema_migrations");
        let applied: Vec<String> = applied.into_iter().map(|v| v.version).collect();
        assert_eq!(applied, expected, "{run} run");
    }
    for table in [
        "item_banks",
        "items",
        "assessments",
        "exam_sessions",
        "attempts",
    ] {
        assert_eq!(
            db.count(&format!("SELECT count(*) AS n FROM {table}"))
                .await,
            0,
            "{table} exists, empty"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
