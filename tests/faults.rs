//! Recovery: Redis deleted, flushed, garbled, evicted, full or stopped mid-exam (and the
//! Redis-only admin operations while it is down), two instances racing on one exam, a
//! session cache too small for the live exams, the server SIGKILLed mid-exam or killed
//! between an answer's commit and its reply, SIGTERM with a request in flight and with
//! WebSockets open, and theta updates crossing instances. Every test that answers ends by checking that the answers recorded in
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
            // A long outage with the exam being read all along, so that Redis is tried
            // whenever the breaker allows and its pause grows to its cap (failures at 0,
            // 0.25, 0.75, 1.75, 3.75, 5.75, 7.75 s, …).
            let until = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::time::Instant::now() < until {
                let summary = app.ok(&token, common::SUMMARY, json!({"id": exam})).await;
                assert_eq!(summary["engineSummary"]["source"], "DATABASE");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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
        if step == 10 {
            // The first answer after the restart is cached at once: the pause was capped.
            let mut conn = app.redis().await;
            let json: Option<String> = conn.get(app.key(&exam)).await.expect("redis");
            let state: Value = serde_json::from_str(&json.expect("cached at once")).expect("json");
            assert_eq!(state["items_completed"], 11);
        }
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

/// Starts the caller's exam of `assessment` on the server at `url`; returns the exam id and
/// its first item.
async fn start_on(url: &str, token: &str, assessment: &str) -> (String, String) {
    let data = post_gql(
        &reqwest::Client::new(),
        url,
        Some(token),
        common::START,
        json!({"input": {"assessmentId": assessment}}),
    )
    .await;
    let field = |path: [&str; 2]| {
        data["data"]["startExam"][path[0]][path[1]]
            .as_str()
            .unwrap_or_else(|| panic!("no {path:?} in {data}"))
            .to_owned()
    };
    (field(["examSession", "id"]), field(["nextItem", "itemId"]))
}

/// The real binary, as operators run it.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    async fn start(db: &TestDb, prefix: &str) -> Self {
        Self::start_with(db, prefix, &[]).await
    }

    /// [`Server::start`] with extra environment variables. Started through `sh` only to
    /// switch core dumps off (`exec` keeps the pid), so an abort leaves no core file.
    async fn start_with(db: &TestDb, prefix: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new("sh")
            .args(["-c", "ulimit -c 0; exec \"$0\" serve"])
            .arg(env!("CARGO_BIN_EXE_adaptive-engine"))
            .envs(env.iter().copied())
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

    /// `127.0.0.1:{port}`.
    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits (at most `timeout`) for the process to exit on its own; its status, or None
    /// when it is still running.
    async fn exit_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
    let (exam, mut item) = start_on(&server.url(), &token, &assessment).await;
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
    // Readable states (only a readable state's version is trusted by the save script).
    let state = |n: u32| {
        json!({"items_completed": n, "theta": n, "standard_error": 1.0,
               "item_ids": (1..=n).collect::<Vec<u32>>(), "responses": vec![true; n as usize]})
        .to_string()
    };
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
    // One pooled connection, so that after a quick restart the pool certainly holds a
    // stale one for the next answer.
    let app = TestApp::spawn_with(Options {
        db: Some(db),
        env: vec![("DATABASE_POOL_SIZE".into(), "1".into())],
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
        if step == 6 {
            // A quick restart with no request in between: the pooled connection is stale,
            // the answer's first try fails on it and the one retry, on a fresh connection,
            // records it; the client never sees the restart.
            pg.stop();
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
/// resubscribes by itself". The subscriber is on a second instance, so its event can only
/// come through Redis (the answering instance's local delivery cannot stand in), and the
/// resubscription is acknowledged by Redis itself (`PUBSUB NUMSUB`), not by a flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_theta_listener_reconnects_after_redis_restarts() {
    let mut redis = RedisServer::start().await;
    let app = app_on(&redis).await;
    let watcher = TestApp::spawn_with(Options {
        redis_url: Some(redis.url()),
        db: Some(app.db.clone()),
        prefix: Some(app.prefix.clone()),
        ..Options::default()
    })
    .await;
    let params = bank_params(30);
    let bank = app.create_bank(&params).await;
    let mut check = checker(&app, &bank, params).await;
    let token = app.student("s-listen");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 10})).await;
    let mut subscription = live_subscription(watcher.addr, &token, &exam, 0).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart().await;
    // Both instances' listeners are subscribed to the events channel again.
    let channel = app.app.service.states().events_channel();
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut conn)
            .await
            .expect("PUBSUB NUMSUB");
        if subscribers >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listeners did not resubscribe ({subscribers} of 2)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The breaker may still skip Redis for up to 2 s after the outage.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let item = started["nextItem"]["itemId"].as_str().expect("item");
    let result = answer(&app, &token, &exam, item, true).await;
    check.check(item, true, &result);
    let event = subscription
        .next(Duration::from_secs(5))
        .await
        .expect("an event on the other instance after the restart");
    assert_eq!(event["data"]["thetaUpdates"]["itemsCompleted"], 1);
    assert_eq!(event["data"]["thetaUpdates"]["theta"], result["theta"]);
    check.assert_recorded_exactly(&app.db).await;
}

