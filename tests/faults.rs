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

/// An instance of the service using this test's own Redis.
async fn app_on(redis: &RedisServer) -> TestApp {
    TestApp::spawn_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await
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
async fn deleting_flushing_or_rolling_back_the_state_mid_exam_changes_no_estimate() {
    let redis = RedisServer::start().await;
    let app = app_on(&redis).await;
    let params = bank_params(50);
    let bank = app.create_bank(&params).await;
    let mut check = checker(&app, &bank, params).await;
    let token = app.student("s-flush");
    let (exam, started) = start(&app, &token, &bank, json!({})).await;
    let mut conn = app.redis().await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    // The state as it was one answer ago, to put back (a lost write, a restored snapshot).
    let mut older: Option<String> = None;
    for step in 0..20 {
        let current: Option<String> = conn.get(app.key(&exam)).await.expect("get");
        match step % 4 {
            0 => {
                let _: i64 = conn.del(app.key(&exam)).await.expect("del");
            }
            1 => {
                let _: () = redis::cmd("FLUSHALL")
                    .query_async(&mut conn)
                    .await
                    .expect("flushall");
            }
            3 => {
                let stale = older.as_deref().expect("a state one answer old");
                let _: () = conn.set(app.key(&exam), stale).await.expect("set");
            }
            _ => {}
        }
        older = current;
        let correct = step % 4 != 1;
        let result = answer(&app, &token, &exam, &item, correct).await;
        check.check(&item, correct, &result);
        if step < 19 {
            item = result["nextItem"]["itemId"]
                .as_str()
                .expect("next")
                .to_owned();
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
    let app = app_on(&redis).await;
    let params = bank_params(50);
    let bank = app.create_bank(&params).await;
    let mut check = checker(&app, &bank, params).await;
    let token = app.student("s-down");
    let (exam, started) = start(&app, &token, &bank, json!({})).await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
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
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
        if step == 7 {
            let health: Value = app.get_json("/health/redis").await;
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
    let health: Value = app.get_json("/health/redis").await;
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
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    for step in 0..5 {
        let result = answer(&app, &token, &exam, &item, step % 2 == 0).await;
        check.check(&item, step % 2 == 0, &result);
        if step < 4 {
            item = result["nextItem"]["itemId"]
                .as_str()
                .expect("next")
                .to_owned();
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

    let assessment = common::create_assessment(&setup, &bank, json!({}), json!({})).await;
    let mut server = Server::start(&setup.db, &setup.prefix).await;
    let data = post_gql(
        &http,
        &server.url(),
        Some(&token),
        common::START,
        json!({"input": {"assessmentId": assessment}}),
    )
    .await;
    let exam = data["data"]["startExam"]["examSession"]["id"]
        .as_str()
        .expect("exam")
        .to_owned();
    let mut item = data["data"]["startExam"]["nextItem"]["itemId"]
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
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
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

    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let mut results = Vec::new();
    for step in 0..6 {
        let result = answer(&a, &token, &exam, &item, step % 2 == 0).await;
        if step < 5 {
            item = result["nextItem"]["itemId"]
                .as_str()
                .expect("next")
                .to_owned();
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
    assert_eq!(code, Some("NOT_FOUND"), "{refused}");
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

/// Runs `steps` answers of an exam, checking every estimate against the reference EAP;
/// `before_each(step)` runs before each answer. Returns the exam id and answers acknowledged.
async fn run_checked_exam<F, Fut>(app: &TestApp, steps: usize, mut before_each: F) -> (String, i64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let params = bank_params(60);
    let bank = app.create_bank(&params).await;
    let mut check = checker(app, &bank, params).await;
    let token = app.student("s-checked");
    let (exam, started) = start(app, &token, &bank, json!({"maxItems": steps as i64 + 1})).await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let mut acknowledged = 0;
    for step in 0..steps {
        before_each(step).await;
        let correct = step % 3 != 1;
        let result = answer(app, &token, &exam, &item, correct).await;
        check.check(&item, correct, &result);
        acknowledged += 1;
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    (exam, acknowledged)
}

/// Fills Redis with `megabytes` of junk keys (outside every test prefix).
async fn fill_redis(url: &str, megabytes: usize) {
    let mut conn = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let value = "j".repeat(100_000);
    for i in 0..megabytes * 10 {
        // Under noeviction Redis refuses writes once full: that is the point.
        let _: redis::RedisResult<()> = conn
            .set(format!("junk:{}:{i}", rand::random::<u32>()), &value)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_evicting_states_under_maxmemory_changes_no_estimate() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]).await;
    let app = app_on(&redis).await;
    let url = redis.url();
    let (exam, acknowledged) = run_checked_exam(&app, 12, |_| fill_redis(&url, 3)).await;
    assert_eq!(
        attempts(&app.db, &exam).await,
        acknowledged,
        "answers recorded = answers acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_that_refuses_writes_fails_nothing() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"]).await;
    let app = app_on(&redis).await;
    fill_redis(&redis.url(), 3).await;
    let (exam, acknowledged) = run_checked_exam(&app, 8, |_| async {}).await;
    assert_eq!(
        attempts(&app.db, &exam).await,
        acknowledged,
        "answers recorded = answers acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_state_write_never_replaces_a_newer_one_nor_revives_a_completed_exam() {
    let app = TestApp::spawn().await;
    let store = app.app.service.states();
    let state = |n: u32| json!({"items_completed": n, "theta": n}).to_string();
    assert!(store.save(77, &state(5), 5, None).await.expect("save"));
    assert!(
        !store.save(77, &state(4), 4, None).await.expect("save"),
        "an older state is refused"
    );
    let json = store.load(77).await.expect("load").expect("present");
    assert_eq!(
        serde_json::from_str::<Value>(&json).expect("json")["items_completed"],
        5
    );
    assert!(store.save(77, &state(6), 6, None).await.expect("save"));
    store.complete(77, None).await.expect("complete");
    assert!(
        !store.save(77, &state(6), 6, None).await.expect("save"),
        "a late write after completion is refused"
    );
    assert!(store.load(77).await.expect("load").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_answering_one_exam_keep_redis_and_postgres_consistent() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_with(Options {
        db: Some(a.db.clone()),
        prefix: Some(a.prefix.clone()),
        ..Options::default()
    })
    .await;
    let params = bank_params(40);
    let bank = a.create_bank(&params).await;
    let mut check = checker(&a, &bank, params).await;
    let token = a.student("s-two");
    let (exam, started) = start(&a, &token, &bank, json!({"maxItems": 30})).await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    for step in 0..12 {
        let instance = if step % 2 == 0 { &a } else { &b };
        let correct = step % 4 != 3;
        let result = answer(instance, &token, &exam, &item, correct).await;
        check.check(&item, correct, &result);
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    let mut conn = a.redis().await;
    let json: String = conn.get(a.key(&exam)).await.expect("state");
    let state: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(state["items_completed"], 12);
    let summary = b.ok(&token, common::SUMMARY, json!({"id": exam})).await;
    assert_eq!(summary["engineSummary"]["source"], "CACHE");
    assert_eq!(attempts(&a.db, &exam).await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_mid_exam_gives_unavailable_then_recovers_by_itself() {
    let pg = common::PgServer::start();
    let db = std::sync::Arc::new(TestDb {
        name: common::unique("ae_own"),
        url: pg.url("adaptive_engine"),
    });
    let app = TestApp::spawn_with(Options {
        db: Some(db),
        ..Options::default()
    })
    .await;
    let params = bank_params(40);
    let bank = app.create_bank(&params).await;
    let mut check = checker(&app, &bank, params).await;
    let token = app.student("s-pg");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 30})).await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let mut acknowledged = 0;
    for step in 0..8 {
        if step == 4 {
            pg.stop();
            let refused = app
                .gql(
                    Some(&token),
                    common::SUBMIT,
                    json!({"input": {"examSessionId": exam, "itemId": item, "response": "A"}}),
                )
                .await;
            assert_eq!(common::error_code(&refused), "UNAVAILABLE", "{refused}");
            assert!(
                !refused.to_string().contains("postgres"),
                "no internals: {refused}"
            );
            let health = app.http.get(app.url("/health")).send().await.expect("get");
            assert_eq!(health.status(), 503);
            pg.resume();
        }
        let result = answer(&app, &token, &exam, &item, step % 2 == 0).await;
        check.check(&item, step % 2 == 0, &result);
        acknowledged += 1;
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    let recorded = {
        use diesel::sql_types::BigInt;
        use diesel_async::{AsyncConnection, RunQueryDsl};
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let mut conn = diesel_async::AsyncPgConnection::establish(&pg.url("adaptive_engine"))
            .await
            .expect("connect");
        let row: N = diesel::sql_query(format!(
            "SELECT count(*) AS n FROM attempts WHERE exam_session_id = {exam}"
        ))
        .get_result(&mut conn)
        .await
        .expect("count");
        row.n
    };
    assert_eq!(
        recorded, acknowledged,
        "answers recorded = answers acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_theta_listener_reconnects_after_redis_restarts() {
    let mut redis = RedisServer::start().await;
    let app = app_on(&redis).await;
    let bank = app.create_bank(&bank_params(30)).await;
    let token = app.student("s-listen");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 10})).await;
    let mut subscription = Subscription::theta_updates(app.addr, Some(&token), &exam)
        .await
        .expect("subscribed");
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart().await;
    assert!(
        app.app
            .service
            .events()
            .wait_listening(Duration::from_secs(10))
            .await,
        "listener back"
    );
    // The breaker may still skip Redis for up to 2 s after the outage.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let item = started["nextItem"]["itemId"].as_str().expect("item");
    let result = answer(&app, &token, &exam, item, true).await;
    let event = subscription
        .next(Duration::from_secs(5))
        .await
        .expect("an event after the restart");
    assert_eq!(event["data"]["thetaUpdates"]["itemsCompleted"], 1);
    assert_eq!(event["data"]["thetaUpdates"]["theta"], result["theta"]);
    assert_eq!(
        attempts(&app.db, &exam).await,
        1,
        "answers recorded = answers acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_and_closes_websockets_cleanly() {
    let setup = TestApp::spawn().await;
    let bank = setup.create_bank(&bank_params(20)).await;
    let token = setup.student("s-term");
    let assessment = common::create_assessment(&setup, &bank, json!({}), json!({})).await;
    let mut server = Server::start(&setup.db, &setup.prefix).await;
    let http = reqwest::Client::new();
    let data = post_gql(
        &http,
        &server.url(),
        Some(&token),
        common::START,
        json!({"input": {"assessmentId": assessment}}),
    )
    .await;
    let exam = data["data"]["startExam"]["examSession"]["id"]
        .as_str()
        .expect("exam")
        .to_owned();
    let item = data["data"]["startExam"]["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().expect("addr");
    let mut subscription = Subscription::theta_updates(addr, Some(&token), &exam)
        .await
        .expect("subscribed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answered = post_gql(
        &http,
        &server.url(),
        Some(&token),
        common::SUBMIT,
        json!({"input": {"examSessionId": exam, "itemId": item, "response": "A"}}),
    )
    .await;
    assert!(answered.get("errors").is_none(), "{answered}");
    assert!(
        subscription.next(Duration::from_secs(5)).await.is_some(),
        "the event before shutdown"
    );
    common::terminate(server.child.id());
    assert_eq!(
        subscription.close_code(Duration::from_secs(5)).await,
        Some(1001),
        "closed with 'going away'"
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().expect("wait");
        (status, server)
    })
    .await
    .expect("join");
    assert!(
        status.0.success(),
        "clean exit after SIGTERM: {:?}",
        status.0
    );
    assert_eq!(
        attempts(&setup.db, &exam).await,
        1,
        "answers recorded = answers acknowledged"
    );
}
