//! Attacks: tokens that must not pass, students reaching for other students' exams or for
//! admin operations, answer keys and parameters that must never leak, hostile GraphQL
//! (deep, wide, batched, huge), and fuzzed requests. Every case checks that nothing changed.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{Options, SUBMIT, SUMMARY, Subscription, TestApp, bank_params, error_code, start};
use proptest::prelude::*;
use serde_json::{Value, json};

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A token signed with `secret` over arbitrary claims.
fn signed(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

async fn attempts(app: &TestApp) -> i64 {
    app.db.count("SELECT count(*) AS n FROM attempts").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_unauthenticated_and_change_nothing() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(10)).await;
    let alice = app.student("alice");
    let (exam, started) = start(&app, &alice, &bank, json!({})).await;
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let secret = common::JWT_SECRET.as_bytes();
    let expired = signed(
        &json!({"sub": "alice", "role": "student", "exp": now() - 3600}),
        secret,
    );
    let wrong_key = signed(
        &json!({"sub": "alice", "role": "student", "exp": now() + 3600}),
        b"another secret",
    );
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "alice", "role": "student", "exp": now() + 3600}))
    );
    let unknown_role = signed(
        &json!({"sub": "alice", "role": "root", "exp": now() + 3600}),
        secret,
    );
    let no_exp = signed(&json!({"sub": "alice", "role": "student"}), secret);
    let empty_sub = signed(
        &json!({"sub": "", "role": "admin", "exp": now() + 3600}),
        secret,
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("expired", Some(expired)),
        ("wrongly signed", Some(wrong_key)),
        ("alg none", Some(alg_none)),
        ("unknown role", Some(unknown_role)),
        ("no exp", Some(no_exp)),
        ("empty subject", Some(empty_sub)),
        ("malformed", Some("not.a.jwt".into())),
        ("garbage", Some("%%%".into())),
        ("missing", None),
    ];
    for (name, token) in &cases {
        for (query, variables) in [
            (SUMMARY, json!({"id": exam})),
            (
                SUBMIT,
                json!({"input": {"examSessionId": exam, "itemId": item, "response": "A"}}),
            ),
            ("mutation { clearEngineCache }", json!({})),
        ] {
            let response = app.gql(token.as_deref(), query, variables).await;
            assert_eq!(
                error_code(&response),
                "UNAUTHENTICATED",
                "{name}: {response}"
            );
            assert!(response["data"].is_null(), "{name}: {response}");
        }
    }
    // A header that is not a bearer token is refused too.
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("Authorization", format!("Basic {alice}"))
        .json(&json!({"query": SUMMARY, "variables": {"id": exam}}))
        .send()
        .await
        .expect("send")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(error_code(&response), "UNAUTHENTICATED");
    assert_eq!(attempts(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn students_cannot_touch_other_exams_or_admin_operations() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(10)).await;
    let alice = app.student("alice");
    let mallory = app.student("mallory");
    let (exam, started) = start(&app, &alice, &bank, json!({})).await;
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let before = app.ok(&alice, SUMMARY, json!({"id": exam})).await;
    for (query, variables) in [
        (SUMMARY, json!({"id": exam})),
        (
            "query($id: ID!) { examSession(id: $id) { id } }",
            json!({"id": exam}),
        ),
        (
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": item, "response": "A"}}),
        ),
    ] {
        // Another student's exam looks exactly like a missing one (no existence oracle).
        let response = app.gql(Some(&mallory), query, variables).await;
        assert_eq!(error_code(&response), "NOT_FOUND", "{response}");
        assert_eq!(
            response["errors"][0]["message"],
            format!("exam session {exam} does not exist"),
            "{response}"
        );
    }
    for (query, variables) in [
        ("{ activeSessions }", json!({})),
        ("{ itemBanks { id } }", json!({})),
        ("mutation { clearEngineCache }", json!({})),
        (
            "mutation($id: ID!) { extendExamTtl(examSessionId: $id, additionalSeconds: 60) }",
            json!({"id": exam}),
        ),
        (
            "mutation($id: ID!) { abandonExam(examSessionId: $id) { status } }",
            json!({"id": exam}),
        ),
        (
            "mutation { createItemBank(input: {name: \"x\", items: [{externalId: \"x\", b: 0, content: {}, answerKey: \"A\"}]}) { id } }",
            json!({}),
        ),
        (
            "mutation($b: ID!) { addItems(itemBankId: $b, items: [{externalId: \"x\", b: 0, content: {}, answerKey: \"A\"}]) { id } }",
            json!({"b": bank}),
        ),
        (
            "mutation($i: ID!) { retireItem(itemId: $i) }",
            json!({"i": item}),
        ),
        (
            "mutation($b: ID!) { calibrateItems(itemBankId: $b) { id } }",
            json!({"b": bank}),
        ),
        (
            "mutation($i: [ID!]!) { promoteItems(itemIds: $i) }",
            json!({"i": [item]}),
        ),
        ("query { calibrationRun(id: \"1\") { id } }", json!({})),
        (
            "query($b: ID!) { pretestItems(itemBankId: $b) { responses } }",
            json!({"b": bank}),
        ),
    ] {
        let response = app.gql(Some(&alice), query, variables).await;
        assert_eq!(error_code(&response), "FORBIDDEN", "{query}: {response}");
    }
    assert_eq!(app.db.count("SELECT count(*) AS n FROM items").await, 10);
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM items WHERE retired_at IS NOT NULL")
            .await,
        0
    );
    let mut subscription = Subscription::theta_updates(app.addr, Some(&mallory), &exam)
        .await
        .expect("connected");
    let refused = subscription
        .next(std::time::Duration::from_secs(5))
        .await
        .expect("an answer");
    let code = refused["errors"][0]["extensions"]["code"]
        .as_str()
        .or(refused["payload"][0]["extensions"]["code"].as_str());
    assert_eq!(code, Some("NOT_FOUND"), "{refused}");
    assert!(
        Subscription::theta_updates(app.addr, Some("forged.token.here"), &exam)
            .await
            .is_err()
    );

    let after = app.ok(&alice, SUMMARY, json!({"id": exam})).await;
    assert_eq!(
        before["engineSummary"]["itemsCompleted"],
        after["engineSummary"]["itemsCompleted"]
    );
    assert_eq!(attempts(&app).await, 0);
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM item_banks").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_student_visible_response_ever_carries_a_key_or_parameters() {
    let app = TestApp::spawn().await;
    // Keys and parameters chosen so that any leak is recognizable.
    let items: Vec<Value> = (0..25)
        .map(|i| {
            json!({"externalId": format!("leak-{i}"), "a": 1.234_567 + i as f64 / 1000.0, "b": -0.987_654 + i as f64 / 10.0,
                   "c": 0.131_313, "content": {"stem": format!("Q{i}"), "options": ["A", "B"]},
                   "answerKey": format!("SECRET-KEY-{i}")})
        })
        .collect();
    let data = app
        .ok(
            &app.admin(),
            "mutation($input: CreateItemBankInput!) { createItemBank(input: $input) { id } }",
            json!({"input": {"name": "leak test", "items": items}}),
        )
        .await;
    let bank = data["createItemBank"]["id"]
        .as_str()
        .expect("bank")
        .to_owned();
    let token = app.student("s-leak");
    let mut transcript = Vec::new();
    let everything = "query($id: ID!) { examSession(id: $id) { id studentId status theta standardError itemsCompleted itemBankId
        maxItems minItems seTarget estimator stopReason createdAt completedAt currentItem { id itemId position content contentArea } } }";
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 6})).await;
    transcript.push(started.to_string());
    let mut subscription = Subscription::theta_updates(app.addr, Some(&token), &exam)
        .await
        .expect("subscribed");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    for step in 0..6 {
        // Wrong guesses, bad ids, other items: every error text is in the transcript too.
        transcript.push(
            app.gql(
                Some(&token),
                SUBMIT,
                json!({"input": {"examSessionId": exam, "itemId": "1", "response": "x"}}),
            )
            .await
            .to_string(),
        );
        transcript.push(
            app.gql(
                Some(&token),
                SUBMIT,
                json!({"input": {"examSessionId": exam, "itemId": "abc", "response": "x"}}),
            )
            .await
            .to_string(),
        );
        transcript.push(
            app.gql(Some(&token), everything, json!({"id": exam}))
                .await
                .to_string(),
        );
        transcript.push(
            app.gql(Some(&token), SUMMARY, json!({"id": exam}))
                .await
                .to_string(),
        );
        let response = app
            .gql(Some(&token), SUBMIT, json!({"input": {"examSessionId": exam, "itemId": item, "response": if step % 2 == 0 { "A" } else { "B" }}}))
            .await;
        transcript.push(response.to_string());
        if let Some(next) = response["data"]["submitAnswer"]["nextItem"]["itemId"].as_str() {
            item = next.to_owned();
        }
        if let Some(event) = subscription.next(std::time::Duration::from_secs(5)).await {
            transcript.push(event.to_string());
        }
    }
    transcript.push(
        app.gql(
            Some(&token),
            "{ itemBank(id: \"1\") { id name itemCount scalingConstant } }",
            json!({}),
        )
        .await
        .to_string(),
    );
    let text = transcript.join("\n");
    for needle in [
        "SECRET-KEY",
        "answerKey",
        "1.234",
        "0.987",
        "0.131",
        "\"a\":",
        "\"b\":",
        "\"c\":",
        "thresholds",
        "scoring",
    ] {
        assert!(
            !text.contains(needle),
            "student-visible output contains {needle:?}:\n{text}"
        );
    }
    for needle in [
        "SELECT", "diesel", "relation", "redis", "Redis", "postgres", "sql",
    ] {
        assert!(
            !text.contains(needle),
            "student-visible output contains internals {needle:?}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_graphql_is_refused_deep_wide_batched_long_or_huge() {
    let app = TestApp::spawn().await;
    let token = app.admin();
    // Depth: introspection types nest without end.
    let mut deep = String::from("name");
    for _ in 0..20 {
        deep = format!("ofType {{ {deep} }}");
    }
    let response = app
        .gql(
            Some(&token),
            &format!("{{ __type(name: \"Query\") {{ fields {{ type {{ {deep} }} }} }} }}"),
            json!({}),
        )
        .await;
    assert!(
        response["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nested too deep"),
        "{response}"
    );
    assert_eq!(error_code(&response), "GRAPHQL_VALIDATION_FAILED");
    // Complexity: the same field a thousand times over aliases.
    let wide: String = (0..1200).map(|i| format!("a{i}:activeSessions ")).collect();
    let response = app
        .gql(Some(&token), &format!("{{ {wide} }}"), json!({}))
        .await;
    assert!(
        response["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("complex"),
        "{response}"
    );
    // Batches are refused.
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!([{"query": "{ activeSessions }"}, {"query": "{ activeSessions }"}]))
        .send()
        .await
        .expect("send");
    assert!(
        response.status().is_client_error(),
        "batch answered with {}",
        response.status()
    );
    // Bodies over the limit get 413 without being read.
    // (Raw HTTP: the server answers from the Content-Length alone, before any body byte.)
    let status_line = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /graphql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            // The promised limit (README), not the constant: raising it must fail here.
            16 * 1024 * 1024 + 1
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 256];
        let n = stream.read(&mut buf).await.expect("read");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(status_line.contains(" 413 "), "{status_line}");
    // Query text over the promised 32 KiB is refused before parsing; just under, it runs.
    for (padding, refused) in [(32 * 1024, true), (31 * 1024, false)] {
        let long = format!("{{ activeSessions }} # {}", "y".repeat(padding));
        let response = app.gql(Some(&token), &long, json!({})).await;
        let code = response["errors"][0]["extensions"]["code"].as_str();
        assert_eq!(
            code == Some("BAD_USER_INPUT"),
            refused,
            "{padding} bytes: {response}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_can_be_switched_off() {
    let app = TestApp::spawn_with(Options {
        env: vec![("GRAPHQL_INTROSPECTION".into(), "false".into())],
        ..Options::default()
    })
    .await;
    let response = app
        .gql(None, "{ __schema { types { name } } }", json!({}))
        .await;
    assert!(
        response.get("errors").is_some() || response["data"]["__schema"].is_null(),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_responses_racing_for_one_item_record_one_and_refuse_the_rest() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(20)).await;
    let token = app.student("s-race2");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 5})).await;
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let calls = ["A", "B", "C", "D", "E", "F", "G", "H"].map(|response| {
        let (app, token, exam, item) = (&app, &token, &exam, &item);
        async move {
            let r = app
                .gql(
                    Some(token),
                    SUBMIT,
                    json!({"input": {"examSessionId": exam, "itemId": item, "response": response}}),
                )
                .await;
            (response, r)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let winners: Vec<_> = results
        .iter()
        .filter(|(_, r)| r.get("errors").is_none())
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, r) in results.iter().filter(|(_, r)| r.get("errors").is_some()) {
        assert_eq!(error_code(r), "ALREADY_ANSWERED");
    }
    assert_eq!(attempts(&app).await, 1);
}

/// Strategy: a GraphQL-ish document from fragments, randomly mutated.
fn hostile_document() -> impl Strategy<Value = String> {
    let fragments = prop::sample::select(vec![
        "{",
        "}",
        "(",
        ")",
        "query",
        "mutation",
        "subscription",
        "engineSummary",
        "examSession",
        "startExam",
        "submitAnswer",
        "createItemBank",
        "clearEngineCache",
        "extendExamTtl",
        "activeSessions",
        "itemBanks",
        "examSessionId:",
        "id:",
        "input:",
        "\"1\"",
        "\"-1\"",
        "\"9999999999999999999999\"",
        "\"abc\"",
        "1e308",
        "-0",
        "null",
        "true",
        "[",
        "]",
        "...",
        "fragment",
        "on",
        "__schema",
        "__type",
        "theta",
        "standardError",
        "$x",
        ":",
        "@skip(if: true)",
        "\u{0}",
        "é",
        "\\",
        "\"",
        "#",
        ",",
        "items:",
        "{externalId: \"x\", b: 0, content: {}, answerKey: \"A\"}",
        "maxItems: -5",
        "maxItems: 2147483647",
        "randomesque: 0",
        "estimator: {quadraturePoints: 100000}",
    ]);
    prop::collection::vec(fragments, 0..40).prop_map(|parts| parts.join(" "))
}

/// Syntactically valid documents (most random token soups do not parse, so they never reach
/// validation, the cost checks or execution): nested selections with arguments, aliases,
/// directives, inline fragments, and spreads of fragments that are defined, undefined or
/// recursive.
fn structured_document() -> impl Strategy<Value = String> {
    let name = || {
        prop::sample::select(vec![
            "theta",
            "standardError",
            "engineSummary",
            "examSession",
            "myExams",
            "assessments",
            "itemBanks",
            "activeSessions",
            "__typename",
            "__schema",
            "types",
            "unknownField",
        ])
    };
    let argument = || {
        prop::sample::select(vec![
            "",
            "",
            "(examSessionId: $id)",
            "(id: $id)",
            "(examSessionId: \"1\")",
            "(id: \"abc\")",
            "(first: $x)",
            "(first: -1)",
            "(bogus: 1)",
        ])
    };
    let leaf = (name(), argument()).prop_map(|(n, a)| format!("{n}{a}"));
    let selection = leaf.prop_recursive(4, 48, 4, move |inner| {
        prop_oneof![
            (
                name(),
                argument(),
                prop::collection::vec(inner.clone(), 1..4)
            )
                .prop_map(|(n, a, sub)| format!("{n}{a} {{ {} }}", sub.join(" "))),
            (prop::sample::select(vec!["a", "b", "theta"]), inner.clone())
                .prop_map(|(alias, s)| format!("{alias}: {s}")),
            prop::sample::select(vec!["...F", "...G", "...Missing"]).prop_map(str::to_owned),
            prop::collection::vec(inner.clone(), 1..3)
                .prop_map(|v| format!("... on Query {{ {} }}", v.join(" "))),
            (
                inner,
                prop::sample::select(vec!["@skip(if: true)", "@include(if: $x)", "@bogus"])
            )
                .prop_map(|(s, d)| format!("{s} {d}")),
        ]
    });
    let fragment = prop::sample::select(vec![
        "",
        "fragment F on Query { __typename }",
        "fragment F on Query { ...G } fragment G on Query { ...F }",
        "fragment G on Mutation { clearEngineCache }",
        "fragment F on Nothing { x }",
    ]);
    (
        prop::sample::select(vec![
            "",
            "query",
            "query Q($id: ID, $x: Int)",
            "subscription",
        ]),
        prop::collection::vec(selection, 1..4),
        fragment,
    )
        .prop_map(|(operation, selections, fragment)| {
            format!("{operation} {{ {} }} {fragment}", selections.join(" "))
        })
}

#[test]
fn thousands_of_random_and_mutated_requests_never_break_the_service() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (app, exam, bank, student, admin) = runtime.block_on(async {
        let app = TestApp::spawn().await;
        let bank = app.create_bank(&bank_params(10)).await;
        let student = app.student("s-fuzz");
        let (exam, _) = start(&app, &student, &bank, json!({})).await;
        let admin = app.admin();
        (app, exam, bank, student, admin)
    });
    let snapshot = |app: &TestApp| {
        runtime.block_on(async {
            (
                app.db.count("SELECT count(*) AS n FROM attempts").await,
                app.db
                    .count("SELECT count(*) AS n FROM exam_sessions")
                    .await,
                app.db.count("SELECT count(*) AS n FROM item_banks").await,
            )
        })
    };
    let before = snapshot(&app);
    let mut config = ProptestConfig::with_cases(2_000);
    config.failure_persistence = None;
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let tokens = [
        None,
        Some(student.clone()),
        Some(admin.clone()),
        Some("x.y.z".to_owned()),
    ];
    let result = runner.run(
        &(
            prop_oneof![hostile_document(), structured_document()],
            0..tokens.len(),
            any::<Option<i64>>(),
            prop::bool::ANY,
        ),
        |(document, token, number, as_mutation)| {
            let query = if as_mutation && !document.contains("mutation") {
                format!("mutation {document}")
            } else {
                document
            };
            let variables = json!({"x": number, "id": exam, "bank": bank});
            let (status, body) = runtime.block_on(async {
                let response = app
                    .http
                    .post(app.url("/graphql"))
                    .json(&json!({"query": query, "variables": variables}));
                let response = match &tokens[token] {
                    Some(t) => response.bearer_auth(t),
                    None => response,
                }
                .send()
                .await
                .expect("the server answers");
                let status = response.status();
                (status, response.text().await.unwrap_or_default())
            });
            prop_assert!(!status.is_server_error(), "{status} for {query:?}: {body}");
            prop_assert!(
                !body.contains("\"INTERNAL\""),
                "internal error for {query:?}: {body}"
            );
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // Random documents can be valid operations (e.g. clearEngineCache), but none creates
    // or records anything: sessions, banks and attempts are as they were.
    assert_eq!(snapshot(&app), before);
    drop(app);
}

/// Makes a throw-away CA and a server certificate for 127.0.0.1 with openssl, in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl must be installed");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "server.pem",
        "-extfile",
        "san.ext",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_password_and_a_private_ca_works() {
    let dir = std::env::temp_dir().join(common::unique("tls"));
    std::fs::create_dir_all(&dir).expect("dir");
    make_certificates(&dir);
    let port = common::free_port();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cr3t-pw",
        ])
        .arg("--tls-cert-file")
        .arg(dir.join("server.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let url = format!("rediss://:s3cr3t-pw@127.0.0.1:{port}/0");
    let ca = dir.join("ca.pem");
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca).expect("ca")),
        },
    )
    .expect("client");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "TLS redis-server did not start");
    let app = TestApp::spawn_with(Options {
        redis_url: Some(url.clone()),
        env: vec![("REDIS_TLS_CA_FILE".into(), ca.display().to_string())],
        ..Options::default()
    })
    .await;
    let health: Value = app.get_json("/health/redis").await;
    assert_eq!(health["redis"], "up");
    let bank = app.create_bank(&bank_params(10)).await;
    let token = app.student("s-tls");
    let (exam, started) = start(&app, &token, &bank, json!({})).await;
    let result = common::answer(
        &app,
        &token,
        &exam,
        started["nextItem"]["itemId"].as_str().expect("item"),
        true,
    )
    .await;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("tls connection");
    let state: Option<String> = redis::cmd("GET")
        .arg(app.key(&exam))
        .query_async(&mut conn)
        .await
        .expect("get");
    let state: Value =
        serde_json::from_str(&state.expect("the state went through TLS")).expect("json");
    assert_eq!(state["theta"], result["theta"]);
    // The wrong password: Redis is "down" for the service, and exams still work.
    let wrong = TestApp::spawn_with(Options {
        db: Some(app.db.clone()),
        redis_url: Some(format!("rediss://:wrong@127.0.0.1:{port}/0")),
        env: vec![("REDIS_TLS_CA_FILE".into(), ca.display().to_string())],
        ..Options::default()
    })
    .await;
    let health: Value = wrong.get_json("/health/redis").await;
    assert_eq!(health["redis"], "down");
    let summary = wrong.ok(&token, SUMMARY, json!({"id": exam})).await;
    assert_eq!(summary["engineSummary"]["source"], "DATABASE");
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sslmode_require_encrypts_every_connection() {
    let db = common::TestDb::new().await;
    let tls_db = std::sync::Arc::new(common::TestDb {
        name: db.name.clone(),
        url: format!("{}?sslmode=require", db.url),
    });
    let app = TestApp::spawn_with(Options {
        db: Some(tls_db.clone()),
        ..Options::default()
    })
    .await;
    std::mem::forget(tls_db); // `db` drops the database; this handle must not drop it twice.
    let bank = app.create_bank(&bank_params(10)).await;
    let token = app.student("s-pgtls");
    let (exam, started) = start(&app, &token, &bank, json!({})).await;
    common::answer(
        &app,
        &token,
        &exam,
        started["nextItem"]["itemId"].as_str().expect("item"),
        true,
    )
    .await;
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let mut conn = app.app.service.db().get().await.expect("pooled connection");
    let row: Ssl = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
        &mut *conn,
    )
    .await
    .expect("query");
    assert!(row.ssl, "the pooled connection is encrypted");
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs() {
    let setup = TestApp::spawn().await;
    let port = common::free_port();
    let redis_password = "hunter2-redis-password";
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_adaptive-engine"))
        .env("DATABASE_URL", &setup.db.url)
        .env(
            "REDIS_URL",
            format!("redis://:{redis_password}@127.0.0.1:6379/0"),
        )
        .env("REDIS_KEY_PREFIX", &setup.prefix)
        .env("JWT_SECRET", common::JWT_SECRET)
        .env("PORT", port.to_string())
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/graphql");
    for _ in 0..100 {
        if http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let token = setup.student("s-logs");
    let _ = common::post_gql(&http, &url, Some(&token), SUMMARY, json!({"id": "1"})).await;
    let _ = common::post_gql(
        &http,
        &url,
        Some("bad.token.value"),
        SUMMARY,
        json!({"id": "1"}),
    )
    .await;
    common::terminate(child.id());
    let output = child.wait_with_output().expect("output");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!logs.is_empty(), "the service logged something");
    for secret in [redis_password, common::JWT_SECRET, token.as_str()] {
        assert!(!logs.contains(secret), "a secret is in the logs:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_bomb_is_refused_fast_and_health_stays_responsive() {
    use std::time::{Duration, Instant};

    use common::ws;

    /// 1.2 KB that expands to 2^22 - 1 fields: each fragment spreads the next twice.
    fn bomb(operation: &str, root: &str) -> String {
        let mut doc = format!("{operation}{{...F1}}");
        for i in 1..22 {
            let next = i + 1;
            doc.push_str(&format!(
                " fragment F{i} on {root}{{...F{next} a{i}:__typename ...F{next}}}"
            ));
        }
        doc.push_str(&format!(" fragment F22 on {root}{{__typename}}"));
        doc
    }

    let app = TestApp::spawn().await;
    let query = bomb("query", "Query");
    assert!(query.len() < 1_300, "{} bytes", query.len());
    // Two bombs at once, with no token, while /health is asked.
    let timed_bomb = || async {
        let started = Instant::now();
        let response = app.gql(None, &query, json!({})).await;
        (started.elapsed(), response)
    };
    let timed_health = async {
        // Let the bombs be sent first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let status = app
            .http
            .get(app.url("/health"))
            .send()
            .await
            .expect("health")
            .status();
        (started.elapsed(), status)
    };
    let ((first, first_response), (second, second_response), (health, status)) =
        tokio::join!(timed_bomb(), timed_bomb(), timed_health);
    for (elapsed, response) in [(first, &first_response), (second, &second_response)] {
        assert_eq!(error_code(response), "QUERY_TOO_COMPLEX", "{response}");
        let message = response["errors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains("4194303 fields after fragment expansion"),
            "{message}"
        );
        assert!(response["data"].is_null(), "{response}");
        assert!(elapsed < Duration::from_secs(1), "answered in {elapsed:?}");
    }
    eprintln!(
        "two fragment bombs answered in {first:?} and {second:?}; /health meanwhile {health:?}"
    );
    assert!(status.is_success(), "/health answered {status}");
    assert!(
        health < Duration::from_millis(200),
        "/health took {health:?} during the bombs"
    );
    // Again, now that the HTTP handler's document cache holds the parsed bomb.
    let started = Instant::now();
    let response = app.gql(None, &query, json!({})).await;
    assert_eq!(error_code(&response), "QUERY_TOO_COMPLEX", "{response}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Over the WebSocket, a subscription bomb gets the same error instead of running.
    let token = app.student("s-bomb");
    let mut socket = ws::open(app.addr, Some(&token)).await;
    let subscribe = json!({"id": "1", "type": "subscribe",
                           "payload": {"query": bomb("subscription", "Subscription")}});
    let started = Instant::now();
    ws::send(&mut socket, subscribe).await;
    let message = ws::next_json(&mut socket, Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    // async-graphql sends a refused operation as `next` with `errors` (then `complete`);
    // the protocol's own `error` message carries the errors as its payload.
    let errors = match message["type"].as_str() {
        Some("next") => message["payload"]["errors"].clone(),
        Some("error") => message["payload"].clone(),
        _ => panic!("unexpected message {message}"),
    };
    assert_eq!(
        errors[0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{message}"
    );
    assert!(message["payload"]["data"].is_null(), "{message}");
}

/// What the fuzz target `fuzz/fuzz_targets/bank_file.rs` runs on its input: the bank file
/// parser, then the bank validation the server applies. Ok: the number of items of a valid
/// bank; Err: the parser's or the validation's message.
fn as_the_bank_file_fuzz_target(data: &[u8]) -> Result<usize, String> {
    use adaptive_engine::{bank_file, exam};
    let items = bank_file::parse(data).map_err(|e| e.to_string())?;
    let bank = exam::NewBank {
        name: "fuzz".into(),
        scaling_constant: 1.0,
        items,
    };
    exam::validate_bank(&bank)
        .map(|items| items.len())
        .map_err(|e| e.to_string())
}

/// Promise: "hostile bank files: the parser returns items or an error, never panics",
/// checked on every run, not only under `cargo fuzz`: every file of the fuzz target's
/// corpus (`fuzz/corpus/bank_file/`, the seeds and whatever fuzzing added) goes through what
/// the target runs without a panic; the seeds named `valid-*` are banks that parse and
/// validate, the ones named `invalid-*` (truncated, not UTF-8, NaN, 1e400, NUL, 4,000
/// nested brackets, duplicate ids, c above d...) get an error.
#[test]
fn every_file_of_the_bank_file_fuzz_corpus_gives_items_or_an_error_never_a_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/bank_file");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    let (mut valid, mut invalid) = (0, 0);
    for path in &files {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let data = std::fs::read(path).expect("read a corpus file");
        let outcome = std::panic::catch_unwind(|| as_the_bank_file_fuzz_target(&data))
            .unwrap_or_else(|_| panic!("{name}: the bank file parser panicked"));
        eprintln!("{name}: {outcome:?}");
        if name.starts_with("valid-") {
            let items = outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(items > 0, "{name}: no items");
            valid += 1;
        } else if name.starts_with("invalid-") {
            assert!(outcome.is_err(), "{name}: accepted: {outcome:?}");
            invalid += 1;
        }
    }
    eprintln!(
        "{} corpus files: {valid} valid seeds, {invalid} invalid seeds",
        files.len()
    );
    assert!(valid >= 4 && invalid >= 10, "the seed corpus is there");
}
