//! Operations (issue 14): `GET /metrics` parses as Prometheus text and its counters move by
//! exactly what a scripted exam did, per instance; `METRICS_ADDR` moves it to a listener of
//! its own; every response carries `x-request-id` (the client's usable one, else a new one)
//! and every log line of a request names it (the real binary with `LOG_FORMAT=json`);
//! `/health/live` and `/health/ready` follow the process, Postgres and the migrations; exams
//! run exactly behind PgBouncer in transaction mode (`pgbouncer.rs`); on a Redis Cluster
//! (`REDIS_CLUSTER_URLS`) exams keep exact estimates, every answer and their subscribers'
//! updates through the failover of a master under a running exam; spans reach an
//! OpenTelemetry collector (feature `otlp`).

mod common;
#[path = "operations/pgbouncer.rs"]
mod pgbouncer;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use adaptive_engine::auth::{JwtKeys, Role};
use common::{
    ExamChecker, JWT_SECRET, Options, PgServer, RedisCluster, Subscription, TestApp, TestDb,
    WsProtocol, answer, bank_item_ids, bank_params, create_assessment, error_code, free_port, poll,
    start_assessment,
};
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use redis::AsyncCommands;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// A strict reader of the Prometheus text format (version 0.0.4)
// ---------------------------------------------------------------------------------------

/// A series: metric name and its labels, sorted.
type Series = (String, BTreeMap<String, String>);

/// One scrape of `/metrics`, read strictly: every line must be a `# HELP`, a `# TYPE` or a
/// sample of a family declared before it, with a valid name, well-formed and properly
/// escaped labels and a number; no series twice; histogram buckets cumulative, ending in
/// `+Inf` equal to `_count`.
#[derive(Debug)]
struct Scrape {
    samples: HashMap<Series, f64>,
    types: HashMap<String, String>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads `{k="v",…}` from the start of `text`; returns the labels and the rest.
fn read_labels(text: &str, line: usize) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').expect("labels open with {");
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let eq = rest
            .find('=')
            .unwrap_or_else(|| panic!("line {line}: label without '='"));
        let key = &rest[..eq];
        assert!(valid_name(key), "line {line}: bad label name {key:?}");
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("line {line}: label value not quoted"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("line {line}: bad escape {other:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) | None => panic!("line {line}: unterminated label value"),
                Some((_, c)) => value.push(c),
            }
        };
        assert!(
            labels.insert(key.to_owned(), value).is_none(),
            "line {line}: label {key} twice"
        );
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn read_value(text: &str, line: usize) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => text
            .parse()
            .unwrap_or_else(|_| panic!("line {line}: {text:?} is not a number")),
    }
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut samples = HashMap::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped = std::collections::HashSet::new();
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            if raw.is_empty() {
                continue;
            }
            if let Some(help) = raw.strip_prefix("# HELP ") {
                let name = help.split(' ').next().unwrap_or_default();
                assert!(valid_name(name), "line {line}: bad name in {raw:?}");
                assert!(helped.insert(name.to_owned()), "line {line}: HELP twice");
                continue;
            }
            if let Some(declared) = raw.strip_prefix("# TYPE ") {
                let mut parts = declared.split(' ');
                let (name, kind) = (parts.next().unwrap_or_default(), parts.next());
                assert!(valid_name(name), "line {line}: bad name in {raw:?}");
                let kind = kind.unwrap_or_else(|| panic!("line {line}: TYPE without a type"));
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "line {line}: unknown type {kind}"
                );
                assert!(parts.next().is_none(), "line {line}: {raw:?}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "line {line}: TYPE twice for {name}"
                );
                continue;
            }
            assert!(
                !raw.starts_with('#'),
                "line {line}: unknown comment {raw:?}"
            );
            let name_end = raw.find(['{', ' ']).unwrap_or(raw.len());
            let name = &raw[..name_end];
            assert!(valid_name(name), "line {line}: bad metric name {name:?}");
            let (labels, rest) = if raw[name_end..].starts_with('{') {
                read_labels(&raw[name_end..], line)
            } else {
                (BTreeMap::new(), &raw[name_end..])
            };
            let mut fields = rest
                .strip_prefix(' ')
                .unwrap_or_else(|| panic!("line {line}: no space before the value"))
                .split(' ');
            let value = read_value(fields.next().unwrap_or_default(), line);
            if let Some(timestamp) = fields.next() {
                timestamp
                    .parse::<i64>()
                    .unwrap_or_else(|_| panic!("line {line}: bad timestamp"));
            }
            assert!(fields.next().is_none(), "line {line}: trailing fields");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            let kind = types
                .get(family)
                .unwrap_or_else(|| panic!("line {line}: {name} has no TYPE before it"));
            if kind == "counter" {
                assert!(value >= 0.0, "line {line}: negative counter");
            }
            if name.ends_with("_bucket") {
                assert!(labels.contains_key("le"), "line {line}: bucket without le");
            }
            assert!(
                samples.insert((name.to_owned(), labels), value).is_none(),
                "line {line}: series twice"
            );
        }
        let scrape = Self { samples, types };
        scrape.check_histograms();
        scrape
    }

    /// Every histogram series: buckets non-decreasing in `le`, the last `+Inf` and equal
    /// to `_count`.
    fn check_histograms(&self) {
        for (family, _) in self.types.iter().filter(|(_, t)| *t == "histogram") {
            let bucket = format!("{family}_bucket");
            let mut series: HashMap<BTreeMap<String, String>, Vec<(f64, f64)>> = HashMap::new();
            for ((name, labels), value) in &self.samples {
                if *name == bucket {
                    let mut rest = labels.clone();
                    let le = read_value(&rest.remove("le").expect("le"), 0);
                    series.entry(rest).or_default().push((le, *value));
                }
            }
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                assert!(
                    buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                    "{family}{labels:?}: buckets not cumulative"
                );
                let last = buckets.last().expect("a bucket");
                assert!(last.0.is_infinite(), "{family}{labels:?}: no +Inf bucket");
                let count = self.samples[&(format!("{family}_count"), labels.clone())];
                assert_eq!(last.1, count, "{family}{labels:?}: +Inf bucket != count");
            }
        }
    }

    /// The value of one series, if present.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// The value of one series, which must be present.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in the scrape"))
    }

    /// The sum of every series of `name` (0 when there is none).
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }
}

