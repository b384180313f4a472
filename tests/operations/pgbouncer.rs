//! PgBouncer in transaction mode (Debian's 1.18, started by the test) in front of the test
//! database, with `DATABASE_PREPARED_STATEMENTS=false`: two server connections shared by
//! two instances of eight pooled connections each.

use futures_util::future::join_all;
use serde_json::{Value, json};

use super::common::pgbouncer::PgBouncer;
use super::common::{
    ExamChecker, Options, SUBMIT, TestApp, TestDb, answer, bank_item_ids, bank_params,
    create_assessment, error_code, start_assessment,
};
use super::health;

/// Items per exam.
const LENGTH: usize = 8;
/// Exams running at once.
const EXAMS: usize = 12;

async fn behind(bouncer: &PgBouncer, db: &std::sync::Arc<TestDb>, prefix: &str) -> TestApp {
    TestApp::spawn_with(Options {
        db: Some(db.clone()),
        prefix: Some(prefix.to_owned()),
        env: vec![
            ("DATABASE_URL".into(), bouncer.url(&db.name)),
            ("DATABASE_PREPARED_STATEMENTS".into(), "false".into()),
            ("DATABASE_POOL_SIZE".into(), "8".into()),
        ],
        ..Options::default()
    })
    .await
}

/// One student's exam, answered alternately through either instance.
struct Sitting {
    token: String,
    exam: String,
    item: String,
    check: ExamChecker,
}

/// Answers `count` items of every sitting, all sittings at once, the instances taking
/// turns; checks every estimate against the reference.
async fn answer_all(apps: [&TestApp; 2], sittings: &mut [Sitting], count: usize, seed: usize) {
    let rounds = sittings.iter_mut().enumerate().map(|(n, s)| async move {
        for k in 0..count {
            let correct = (n + k + seed) % 3 != 0;
            let app = apps[(n + k) % 2];
            let result = answer(app, &s.token, &s.exam, &s.item, correct).await;
            s.check.check(&s.item, correct, &result);
            if let Some(next) = result["nextItem"]["itemId"].as_str() {
                s.item = next.to_owned();
            }
        }
    });
    join_all(rounds).await;
}

/// Promise: behind PgBouncer in transaction mode, with prepared statements off, exams run
/// exactly as on Postgres: two instances answer a dozen exams at once (estimates equal the
/// reference EAP to 1e-9), the exams survive the engine cache being cleared (rebuilt from
/// Postgres through the pooler), eight different responses racing for one item record one,
/// and every acknowledged answer is in `attempts` once. With prepared statements on, the same
/// run fails (`prepared statement "sN" does not exist` / `already exists`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exams_run_exactly_through_pgbouncer_in_transaction_mode() {
    let bouncer = PgBouncer::start(2);
    let db = TestDb::new().await;
    let prefix = super::common::unique("ae");
    let a = behind(&bouncer, &db, &prefix).await;
    let b = behind(&bouncer, &db, &prefix).await;
    let (status, ready) = health(&a, "/health/ready").await;
    assert_eq!(status, 200, "ready through the pooler: {ready}");

    let params = bank_params(40);
    let bank = a.create_bank(&params).await;
    let ids = bank_item_ids(&b, &bank).await;
    let assessment = create_assessment(
        &b,
        &bank,
        json!({"maxItems": LENGTH}),
        json!({"maxAttemptsPerStudent": null}),
    )
    .await;
    let starts = (0..EXAMS).map(|n| {
        let app = if n % 2 == 0 { &a } else { &b };
        let (assessment, params, ids) = (&assessment, &params, &ids);
        async move {
            let token = app.student(&format!("s-bouncer-{n}"));
            let (exam, started) = start_assessment(app, &token, assessment).await;
            Sitting {
                token,
                exam,
                item: started["nextItem"]["itemId"]
                    .as_str()
                    .expect("first item")
                    .to_owned(),
                check: ExamChecker::new(params.clone(), ids.clone()),
            }
        }
    });
    let mut sittings = join_all(starts).await;
    answer_all([&a, &b], &mut sittings, LENGTH / 2, 0).await;

    // Recovery: no engine state left in Redis; every exam goes on from Postgres.
    let cleared = a
        .ok(&a.admin(), "mutation { clearEngineCache }", json!({}))
        .await;
    assert_eq!(cleared["clearEngineCache"], json!(EXAMS));
    answer_all([&b, &a], &mut sittings, LENGTH / 2, 1).await;
    for s in &sittings {
        assert_eq!(
            s.check.acknowledged.last().map(|a| a.completed),
            Some(true),
            "every exam completed after {LENGTH} items"
        );
    }

    let mut all = ExamChecker::new(params, ids);
    for s in sittings {
        all.acknowledged.extend(s.check.acknowledged);
    }
    all.assert_recorded_exactly(&db).await;

    // Eight different responses racing for one item through both instances.
    let token = a.student("s-bouncer-race");
    let (exam, started) = start_assessment(&a, &token, &assessment).await;
    let item = started["nextItem"]["itemId"].as_str().expect("item");
    let racing = ["A", "B", "C", "D", "E", "F", "G", "H"]
        .iter()
        .enumerate()
        .map(|(n, response)| {
            let app = if n % 2 == 0 { &a } else { &b };
            let (token, exam) = (&token, &exam);
            async move {
                app.gql(
                    Some(token),
                    SUBMIT,
                    json!({"input": {"examSessionId": exam, "itemId": item, "response": response}}),
                )
                .await
            }
        });
    let results: Vec<Value> = join_all(racing).await;
    let (won, lost): (Vec<_>, Vec<_>) = results.iter().partition(|r| r.get("errors").is_none());
    assert_eq!(won.len(), 1, "one response recorded: {results:?}");
    for r in lost {
        assert_eq!(error_code(r), "ALREADY_ANSWERED", "{r}");
    }
    let raced = db
        .count(&format!(
            "SELECT count(*) AS n FROM attempts WHERE exam_session_id = {exam}"
        ))
        .await;
    assert_eq!(raced, 1, "the race recorded one attempt");
}

/// Promise: behind PgBouncer, `serve` does not migrate (a session advisory lock would not
/// hold there): an unmigrated database starts unready, naming every pending migration, and
/// `migrate` (one transaction under a transaction-scoped lock) through the same pooler
/// makes it ready at once, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_serve_waits_for_migrate_and_readiness_says_so() {
    let bouncer = PgBouncer::start(1);
    let db = TestDb::empty().await;
    let app = behind(&bouncer, &db, &super::common::unique("ae")).await;
    let (status, ready) = health(&app, "/health/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["migrations"], "pending");
    let embedded = ready["pendingMigrations"].as_array().expect("list").len();
    assert_eq!(
        embedded,
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .expect("migrations")
            .count(),
        "every migration pending: {ready}"
    );
    let applied = adaptive_engine::storage::db::run_migrations(&bouncer.url(&db.name), false)
        .await
        .expect("migrate through the pooler");
    assert_eq!(applied.len(), embedded);
    let (status, ready) = health(&app, "/health/ready").await;
    assert_eq!(status, 200, "ready once migrated, at once: {ready}");
    let bank = app.create_bank(&bank_params(5)).await;
    assert!(!bank.is_empty());
}
