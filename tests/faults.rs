//! Recovery: Redis deleted, flushed, garbled, evicted, full or stopped mid-exam, two
//! instances racing on one exam, the server SIGKILLed mid-exam, and theta updates crossing
//! instances. Every test that answers ends by checking that the answers recorded in
//! Postgres are exactly the answers acknowledged, row by row
//! ([`ExamChecker::assert_recorded_exactly`]).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    ExamChecker, JWT_SECRET, Options, RedisServer, Subscription, TestApp, TestDb, WsProtocol,
    answer, bank_item_ids, bank_params, free_port, post_gql, start,
};
use redis::AsyncCommands;
use serde_json::{Value, json};

async fn checker(app: &TestApp, bank: &str, params: Vec<(f64, f64, f64)>) -> ExamChecker {
    ExamChecker::new(params, bank_item_ids(app, bank).await)
}

/// An instance of the service using this test's own Redis.
async fn app_on(redis: &RedisServer) -> TestApp {
    TestApp::spawn_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await
}

/// Subscribes to the exam's theta updates on `addr` and waits until the subscription is
/// live (its `includeCurrent` payload arrived), checking that payload shows the exam at
/// `items_completed` answers.
async fn live_subscription(
    addr: std::net::SocketAddr,
    token: &str,
    exam: &str,
    items_completed: u64,
) -> Subscription {
    let (subscription, current) =
        Subscription::theta_updates_live(addr, Some(token), exam, WsProtocol::TransportWs)
            .await
            .expect("subscribed");
    assert_eq!(
        current["data"]["thetaUpdates"]["itemsCompleted"], items_completed,
        "the first payload is the exam's current state: {current}"
    );
    subscription
}

/// The exam's engine state in Redis, parsed (None when the key is absent).
async fn cached_state(app: &TestApp, exam: &str) -> Option<Value> {
    let mut conn = app.redis().await;
    let json: Option<String> = conn.get(app.key(exam)).await.expect("get");
    json.map(|j| serde_json::from_str(&j).expect("the cached state is JSON"))
}

/// `field` (e.g. `evicted_keys`, `errorstat_OOM`) of Redis's `INFO section` at `url`: the
/// number after `field:` (or after `count=` for error stats); 0 when absent.
async fn redis_info_number(url: &str, section: &str, field: &str) -> u64 {
    let mut conn = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map_or(0, |value| {
            let number = value
                .split(',')
                .find_map(|kv| kv.strip_prefix("count="))
                .unwrap_or(value);
            number.trim().parse().expect("a number")
        })
}

/// Promise: "engine state deleted, `FLUSHALL`, or an older state put back, mid-exam:
/// rebuilds from `attempts`; identical estimates (1e-9 of the reference EAP)".
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
    check.assert_recorded_exactly(&app.db).await;
}

/// Promise: an unreadable engine state in Redis (not JSON, JSON of the wrong shape, a
/// truncated state, a state whose item ids and responses disagree) is ignored and the
/// engine rebuilt from Postgres: the next answer succeeds with exactly the reference
/// estimates, and the cache then holds a readable, current state again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_redis_state_mid_exam_is_rebuilt_and_changes_no_estimate() {
    let app = TestApp::spawn().await;
    let params = bank_params(50);
    let bank = app.create_bank(&params).await;
    let mut check = checker(&app, &bank, params).await;
    let token = app.student("s-garbage");
    let (exam, started) = start(&app, &token, &bank, json!({})).await;
    let mut conn = app.redis().await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    for step in 0..18 {
        let current: String = conn
            .get(app.key(&exam))
            .await
            .expect("the state of the previous answer is cached");
        let garbage = match step % 6 {
            0 => "not json".to_owned(),
            1 => r#"{"theta":"high","responses":"yes","item_ids":{}}"#.to_owned(),
            // Garbage that claims a newer version must not block the saves.
            5 => r#"{"theta":"high","items_completed":999}"#.to_owned(),
            2 => current[..current.len() / 2].to_owned(),
            3 => {
                // Well-formed JSON, but the last answered item is missing from its ids.
                let mut state: Value = serde_json::from_str(&current).expect("json");
                if let Some(ids) = state["item_ids"].as_array_mut() {
                    ids.pop();
                }
                state.to_string()
            }
            _ => current.clone(), // one answer in six on an untouched state
        };
        let _: () = conn.set(app.key(&exam), &garbage).await.expect("set");
        let correct = step % 3 != 1;
        let result = answer(&app, &token, &exam, &item, correct).await;
        check.check(&item, correct, &result);
        let state = cached_state(&app, &exam)
            .await
            .expect("a state is cached again after the answer");
        assert_eq!(state["items_completed"], step + 1, "{garbage:?} replaced");
        assert_eq!(state["theta"], result["theta"]);
        assert_eq!(state["standard_error"], result["standardError"]);
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    check.assert_recorded_exactly(&app.db).await;
}