/// How much one series moved between two scrapes (absent = 0).
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels).unwrap_or(0.0) - before.get(name, labels).unwrap_or(0.0)
}

/// Scrapes `url` and reads it strictly.
async fn scrape_url(url: &str) -> Scrape {
    let response = reqwest::get(url).await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("content type")
        .to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    Scrape::parse(&response.text().await.expect("body"))
}

async fn scrape(app: &TestApp) -> Scrape {
    scrape_url(&app.url("/metrics")).await
}

const REQUESTS: &str = "adaptive_engine_graphql_requests_total";

/// The reader is strict enough to catch a malformed exposition.
#[test]
fn the_reader_refuses_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"\\n\"} 3\n";
    assert_eq!(Scrape::parse(ok).value("a_total", &[("x", "1\"\n")]), 3.0);
    for bad in [
        "a_total 1\n",                    // no TYPE
        "# TYPE a counter\na{x=\"1} 1\n", // unterminated
        "# TYPE a counter\na{x=1} 1\n",   // unquoted
        "# TYPE a counter\na 1\na 2\n",   // twice
        "# TYPE a gauge\na one\n",        // not a number
        // Buckets that are not cumulative.
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| Scrape::parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// Promise: one exam moves every counter by exactly what happened, on the instance it
/// happened on: N answers (one through the locked path after its Redis state was
/// deleted), the start, the completion by MAX_ITEMS, a bad input, the cache hits, the
/// miss and the rebuild, the events published, the engine steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_exam_exactly() {
    const N: usize = 5;
    let app = TestApp::spawn().await;
    let other = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(30)).await;
    let assessment = create_assessment(&app, &bank, json!({"maxItems": N}), json!({})).await;
    let token = app.student("s-metrics");
    let before = scrape(&app).await;
    let other_before = scrape(&other).await;

    let (exam, started) = start_assessment(&app, &token, &assessment).await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let mut redis = app.redis().await;
    for k in 0..N {
        if k == 2 {
            // The next answer finds no state: a miss, then the locked path rebuilds.
            let deleted: i64 = redis.del(app.key(&exam)).await.expect("DEL");
            assert_eq!(deleted, 1, "the state was cached");
        }
        let result = common::answer(&app, &token, &exam, &item, k % 2 == 0).await;
        assert_eq!(result["itemsCompleted"], k + 1);
        if k + 1 < N {
            item = result["nextItem"]["itemId"]
                .as_str()
                .expect("next")
                .to_owned();
        } else {
            assert_eq!(result["completed"], true);
            assert_eq!(result["stopReason"], "MAX_ITEMS");
        }
    }
    let bad = app
        .gql(
            Some(&token),
            common::SUBMIT,
            json!({"input": {"examSessionId": "not-a-number", "itemId": item, "response": "A"}}),
        )
        .await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT");
    let after = scrape(&app).await;

    let moved = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    let n = N as f64;
    let submit_ok = [("operation", "submitAnswer"), ("outcome", "ok")];
    let submit_bad = [("operation", "submitAnswer"), ("outcome", "BAD_USER_INPUT")];
    assert_eq!(moved(REQUESTS, &submit_ok), n);
    assert_eq!(moved(REQUESTS, &submit_bad), 1.0);
    assert_eq!(
        moved(REQUESTS, &[("operation", "startExam"), ("outcome", "ok")]),
        1.0
    );
    assert_eq!(
        moved(
            "adaptive_engine_graphql_request_duration_seconds_count",
            &[("operation", "submitAnswer")]
        ),
        n + 1.0,
        "every submitAnswer is timed, failed ones too"
    );
    let answers = "adaptive_engine_answers_recorded_total";
    assert_eq!(moved(answers, &[("path", "fast")]), n - 1.0);
    assert_eq!(moved(answers, &[("path", "locked")]), 1.0);
    assert_eq!(moved("adaptive_engine_exams_started_total", &[]), 1.0);
    let completed = "adaptive_engine_exams_completed_total";
    assert_eq!(moved(completed, &[("reason", "MAX_ITEMS")]), 1.0);
    assert_eq!(after.sum(completed) - before.sum(completed), 1.0);
    let lookups = "adaptive_engine_state_cache_lookups_total";
    assert_eq!(moved(lookups, &[("result", "hit")]), n - 1.0);
    assert_eq!(moved(lookups, &[("result", "miss")]), 1.0);
    assert_eq!(moved(lookups, &[("result", "error")]), 0.0);
    assert_eq!(moved("adaptive_engine_state_rebuilds_total", &[]), 1.0);
    // The start and every answer publish one event (the last one with the completion).
    assert_eq!(
        moved("adaptive_engine_events_published_total", &[]),
        n + 1.0
    );
    assert_eq!(
        moved(
            "adaptive_engine_engine_step_seconds_count",
            &[("mode", "inline")]
        ),
        n + 1.0,
        "one step to start, one per answer"
    );
    let reservations = "adaptive_engine_exposure_reservations_total";
    assert_eq!(after.sum(reservations) - before.sum(reservations), 0.0);
    assert_eq!(after.value("adaptive_engine_redis_breaker_open", &[]), 0.0);
    assert_eq!(
        after.value(
            "adaptive_engine_pool_max_connections",
            &[("pool", "postgres")]
        ),
        4.0,
        "DATABASE_POOL_SIZE of the tests"
    );
    let postgres_gets = |scrape: &Scrape| {
        ["direct", "waited"]
            .map(|result| {
                scrape.value(
                    "adaptive_engine_pool_gets_total",
                    &[("pool", "postgres"), ("result", result)],
                )
            })
            .iter()
            .sum::<f64>()
    };
    assert!(
        postgres_gets(&after) >= postgres_gets(&before) + n,
        "at least one check-out per answer"
    );

    // The other instance, in the same process, counted none of it.
    let other_after = scrape(&other).await;
    for (name, labels) in [
        (REQUESTS, &submit_ok[..]),
        ("adaptive_engine_exams_started_total", &[][..]),
        (
            "adaptive_engine_answers_recorded_total",
            &[("path", "fast")][..],
        ),
    ] {
        assert_eq!(
            delta(&other_before, &other_after, name, labels),
            0.0,
            "{name}"
        );
    }
}

