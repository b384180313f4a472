//! What client teams and proctors rely on, against the real server: CORS, Apollo's
//! automatic persisted queries, the results API for every role and feedback policy, the
//! `examActivity` subscription across two instances, subscription lifecycle (keep-alive,
//! completion, finished exams, `includeCurrent`) and local delivery while Redis is down.

mod common;

use std::time::Duration;

use common::ws::{self, send, subscribe};
use common::{
    Options, RedisServer, Subscription, TestApp, answer, bank_params, create_assessment,
    error_code, start_assessment,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn app_with(env: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with(Options {
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_allowed_for_configured_origins_only() {
    let app = app_with(&[(
        "CORS_ALLOWED_ORIGINS",
        "http://localhost:5173, https://exams.example.org",
    )])
    .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &str| {
        http.request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "content-type,authorization",
            )
            .send()
    };
    let allowed = preflight("http://localhost:5173").await.expect("preflight");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let allow_headers = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(allow_headers.contains("authorization") && allow_headers.contains("content-type"));
    let denied = preflight("https://evil.example.com")
        .await
        .expect("preflight");
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // A real cross-origin POST gets the header too.
    let post = http
        .post(app.url("/graphql"))
        .header("Origin", "https://exams.example.org")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .expect("post");
    assert_eq!(
        post.headers()["access-control-allow-origin"],
        "https://exams.example.org"
    );
    // Unset: no CORS headers at all (same origin only).
    let plain = TestApp::spawn().await;
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, plain.url("/graphql"))
        .header("Origin", "http://localhost:5173")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apollo_automatic_persisted_queries_round_trip() {
    use sha2::Digest;
    let app = TestApp::spawn().await;
    let query = "query Banks { itemBanks { id name } }";
    let hash = format!("{:x}", sha2::Sha256::digest(query.as_bytes()));
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(app.url("/graphql"))
            .bearer_auth(app.admin())
            .json(&body)
            .send()
    };
    let extensions = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});
    // 1. Hash only: not known yet, the answer Apollo falls back on.
    let miss: Value = post(json!({"extensions": extensions}))
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(
        miss["errors"][0]["message"], "PersistedQueryNotFound",
        "{miss}"
    );
    assert_eq!(error_code(&miss), "PERSISTED_QUERY_NOT_FOUND");
    // 2. Hash and query: executed and remembered.
    let full: Value = post(json!({"query": query, "extensions": extensions}))
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert!(full["data"]["itemBanks"].is_array(), "{full}");
    // 3. Hash only again: executed from the cache.
    let hit: Value = post(json!({"extensions": extensions}))
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(hit["data"], full["data"], "{hit}");
    // A query that does not match its hash is refused.
    let wrong: Value = post(json!({"query": "{ __typename }", "extensions": extensions}))
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert!(wrong.get("errors").is_some(), "{wrong}");
}

const MY_EXAMS: &str = "{ myExams { id assessmentId status theta standardError itemsCompleted
    stopReason durationSeconds attempts { position itemId externalId response score correct
    theta standardError answeredAt secondsOnItem } } }";
