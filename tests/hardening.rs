//! The second round of attacks and fleet faults, each against the real server: slowloris
//! sockets and the connection cap, WebSocket floods, duplicate ids, silent and oversized
//! sockets, tokens expiring on open sockets, `nbf` and overlong tokens, heavy designs,
//! non-finite numbers, NUL characters, suggestions with introspection off, exposure
//! control at full speed on two instances, an exam that cannot start, and two-category
//! polytomous items.

mod common;

use std::time::{Duration, Instant};

use common::ws::{self, close_code, next_json, send};
use common::{
    CREATE_ASSESSMENT, Options, START, SUBMIT, TestApp, answer, bank_params, create_assessment,
    error_code, start_assessment,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

fn subscribe(id: &str, exam: &str) -> Value {
    json!({"id": id, "type": "subscribe", "payload": {
        "query": "subscription($id: ID!) { thetaUpdates(examSessionId: $id) { itemsCompleted } }",
        "variables": {"id": exam}}})
}

/// Milliseconds of one `/health` request.
async fn health_ms(app: &TestApp) -> f64 {
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(app.url("/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("health");
    assert!(response.status().is_success());
    started.elapsed().as_secs_f64() * 1000.0
}

/// An exam of a fresh assessment for `student`; returns (exam id, first item id).
async fn an_exam(app: &TestApp, bank: &str, student: &str) -> (String, String) {
    let assessment = create_assessment(app, bank, json!({"maxItems": 5}), json!({})).await;
    let (exam, started) = start_assessment(app, &app.student(student), &assessment).await;
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    (exam, item)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_sockets_are_closed_by_the_header_timeout_while_health_stays_fast() {
    let app = app_with(&[("HTTP_HEADER_TIMEOUT_SECONDS", "2")]).await;
    let mut sockets = Vec::new();
    for _ in 0..300 {
        let mut socket = TcpStream::connect(app.addr).await.expect("connect");
        socket
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("partial headers");
        sockets.push(socket);
    }
    let opened = Instant::now();
    let mut worst: f64 = 0.0;
    for _ in 0..5 {
        worst = worst.max(health_ms(&app).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst < 500.0,
        "/health took {worst:.0} ms among 300 slowloris sockets"
    );
    // Closed by the configured 2 s, not hyper's 30 s default: all within 12 s (the 2 s
    // plus ample slack for a loaded machine; 30 s would mean the setting was ignored).
    let deadline = Duration::from_secs(12);
    for (n, socket) in sockets.iter_mut().enumerate() {
        let mut buf = [0u8; 512];
        let left = deadline.saturating_sub(opened.elapsed());
        // The server answers 408 or just closes: either way the socket reaches EOF.
        loop {
            match tokio::time::timeout(left, socket.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => panic!("socket {n} still open after {deadline:?}"),
            }
        }
    }
    eprintln!(
        "300 slowloris sockets: /health at worst {worst:.1} ms, all closed {:.1} s after opening",
        opened.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_times_out_and_connections_over_the_cap_are_closed_at_once() {
    let app = app_with(&[
        ("HTTP_BODY_TIMEOUT_SECONDS", "1"),
        ("MAX_CONNECTIONS", "20"),
    ])
    .await;
    // A body that never finishes: 408 once the body timeout passes.
    let mut slow = TcpStream::connect(app.addr).await.expect("connect");
    slow.write_all(
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"query\":",
    )
    .await
    .expect("partial body");
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = slow.read(&mut buf).await {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the slow body was never cut off");
    let head = String::from_utf8_lossy(&reply);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    drop(slow);
    // Hold the cap's worth of idle connections: one more is closed at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(app.addr).await.expect("connect");
    let _ = extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "over the cap, got a response");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    health_ms(&app).await;
}

/// Resident memory of this process (the server runs in it), in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss pages");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_flood_on_one_socket_is_capped_and_harms_no_one_else() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(30)).await;
    let (exam, _) = an_exam(&app, &bank, "flooder").await;
    let (other_exam, other_item) = an_exam(&app, &bank, "bystander").await;
    let before = rss_bytes();
    let mut socket = ws::open(app.addr, Some(&app.student("flooder"))).await;
    for i in 0..2_000 {
        send(&mut socket, subscribe(&format!("s{i}"), &exam)).await;
    }
    // The excess subscribes are answered with an error and run nothing.
    let mut refused = 0;
    while refused < 2_000 - 32 {
        let message = next_json(&mut socket, Duration::from_secs(10)).await;
        assert!(!message.is_null(), "only {refused} refusals");
        if message["type"] == "error" {
            assert_eq!(
                message["payload"][0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
                "{message}"
            );
            refused += 1;
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    eprintln!(
        "2,000 subscribes on one socket: {refused} refused, RSS grew {:.1} MB",
        grown as f64 / f64::from(1 << 20)
    );
    assert!(grown < 50 << 20, "RSS grew by {} MB", grown >> 20);
    // Another student answers as usual meanwhile.
    let token = app.student("bystander");
    let result = answer(&app, &token, &other_exam, &other_item, true).await;
    assert_eq!(result["itemsCompleted"], 1);
    // The 32 that run still deliver.
    let flooder = app.student("flooder");
    let item = app
        .ok(
            &flooder,
            "query($id: ID!) { examSession(id: $id) { currentItem { itemId } } }",
            json!({"id": exam}),
        )
        .await["examSession"]["currentItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    answer(&app, &flooder, &exam, &item, true).await;
    let event = next_json(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(event["type"], "next", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_limits_per_user_duplicate_ids_silence_and_oversized_messages() {
    let app = app_with(&[
        ("WS_MAX_SUBSCRIPTIONS_PER_CONNECTION", "4"),
        ("WS_MAX_SUBSCRIPTIONS_PER_USER", "5"),
        ("WS_INIT_TIMEOUT_SECONDS", "1"),
    ])
    .await;
    let bank = app.create_bank(&bank_params(10)).await;
    let (exam, _) = an_exam(&app, &bank, "s-ws").await;
    let token = app.student("s-ws");
    // Per user: 4 on the first socket, the fifth on a second one, the sixth refused.
    let mut first = ws::open(app.addr, Some(&token)).await;
    for i in 0..4 {
        send(&mut first, subscribe(&format!("a{i}"), &exam)).await;
    }
    // A fifth operation on the first socket is refused; its reply also shows that the
    // server has read the four before it (one socket is read in order).
    send(
        &mut first,
        json!({"id": "q", "type": "subscribe", "payload": {"query": "{ __typename }"}}),
    )
    .await;
    let capped = next_json(&mut first, Duration::from_secs(5)).await;
    assert_eq!(capped["id"], "q", "{capped}");
    assert_eq!(
        capped["payload"][0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS"
    );
    let mut second = ws::open(app.addr, Some(&token)).await;
    send(&mut second, subscribe("b0", &exam)).await;
    send(&mut second, subscribe("b1", &exam)).await;
    let refusal = next_json(&mut second, Duration::from_secs(5)).await;
    assert_eq!(refusal["id"], "b1", "{refusal}");
    assert_eq!(
        refusal["payload"][0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS"
    );
    // Completing one frees a slot for the user.
    send(&mut first, json!({"id": "a0", "type": "complete"})).await;
    send(
        &mut first,
        json!({"id": "q2", "type": "subscribe", "payload": {"query": "{ __typename }"}}),
    )
    .await;
    // The server confirms a0's end, then runs q2 to completion: a0's slot is free.
    loop {
        let message = next_json(&mut first, Duration::from_secs(5)).await;
        assert!(!message.is_null(), "q2 never completed");
        if message["id"] == "q2" && message["type"] == "complete" {
            break;
        }
    }
    send(&mut second, subscribe("b2", &exam)).await;
    let nothing = next_json(&mut second, Duration::from_millis(500)).await;
    assert!(nothing.is_null(), "b2 should run: {nothing}");
    // A duplicate id closes the socket with 4409.
    send(&mut first, subscribe("a1", &exam)).await;
    assert_eq!(
        close_code(&mut first, Duration::from_secs(5)).await,
        Some(4409)
    );
    // A socket that never sends connection_init is closed with 4408.
    let mut silent = ws::open(app.addr, None).await;
    let started = Instant::now();
    assert_eq!(
        close_code(&mut silent, Duration::from_secs(5)).await,
        Some(4408)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // A message over the limit closes with 1009 (message too big), not "shutting down".
    let mut big = ws::open(app.addr, Some(&token)).await;
    let _ = big.send(Message::Text("x".repeat(200 * 1024).into())).await;
    assert_eq!(
        close_code(&mut big, Duration::from_secs(5)).await,
        Some(1009)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_on_an_open_socket_closes_it_even_while_it_pings() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(10)).await;
    let assessment = create_assessment(&app, &bank, json!({}), json!({})).await;
    for role in [
        adaptive_engine::auth::Role::Student,
        adaptive_engine::auth::Role::Admin,
    ] {
        let token = app.keys.mint("s-expiring", role, 2);
        let mut socket = ws::open(app.addr, Some(&token)).await;
        let started = Instant::now();
        // Before expiry the socket works.
        send(
            &mut socket,
            json!({"id": "q", "type": "subscribe", "payload": {"query": "{ __typename }"}}),
        )
        .await;
        let first = next_json(&mut socket, Duration::from_secs(5)).await;
        assert_eq!(first["type"], "next", "{first}");
        // Pings do not keep it open past the token's exp.
        let code = loop {
            // Once the server has closed, a ping may meet a closed pipe: keep reading.
            let _ = socket
                .send(Message::Text(json!({"type": "ping"}).to_string().into()))
                .await;
            match tokio::time::timeout(Duration::from_millis(500), socket.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
                Ok(None | Some(Err(_))) => break None,
                _ => {}
            }
            assert!(started.elapsed() < Duration::from_secs(8), "still open");
        };
        assert_eq!(code, Some(4401), "{role:?}");
    }
    // And startExam over a socket after expiry never runs: the socket is gone, and over
    // HTTP the same token is refused.
    let expired = app
        .keys
        .mint("s-late", adaptive_engine::auth::Role::Student, 0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let response = app
        .gql(
            Some(&expired),
            START,
            json!({"input": {"assessmentId": assessment}}),
        )
        .await;
    assert_eq!(error_code(&response), "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_not_yet_valid_or_living_too_long_are_refused() {
    use jsonwebtoken::{EncodingKey, Header};
    let app = TestApp::spawn().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let key = EncodingKey::from_secret(common::JWT_SECRET.as_bytes());
    let mint =
        |claims: Value| jsonwebtoken::encode(&Header::default(), &claims, &key).expect("jwt");
    let query = "{ assessments { id } }";
    let fine = mint(json!({"sub": "a", "role": "admin", "exp": now + 600}));
    assert!(
        app.gql(Some(&fine), query, json!({}))
            .await
            .get("errors")
            .is_none()
    );
    for claims in [
        json!({"sub": "a", "role": "admin", "exp": now + 600, "nbf": now + 300}),
        json!({"sub": "a", "role": "admin", "exp": now + 30 * 24 * 3600}),
    ] {
        let token = mint(claims.clone());
        let response = app.gql(Some(&token), query, json!({})).await;
        assert_eq!(error_code(&response), "UNAUTHENTICATED", "{claims}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_designs_are_bounded_at_validation_and_run_off_the_async_workers() {
    let app = TestApp::spawn().await;
    let params: Vec<(f64, f64, f64)> = bank_params(100).into_iter().cycle().take(5_000).collect();
    let bank = app.create_bank(&params).await;
    // 5,000 items x 1,001 points under KLP: refused before the grid tables (5.0 M plain
    // units), accepted now that its tables fit in memory (80 MB, 1/8 of the plain cost);
    // designs too costly even so are refused (`design::tests`, with banks of 40,000+ items).
    let accepted = app
        .gql(
            Some(&app.admin()),
            CREATE_ASSESSMENT,
            json!({"input": {"name": "heavy", "itemBankId": bank, "design": {
                "selectionRule": "KLP", "estimator": {"quadraturePoints": 1001}}}}),
        )
        .await;
    assert!(accepted["errors"].is_null(), "{accepted}");
    // A 5,000-item bank cannot reach the cost limit with tables any more; the grid itself
    // stays bounded (at most 1,001 points).
    let refused = app
        .gql(
            Some(&app.admin()),
            CREATE_ASSESSMENT,
            json!({"input": {"name": "heavy", "itemBankId": bank, "design": {
                "selectionRule": "KLP", "estimator": {"quadraturePoints": 1002}}}}),
        )
        .await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");
    // Within the limit, two heavy exams at once leave /health responsive.
    let assessment = create_assessment(
        &app,
        &bank,
        // MLWI: its grid tables build in a second even unoptimized (KLP's take ~20 times
        // longer, past the request timeout of a debug build under a loaded CI machine).
        json!({"maxItems": 8, "selectionRule": "MLWI", "estimator": {"quadraturePoints": 301}}),
        json!({"maxAttemptsPerStudent": null}),
    )
    .await;
    let heavy = |student: &'static str| {
        let (http, url, token, assessment) = (
            reqwest::Client::new(),
            app.url("/graphql"),
            app.student(student),
            assessment.clone(),
        );
        tokio::spawn(async move {
            let post = |query: &str, variables: Value| {
                http.post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"query": query, "variables": variables}))
                    .send()
            };
            let started: Value = post(START, json!({"input": {"assessmentId": assessment}}))
                .await
                .expect("start")
                .json()
                .await
                .expect("json");
            let exam = started["data"]["startExam"]["examSession"]["id"].clone();
            let mut item = started["data"]["startExam"]["nextItem"]["itemId"].clone();
            while let Some(id) = item.as_str().map(str::to_owned) {
                let result: Value = post(
                    SUBMIT,
                    json!({"input": {"examSessionId": exam, "itemId": id, "response": "A"}}),
                )
                .await
                .expect("answer")
                .json()
                .await
                .expect("json");
                assert!(result.get("errors").is_none(), "{result}");
                item = result["data"]["submitAnswer"]["nextItem"]["itemId"].clone();
            }
        })
    };
    let runs = [heavy("h1"), heavy("h2")];
    let mut latencies = Vec::new();
    while runs.iter().any(|r| !r.is_finished()) {
        latencies.push(health_ms(&app).await);
        // Densely: with the grid tables even a heavy design's exam is short.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for run in runs {
        run.await.expect("heavy exam");
    }
    latencies.sort_by(f64::total_cmp);
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    println!(
        "/health during two heavy exams: {} samples, p99 {p99:.1} ms",
        latencies.len()
    );
    assert!(
        latencies.len() >= 10,
        "the heavy exams were too quick to measure"
    );
    assert!(p99 < 250.0, "/health p99 {p99:.0} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_designs_and_nul_characters_are_bad_input_and_change_nothing() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(10)).await;
    let admin = app.admin();
    for design in [
        json!({"estimator": {"thetaMin": -1e308}}),
        json!({"estimator": {"priorSd": 1e-300}}),
        json!({"estimator": {"priorMean": 1e300}}),
        json!({"estimator": {"prior": "UNIFORM", "priorLower": -1e308}}),
    ] {
        let response = app
            .gql(
                Some(&admin),
                CREATE_ASSESSMENT,
                json!({"input": {"name": "x", "itemBankId": bank, "design": design}}),
            )
            .await;
        assert_eq!(
            error_code(&response),
            "BAD_USER_INPUT",
            "{design}: {response}"
        );
    }
    let nul_bank = app
        .gql(
            Some(&admin),
            "mutation($input: CreateItemBankInput!) { createItemBank(input: $input) { id } }",
            json!({"input": {"name": "n", "items": [
                {"externalId": "x", "b": 0, "content": {"stem": "a\u{0}b"}, "answerKey": "A"}]}}),
        )
        .await;
    assert_eq!(error_code(&nul_bank), "BAD_USER_INPUT", "{nul_bank}");
    let nul_name = app
        .gql(
            Some(&admin),
            CREATE_ASSESSMENT,
            json!({"input": {"name": "a\u{0}", "itemBankId": bank}}),
        )
        .await;
    assert_eq!(error_code(&nul_name), "BAD_USER_INPUT", "{nul_name}");
    let (exam, item) = an_exam(&app, &bank, "s-nul").await;
    let response = app
        .gql(
            Some(&app.student("s-nul")),
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": item, "response": "\u{0}"}}),
        )
        .await;
    assert_eq!(error_code(&response), "BAD_USER_INPUT", "{response}");
    assert_eq!(app.db.count("SELECT count(*) AS n FROM attempts").await, 0);
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM item_banks").await,
        1
    );
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM assessments").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_introspection_off_errors_suggest_no_field_names() {
    let app = app_with(&[("GRAPHQL_INTROSPECTION", "false")]).await;
    let response = app
        .gql(
            Some(&app.admin()),
            "{ assesments { id } examSesion(id: \"1\") { id } }",
            json!({}),
        )
        .await;
    let text = response.to_string();
    assert!(response.get("errors").is_some(), "{text}");
    assert!(!text.contains("Did you mean"), "{text}");
    assert!(!text.contains("assessments"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exam_that_cannot_present_a_first_item_does_not_start() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(2)).await;
    let assessment = create_assessment(
        &app,
        &bank,
        json!({"maxItems": 1, "exposure": {"maxRate": 0.1}}),
        json!({"maxAttemptsPerStudent": null}),
    )
    .await;
    // Each of the two items may be presented once among the first ten exams.
    for student in ["s1", "s2"] {
        start_assessment(&app, &app.student(student), &assessment).await;
    }
    let response = app
        .gql(
            Some(&app.student("s3")),
            START,
            json!({"input": {"assessmentId": assessment}}),
        )
        .await;
    assert_eq!(error_code(&response), "NO_ITEM_AVAILABLE", "{response}");
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM exam_sessions")
            .await,
        2,
        "nothing was started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_category_polytomous_items_are_scored_by_category() {
    let app = TestApp::spawn().await;
    let items: Vec<Value> = (0..4)
        .map(|i| {
            json!({"externalId": format!("p{i}"), "b": 0, "a": 1.2, "model": if i % 2 == 0 { "GRM" } else { "GPCM" },
                   "thresholds": [-0.5 + f64::from(i) * 0.3], "content": {"stem": i}, "answerKey": "1"})
        })
        .collect();
    let bank = app
        .ok(
            &app.admin(),
            "mutation($input: CreateItemBankInput!) { createItemBank(input: $input) { id } }",
            json!({"input": {"name": "two categories", "items": items}}),
        )
        .await["createItemBank"]["id"]
        .as_str()
        .expect("bank")
        .to_owned();
    let (exam, item) = an_exam(&app, &bank, "s-poly").await;
    let token = app.student("s-poly");
    for bad in ["2", "5", "abc"] {
        let response = app
            .gql(
                Some(&token),
                SUBMIT,
                json!({"input": {"examSessionId": exam, "itemId": item, "response": bad}}),
            )
            .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{bad}: {response}");
    }
    let result = app
        .ok(
            &token,
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": item, "response": "1"}}),
        )
        .await;
    assert_eq!(result["submitAnswer"]["itemsCompleted"], 1);
    let next = result["submitAnswer"]["nextItem"]["itemId"]
        .as_str()
        .expect("next")
        .to_owned();
    app.ok(
        &token,
        SUBMIT,
        json!({"input": {"examSessionId": exam, "itemId": next, "response": "0"}}),
    )
    .await;
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM attempts WHERE score = 1 AND correct")
            .await,
        1,
        "\"1\" is category 1 (full credit)"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM attempts WHERE score = 0 AND NOT correct")
            .await,
        1
    );
}

/// One simulated examinee's exam over HTTP against `url`: answers drawn from the 3PL
/// model at `theta` (deterministic per examinee); returns (items presented, final theta).
async fn simulated_exam(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    assessment: &str,
    params: &std::collections::HashMap<String, (f64, f64, f64)>,
    theta: f64,
    seed: u64,
) -> (Vec<String>, f64) {
    let post = |query: &'static str, variables: Value| async move {
        common::post_gql(http, url, Some(token), query, variables).await
    };
    let started = post(START, json!({"input": {"assessmentId": assessment}})).await;
    assert!(started.get("errors").is_none(), "{started}");
    let exam = started["data"]["startExam"]["examSession"]["id"].clone();
    let mut item = started["data"]["startExam"]["nextItem"]["itemId"].clone();
    let mut seen = Vec::new();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut theta_hat = 0.0;
    while let Some(id) = item.as_str().map(str::to_owned) {
        let (a, b, c) = params[&id];
        let p = c + (1.0 - c) / (1.0 + (-a * (theta - b)).exp());
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let u = (state >> 11) as f64 / (1u64 << 53) as f64;
        let response = if u < p { "A" } else { "C" };
        let result = post(
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": id, "response": response}}),
        )
        .await;
        assert!(result.get("errors").is_none(), "{result}");
        seen.push(id);
        theta_hat = result["data"]["submitAnswer"]["theta"]
            .as_f64()
            .expect("theta");
        item = result["data"]["submitAnswer"]["nextItem"]["itemId"].clone();
    }
    (seen, theta_hat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposure_control_holds_its_limit_at_full_speed_on_two_instances() {
    let (first, second) = TestApp::spawn_pair().await;
    let (exams, max_rate, length) = (400usize, 0.25, 10);
    let mut report = Vec::new();
    for method in [None, Some("ITEM_ELIGIBILITY"), Some("SYMPSON_HETTER")] {
        // A bank per run: exposure counts are the bank's, over all its exams.
        let bank_params_list = bank_params(80);
        let bank = first.create_bank(&bank_params_list).await;
        let ids = common::bank_item_ids(&first, &bank).await;
        let params: std::collections::HashMap<String, (f64, f64, f64)> =
            ids.iter().cloned().zip(bank_params_list).collect();
        let mut design = json!({"maxItems": length});
        if let Some(method) = method {
            design["exposure"] = json!({"method": method, "maxRate": max_rate});
        }
        let assessment = create_assessment(
            &first,
            &bank,
            design,
            json!({"maxAttemptsPerStudent": null}),
        )
        .await;
        let urls = [first.url("/graphql"), second.url("/graphql")];
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        let mut squared_error = 0.0;
        let mut done = 0usize;
        // 16 exams at a time, alternating instances, as fast as they go.
        let mut results = futures_util::stream::iter(0..exams)
            .map(|i| {
                let (url, token, assessment, params) = (
                    urls[i % 2].clone(),
                    first.student(&format!("sim-{i}")),
                    assessment.clone(),
                    &params,
                );
                let theta = -2.0 + 4.0 * ((i as f64 * 0.618_034).fract());
                async move {
                    let http = reqwest::Client::new();
                    let (seen, hat) =
                        simulated_exam(&http, &url, &token, &assessment, params, theta, i as u64)
                            .await;
                    (seen, hat - theta)
                }
            })
            .buffer_unordered(16);
        while let Some((seen, error)) = results.next().await {
            for id in seen {
                *counts.entry(id).or_default() += 1;
            }
            squared_error += error * error;
            done += 1;
            if method.is_some() && (done == exams / 2 || done == exams) {
                let n = done as f64;
                let max = counts.values().copied().max().unwrap_or(0) as f64 / n;
                let bound = max_rate + 8.0 / n + (max_rate * (1.0 - max_rate) / n).sqrt();
                assert!(
                    max <= bound,
                    "{method:?} after {done} exams: max exposure {max:.3} > {bound:.3}"
                );
                report.push(format!(
                    "{method:?} after {done}: max exposure {max:.3} (bound {bound:.3})"
                ));
            }
        }
        if method.is_some() {
            // The hard cap: every presentation is reserved in Redis against
            // ceil(maxRate × exams started so far), so no item exceeds ceil(maxRate × N).
            let cap = (max_rate * exams as f64).ceil() as usize;
            let most = counts.values().copied().max().unwrap_or(0);
            assert!(
                most <= cap,
                "{method:?}: an item was presented {most} > {cap} times"
            );
        }
        let rmse = (squared_error / exams as f64).sqrt();
        let max = counts.values().copied().max().unwrap_or(0) as f64 / exams as f64;
        report.push(format!("{method:?}: RMSE {rmse:.3}, max exposure {max:.3}"));
    }
    println!("{}", report.join("\n"));
}