/// Promise: a request refused before any field ran is counted under `operation="none"`
/// with its code, and never under an operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_count_under_none() {
    let app = TestApp::spawn().await;
    let token = app.admin();
    let before = scrape(&app).await;
    let syntax = app.gql(Some(&token), "{ assessments(", json!({})).await;
    assert_eq!(error_code(&syntax), "GRAPHQL_VALIDATION_FAILED");
    let unknown = app.gql(Some(&token), "{ noSuchField }", json!({})).await;
    assert_eq!(error_code(&unknown), "GRAPHQL_VALIDATION_FAILED");
    let forbidden = app
        .gql(
            Some(&app.student("s-x")),
            "{ assessments { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&forbidden), "FORBIDDEN");
    let after = scrape(&app).await;
    let none = [
        ("operation", "none"),
        ("outcome", "GRAPHQL_VALIDATION_FAILED"),
    ];
    assert_eq!(delta(&before, &after, REQUESTS, &none), 2.0);
    assert_eq!(
        delta(
            &before,
            &after,
            REQUESTS,
            &[("operation", "assessments"), ("outcome", "FORBIDDEN")]
        ),
        1.0
    );
    assert_eq!(after.sum(REQUESTS) - before.sum(REQUESTS), 3.0);
}

/// Promise: WebSocket gauges follow the sockets and their subscriptions; a subscription
/// counts once as a request (its outcome: its first message); its events count as
/// delivered; exposure reservations are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_subscriptions_events_and_exposure_are_counted() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(30)).await;
    let design = json!({"maxItems": 3, "exposure": {"maxRate": 1.0}});
    let assessment = create_assessment(&app, &bank, design, json!({})).await;
    let token = app.student("s-ws");
    let before = scrape(&app).await;
    let (exam, started) = start_assessment(&app, &token, &assessment).await;

    let (mut subscription, _current) =
        Subscription::theta_updates_live(app.addr, Some(&token), &exam, WsProtocol::TransportWs)
            .await
            .expect("subscribed");
    let open = scrape(&app).await;
    assert_eq!(
        open.value("adaptive_engine_websocket_connections", &[]),
        1.0
    );
    assert_eq!(
        open.value("adaptive_engine_websocket_subscriptions", &[]),
        1.0
    );
    assert_eq!(
        delta(
            &before,
            &open,
            REQUESTS,
            &[("operation", "thetaUpdates"), ("outcome", "ok")]
        ),
        1.0
    );
    // Another student's exam: refused, with the code the client sees.
    let refused = Subscription::theta_updates_live(
        app.addr,
        Some(&app.student("s-other")),
        &exam,
        WsProtocol::TransportWs,
    )
    .await;
    assert!(refused.is_ok(), "the error is the first message");

    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    for k in 0..3 {
        let result = common::answer(&app, &token, &exam, &item, true).await;
        let event = subscription
            .next(Duration::from_secs(5))
            .await
            .expect("an event per answer");
        assert_eq!(event["data"]["thetaUpdates"]["itemsCompleted"], k + 1);
        if let Some(next) = result["nextItem"]["itemId"].as_str() {
            item = next.to_owned();
        }
    }
    drop(subscription);
    drop(refused);
    let mut closed = scrape(&app).await;
    for _ in 0..100 {
        if closed.value("adaptive_engine_websocket_connections", &[]) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        closed = scrape(&app).await;
    }
    assert_eq!(
        closed.value("adaptive_engine_websocket_connections", &[]),
        0.0
    );
    assert_eq!(
        closed.value("adaptive_engine_websocket_subscriptions", &[]),
        0.0
    );
    assert_eq!(
        delta(
            &before,
            &closed,
            REQUESTS,
            &[("operation", "thetaUpdates"), ("outcome", "NOT_FOUND")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            &before,
            &closed,
            "adaptive_engine_events_delivered_total",
            &[]
        ),
        3.0,
        "one subscriber, three answers"
    );
    // Exposure control: the start and the two answers that presented an item reserved
    // it (the completing answer presents none).
    let granted = [("result", "granted")];
    assert_eq!(
        delta(
            &before,
            &closed,
            "adaptive_engine_exposure_reservations_total",
            &granted
        ),
        3.0
    );
}