/// Promise: "SIGTERM: closes WebSockets with 1001 (going away, so clients reconnect to
/// another instance) after delivering what was recorded, exits 0".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websockets_with_going_away_and_exits_0() {
    let setup = TestApp::spawn().await;
    let params = bank_params(20);
    let bank = setup.create_bank(&params).await;
    let mut check = checker(&setup, &bank, params).await;
    let token = setup.student("s-term");
    let assessment = common::create_assessment(&setup, &bank, json!({}), json!({})).await;
    let mut server = Server::start(&setup.db, &setup.prefix).await;
    let http = reqwest::Client::new();
    let (exam, item) = start_on(&server.url(), &token, &assessment).await;
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

/// Reads one HTTP/1.1 response head (status line and headers, up to the blank line).
async fn read_head(tcp: &mut tokio::net::TcpStream, timeout: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(timeout, async {
        while !head.ends_with(b"\r\n\r\n") {
            let n = tcp.read(&mut byte).await.expect("read");
            assert_eq!(
                n,
                1,
                "the connection closed in a response head: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
    })
    .await
    .expect("a response head in time");
    String::from_utf8(head).expect("an ASCII head")
}

/// Reads the body of the response whose head is `head` (`Content-Length` or chunked; the
/// request asked for `Connection: close`).
async fn read_body(tcp: &mut tokio::net::TcpStream, head: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    if let Some(length) = header("content-length") {
        let mut body = vec![0; length.parse().expect("a length")];
        tcp.read_exact(&mut body).await.expect("the body");
        return body;
    }
    assert!(
        header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")),
        "{head}"
    );
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("the body");
    let (mut body, mut at) = (Vec::new(), 0);
    loop {
        let line_end = at
            + raw[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a chunk size line");
        let size_text = String::from_utf8_lossy(&raw[at..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("a chunk size");
        at = line_end + 2;
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
}

/// Promise: "SIGTERM with a request in flight: that request is answered, new connections
/// are refused, the process exits 0 within the drain timeout (30 s)". The `submitAnswer`
/// is in flight for certain: its headers ask for `100-continue`, so the server's
/// `100 Continue` shows its handler is reading the body; half the body is sent, then
/// SIGTERM. While the rest is withheld the port refuses new connections and a new request
/// gets no answer; once the rest arrives the answer is recorded and acknowledged (the
/// reference estimate), and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_request_in_flight_refuses_new_connections_and_exits_0() {
    use tokio::io::AsyncWriteExt;
    let setup = TestApp::spawn().await;
    let params = bank_params(20);
    let bank = setup.create_bank(&params).await;
    let mut check = checker(&setup, &bank, params).await;
    let token = setup.student("s-drain");
    let assessment = common::create_assessment(&setup, &bank, json!({}), json!({})).await;
    let mut server = Server::start(&setup.db, &setup.prefix).await;
    let (exam, item) = start_on(&server.url(), &token, &assessment).await;
    let body = json!({"query": common::SUBMIT,
        "variables": {"input": {"examSessionId": exam, "itemId": item, "response": "A"}}})
    .to_string();
    let (first_half, second_half) = body.as_bytes().split_at(body.len() / 2);
    let mut tcp = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        server.addr(),
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("send the head");
    let interim = read_head(&mut tcp, Duration::from_secs(10)).await;
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "the handler reads the body: {interim}"
    );
    tcp.write_all(first_half).await.expect("half the body");
    let terminated = tokio::time::Instant::now();
    common::terminate(server.child.id());

    // The listener closes while the request is still in flight. A probe that completed its
    // handshake into the closing listener's backlog is reset rather than refused (the kernel
    // resets the queued connections it never handed over); the next probe must be refused.
    let mut refused = None;
    while terminated.elapsed() < Duration::from_secs(10) {
        match tokio::net::TcpStream::connect(server.addr()).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                eprintln!("probe reset in the closing listener's backlog: {e}");
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
            Ok(probe) => drop(probe),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("new connections are refused after SIGTERM");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    eprintln!(
        "new connections refused {:?} after SIGTERM",
        terminated.elapsed()
    );
    let late = reqwest::Client::new()
        .get(format!("http://{}/health", server.addr()))
        .send()
        .await;
    assert!(
        late.is_err(),
        "a request after SIGTERM got an answer: {late:?}"
    );
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "the process waits for the request in flight"
    );

    // The rest of the body: the request in flight is answered and recorded.
    tcp.write_all(second_half)
        .await
        .expect("the rest of the body");
    let response_head = read_head(&mut tcp, Duration::from_secs(10)).await;
    assert!(response_head.starts_with("HTTP/1.1 200"), "{response_head}");
    let answered: Value =
        serde_json::from_slice(&read_body(&mut tcp, &response_head).await).expect("JSON");
    assert!(answered.get("errors").is_none(), "{answered}");
    check.check(&item, true, &answered["data"]["submitAnswer"]);
    let status = server
        .exit_status(Duration::from_secs(30).saturating_sub(terminated.elapsed()))
        .await
        .expect("the process exits within the drain timeout (30 s) of SIGTERM");
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    eprintln!("exited {:?} after SIGTERM", terminated.elapsed());
    check.assert_recorded_exactly(&setup.db).await;
}

/// Promise: "the server killed between an answer's commit and its reply: the answer is in
/// Postgres; the client's retry of the same answer (same item, same response) gets the
/// recorded result replayed, records nothing more, and the exam goes on". The test-only
/// hook `ADAPTIVE_ENGINE_TEST_ABORT_AFTER_COMMIT` (`src/exam/answer.rs`) makes the real
/// binary abort right after the commit, so the kill lands exactly there on every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_between_commit_and_reply_replays_the_recorded_answer_to_the_retry() {
    const MAX_ITEMS: usize = 8;
    // Answers given before the one that kills the server.
    const BEFORE: usize = 3;
    let setup = TestApp::spawn().await;
    let params = bank_params(40);
    let bank = setup.create_bank(&params).await;
    let mut check = checker(&setup, &bank, params).await;
    let token = setup.student("s-abort");
    let assessment =
        common::create_assessment(&setup, &bank, json!({"maxItems": MAX_ITEMS}), json!({})).await;
    // The exam starts and goes on through an in-process instance of the same deployment.
    let (exam, started) = common::start_assessment(&setup, &token, &assessment).await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    for step in 0..BEFORE {
        let correct = step % 2 == 0;
        let result = answer(&setup, &token, &exam, &item, correct).await;
        check.check(&item, correct, &result);
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }

    let mut hooked = Server::start_with(
        &setup.db,
        &setup.prefix,
        &[("ADAPTIVE_ENGINE_TEST_ABORT_AFTER_COMMIT", "1")],
    )
    .await;
    let input = json!({"input": {"examSessionId": exam, "itemId": item, "response": "C"}});
    let cut = reqwest::Client::new()
        .post(hooked.url())
        .bearer_auth(&token)
        .json(&json!({"query": common::SUBMIT, "variables": input}))
        .send()
        .await;
    assert!(cut.is_err(), "no reply may come: {cut:?}");
    let status = hooked
        .exit_status(Duration::from_secs(10))
        .await
        .expect("the server is gone");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(6),
        "aborted (SIGABRT) by the hook after the commit: {status:?}"
    );
    drop(hooked);

    // The answer was committed before the kill.
    let recorded = common::recorded_answers(&setup.db).await;
    assert_eq!(recorded.len(), BEFORE + 1, "{recorded:#?}");
    let committed = recorded.last().expect("the committed answer").clone();
    assert_eq!(
        (
            committed.position,
            committed.item_id,
            committed.response.as_str()
        ),
        (
            i32::try_from(BEFORE + 1).expect("position"),
            item.parse().expect("item id"),
            "C"
        )
    );

    // Restarted without the hook, the client's retry gets that recorded answer.
    let server = Server::start(&setup.db, &setup.prefix).await;
    let http = reqwest::Client::new();
    let retried = post_gql(&http, &server.url(), Some(&token), common::SUBMIT, input).await;
    assert!(retried.get("errors").is_none(), "{retried}");
    let result = retried["data"]["submitAnswer"].clone();
    assert_eq!(result["theta"].as_f64(), Some(committed.theta), "{result}");
    assert_eq!(
        result["standardError"].as_f64(),
        Some(committed.standard_error)
    );
    assert_eq!(result["itemsCompleted"], BEFORE + 1);
    assert_eq!(
        result["nextItem"]["itemId"].as_str(),
        committed.next_item_id.map(|id| id.to_string()).as_deref()
    );
    assert_eq!(
        common::recorded_answers(&setup.db).await.len(),
        BEFORE + 1,
        "the retry recorded nothing more"
    );
    check.check(&item, false, &result);

    // The exam goes on to its end.
    let mut last = result;
    for step in BEFORE + 1..MAX_ITEMS {
        item = last["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
        let correct = step % 2 == 0;
        let input = json!({"input": {"examSessionId": exam, "itemId": item,
                                     "response": if correct { "A" } else { "C" }}});
        let response = post_gql(&http, &server.url(), Some(&token), common::SUBMIT, input).await;
        assert!(response.get("errors").is_none(), "{response}");
        last = response["data"]["submitAnswer"].clone();
        check.check(&item, correct, &last);
    }
    assert_eq!(last["completed"], true, "{last}");
    check.assert_recorded_exactly(&setup.db).await;
}

/// A digest of every row of `table` (to show that nothing in it changed).
async fn table_digest(db: &TestDb, table: &str) -> String {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Digest {
        #[diesel(sql_type = diesel::sql_types::Text)]
        digest: String,
    }
    let mut conn = db.conn().await;
    let row: Digest = diesel::sql_query(format!(
        "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t.id)), '') AS digest FROM {table} t"
    ))
    .get_result(&mut conn)
    .await
    .expect("digest");
    row.digest
}

/// Promise: "Redis down: the Redis-only admin operations (`activeSessions`,
/// `extendExamTtl`, `clearEngineCache`) answer `UNAVAILABLE` (retry), with no value and no
/// internals, and change nothing; once Redis is back they work again and the exam goes
/// on".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_admin_operations_are_unavailable_while_redis_is_down_and_change_nothing() {
    const EXTEND: &str =
        "mutation($id: ID!) { extendExamTtl(examSessionId: $id, additionalSeconds: 600) }";
    let mut redis = RedisServer::start().await;
    let app = app_on(&redis).await;
    let params = bank_params(30);
    let bank = app.create_bank(&params).await;
    let mut check = checker(&app, &bank, params).await;
    let token = app.student("s-ops-down");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 5})).await;
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let result = answer(&app, &token, &exam, &item, true).await;
    check.check(&item, true, &result);
    let (admin, proctor) = (app.admin(), app.proctor("p-ops-down"));
    let active = app.ok(&admin, "{ activeSessions }", json!({})).await;
    assert_eq!(active["activeSessions"], json!([exam]));
    let sessions = table_digest(&app.db, "exam_sessions").await;

    redis.stop();
    for (caller, document, variables) in [
        (&admin, "{ activeSessions }", json!({})),
        (&proctor, "{ activeSessions }", json!({})),
        (&admin, EXTEND, json!({"id": exam})),
        (&admin, "mutation { clearEngineCache }", json!({})),
    ] {
        let response = app.gql(Some(caller), document, variables).await;
        assert_eq!(
            common::error_code(&response),
            "UNAVAILABLE",
            "{document}: {response}"
        );
        assert!(
            response["data"]
                .as_object()
                .is_none_or(|data| data.values().all(Value::is_null)),
            "{document}: no value: {response}"
        );
        let message = response["errors"][0]["message"].as_str().unwrap_or("");
        assert!(
            !message.contains("os error") && !message.contains("refused"),
            "{document}: no internals: {message}"
        );
    }
    assert_eq!(
        table_digest(&app.db, "exam_sessions").await,
        sessions,
        "no exam changed"
    );
    check.assert_recorded_exactly(&app.db).await;

    // Redis is back (empty: it keeps nothing on disk): every operation works again.
    redis.restart().await;
    // The circuit breaker skips Redis for at most 2 s after the last failure.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let extended = app.ok(&admin, EXTEND, json!({"id": exam})).await["extendExamTtl"]
        .as_i64()
        .expect("ttl");
    assert!((4190..=4200).contains(&extended), "ttl {extended}");
    let active = app.ok(&proctor, "{ activeSessions }", json!({})).await;
    assert_eq!(active["activeSessions"], json!([exam]));
    let cleared = app
        .ok(&admin, "mutation { clearEngineCache }", json!({}))
        .await;
    assert_eq!(cleared["clearEngineCache"], 1);
    let next = result["nextItem"]["itemId"].as_str().expect("next");
    let result = answer(&app, &token, &exam, next, false).await;
    check.check(next, false, &result);
    check.assert_recorded_exactly(&app.db).await;
}