const EXAMS: &str = "query($filter: ExamFilter, $first: Int, $after: String) {
    exams(filter: $filter, first: $first, after: $after) { totalCount
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      edges { cursor node { id studentId status } }
      nodes { id studentId status theta itemsCompleted attempts { externalId score theta } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_follow_roles_and_feedback_and_exams_read_postgres_not_redis() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(20)).await;
    let final_only = create_assessment(
        &app,
        &bank,
        json!({"maxItems": 3}),
        json!({"feedback": "FINAL"}),
    )
    .await;
    let estimates = create_assessment(&app, &bank, json!({"maxItems": 3}), json!({})).await;
    let token = app.student("s-results");
    // One FINAL exam left running after two answers, one ESTIMATES exam completed.
    let (running, started) = start_assessment(&app, &token, &final_only).await;
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let first = answer(&app, &token, &running, &item, true).await;
    let item = first["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    answer(&app, &token, &running, &item, false).await;
    let (done, started) = start_assessment(&app, &token, &estimates).await;
    let mut item = started["nextItem"]["itemId"].as_str().map(str::to_owned);
    while let Some(id) = item {
        item = answer(&app, &token, &done, &id, true).await["nextItem"]["itemId"]
            .as_str()
            .map(str::to_owned);
    }
    let mine = app.ok(&token, MY_EXAMS, json!({})).await["myExams"].clone();
    let mine = mine.as_array().expect("list");
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0]["id"], done.as_str(), "newest first");
    let (completed, running_view) = (&mine[0], &mine[1]);
    assert_eq!(completed["status"], "COMPLETED");
    assert_eq!(completed["stopReason"], "MAX_ITEMS");
    assert!(completed["theta"].is_f64());
    assert_eq!(completed["attempts"].as_array().map(Vec::len), Some(3));
    for attempt in completed["attempts"].as_array().expect("attempts") {
        assert!(attempt["theta"].is_f64(), "ESTIMATES: {attempt}");
        assert!(attempt["externalId"].is_null() && attempt["score"].is_null());
        assert!(
            attempt["correct"].is_null(),
            "students see no scoring: {attempt}"
        );
        assert_eq!(attempt["response"], "A");
    }
    assert_eq!(running_view["status"], "ACTIVE");
    assert!(
        running_view["theta"].is_null(),
        "FINAL hides it while running"
    );
    let attempts = running_view["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a["theta"].is_null()));
    assert_eq!(
        attempts
            .iter()
            .map(|a| a["position"].as_i64())
            .collect::<Vec<_>>(),
        [Some(1), Some(2)]
    );
    // Staff see everything; the Relay connection pages newest first.
    let proctor = app.proctor("p-results");
    let other = app.student("s-other");
    start_assessment(&app, &other, &estimates).await;
    let page1 = app.ok(&proctor, EXAMS, json!({"first": 2})).await["exams"].clone();
    assert_eq!(page1["totalCount"], 3);
    assert_eq!(page1["pageInfo"]["hasNextPage"], true);
    assert_eq!(page1["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(page1["edges"][0]["node"]["studentId"], "s-other");
    let page2 = app
        .ok(
            &proctor,
            EXAMS,
            json!({"first": 2, "after": page1["pageInfo"]["endCursor"]}),
        )
        .await["exams"]
        .clone();
    assert_eq!(page2["nodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2["nodes"][0]["id"], running.as_str());
    assert_eq!(page2["pageInfo"]["hasNextPage"], false);
    let staff_view = &page2["nodes"][0];
    assert!(staff_view["theta"].is_f64(), "staff always see theta");
    let attempt = &staff_view["attempts"][0];
    assert!(
        attempt["externalId"]
            .as_str()
            .is_some_and(|e| e.starts_with("item-"))
    );
    assert_eq!(attempt["score"], 1);
    assert!(attempt["theta"].is_f64());
    // Filters, and the source-of-truth view of running exams survives a cache flush.
    let cleared = app
        .ok(&app.admin(), "mutation { clearEngineCache }", json!({}))
        .await;
    assert!(cleared["clearEngineCache"].as_i64().expect("count") >= 2);
    let active = app.ok(&proctor, "{ activeSessions }", json!({})).await;
    assert_eq!(
        active["activeSessions"],
        json!([]),
        "the Redis view is empty now"
    );
    let running_now = app
        .ok(
            &proctor,
            EXAMS,
            json!({"filter": {"status": "ACTIVE", "assessmentId": final_only}}),
        )
        .await["exams"]
        .clone();
    assert_eq!(running_now["totalCount"], 1);
    assert_eq!(running_now["nodes"][0]["id"], running.as_str());
    // Students cannot list other exams.
    let refused = app.gql(Some(&token), EXAMS, json!({})).await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
}

const ACTIVITY: &str = "subscription($id: ID!) { examActivity(assessmentId: $id) {
    kind examSessionId studentId assessmentId itemsCompleted theta standardError status at } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exam_activity_reaches_proctors_on_another_instance() {
    let (a, b) = TestApp::spawn_pair().await;
    let bank = a.create_bank(&bank_params(10)).await;
    let assessment = create_assessment(&a, &bank, json!({"maxItems": 2}), json!({})).await;
    let other = create_assessment(&a, &bank, json!({"maxItems": 2}), json!({})).await;
    // A proctor on B watches the assessment; a student refused.
    let mut watcher = ws::open(b.addr, Some(&b.proctor("p-room"))).await;
    subscribe(&mut watcher, "w", ACTIVITY, json!({"id": assessment})).await;
    let mut student_socket = ws::open(b.addr, Some(&b.student("s-nosy"))).await;
    subscribe(
        &mut student_socket,
        "x",
        ACTIVITY,
        json!({"id": assessment}),
    )
    .await;
    let refused = ws::next_answering_pings(&mut student_socket, Duration::from_secs(5)).await;
    assert_eq!(
        refused["payload"][0]["extensions"]["code"]
            .as_str()
            .or(refused["payload"]["errors"][0]["extensions"]["code"].as_str()),
        Some("FORBIDDEN"),
        "{refused}"
    );
    // Wait until B's resolver has run: its events come through B's Redis listener.
    b.app
        .service
        .events()
        .wait_listening(Duration::from_secs(3))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Everything happens on A.
    let token = a.student("s-act");
    start_assessment(&a, &a.student("s-elsewhere"), &other).await;
    let (exam, started) = start_assessment(&a, &token, &assessment).await;
    let (same, resumed) = start_assessment(&a, &token, &assessment).await;
    assert_eq!(
        (same.as_str(), &resumed["resumed"]),
        (exam.as_str(), &json!(true))
    );
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let first = answer(&a, &token, &exam, &item, true).await;
    let item = first["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let last = answer(&a, &token, &exam, &item, false).await;
    assert_eq!(last["completed"], true);
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let event = ws::next_answering_pings(&mut watcher, Duration::from_secs(10)).await;
        let activity = &event["payload"]["data"]["examActivity"];
        assert_eq!(activity["examSessionId"], exam.as_str(), "{event}");
        assert_eq!(activity["studentId"], "s-act");
        assert_eq!(activity["assessmentId"], assessment.as_str());
        kinds.push((
            activity["kind"].as_str().unwrap_or_default().to_owned(),
            activity["itemsCompleted"].as_i64().unwrap_or(-1),
            activity["status"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    assert_eq!(
        kinds,
        [
            ("STARTED".into(), 0, "ACTIVE".into()),
            ("ANSWERED".into(), 1, "ACTIVE".into()),
            ("ANSWERED".into(), 2, "COMPLETED".into()),
            ("COMPLETED".into(), 2, "COMPLETED".into()),
        ]
    );
    // Nothing else (the resume and the other assessment's start sent nothing here).
    assert!(
        ws::next_answering_pings(&mut watcher, Duration::from_millis(500))
            .await
            .is_null()
    );
}

const UPDATES: &str = "subscription($id: ID!, $current: Boolean) {
    thetaUpdates(examSessionId: $id, includeCurrent: $current) {
      itemsCompleted theta standardError completed } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn theta_updates_start_with_the_current_state_and_complete_with_the_exam() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(10)).await;
    let assessment = create_assessment(&app, &bank, json!({"maxItems": 2}), json!({})).await;
    let token = app.student("s-life");
    let (exam, started) = start_assessment(&app, &token, &assessment).await;
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let first = answer(&app, &token, &exam, &item, true).await;
    // A reconnecting client asks for the current state first.
    let mut socket = ws::open(app.addr, Some(&token)).await;
    subscribe(
        &mut socket,
        "u",
        UPDATES,
        json!({"id": exam, "current": true}),
    )
    .await;
    let current = ws::next_answering_pings(&mut socket, Duration::from_secs(5)).await;
    let current = &current["payload"]["data"]["thetaUpdates"];
    assert_eq!(current["itemsCompleted"], 1, "{current}");
    assert_eq!(current["theta"], first["theta"]);
    // The completing answer, then `complete`.
    let item = first["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let last = answer(&app, &token, &exam, &item, false).await;
    let event = ws::next_answering_pings(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(event["payload"]["data"]["thetaUpdates"]["completed"], true);
    assert_eq!(
        event["payload"]["data"]["thetaUpdates"]["theta"],
        last["theta"]
    );
    let complete = ws::next_answering_pings(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(
        (&complete["id"], &complete["type"]),
        (&json!("u"), &json!("complete"))
    );
    // Subscribing to the finished exam: its final state, then complete, even without
    // includeCurrent.
    subscribe(&mut socket, "f", UPDATES, json!({"id": exam})).await;
    let final_state = ws::next_answering_pings(&mut socket, Duration::from_secs(5)).await;
    let final_state = &final_state["payload"]["data"]["thetaUpdates"];
    assert_eq!(final_state["completed"], true);
    assert_eq!(final_state["itemsCompleted"], 2);
    assert_eq!(final_state["theta"], last["theta"]);
    let complete = ws::next_answering_pings(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(
        (&complete["id"], &complete["type"]),
        (&json!("f"), &json!("complete"))
    );
}

/// Promise: "live updates over the legacy `graphql-ws` subprotocol
/// (subscriptions-transport-ws clients) as over `graphql-transport-ws`": a `start` of
/// `thetaUpdates` gets the current state, then one `data` message per answer, in order,
/// with the acknowledged theta and SE, then `complete` once the exam completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_graphql_ws_protocol_delivers_every_theta_update_then_complete() {
    const ITEMS: u64 = 3;
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(12)).await;
    let assessment = create_assessment(&app, &bank, json!({"maxItems": ITEMS}), json!({})).await;
    let token = app.student("s-legacy");
    let (exam, started) = start_assessment(&app, &token, &assessment).await;
    let mut socket = ws::connect(app.addr, "graphql-ws")
        .await
        .expect("the server speaks graphql-ws");
    let ack = ws::init(&mut socket, Some(&token)).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    send(
        &mut socket,
        json!({"id": "t", "type": "start",
               "payload": {"query": UPDATES, "variables": {"id": exam, "current": true}}}),
    )
    .await;
    // The next message that is not a legacy keep-alive (`ka`).
    async fn next(socket: &mut ws::Ws) -> Value {
        loop {
            let message = ws::next_json(socket, Duration::from_secs(5)).await;
            if message["type"] != "ka" {
                return message;
            }
        }
    }
    let current = next(&mut socket).await;
    assert_eq!(
        (&current["id"], &current["type"]),
        (&json!("t"), &json!("data")),
        "{current}"
    );
    assert_eq!(
        current["payload"]["data"]["thetaUpdates"]["itemsCompleted"], 0,
        "{current}"
    );
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    for n in 1..=ITEMS {
        let result = answer(&app, &token, &exam, &item, n != 2).await;
        let message = next(&mut socket).await;
        assert_eq!(
            (&message["id"], &message["type"]),
            (&json!("t"), &json!("data")),
            "{message}"
        );
        let update = &message["payload"]["data"]["thetaUpdates"];
        assert_eq!(update["itemsCompleted"], n, "in order: {update}");
        assert_eq!(update["theta"], result["theta"]);
        assert_eq!(update["standardError"], result["standardError"]);
        assert_eq!(update["completed"], n == ITEMS);
        if n < ITEMS {
            item = result["nextItem"]["itemId"]
                .as_str()
                .expect("next")
                .to_owned();
        }
    }
    let complete = next(&mut socket).await;
    assert_eq!(
        (&complete["id"], &complete["type"]),
        (&json!("t"), &json!("complete")),
        "{complete}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_only_answers_pings_is_never_dropped_and_a_dead_one_is() {
    let app = app_with(&[
        ("WS_KEEPALIVE_SECONDS", "1"),
        ("WS_IDLE_TIMEOUT_SECONDS", "4"),
    ])
    .await;
    let bank = app.create_bank(&bank_params(10)).await;
    let assessment = create_assessment(&app, &bank, json!({}), json!({})).await;
    let token = app.student("s-quiet");
    let (exam, started) = start_assessment(&app, &token, &assessment).await;
    let mut alive = ws::open(app.addr, Some(&token)).await;
    subscribe(&mut alive, "u", UPDATES, json!({"id": exam})).await;
    let mut dead = ws::open(app.addr, Some(&token)).await;
    // For 12 s (three idle timeouts) the live client only answers the server's pings.
    let until = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut pings = 0;
    let mut dead_closed = None;
    while tokio::time::Instant::now() < until {
        tokio::select! {
            message = alive.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).expect("json");
                    assert_eq!(message["type"], "ping", "{message}");
                    pings += 1;
                    send(&mut alive, json!({"type": "pong"})).await;
                }
                other => panic!("the live client was dropped: {other:?}"),
            },
            message = dead.next(), if dead_closed.is_none() => {
                // The dead client reads (so the close is seen) but never answers.
                if let Some(Ok(Message::Close(frame))) = message {
                    dead_closed = Some(frame.map(|f| u16::from(f.code)));
                }
            }
            () = tokio::time::sleep_until(until) => {}
        }
    }
    assert!(pings >= 8, "{pings} pings in 12 s");
    assert_eq!(dead_closed, Some(Some(3008)), "the silent client is closed");
    // The live subscription still delivers.
    let item = started["nextItem"]["itemId"].as_str().expect("item");
    answer(&app, &token, &exam, item, true).await;
    let event = ws::next_answering_pings(&mut alive, Duration::from_secs(5)).await;
    assert_eq!(
        event["payload"]["data"]["thetaUpdates"]["itemsCompleted"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_subscribers_on_the_answering_instance_still_get_every_event() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::spawn_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await;
    let bank = app.create_bank(&bank_params(10)).await;
    let assessment = create_assessment(&app, &bank, json!({"maxItems": 4}), json!({})).await;
    let token = app.student("s-local");
    let (exam, started) = start_assessment(&app, &token, &assessment).await;
    let mut subscription = Subscription::theta_updates(app.addr, Some(&token), &exam)
        .await
        .expect("subscribed");
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut item = started["nextItem"]["itemId"].as_str().map(str::to_owned);
    let mut received = Vec::new();
    while let Some(id) = item {
        let result = answer(&app, &token, &exam, &id, true).await;
        let event = subscription
            .next(Duration::from_secs(5))
            .await
            .expect("an event with Redis down");
        assert_eq!(
            event["data"]["thetaUpdates"]["theta"], result["theta"],
            "{event}"
        );
        received.push(event["data"]["thetaUpdates"]["itemsCompleted"].as_i64());
        item = result["nextItem"]["itemId"].as_str().map(str::to_owned);
    }
    assert_eq!(
        received,
        [Some(1), Some(2), Some(3), Some(4)],
        "no gap, no duplicate"
    );
    // When Redis is back, the instance does not deliver its own events twice.
    redis.restart().await;
    app.app
        .service
        .events()
        .wait_listening(Duration::from_secs(10))
        .await;
    let assessment = create_assessment(&app, &bank, json!({"maxItems": 2}), json!({})).await;
    let (exam, started) = start_assessment(&app, &token, &assessment).await;
    let mut subscription = Subscription::theta_updates(app.addr, Some(&token), &exam)
        .await
        .expect("subscribed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let item = started["nextItem"]["itemId"].as_str().expect("item");
    answer(&app, &token, &exam, item, true).await;
    let event = subscription
        .next(Duration::from_secs(5))
        .await
        .expect("event");
    assert_eq!(event["data"]["thetaUpdates"]["itemsCompleted"], 1);
    let again = subscription.next(Duration::from_secs(1)).await;
    assert!(again.is_none(), "delivered twice: {again:?}");
}