/// Promise: with `METRICS_ADDR`, `/metrics` is served there and not on the public
/// listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_addr_moves_metrics_off_the_public_listener() {
    let port = free_port();
    let app = TestApp::spawn_with(Options {
        env: vec![("METRICS_ADDR".into(), format!("127.0.0.1:{port}"))],
        ..Options::default()
    })
    .await;
    let public = app.http.get(app.url("/metrics")).send().await.expect("get");
    assert_eq!(public.status(), 404);
    let scrape = scrape_url(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(
        scrape.value(
            "adaptive_engine_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

// ---------------------------------------------------------------------------------------
// Request ids
// ---------------------------------------------------------------------------------------

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on {}", response.url()))
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// Whether `id` has the form of the ids the server makes (32 lowercase hex digits).
fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// Promise: every response carries `x-request-id`: the client's own when short and
/// printable, else a fresh one; 404s and GraphQL responses too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let get = |path: &str, id: Option<&str>| {
        let mut request = app.http.get(app.url(path));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let echoed = get("/health/live", Some("client-id-42"))
        .await
        .expect("get");
    assert_eq!(request_id(&echoed), "client-id-42");
    let (a, b) = (
        get("/health/live", None).await.expect("get"),
        get("/health/live", None).await.expect("get"),
    );
    let (a, b) = (request_id(&a), request_id(&b));
    assert!(is_generated(&a) && is_generated(&b) && a != b, "{a} {b}");
    for unusable in ["x".repeat(129), "with space".into(), String::new()] {
        let response = get("/health/live", Some(&unusable)).await.expect("get");
        let id = request_id(&response);
        assert!(is_generated(&id), "{unusable:?} was replaced by {id}");
    }
    let longest = "y".repeat(128);
    let kept = get("/health/live", Some(&longest)).await.expect("get");
    assert_eq!(request_id(&kept), longest);
    let missing = get("/no/such/page", Some("nf-1")).await.expect("get");
    assert_eq!(missing.status(), 404);
    assert_eq!(request_id(&missing), "nf-1");
    let graphql = app
        .http
        .post(app.url("/graphql"))
        .header("x-request-id", "gql-1")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .expect("post");
    assert_eq!(request_id(&graphql), "gql-1");
}

/// The real binary with JSON logs, its stderr in a file.
struct LoggingServer {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl LoggingServer {
    async fn start(db: &TestDb) -> Self {
        Self::start_with(db, &[]).await
    }

    /// [`LoggingServer::start`] with more environment variables.
    async fn start_with(db: &TestDb, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(common::unique("ops_log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_adaptive-engine"))
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", common::redis_url())
            .env("REDIS_KEY_PREFIX", common::unique("ae_ops"))
            .env("JWT_SECRET", JWT_SECRET)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("LOG_FORMAT", "json")
            // tower_http's debug lines close every request, inside its span.
            .env("RUST_LOG", "info,tower_http=debug")
            .env_remove("METRICS_ADDR")
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("clone"))
            .stderr(file)
            .spawn()
            .expect("spawn adaptive-engine");
        let server = Self { child, port, log };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(server.url("/health/live")).send().await
                && r.status().is_success()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("adaptive-engine did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Stops it (SIGTERM) and returns every line it wrote.
    fn stop(mut self) -> Vec<String> {
        common::terminate(self.child.id());
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log)
            .expect("log")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for LoggingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A `graphql-transport-ws` socket to the server on `port`, upgraded by a request that
/// carries `x-request-id: id`.
async fn ws_with_request_id(port: u16, id: &str) -> common::ws::Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{port}/graphql/ws")
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    headers.insert("x-request-id", id.parse().expect("header"));
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    assert_eq!(
        response.headers()["x-request-id"],
        id,
        "the upgrade echoes it"
    );
    socket
}

/// The request id of a JSON log line, from its current span.
fn line_request_id(line: &Value) -> Option<&str> {
    line["span"]["request_id"].as_str()
}

/// Promise: with `LOG_FORMAT=json` every line is one JSON object, and every line logged
/// while serving a request carries that request's id (the client's, or the one the
/// response names) with the GraphQL operation's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_names_its_id() {
    let setup = TestApp::spawn().await;
    let bank = setup.create_bank(&bank_params(20)).await;
    let server = LoggingServer::start(&setup.db).await;
    let keys = JwtKeys::new(JWT_SECRET.as_bytes());
    let admin = keys.mint("admin-1", Role::Admin, 3600);
    let student = keys.mint("s-logs", Role::Student, 3600);
    let http = reqwest::Client::new();
    let post = |token: &str, id: Option<&str>, query: &str, variables: Value| {
        let mut request = http
            .post(server.url("/graphql"))
            .bearer_auth(token)
            .json(&json!({"query": query, "variables": variables}));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };

    let sent_id = common::unique("ops-req");
    let created = post(
        &admin,
        Some(&sent_id),
        common::CREATE_ASSESSMENT,
        json!({"input": {"name": "logged", "itemBankId": bank, "design": {"maxItems": 3}}}),
    )
    .await
    .expect("create");
    assert_eq!(request_id(&created), sent_id);
    let created: Value = created.json().await.expect("json");
    let assessment = created["data"]["createAssessment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let started = post(
        &student,
        None,
        common::START,
        json!({"input": {"assessmentId": assessment}}),
    )
    .await
    .expect("start");
    let generated_id = request_id(&started);
    assert!(is_generated(&generated_id), "{generated_id}");
    let started: Value = started.json().await.expect("json");
    let exam = started["data"]["startExam"]["examSession"]["id"]
        .as_str()
        .expect("exam")
        .to_owned();
    let item = started["data"]["startExam"]["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let answer_id = common::unique("ops-answer");
    let answered = post(
        &student,
        Some(&answer_id),
        common::SUBMIT,
        json!({"input": {"examSessionId": exam, "itemId": item, "response": "A"}}),
    )
    .await
    .expect("answer");
    assert_eq!(request_id(&answered), answer_id);

    // A WebSocket: its lines name its upgrade request's id, here a mutation's.
    let ws_id = common::unique("ops-ws");
    let mut socket = ws_with_request_id(server.port, &ws_id).await;
    let ack = common::ws::init(&mut socket, Some(&keys.mint("s-ws", Role::Student, 3600))).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    common::ws::subscribe(
        &mut socket,
        "1",
        common::START,
        json!({"input": {"assessmentId": assessment}}),
    )
    .await;
    let over_ws = common::ws::next_json(&mut socket, Duration::from_secs(5)).await;
    assert!(
        over_ws["payload"]["data"]["startExam"]["examSession"]["id"].is_string(),
        "{over_ws}"
    );
    drop(socket);

    let lines = server.stop();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(parsed.iter().all(Value::is_object));
    let of = |id: &str| -> Vec<&Value> {
        parsed
            .iter()
            .filter(|line| line_request_id(line) == Some(id))
            .collect()
    };
    // The service's own line, inside the request, and the request's closing line.
    let creation = of(&sent_id);
    assert!(
        creation
            .iter()
            .any(|line| line["message"] == "assessment created"),
        "{creation:#?}"
    );
    let start = of(&generated_id);
    let exam_started = start
        .iter()
        .find(|line| line["message"] == "exam started")
        .unwrap_or_else(|| panic!("no 'exam started' line in {start:#?}"));
    assert_eq!(exam_started["span"]["field"], "startExam");
    assert_eq!(exam_started["span"]["role"], "student");
    assert_eq!(exam_started["span"]["path"], "/graphql");
    assert_eq!(exam_started["span"]["method"], "POST");
    // The request's closing line carries what the handler learnt: exam, field, role.
    let answer = of(&answer_id);
    let finished = answer
        .iter()
        .find(|line| line["message"] == "finished processing request")
        .unwrap_or_else(|| panic!("no closing line in {answer:#?}"));
    assert_eq!(finished["span"]["exam_id"], exam.as_str());
    assert_eq!(finished["span"]["field"], "submitAnswer");
    assert_eq!(finished["span"]["role"], "student");
    assert_eq!(finished["status"], 200);
    // Every line logged while serving a request is inside its span: the middleware's
    // and the service's alike.
    for line in &parsed {
        let target = line["target"].as_str().unwrap_or_default();
        if target.starts_with("tower_http::trace")
            || line["message"] == "exam started"
            || line["message"] == "assessment created"
        {
            assert!(line_request_id(line).is_some(), "{line}");
        }
    }
    let ws_started = of(&ws_id)
        .into_iter()
        .find(|line| line["message"] == "exam started")
        .expect("the mutation over the WebSocket logged in its span");
    assert_eq!(ws_started["span"]["name"], "websocket");
    assert_eq!(ws_started["span"]["role"], "student");
    for id in [&sent_id, &generated_id, &answer_id] {
        assert_eq!(
            of(id)
                .iter()
                .filter(|line| line["message"] == "finished processing request")
                .count(),
            1,
            "one request, one closing line, with its id"
        );
    }
}

// ---------------------------------------------------------------------------------------
// OpenTelemetry export (cargo feature `otlp`)
// ---------------------------------------------------------------------------------------

/// The `stringValue` of attribute `key` in an OTLP/JSON attribute list.
#[cfg(feature = "otlp")]
fn otlp_attribute<'a>(attributes: &'a Value, key: &str) -> Option<&'a str> {
    attributes.as_array()?.iter().find(|a| a["key"] == key)?["value"]["stringValue"].as_str()
}

/// Promise: built with `otlp` and given an endpoint, the real binary exports each
/// request's span (name `request`, its request id, root field and role as attributes,
/// `service.name` adaptive-engine) to an OTLP/HTTP collector, and flushes spans still
/// batched when it stops (the batch delay here is a minute, so only the flush can send it).
#[cfg(feature = "otlp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_an_otlp_collector_and_are_flushed_on_exit() {
    let (tx, mut exported) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let db = TestDb::new().await;
    let server = LoggingServer::start_with(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    )
    .await;
    let sent_id = common::unique("otlp-req");
    let admin = JwtKeys::new(JWT_SECRET.as_bytes()).mint("admin-otlp", Role::Admin, 3600);
    let response = reqwest::Client::new()
        .post(server.url("/graphql"))
        .bearer_auth(&admin)
        .header("x-request-id", &sent_id)
        .json(&json!({"query": "{ itemBanks { id } }"}))
        .send()
        .await
        .expect("request");
    assert_eq!(request_id(&response), sent_id);
    server.stop();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let batch = tokio::time::timeout_at(deadline, exported.recv())
            .await
            .expect("the request's span was exported within 20 s of the stop")
            .expect("collector running");
        for resource in batch["resourceSpans"].as_array().into_iter().flatten() {
            let service = otlp_attribute(&resource["resource"]["attributes"], "service.name");
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let attributes = &span["attributes"];
                    if span["name"] == "request"
                        && otlp_attribute(attributes, "request_id") == Some(sent_id.as_str())
                    {
                        assert_eq!(service, Some("adaptive-engine"), "{resource}");
                        assert_eq!(
                            otlp_attribute(attributes, "field"),
                            Some("itemBanks"),
                            "{span}"
                        );
                        assert_eq!(otlp_attribute(attributes, "role"), Some("admin"), "{span}");
                        assert_eq!(
                            otlp_attribute(attributes, "path"),
                            Some("/graphql"),
                            "{span}"
                        );
                        return;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------

async fn health(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.http.get(app.url(path)).send().await.expect("get");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// Promise: live is 200 while the process serves; ready is 200 only while Postgres
/// answers and every migration is applied, 503 otherwise, and comes back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_postgres_and_the_migrations() {
    let pg = PgServer::start();
    let db = std::sync::Arc::new(TestDb {
        name: common::unique("ae_own"),
        url: pg.url("adaptive_engine"),
    });
    let app = TestApp::spawn_with(Options {
        db: Some(db.clone()),
        ..Options::default()
    })
    .await;
    assert_eq!(
        health(&app, "/health/live").await,
        (200, json!({"status": "live"}))
    );
    let (status, ready) = health(&app, "/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["migrations"], "applied");
    assert_eq!(ready["redis"], "up");

    // A migration that is not applied: not ready, and it says which.
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let mut conn = db.conn().await;
    let removed: Version = diesel::sql_query(
        "DELETE FROM __diesel_schema_migrations WHERE version = \
         (SELECT max(version) FROM __diesel_schema_migrations) RETURNING version",
    )
    .get_result(&mut conn)
    .await
    .expect("remove the latest migration's row");
    let (status, ready) = health(&app, "/health/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["migrations"], "pending");
    assert_eq!(ready["pendingMigrations"], json!([removed.version]));
    diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ($1)")
        .bind::<Text, _>(&removed.version)
        .execute(&mut conn)
        .await
        .expect("restore it");
    drop(conn);
    assert_eq!(health(&app, "/health/ready").await.0, 200);

    pg.stop();
    let (status, ready) = health(&app, "/health/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["postgres"], "down");
    assert_eq!(health(&app, "/health/live").await.0, 200, "still live");

    pg.resume();
    let mut status = 0;
    for _ in 0..100 {
        status = health(&app, "/health/ready").await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "ready again once Postgres is back");
}

// ---------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------

/// Answers per exam in the cluster test.
const CLUSTER_EXAM_ITEMS: usize = 8;

/// One exam of the cluster test: its answers so far, and a subscriber on each instance.
struct ClusterExam {
    id: String,
    token: String,
    /// The item to answer next (`None` once completed).
    item: Option<String>,
    check: ExamChecker,
    /// `thetaUpdates` subscribers: `watchers[i]` on instance `i`.
    watchers: Vec<Subscription>,
    /// Updates a watcher may miss: (instance, itemsCompleted) of answers recorded while the
    /// cluster was failing over, which only the recording instance is sure to deliver.
    may_miss: Vec<(usize, u64)>,
}

impl ClusterExam {
    /// Answers the presented item on instance `on` of `apps` (right or wrong by a fixed
    /// pattern), checks the estimate against the reference, then waits until every watcher
    /// delivered the update (in order, nothing twice). While the cluster `fails_over`, only
    /// the recording instance's watcher must deliver it.
    async fn answer_on(&mut self, apps: &[&TestApp], on: usize, fails_over: bool) {
        let item = self.item.clone().expect("the exam is still running");
        let correct = (self.check.responses.len() * 7 + self.id.len()) % 3 != 0;
        let result = answer(apps[on], &self.token, &self.id, &item, correct).await;
        self.check.check(&item, correct, &result);
        self.item = result["nextItem"]["itemId"].as_str().map(str::to_owned);
        let n = self.check.acknowledged.len() as u64;
        for watcher in 0..self.watchers.len() {
            if fails_over && watcher != on {
                self.may_miss.push((watcher, n));
            } else {
                self.expect_update(watcher, n).await;
            }
        }
        if self.item.is_none() {
            for watcher in &mut self.watchers {
                let end = watcher.next(Duration::from_secs(10)).await;
                assert_eq!(
                    end.as_ref().map(|m| m["type"].clone()),
                    Some(json!("complete")),
                    "exam {}: after its last update, the subscription completes",
                    self.id
                );
            }
        }
    }

    /// Reads `watcher`'s next update, which must be the `n`th (after the one it may have
    /// missed), and checks it against the acknowledged answer.
    async fn expect_update(&mut self, watcher: usize, n: u64) {
        loop {
            let message = self.watchers[watcher]
                .next(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "exam {}: no update {n} on instance {watcher}'s subscriber",
                        self.id
                    )
                });
            let update = &message["data"]["thetaUpdates"];
            let got = update["itemsCompleted"]
                .as_u64()
                .unwrap_or_else(|| panic!("not an update: {message}"));
            let acknowledged = &self.check.acknowledged[got as usize - 1];
            assert_eq!(
                update["theta"].as_f64(),
                Some(acknowledged.theta),
                "{message}"
            );
            assert_eq!(
                update["standardError"].as_f64(),
                Some(acknowledged.standard_error)
            );
            assert_eq!(update["completed"].as_bool(), Some(acknowledged.completed));
            if got == n {
                return;
            }
            assert!(
                got < n && self.may_miss.contains(&(watcher, got)),
                "exam {}: instance {watcher}'s subscriber got update {got}, expected {n}",
                self.id
            );
            // The update of the failover came through after all; it counts only once.
            self.may_miss.retain(|m| *m != (watcher, got));
        }
    }
}

/// Keys of one test prefix in the cluster: `(exists, exists)` for the state key in the
/// hash-tagged form and in the standalone form.
async fn state_key_forms(
    conn: &mut redis::cluster_async::ClusterConnection,
    prefix: &str,
    exam: &str,
) -> (bool, bool) {
    let tagged: bool = conn
        .exists(format!("{prefix}:{{{exam}}}"))
        .await
        .expect("EXISTS");
    let plain: bool = conn
        .exists(format!("{prefix}:{exam}"))
        .await
        .expect("EXISTS");
    (tagged, plain)
}

/// Promise (issue 14): with `REDIS_CLUSTER_URLS` two instances run exams on a six-node
/// Redis Cluster with answers alternating between them: every estimate exact, a
/// subscriber on each instance receives every update, the engine states are the
/// hash-tagged keys `{prefix}:{<exam>}` spread over the masters (`activeSessions` scans
/// them all). Then the master holding a running exam's state slot, which is also where both
/// instances' event listeners are subscribed, is SIGKILLed mid-exam: answers given while the
/// cluster fails over still succeed exactly (Redis errors are cache misses), its replica
/// is promoted, the listeners resubscribe by themselves, `clearEngineCache` deletes the
/// states on every master, and the exams finish with every estimate exact, no answer lost
/// or doubled, every later update delivered on both instances, and the completion markers
/// set beside the deleted states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exams_on_a_redis_cluster_survive_the_failover_of_a_master_mid_exam() {
    let mut cluster = RedisCluster::start().await;
    let env = vec![("REDIS_CLUSTER_URLS".to_owned(), cluster.urls())];
    let a = TestApp::spawn_with(Options {
        env: env.clone(),
        ..Options::default()
    })
    .await;
    let b = TestApp::spawn_with(Options {
        db: Some(a.db.clone()),
        prefix: Some(a.prefix.clone()),
        env,
        ..Options::default()
    })
    .await;
    let apps = [&a, &b];
    let prefix = a.prefix.clone();

    // The listeners subscribe through the master of the channel name's slot: the victim.
    let channel = a.app.service.states().events_channel();
    let victim = cluster.master_of(&channel).await;
    poll(
        "both listeners subscribed on the channel's master",
        Duration::from_secs(10),
        async || (cluster.subscribers_on(victim, &channel).await == 2).then_some(()),
    )
    .await;

    let params = bank_params(40);
    let bank = a.create_bank(&params).await;
    let ids = bank_item_ids(&a, &bank).await;
    let assessment = create_assessment(
        &a,
        &bank,
        json!({"maxItems": CLUSTER_EXAM_ITEMS}),
        json!({}),
    )
    .await;
    // Start exams (on both instances) until one's state lives on the victim and another's
    // on a different master.
    let proctor = a.proctor("p-cluster");
    let mut started = Vec::new();
    let (mut on_victim, mut elsewhere) = (None, None);
    for n in 0..30 {
        let token = a.student(&format!("s-cluster-{n}"));
        let (exam, payload) = start_assessment(apps[n % 2], &token, &assessment).await;
        started.push(exam.clone());
        let master = cluster.master_of(&format!("{prefix}:{{{exam}}}")).await;
        let slot = if master == victim {
            &mut on_victim
        } else {
            &mut elsewhere
        };
        if slot.is_none() {
            *slot = Some(ClusterExam {
                id: exam,
                token,
                item: payload["nextItem"]["itemId"].as_str().map(str::to_owned),
                check: ExamChecker::new(params.clone(), ids.clone()),
                watchers: Vec::new(),
                may_miss: Vec::new(),
            });
        }
        if on_victim.is_some() && elsewhere.is_some() {
            break;
        }
    }
    let mut exams = [
        on_victim.expect("an exam on the victim master"),
        elsewhere.expect("an exam on another master"),
    ];
    for exam in &mut exams {
        for app in apps {
            let (watcher, current) = Subscription::theta_updates_live(
                app.addr,
                Some(&proctor),
                &exam.id,
                WsProtocol::TransportWs,
            )
            .await
            .expect("subscribed");
            assert_eq!(current["data"]["thetaUpdates"]["itemsCompleted"], 0);
            exam.watchers.push(watcher);
        }
    }

    // Half of each exam, answers alternating between the instances.
    for k in 0..CLUSTER_EXAM_ITEMS / 2 {
        for exam in &mut exams {
            exam.answer_on(&apps, k % 2, false).await;
        }
    }
    // The states are cached, under hash-tagged keys only, on two different masters.
    let mut conn = cluster.client().await;
    for exam in &exams {
        assert_eq!(
            state_key_forms(&mut conn, &prefix, &exam.id).await,
            (true, false),
            "exam {}: the state key is {prefix}:{{{}}}, not {prefix}:{}",
            exam.id,
            exam.id,
            exam.id
        );
        let summary = b
            .ok(&proctor, common::SUMMARY, json!({"id": exam.id}))
            .await;
        assert_eq!(summary["engineSummary"]["source"], "CACHE", "{summary}");
    }
    let active = a.ok(&a.admin(), "{ activeSessions }", json!({})).await;
    let mut active: Vec<String> =
        serde_json::from_value(active["activeSessions"].clone()).expect("ids");
    active.sort();
    started.sort();
    assert_eq!(active, started, "activeSessions scans every master");

    // SIGKILL the victim mid-exam; answer both exams while the cluster fails over.
    cluster.kill(victim);
    for exam in &mut exams {
        let k = exam.check.acknowledged.len();
        exam.answer_on(&apps, k % 2, true).await;
    }
    // The replica takes over, the listeners resubscribe, the instances see the cluster.
    cluster.wait_ok().await;
    assert_ne!(
        cluster.master_of(&channel).await,
        victim,
        "a replica was promoted"
    );
    poll(
        "both listeners subscribed again",
        Duration::from_secs(20),
        async || {
            let mut subscribers = 0;
            for port in cluster.live_ports() {
                subscribers += cluster.subscribers_on(port, &channel).await;
            }
            (subscribers == 2).then_some(())
        },
    )
    .await;
    for app in apps {
        poll("/health/redis up", Duration::from_secs(20), async || {
            let health = app.get_json("/health/redis").await;
            (health["redis"] == "up").then_some(())
        })
        .await;
        assert_eq!(app.get_json("/health").await["redis"], "up");
    }

    // clearEngineCache finds and deletes the states on every master (the running exams'
    // live on two); the exams go on from Postgres.
    let admin = a.admin();
    let active = b.ok(&admin, "{ activeSessions }", json!({})).await;
    let active: Vec<String> =
        serde_json::from_value(active["activeSessions"].clone()).expect("ids");
    for exam in &exams {
        assert!(active.contains(&exam.id), "{} in {active:?}", exam.id);
    }
    let cleared = b
        .ok(&admin, "mutation { clearEngineCache }", json!({}))
        .await;
    assert_eq!(cleared["clearEngineCache"], json!(active.len()));
    let active = a.ok(&admin, "{ activeSessions }", json!({})).await;
    assert_eq!(active["activeSessions"], json!([]));
    let mut conn = cluster.client().await;
    for exam in &exams {
        assert_eq!(
            state_key_forms(&mut conn, &prefix, &exam.id).await,
            (false, false)
        );
    }

    // The rest of each exam, alternating again; every update reaches both instances.
    for exam in &mut exams {
        while exam.item.is_some() {
            let k = exam.check.acknowledged.len();
            exam.answer_on(&apps, k % 2, false).await;
        }
        assert_eq!(exam.check.acknowledged.len(), CLUSTER_EXAM_ITEMS);
    }
    let mut everything = ExamChecker::new(params.clone(), ids.clone());
    for exam in &exams {
        // Completed: the state is gone and the marker is set, in the same slot.
        assert_eq!(
            state_key_forms(&mut conn, &prefix, &exam.id).await,
            (false, false)
        );
        let marker: bool = conn
            .exists(format!("{prefix}-completed:{{{}}}", exam.id))
            .await
            .expect("EXISTS");
        assert!(marker, "exam {}: completion marker", exam.id);
        everything
            .acknowledged
            .extend(exam.check.acknowledged.iter().cloned());
    }
    everything.assert_recorded_exactly(&a.db).await;
}

/// Promise: in cluster mode the service starts and serves exams while no node of the
/// cluster answers (Redis errors are cache misses there too): exact estimates, every
/// answer recorded once, states read from Postgres, and the health checks say Redis is
/// down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_serves_exams_while_no_cluster_node_answers() {
    let app = TestApp::spawn_with(Options {
        env: vec![(
            "REDIS_CLUSTER_URLS".to_owned(),
            format!("redis://127.0.0.1:{}", free_port()),
        )],
        ..Options::default()
    })
    .await;
    let health = app.get_json("/health").await;
    assert_eq!(
        (&health["status"], &health["redis"]),
        (&json!("ok"), &json!("down"))
    );
    assert_eq!(app.get_json("/health/redis").await["redis"], "down");
    let params = bank_params(30);
    let bank = app.create_bank(&params).await;
    let mut check = ExamChecker::new(params, bank_item_ids(&app, &bank).await);
    let token = app.student("s-no-cluster");
    let (exam, started) = common::start(&app, &token, &bank, json!({"maxItems": 4})).await;
    let mut item = started["nextItem"]["itemId"].as_str().map(str::to_owned);
    while let Some(presented) = item {
        let correct = check.responses.len() % 2 == 0;
        let result = answer(&app, &token, &exam, &presented, correct).await;
        check.check(&presented, correct, &result);
        if result["completed"] == false {
            let summary = app.ok(&token, common::SUMMARY, json!({"id": exam})).await;
            assert_eq!(summary["engineSummary"]["source"], "DATABASE", "{summary}");
        }
        item = result["nextItem"]["itemId"].as_str().map(str::to_owned);
    }
    assert_eq!(check.acknowledged.len(), 4);
    check.assert_recorded_exactly(&app.db).await;
}