/// `adaptive_engine_answers_recorded_total{path}` of the instance, from `/metrics`.
async fn answers_recorded(app: &TestApp, path: &str) -> f64 {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    let label = format!("path=\"{path}\"");
    text.lines()
        .find(|line| {
            line.starts_with("adaptive_engine_answers_recorded_total{") && line.contains(&label)
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no answers_recorded_total{{{label}}} in /metrics:\n{text}"))
}

/// Promise: "an instance keeps the fixed facts of at most `SESSION_CACHE_CAPACITY` exams
/// (least recently used out first); an exam whose facts were evicted is answered from its
/// row, with no estimate changed". With a capacity of 2 and six exams answered in turn,
/// the facts are evicted between answers (the answers take the locked path instead of the
/// one-statement one, as `/metrics` counts), every estimate equals the reference EAP, and
/// Postgres holds exactly the acknowledged answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_session_cache_evicting_exams_answered_in_turn_changes_no_estimate() {
    const EXAMS: usize = 6;
    const ROUNDS: usize = 6;
    let app = TestApp::spawn_with(Options {
        env: vec![("SESSION_CACHE_CAPACITY".into(), "2".into())],
        ..Options::default()
    })
    .await;
    let params = bank_params(40);
    let bank = app.create_bank(&params).await;
    let ids = bank_item_ids(&app, &bank).await;
    let assessment =
        common::create_assessment(&app, &bank, json!({"maxItems": ROUNDS + 1}), json!({})).await;
    let mut exams = Vec::new();
    for n in 0..EXAMS {
        let token = app.student(&format!("s-evict-{n}"));
        let (exam, started) = common::start_assessment(&app, &token, &assessment).await;
        let item = started["nextItem"]["itemId"]
            .as_str()
            .expect("item")
            .to_owned();
        exams.push((
            token,
            exam,
            item,
            ExamChecker::new(params.clone(), ids.clone()),
        ));
    }
    let (fast_before, locked_before) = (
        answers_recorded(&app, "fast").await,
        answers_recorded(&app, "locked").await,
    );
    for round in 0..ROUNDS {
        for (n, (token, exam, item, check)) in exams.iter_mut().enumerate() {
            let correct = (round + n) % 3 != 1;
            let result = answer(&app, token, exam, item, correct).await;
            check.check(item, correct, &result);
            *item = result["nextItem"]["itemId"]
                .as_str()
                .expect("next")
                .to_owned();
        }
    }
    let fast = answers_recorded(&app, "fast").await - fast_before;
    let locked = answers_recorded(&app, "locked").await - locked_before;
    eprintln!("answers on the fast path {fast}, on the locked path {locked}");
    assert_eq!(fast + locked, (EXAMS * ROUNDS) as f64);
    assert!(
        locked >= (EXAMS * ROUNDS / 2) as f64,
        "the facts were evicted between an exam's answers (locked path): {locked}"
    );
    let mut all = ExamChecker::new(params, ids);
    for (_, _, _, check) in exams {
        all.acknowledged.extend(check.acknowledged);
    }
    all.assert_recorded_exactly(&app.db).await;
}
