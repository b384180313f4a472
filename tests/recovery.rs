//! Recovery: Redis deleted, flushed or stopped mid-exam, the server SIGKILLed mid-exam,
//! and theta updates crossing instances. Every test ends by checking that the answers
//! recorded in Postgres are exactly the answers acknowledged.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    ExamChecker, JWT_SECRET, Options, RedisServer, Subscription, TestApp, TestDb, answer,
    bank_item_ids, bank_params, free_port, post_gql, start,
};
use redis::AsyncCommands;
use serde_json::{Value, json};

async fn checker(app: &TestApp, bank: &str, params: Vec<(f64, f64, f64)>) -> ExamChecker {
    ExamChecker {
        params,
        ids: bank_item_ids(app, bank).await,
        seen: Vec::new(),
        responses: Vec::new(),
    }
}

async fn attempts(db: &TestDb, exam: &str) -> i64 {
    db.count(&format!(
        "SELECT count(*) AS n FROM attempts WHERE exam_session_id = {exam}"
    ))
    .await
}

async fn distinct_positions(db: &TestDb, exam: &str) -> i64 {
    db.count(&format!(
        "SELECT count(DISTINCT position) AS n FROM attempts WHERE exam_session_id = {exam}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_state_or_flushing_redis_mid_exam_changes_no_estimate() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await;
    let params = bank_params(50);
    let bank = app.create_bank(&params).await;
    let mut check = checker(&app, &bank, params).await;
    let token = app.student("s-flush");
    let (exam, started) = start(&app, &token, &bank, json!({})).await;
    let mut conn = app.redis().await;
    let mut item = started["nextItem"]["id"].as_str().expect("item").to_owned();
    for step in 0..20 {
        match step % 3 {
            0 => {
                let _: i64 = conn.del(app.key(&exam)).await.expect("del");
            }
            1 => {
                let _: () = redis::cmd("FLUSHALL")
                    .query_async(&mut conn)
                    .await
                    .expect("flushall");
            }
            _ => {}
        }
        let correct = step % 4 != 1;
        let result = answer(&app, &token, &exam, &item, correct).await;
        check.check(&item, correct, &result);
        if step < 19 {
            item = result["nextItem"]["id"].as_str().expect("next").to_owned();
        }
    }
    assert_eq!(
        attempts(&app.db, &exam).await,
        20,
        "answers recorded = answers acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_redis_mid_exam_fails_nothing_and_health_says_down() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::spawn_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await;
    let params = bank_params(50);
    let bank = app.create_bank(&params).await;
    let mut check = checker(&app, &bank, params).await;
    let token = app.student("s-down");
    let (exam, started) = start(&app, &token, &bank, json!({})).await;
    let mut item = started["nextItem"]["id"].as_str().expect("item").to_owned();
    for step in 0..15 {
        if step == 5 {
            redis.stop();
        }
        if step == 10 {
            redis.restart().await;
            // The circuit breaker skips Redis for at most 2 s after the last failure.
            tokio::time::sleep(Duration::from_millis(2_100)).await;
        }
        let correct = step % 3 != 0;
        let result = answer(&app, &token, &exam, &item, correct).await;
        check.check(&item, correct, &result);
        item = result["nextItem"]["id"].as_str().expect("next").to_owned();
        if step == 7 {
            let health: Value = app
                .http
                .get(app.url("/health/redis"))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            assert_eq!(health["redis"], "down");
            let response = app.http.get(app.url("/health")).send().await.expect("get");
            assert_eq!(response.status(), 200);
            let health: Value = response.json().await.expect("json");
            assert_eq!(health["postgres"], "up");
            assert_eq!(health["redis"], "down");
            let summary = app.ok(&token, common::SUMMARY, json!({"id": exam})).await;
            assert_eq!(summary["engineSummary"]["source"], "DATABASE");
            assert_eq!(summary["engineSummary"]["itemsCompleted"], 8);
        }
    }
    // Redis is back: the state is cached again and current.
    let mut conn = app.redis().await;
    let json: String = conn.get(app.key(&exam)).await.expect("state cached again");
    let state: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(state["items_completed"], 15);
    let health: Value = app
        .http
        .get(app.url("/health/redis"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(health["redis"], "up");
    assert_eq!(
        attempts(&app.db, &exam).await,
        15,
        "answers recorded = answers acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_starts_while_redis_is_down() {
    let port = free_port();
    let app = TestApp::spawn_with(Options {
        redis_url: Some(format!("redis://127.0.0.1:{port}/0")),
        ..Options::default()
    })
    .await;
    let params = bank_params(20);
    let bank = app.create_bank(&params).await;
    let mut check = checker(&app, &bank, params).await;
    let token = app.student("s-noredis");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 5})).await;
    let mut item = started["nextItem"]["id"].as_str().expect("item").to_owned();
    for step in 0..5 {
        let result = answer(&app, &token, &exam, &item, step % 2 == 0).await;
        check.check(&item, step % 2 == 0, &result);
        if step < 4 {
            item = result["nextItem"]["id"].as_str().expect("next").to_owned();
        }
    }
    assert_eq!(attempts(&app.db, &exam).await, 5);
}

/// The real binary, as operators run it.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    async fn start(db: &TestDb, prefix: &str) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_adaptive-engine"))
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", common::redis_url())
            .env("REDIS_KEY_PREFIX", prefix)
            .env("JWT_SECRET", JWT_SECRET)
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn adaptive-engine");
        // Owned at once, so a panic below still kills and reaps it.
        let server = Self { child, port };
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                && r.status().is_success()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("adaptive-engine did not become healthy");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/graphql", self.port)
    }

    fn kill(&mut self) {
        // SIGKILL: no chance to clean up.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exam_survives_sigkill_of_the_server_with_no_attempt_lost_or_doubled() {
    // Banks and tokens are set up through an in-process instance on the same database.
    let setup = TestApp::spawn().await;
    let params = bank_params(50);
    let bank = setup.create_bank(&params).await;
    let mut check = checker(&setup, &bank, params).await;
    let token = setup.student("s-kill");
    let http = reqwest::Client::new();

    let mut server = Server::start(&setup.db, &setup.prefix).await;
    let data = post_gql(
        &http,
        &server.url(),
        Some(&token),
        common::START,
        json!({"input": {"itemBankId": bank}}),
    )
    .await;
    let exam = data["data"]["startExam"]["examSession"]["id"]
        .as_str()
        .expect("exam")
        .to_owned();
    let mut item = data["data"]["startExam"]["nextItem"]["id"]
        .as_str()
        .expect("item")
        .to_owned();
    let mut acknowledged = 0;
    for step in 0..12 {
        let correct = step % 3 != 2;
        let input = json!({"input": {"examSessionId": exam, "itemId": item, "response": if correct { "A" } else { "C" }}});
        if step == 6 {
            // Kill the server while this answer is in flight; the client never hears back.
            let url = server.url();
            let in_flight = tokio::spawn({
                let (http, token, input) = (http.clone(), token.clone(), input.clone());
                async move {
                    http.post(url)
                        .bearer_auth(token)
                        .json(&json!({"query": common::SUBMIT, "variables": input}))
                        .send()
                        .await
                }
            });
            tokio::time::sleep(Duration::from_millis(2)).await;
            server.kill();
            let _ = in_flight.await;
            server = Server::start(&setup.db, &setup.prefix).await;
            // The client retries the same answer: recorded once, whatever happened before.
        }
        let response = post_gql(&http, &server.url(), Some(&token), common::SUBMIT, input).await;
        assert!(response.get("errors").is_none(), "{response}");
        let result = response["data"]["submitAnswer"].clone();
        check.check(&item, correct, &result);
        acknowledged += 1;
        item = result["nextItem"]["id"].as_str().expect("next").to_owned();
    }
    assert_eq!(
        attempts(&setup.db, &exam).await,
        acknowledged,
        "answers recorded = answers acknowledged"
    );
    assert_eq!(distinct_positions(&setup.db, &exam).await, acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_instance_receives_every_update_recorded_through_another() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_with(Options {
        db: Some(a.db.clone()),
        prefix: Some(a.prefix.clone()),
        ..Options::default()
    })
    .await;
    let bank = a.create_bank(&bank_params(30)).await;
    let token = a.student("s-live");
    let (exam, started) = start(&a, &token, &bank, json!({"maxItems": 6})).await;

    let mut subscription = Subscription::theta_updates(b.addr, Some(&token), &exam)
        .await
        .expect("subscribed");
    // The subscription is registered once the server has processed "subscribe".
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut item = started["nextItem"]["id"].as_str().expect("item").to_owned();
    let mut results = Vec::new();
    for step in 0..6 {
        let result = answer(&a, &token, &exam, &item, step % 2 == 0).await;
        if step < 5 {
            item = result["nextItem"]["id"].as_str().expect("next").to_owned();
        }
        results.push(result);
    }
    for (n, result) in results.iter().enumerate() {
        let event = subscription
            .next(Duration::from_secs(5))
            .await
            .expect("an event per answer");
        let update = &event["data"]["thetaUpdates"];
        assert_eq!(update["examSessionId"], exam.as_str());
        assert_eq!(update["itemsCompleted"], n as u64 + 1, "in order");
        assert_eq!(update["theta"], result["theta"]);
        assert_eq!(update["standardError"], result["standardError"]);
        assert_eq!(update["completed"], n == 5);
    }
    assert_eq!(
        attempts(&a.db, &exam).await,
        6,
        "answers recorded = answers acknowledged"
    );

    // No token, or another student's: no events.
    assert!(
        Subscription::theta_updates(b.addr, None, &exam)
            .await
            .is_err()
    );
    let mut other = Subscription::theta_updates(b.addr, Some(&b.student("mallory")), &exam)
        .await
        .expect("connection accepted");
    let refused = other
        .next(Duration::from_secs(5))
        .await
        .expect("an error message");
    // Either an `error` message or a `next` carrying errors, depending on where it failed.
    let code = refused["errors"][0]["extensions"]["code"]
        .as_str()
        .or(refused["payload"][0]["extensions"]["code"].as_str());
    assert_eq!(code, Some("FORBIDDEN"), "{refused}");
}

#[test]
fn serve_refuses_to_start_without_postgres_with_a_one_line_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_adaptive-engine"))
        .arg("serve")
        .env(
            "DATABASE_URL",
            format!("postgres://root@127.0.0.1:{}/nothing", free_port()),
        )
        .env("PORT", free_port().to_string())
        .env("RUST_LOG", "off")
        .output()
        .expect("run adaptive-engine");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("adaptive-engine: Postgres is not reachable"),
        "{stderr}"
    );
}