/// Promise: "Redis stopped mid-exam, then restarted: answers keep working from Postgres;
/// `/health/redis` down, `/health` 200; cache used again within 2 s of the restart".
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
    check.assert_recorded_exactly(&app.db).await;
}

/// Promise: "Redis down at start-up: starts with a warning, serves from Postgres".
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
    check.assert_recorded_exactly(&app.db).await;
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

/// Promise: "server SIGKILLed mid-answer: the answer is committed whole or not at all; the
/// client's retry records it once".
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
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    // The killed answer is in Postgres once (committed before the kill, then replayed to
    // the retry, or recorded by the retry), and nothing else was recorded.
    check.assert_recorded_exactly(&setup.db).await;
}

/// Promise: theta updates recorded on one instance reach subscribers on another, in
/// order, with the acknowledged numbers; without a valid token, or with another
/// student's, a subscription gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_instance_receives_every_update_recorded_through_another() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_with(Options {
        db: Some(a.db.clone()),
        prefix: Some(a.prefix.clone()),
        ..Options::default()
    })
    .await;
    let params = bank_params(30);
    let bank = a.create_bank(&params).await;
    let mut check = checker(&a, &bank, params).await;
    let token = a.student("s-live");
    let (exam, started) = start(&a, &token, &bank, json!({"maxItems": 6})).await;

    // Live once B has sent the exam's current state (no answer yet).
    let mut subscription = live_subscription(b.addr, &token, &exam, 0).await;

    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let mut results = Vec::new();
    for step in 0..6 {
        let result = answer(&a, &token, &exam, &item, step % 2 == 0).await;
        check.check(&item, step % 2 == 0, &result);
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
    check.assert_recorded_exactly(&a.db).await;

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

/// Promise: "Postgres unreachable at start-up: refuses to start with a one-line reason".
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
/// `before_each(step, exam_id)` runs before each answer. Returns the exam id and the
/// checker holding the acknowledged answers.
async fn run_checked_exam<F, Fut>(
    app: &TestApp,
    steps: usize,
    mut before_each: F,
) -> (String, ExamChecker)
where
    F: FnMut(usize, String) -> Fut,
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
    for step in 0..steps {
        before_each(step, exam.clone()).await;
        let correct = step % 3 != 1;
        let result = answer(app, &token, &exam, &item, correct).await;
        check.check(&item, correct, &result);
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    (exam, check)
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

/// Promise: "Redis evicting (`maxmemory` + `allkeys-lru`): evicted states are rebuilt;
/// identical estimates". The test shows the eviction happened: Redis counts evicted keys,
/// and the exam's own state, cached before each fill, was gone after some of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_evicting_states_under_maxmemory_changes_no_estimate() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]).await;
    let app = app_on(&redis).await;
    let url = redis.url();
    let states_evicted = std::sync::atomic::AtomicUsize::new(0);
    let (_, check) = run_checked_exam(&app, 12, |_, exam| {
        let (app, url, states_evicted) = (&app, &url, &states_evicted);
        async move {
            assert!(
                cached_state(app, &exam).await.is_some(),
                "the previous answer cached the state"
            );
            fill_redis(url, 3).await;
            if cached_state(app, &exam).await.is_none() {
                states_evicted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .await;
    let evicted_keys = redis_info_number(&url, "stats", "evicted_keys").await;
    let states_evicted = states_evicted.into_inner();
    eprintln!(
        "evicted keys: {evicted_keys}; answers after the state was evicted: {states_evicted}"
    );
    assert!(evicted_keys > 0, "Redis evicted keys");
    assert!(
        states_evicted > 0,
        "the exam's state was evicted before at least one answer (which then rebuilt it)"
    );
    check.assert_recorded_exactly(&app.db).await;
}

/// Makes the Redis at `url` (under `noeviction`) full for good: 2 MB of junk, then
/// `maxmemory` set 1 MB below the memory used. Filling up to a limit leaves the usage
/// only just above it, and Redis freeing a client's query buffer can bring it back under
/// (then writes are accepted again); 1 MB over the limit, every write is refused.
async fn make_redis_full(url: &str) {
    fill_redis(url, 2).await;
    let used = redis_info_number(url, "memory", "used_memory").await;
    let mut conn = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used - 1_000_000)
        .query_async(&mut conn)
        .await
        .expect("CONFIG SET maxmemory");
    let probe: redis::RedisResult<()> = conn.set("junk:probe", "x").await;
    assert!(probe.is_err(), "a full Redis refuses writes");
}

/// Promise: "Redis full with `noeviction` (writes refused): writes fail silently as cache
/// misses". The test shows the refusal happened: Redis counted OOM errors during the
/// exam, and no state of the exam ever reached it, yet every answer was right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_that_refuses_writes_fails_nothing() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]).await;
    let app = app_on(&redis).await;
    let url = redis.url();
    make_redis_full(&url).await;
    let refused_before = redis_info_number(&url, "errorstats", "errorstat_OOM").await;
    let (exam, check) = run_checked_exam(&app, 8, |_, exam| {
        let app = &app;
        async move {
            assert!(
                cached_state(app, &exam).await.is_none(),
                "a full Redis took no state of the exam"
            );
        }
    })
    .await;
    assert!(
        cached_state(&app, &exam).await.is_none(),
        "nor the last one"
    );
    let refused = redis_info_number(&url, "errorstats", "errorstat_OOM").await - refused_before;
    eprintln!("OOM refusals during the exam: {refused}");
    assert!(
        refused >= 8,
        "Redis refused the exam's state writes with OOM: {refused} refusals"
    );
    check.assert_recorded_exactly(&app.db).await;
}

/// Promise: "a slow instance writing an old state: writes are versioned by
/// `items_completed` in a Lua script; a completed exam cannot be revived".
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

/// Promise: "two instances answering one exam: the conditional write (row lock)
/// serializes; Redis and Postgres agree". Two instances sharing the database and the
/// Redis prefix get the same exam's answer at the same moment, round after round: in
/// rounds with the same response one records it and the other gets the recorded result
/// replayed; with different responses one records and the other is refused with
/// `ALREADY_ANSWERED`. Postgres holds exactly the winners, one per position; the cached
/// state always follows the winner and equals a rebuild from Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_answering_one_exam_keep_redis_and_postgres_consistent() {
    const ROUNDS: usize = 24;
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_with(Options {
        db: Some(a.db.clone()),
        prefix: Some(a.prefix.clone()),
        ..Options::default()
    })
    .await;
    let params = bank_params(60);
    let bank = a.create_bank(&params).await;
    let mut check = checker(&a, &bank, params).await;
    let token = a.student("s-two");
    // One item more than the rounds: the exam stays active, so its state stays cached.
    let (exam, started) = start(&a, &token, &bank, json!({"maxItems": ROUNDS + 1})).await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let barrier = tokio::sync::Barrier::new(2);
    // Which instance recorded the answers of the rounds with different responses.
    let mut winners = [0usize; 2];
    for round in 0..ROUNDS {
        let same = round % 2 == 0;
        let a_correct = round % 3 != 2;
        let b_correct = if same { a_correct } else { !a_correct };
        let send = |instance: &'static str, correct: bool| {
            let (app, barrier, token, exam, item) = (
                if instance == "a" { &a } else { &b },
                &barrier,
                &token,
                &exam,
                &item,
            );
            async move {
                let response = if correct { "A" } else { "C" };
                let input =
                    json!({"input": {"examSessionId": exam, "itemId": item, "response": response}});
                // Both requests leave together.
                barrier.wait().await;
                app.gql(Some(token), common::SUBMIT, input).await
            }
        };
        let (from_a, from_b) = tokio::join!(send("a", a_correct), send("b", b_correct));
        let (winner, winner_correct) = if same {
            for r in [&from_a, &from_b] {
                assert!(r.get("errors").is_none(), "round {round}: {r}");
            }
            let (pa, pb) = (
                &from_a["data"]["submitAnswer"],
                &from_b["data"]["submitAnswer"],
            );
            assert_eq!(pa, pb, "round {round}: the replay is the recorded result");
            (pa.clone(), a_correct)
        } else {
            let a_won = from_a.get("errors").is_none();
            let (won, lost) = if a_won {
                (&from_a, &from_b)
            } else {
                (&from_b, &from_a)
            };
            assert!(
                won.get("errors").is_none(),
                "round {round}: nobody won: {won}"
            );
            assert_eq!(
                common::error_code(lost),
                "ALREADY_ANSWERED",
                "round {round}: {lost}"
            );
            winners[usize::from(!a_won)] += 1;
            let correct = if a_won { a_correct } else { b_correct };
            (won["data"]["submitAnswer"].clone(), correct)
        };
        check.check(&item, winner_correct, &winner);
        // The cached state is the winner's, whichever instance wrote it.
        let state = cached_state(&a, &exam).await.expect("state cached");
        assert_eq!(state["items_completed"], round + 1, "round {round}");
        assert_eq!(state["theta"], winner["theta"], "round {round}");
        assert_eq!(state["standard_error"], winner["standardError"]);
        if round % 6 == 5 {
            assert_cached_state_equals_a_rebuild(&a, &b, &token, &exam).await;
        }
        item = winner["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    eprintln!("rounds with different responses won by a, b: {winners:?}");
    assert_cached_state_equals_a_rebuild(&a, &b, &token, &exam).await;
    check.assert_recorded_exactly(&a.db).await;
}

/// Asserts that the exam's cached state equals the one rebuilt from Postgres: reads it
/// through `a` (source CACHE), deletes it, lets `b` rebuild it from the attempts
/// (`engineSummary`, source DATABASE, which caches the rebuild) and compares the two.
async fn assert_cached_state_equals_a_rebuild(a: &TestApp, b: &TestApp, token: &str, exam: &str) {
    let summary = a.ok(token, common::SUMMARY, json!({"id": exam})).await["engineSummary"].clone();
    assert_eq!(summary["source"], "CACHE", "{summary}");
    let cached = cached_state(a, exam).await.expect("cached");
    let mut conn = a.redis().await;
    let deleted: i64 = conn.del(a.key(exam)).await.expect("del");
    assert_eq!(deleted, 1);
    let rebuilt_summary =
        b.ok(token, common::SUMMARY, json!({"id": exam})).await["engineSummary"].clone();
    assert_eq!(rebuilt_summary["source"], "DATABASE", "{rebuilt_summary}");
    assert_eq!(rebuilt_summary["theta"], summary["theta"]);
    assert_eq!(rebuilt_summary["standardError"], summary["standardError"]);
    let rebuilt = cached_state(a, exam)
        .await
        .expect("the summary cached the rebuilt state");
    assert_eq!(
        cached, rebuilt,
        "the cached state is what Postgres rebuilds"
    );
}

/// Promise: "Postgres restarted mid-exam: `UNAVAILABLE` (no internals) while down,
/// `/health` 503; recovers by itself, stale pooled connections retried once".
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
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    // `app.db` points at this test's own Postgres; the refused answer recorded nothing.
    check.assert_recorded_exactly(&app.db).await;
}

/// Promise: "Redis restarts under the pub/sub listener: the listener reconnects and
/// resubscribes by itself".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_theta_listener_reconnects_after_redis_restarts() {
    let mut redis = RedisServer::start().await;
    let app = app_on(&redis).await;
    let params = bank_params(30);
    let bank = app.create_bank(&params).await;
    let mut check = checker(&app, &bank, params).await;
    let token = app.student("s-listen");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 10})).await;
    let mut subscription = live_subscription(app.addr, &token, &exam, 0).await;
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
    check.check(item, true, &result);
    let event = subscription
        .next(Duration::from_secs(5))
        .await
        .expect("an event after the restart");
    assert_eq!(event["data"]["thetaUpdates"]["itemsCompleted"], 1);
    assert_eq!(event["data"]["thetaUpdates"]["theta"], result["theta"]);
    check.assert_recorded_exactly(&app.db).await;
}

/// Promise: "SIGTERM: stops accepting, drains requests, closes WebSockets with 1001,
/// exits 0".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_and_closes_websockets_cleanly() {
    let setup = TestApp::spawn().await;
    let params = bank_params(20);
    let bank = setup.create_bank(&params).await;
    let mut check = checker(&setup, &bank, params).await;
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
    let mut subscription = live_subscription(addr, &token, &exam, 0).await;
    let answered = post_gql(
        &http,
        &server.url(),
        Some(&token),
        common::SUBMIT,
        json!({"input": {"examSessionId": exam, "itemId": item, "response": "A"}}),
    )
    .await;
    assert!(answered.get("errors").is_none(), "{answered}");
    check.check(&item, true, &answered["data"]["submitAnswer"]);
    let event = subscription
        .next(Duration::from_secs(5))
        .await
        .expect("the event before shutdown");
    assert_eq!(
        event["data"]["thetaUpdates"]["itemsCompleted"], 1,
        "{event}"
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
    check.assert_recorded_exactly(&setup.db).await;
}
