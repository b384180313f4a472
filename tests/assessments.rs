//! Assessments over real HTTP and WebSockets against real Postgres and Redis: staff own
//! the design, students only take exams of it (no design field reaches `startExam`),
//! resume, attempt limits under real concurrency, windows, archive, the feedback policy on
//! every path and for every role, the proctor role, and presentation ids.

mod common;

use std::time::Duration;

use common::{
    CREATE_ASSESSMENT, START, SUBMIT, SUMMARY, Subscription, TestApp, WsProtocol, answer,
    bank_item_ids, bank_params, create_assessment, error_code, reference_eap, start_assessment,
};
use serde_json::{Value, json};

const EXAM: &str = "query($id: ID!) { examSession(id: $id) { id assessmentId status theta
    standardError itemsCompleted currentItem { id itemId position } } }";

/// Answers the presented item of `exam` `n` times (all wrong); returns the last payload.
async fn answer_wrong(app: &TestApp, token: &str, exam: &str, first: &Value, n: usize) -> Value {
    let mut item = first["itemId"].as_str().expect("item").to_owned();
    let mut last = Value::Null;
    for _ in 0..n {
        last = answer(app, token, exam, &item, false).await;
        if let Some(next) = last["nextItem"]["itemId"].as_str() {
            item = next.to_owned();
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_design_field_reaches_start_exam_so_a_student_cannot_choose_their_score() {
    let app = TestApp::spawn().await;
    let params = bank_params(40);
    let bank = app.create_bank(&params).await;
    let ids = bank_item_ids(&app, &bank).await;
    // A design of the assessment's own (not the defaults), so an exam that ignored it and
    // used the default design would be seen.
    let design = json!({"maxItems": 12,
                        "estimator": {"priorMean": -0.5, "priorSd": 1.5, "quadraturePoints": 41}});
    let assessment = create_assessment(&app, &bank, design, json!({})).await;
    let token = app.student("attacker");
    // The first version's prior attack and key harvest, sent as they were then.
    for attack in [
        json!({"assessmentId": assessment, "estimator": {"priorMean": 3.5, "priorSd": 0.01}}),
        json!({"assessmentId": assessment, "estimator": {"method": "MLE", "thetaMin": 3.9}}),
        json!({"assessmentId": assessment, "startItemIds": [ids[0]], "maxItems": 1}),
        json!({"assessmentId": assessment, "exposure": {"maxRate": 1}}),
        json!({"itemBankId": bank}),
    ] {
        let response = app.gql(Some(&token), START, json!({"input": attack})).await;
        assert_eq!(
            error_code(&response),
            "GRAPHQL_VALIDATION_FAILED",
            "{attack}: {response}"
        );
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM exam_sessions")
            .await,
        0
    );
    // Twelve wrong answers give the assessment's estimate (its own EAP), not 3.5.
    let (exam, started) = start_assessment(&app, &token, &assessment).await;
    let last = answer_wrong(&app, &token, &exam, &started["nextItem"], 12).await;
    let attempts: Vec<String> = {
        use adaptive_engine::storage::schema::attempts;
        use diesel::{ExpressionMethods, QueryDsl};
        use diesel_async::RunQueryDsl;
        let mut conn = app.db.conn().await;
        attempts::table
            .filter(attempts::exam_session_id.eq(exam.parse::<i64>().expect("id")))
            .order(attempts::position.asc())
            .select(attempts::item_id)
            .load::<i64>(&mut conn)
            .await
            .expect("attempts")
            .into_iter()
            .map(|i| i.to_string())
            .collect()
    };
    let administered: Vec<(f64, f64, f64)> = attempts
        .iter()
        .map(|id| params[ids.iter().position(|i| i == id).expect("in bank")])
        .collect();
    assert_eq!(administered.len(), 12, "the assessment's maxItems");
    let (theta, se) = reference_eap(&administered, &[false; 12], -0.5, 1.5, -4.0, 4.0, 41);
    assert!(last["completed"].as_bool().expect("completed"));
    assert!((last["theta"].as_f64().expect("theta") - theta).abs() < 1e-9);
    assert!((last["standardError"].as_f64().expect("se") - se).abs() < 1e-9);
    assert!(theta < -1.5, "twelve wrong answers: {theta}");
    // And the harvest cannot repeat: one attempt by default.
    let again = app
        .gql(
            Some(&token),
            START,
            json!({"input": {"assessmentId": assessment}}),
        )
        .await;
    assert_eq!(error_code(&again), "ATTEMPT_LIMIT_REACHED", "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_resumes_the_running_exam_and_burns_no_attempt() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(30)).await;
    let assessment = create_assessment(&app, &bank, json!({"maxItems": 5}), json!({})).await;
    let token = app.student("reloader");
    let (exam, started) = start_assessment(&app, &token, &assessment).await;
    assert_eq!(started["resumed"], false);
    assert_eq!(started["examSession"]["assessmentId"], assessment.as_str());
    let after_two = answer_wrong(&app, &token, &exam, &started["nextItem"], 2).await;
    let (again, resumed) = start_assessment(&app, &token, &assessment).await;
    assert_eq!(again, exam, "a reload returns the same exam");
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["examSession"]["itemsCompleted"], 2);
    assert_eq!(resumed["nextItem"], after_two["nextItem"]);
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM exam_sessions")
            .await,
        1
    );
    // The resumed exam goes on to completion; then the limit (1) holds.
    let last = answer_wrong(&app, &token, &exam, &resumed["nextItem"], 3).await;
    assert_eq!(last["completed"], true);
    let response = app
        .gql(
            Some(&token),
            START,
            json!({"input": {"assessmentId": assessment}}),
        )
        .await;
    assert_eq!(error_code(&response), "ATTEMPT_LIMIT_REACHED");
}

/// Fires `n` startExam calls at once; returns each response.
async fn burst(app: &TestApp, token: &str, assessment: &str, n: usize) -> Vec<Value> {
    let calls = (0..n).map(|_| {
        let (http, url, token) = (
            reqwest::Client::new(),
            app.url("/graphql"),
            token.to_owned(),
        );
        let body = json!({"query": START, "variables": {"input": {"assessmentId": assessment}}});
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        })
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_simultaneous_starts_make_at_most_the_allowed_number_of_exams() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(30)).await;
    let assessment = create_assessment(
        &app,
        &bank,
        json!({"maxItems": 1}),
        json!({"maxAttemptsPerStudent": 2}),
    )
    .await;
    let token = app.student("racer");
    let count = "SELECT count(*) AS n FROM exam_sessions";
    for round in 1..=3 {
        let responses = burst(&app, &token, &assessment, 20).await;
        if round <= 2 {
            // One new exam; every other call resumes it.
            let exam_ids: std::collections::HashSet<&str> = responses
                .iter()
                .map(|r| {
                    r["data"]["startExam"]["examSession"]["id"]
                        .as_str()
                        .unwrap_or_else(|| panic!("round {round}: {r}"))
                })
                .collect();
            assert_eq!(exam_ids.len(), 1, "round {round}: {exam_ids:?}");
            let new = responses
                .iter()
                .filter(|r| r["data"]["startExam"]["resumed"] == false)
                .count();
            assert_eq!(new, 1, "round {round}: exactly one call created the exam");
            assert_eq!(app.db.count(count).await, round);
            // Finish it (one item) so the next round may start another.
            let exam = exam_ids.into_iter().next().expect("exam").to_owned();
            let item = responses[0]["data"]["startExam"]["nextItem"]["itemId"]
                .as_str()
                .expect("item")
                .to_owned();
            assert_eq!(
                answer(&app, &token, &exam, &item, true).await["completed"],
                true
            );
        } else {
            for r in &responses {
                assert_eq!(error_code(r), "ATTEMPT_LIMIT_REACHED", "{r}");
            }
            assert_eq!(app.db.count(count).await, 2, "the limit held");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_archive_stop_new_starts_but_running_exams_finish() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(30)).await;
    let hour = chrono::Duration::hours(1);
    let now = chrono::Utc::now();
    let future = create_assessment(&app, &bank, json!({}), json!({"opensAt": now + hour})).await;
    let past = create_assessment(&app, &bank, json!({}), json!({"closesAt": now - hour})).await;
    let open = create_assessment(
        &app,
        &bank,
        json!({"maxItems": 3}),
        json!({"opensAt": now - hour, "closesAt": now + hour}),
    )
    .await;
    let token = app.student("s-window");
    for closed in [&future, &past] {
        let response = app
            .gql(
                Some(&token),
                START,
                json!({"input": {"assessmentId": closed}}),
            )
            .await;
        assert_eq!(error_code(&response), "ASSESSMENT_CLOSED", "{response}");
    }
    let (exam, started) = start_assessment(&app, &token, &open).await;
    let archived = app
        .ok(
            &app.admin(),
            "mutation($id: ID!) { archiveAssessment(id: $id) { id status } }",
            json!({"id": open}),
        )
        .await;
    assert_eq!(archived["archiveAssessment"]["status"], "ARCHIVED");
    // Nobody starts a new exam of it...
    let other = app
        .gql(
            Some(&app.student("s-late")),
            START,
            json!({"input": {"assessmentId": open}}),
        )
        .await;
    assert_eq!(error_code(&other), "ASSESSMENT_CLOSED");
    // ...but the running exam resumes and finishes.
    let (again, resumed) = start_assessment(&app, &token, &open).await;
    assert_eq!(
        (again.as_str(), &resumed["resumed"]),
        (exam.as_str(), &json!(true))
    );
    let last = answer_wrong(&app, &token, &exam, &started["nextItem"], 3).await;
    assert_eq!(last["completed"], true);
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM exam_sessions")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_assessment_validates_everything_and_stores_the_design_with_defaults() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(10)).await;
    let admin = app.admin();
    let bad_inputs = [
        json!({"name": "x", "itemBankId": bank, "maxAttemptsPerStudent": 0}),
        json!({"name": "", "itemBankId": bank}),
        json!({"name": "x", "itemBankId": "999999"}),
        json!({"name": "x", "itemBankId": bank, "opensAt": "2030-01-02T00:00:00Z", "closesAt": "2030-01-01T00:00:00Z"}),
        json!({"name": "x", "itemBankId": bank, "design": {"maxItems": 0}}),
        json!({"name": "x", "itemBankId": bank, "design": {"estimator": {"priorSd": 0}}}),
        json!({"name": "x", "itemBankId": bank, "design": {"startItemIds": ["999999"]}}),
    ];
    for input in bad_inputs {
        let response = app
            .gql(Some(&admin), CREATE_ASSESSMENT, json!({"input": input}))
            .await;
        assert_eq!(
            error_code(&response),
            "BAD_USER_INPUT",
            "{input}: {response}"
        );
    }
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM assessments").await,
        0
    );
    let created = app
        .ok(
            &admin,
            CREATE_ASSESSMENT,
            json!({"input": {"name": " Algebra I ", "itemBankId": bank,
                "design": {"maxItems": 7, "estimator": {"method": "MAP"}},
                "feedback": "FINAL", "maxAttemptsPerStudent": null}}),
        )
        .await["createAssessment"]
        .clone();
    assert_eq!(created["name"], "Algebra I");
    assert_eq!(created["maxItems"], 7);
    assert_eq!(created["feedback"], "FINAL");
    assert_eq!(
        created["maxAttemptsPerStudent"],
        Value::Null,
        "null = unlimited"
    );
    let design = &created["design"];
    assert_eq!(design["estimator"]["method"], "MAP");
    assert_eq!(design["estimator"]["quadraturePoints"], 33);
    assert_eq!(design["minItems"], 1);
    assert_eq!(design["selectionRule"], "MAX_INFO");
    // Omitted maxAttemptsPerStudent is 1.
    let one = app
        .ok(
            &admin,
            CREATE_ASSESSMENT,
            json!({"input": {"name": "B", "itemBankId": bank}}),
        )
        .await;
    assert_eq!(one["createAssessment"]["maxAttemptsPerStudent"], 1);
    // Students read an assessment but not its design, nor the list.
    let student = app.student("s-read");
    let id = created["id"].as_str().expect("id");
    let read = app
        .gql(
            Some(&student),
            "query($id: ID!) { assessment(id: $id) { id name status maxItems } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(read["data"]["assessment"]["maxItems"], 7, "{read}");
    let design = app
        .gql(
            Some(&student),
            "query($id: ID!) { assessment(id: $id) { design } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(error_code(&design), "FORBIDDEN");
    let list = app
        .gql(Some(&student), "{ assessments { id } }", json!({}))
        .await;
    assert_eq!(error_code(&list), "FORBIDDEN");
    let proctor = app.proctor("p-1");
    let listed = app
        .ok(&proctor, "{ assessments { id design } }", json!({}))
        .await;
    assert_eq!(listed["assessments"].as_array().map(Vec::len), Some(2));
    assert_eq!(listed["assessments"][1]["design"]["maxItems"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_start_an_exam_for_whom() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(10)).await;
    let assessment = create_assessment(&app, &bank, json!({}), json!({})).await;
    let cases = [
        (
            app.student("s1"),
            json!({"assessmentId": assessment, "studentId": "s2"}),
            "FORBIDDEN",
        ),
        (
            app.proctor("p1"),
            json!({"assessmentId": assessment}),
            "FORBIDDEN",
        ),
        (
            app.admin(),
            json!({"assessmentId": assessment}),
            "BAD_USER_INPUT",
        ),
        (
            app.student("s1"),
            json!({"assessmentId": "abc"}),
            "BAD_USER_INPUT",
        ),
        (
            app.admin(),
            json!({"assessmentId": assessment, "studentId": "bad\u{0}id"}),
            "BAD_USER_INPUT",
        ),
    ];
    for (token, input, code) in cases {
        let response = app.gql(Some(&token), START, json!({"input": input})).await;
        assert_eq!(error_code(&response), code, "{input}: {response}");
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM exam_sessions")
            .await,
        0
    );
    let on_behalf = app
        .ok(
            &app.admin(),
            START,
            json!({"input": {"assessmentId": assessment, "studentId": "s9"}}),
        )
        .await;
    assert_eq!(on_behalf["startExam"]["examSession"]["studentId"], "s9");
    // The student then finds it as their own exam (resume).
    let (_, resumed) = start_assessment(&app, &app.student("s9"), &assessment).await;
    assert_eq!(resumed["resumed"], true);
    assert_eq!(
        resumed["examSession"]["id"],
        on_behalf["startExam"]["examSession"]["id"]
    );
}

/// Every mutation of the schema, with arguments that would succeed for an admin.
fn mutations(bank: &str, assessment: &str, exam: &str, item: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "mutation($v: CreateItemBankInput!) { createItemBank(input: $v) { id } }",
            json!({"v": {"name": "p", "items": [{"externalId": "x", "b": 0, "content": {}, "answerKey": "A"}]}}),
        ),
        (
            "mutation($v: CreateAssessmentInput!) { createAssessment(input: $v) { id } }",
            json!({"v": {"name": "p", "itemBankId": bank}}),
        ),
        (
            "mutation($v: ID!) { archiveAssessment(id: $v) { id } }",
            json!({"v": assessment}),
        ),
        (
            "mutation($v: StartExamInput!) { startExam(input: $v) { resumed } }",
            json!({"v": {"assessmentId": assessment}}),
        ),
        (
            "mutation($v: SubmitAnswerInput!) { submitAnswer(input: $v) { completed } }",
            json!({"v": {"examSessionId": exam, "itemId": item, "response": "A"}}),
        ),
        (
            "mutation($v: ID!) { extendExamTtl(examSessionId: $v, additionalSeconds: 60) }",
            json!({"v": exam}),
        ),
        (
            "mutation($v: ID!) { abandonExam(examSessionId: $v) { id } }",
            json!({"v": exam}),
        ),
        ("mutation { clearEngineCache }", json!({})),
        (
            "mutation($b: ID!, $v: [ItemInput!]!) { addItems(itemBankId: $b, items: $v) { id } }",
            json!({"b": bank, "v": [{"externalId": "added", "b": 0, "content": {}, "answerKey": "A"}]}),
        ),
        (
            "mutation($v: ID!) { retireItem(itemId: $v) }",
            json!({"v": item}),
        ),
        (
            "mutation($v: ID!) { calibrateItems(itemBankId: $v) { id } }",
            json!({"v": bank}),
        ),
        (
            "mutation($v: [ID!]!) { promoteItems(itemIds: $v) }",
            json!({"v": [item]}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proctor_reads_everything_and_is_forbidden_every_mutation() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(10)).await;
    let assessment = create_assessment(&app, &bank, json!({}), json!({})).await;
    let student = app.student("s-watched");
    let (exam, started) = start_assessment(&app, &student, &assessment).await;
    let item = started["nextItem"]["itemId"].as_str().expect("item");
    let proctor = app.proctor("p-room");
    // The schema's mutations, every one of them listed here.
    let sdl = adaptive_engine::graphql::sdl();
    let listed = mutations(&bank, &assessment, &exam, item);
    let body = sdl
        .split("type Mutation {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("Mutation type");
    let mut in_doc = false;
    for line in body.lines().map(str::trim) {
        if line.starts_with("\"\"\"") {
            in_doc = !(in_doc || line.len() > 3 && line.ends_with("\"\"\""));
            continue;
        }
        if in_doc || line.is_empty() {
            continue;
        }
        if let Some((name, _)) = line.split_once('(').or_else(|| line.split_once(':')) {
            assert!(
                listed.iter().any(|(q, _)| q.contains(&format!(" {name}("))
                    || q.contains(&format!("{{ {name} }}"))),
                "mutation {name} is not covered"
            );
        }
    }
    for (query, variables) in &listed {
        let response = app.gql(Some(&proctor), query, variables.clone()).await;
        assert_eq!(error_code(&response), "FORBIDDEN", "{query}: {response}");
    }
    // Nothing changed: the exam is untouched, no bank or assessment was added.
    assert_eq!(app.db.count("SELECT count(*) AS n FROM attempts").await, 0);
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM item_banks").await,
        1
    );
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM assessments").await,
        1
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM items WHERE retired_at IS NULL")
            .await,
        10,
        "no item added or retired"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM calibration_runs")
            .await,
        0
    );
    let session = app.ok(&proctor, EXAM, json!({"id": exam})).await;
    assert_eq!(session["examSession"]["status"], "ACTIVE");
    // And reads work.
    let summary = app.ok(&proctor, SUMMARY, json!({"id": exam})).await;
    assert_eq!(summary["engineSummary"]["itemsCompleted"], 0);
    app.ok(&proctor, "{ activeSessions itemBanks { id } }", json!({}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presentation_ids_are_unique_per_exam_and_position_and_are_not_item_ids() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(20)).await;
    let ids = bank_item_ids(&app, &bank).await;
    // Both exams start with the same item.
    let assessment = create_assessment(
        &app,
        &bank,
        json!({"maxItems": 3, "startItemIds": [ids[4]]}),
        json!({}),
    )
    .await;
    let (a, token_a) = ("s-a", app.student("s-a"));
    let (exam_a, started_a) = start_assessment(&app, &token_a, &assessment).await;
    let (exam_b, started_b) = start_assessment(&app, &app.student("s-b"), &assessment).await;
    let (first_a, first_b) = (&started_a["nextItem"], &started_b["nextItem"]);
    assert_eq!(first_a["itemId"], ids[4].as_str());
    assert_eq!(first_a["itemId"], first_b["itemId"]);
    assert_ne!(first_a["id"], first_b["id"], "{exam_a} vs {exam_b}");
    // Sending the presentation id as the item is refused and records nothing.
    let refused = app
        .gql(
            Some(&token_a),
            SUBMIT,
            json!({"input": {"examSessionId": exam_a, "itemId": first_a["id"], "response": "A"}}),
        )
        .await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{a}: {refused}");
    assert_eq!(app.db.count("SELECT count(*) AS n FROM attempts").await, 0);
    let mut seen = std::collections::HashSet::new();
    seen.insert(first_a["id"].to_string());
    seen.insert(first_b["id"].to_string());
    let mut item = first_a["itemId"].as_str().expect("item").to_owned();
    for _ in 0..2 {
        let result = answer(&app, &token_a, &exam_a, &item, true).await;
        let next = &result["nextItem"];
        assert!(seen.insert(next["id"].to_string()), "repeated id {next}");
        item = next["itemId"].as_str().expect("item").to_owned();
    }
    // The current item of a session has the same presentation id as when it was presented.
    let session = app.ok(&token_a, EXAM, json!({"id": exam_a})).await;
    assert!(seen.contains(&session["examSession"]["currentItem"]["id"].to_string()));
}

/// What each role sees of theta under one feedback policy, on every path.
/// Paths a proctor cannot take (they answer nothing) are `None`.
struct Seen {
    start: Option<f64>,
    answer: Option<Option<f64>>,
    replay: Option<Option<f64>>,
    session: Option<f64>,
    summary: Option<f64>,
    transport_ws_current: Option<f64>,
    legacy_ws_current: Option<f64>,
    transport_ws: Option<f64>,
    legacy_ws: Option<f64>,
    last_answer: Option<Option<f64>>,
    final_session: Option<f64>,
    last_event: Option<f64>,
}

/// Runs a 2-item exam of an assessment with `feedback`; `viewer` reads every path and
/// answers (a proctor, who answers nothing, watches the student answer).
async fn observe(app: &TestApp, feedback: &str, viewer: &str) -> Seen {
    let bank = app.create_bank(&bank_params(12)).await;
    let assessment = create_assessment(
        app,
        &bank,
        json!({"maxItems": 2}),
        json!({"feedback": feedback}),
    )
    .await;
    let sub = format!("s-{feedback}-{viewer}");
    let student = app.student(&sub);
    let token = match viewer {
        "student" => student.clone(),
        "proctor" => app.proctor("p-obs"),
        _ => app.admin(),
    };
    let (exam, started) = start_assessment(app, &student, &assessment).await;
    // Both WebSocket protocols, subscribed with the viewer's token; each is live once its
    // first payload (includeCurrent: the exam before any answer) has arrived.
    let (mut transport, transport_current) =
        Subscription::theta_updates_live(app.addr, Some(&token), &exam, WsProtocol::TransportWs)
            .await
            .expect("subscribe");
    let (mut legacy, legacy_current) = Subscription::theta_updates_live(
        app.addr,
        Some(&token),
        &exam,
        WsProtocol::LegacyGraphqlWs,
    )
    .await
    .expect("subscribe");
    for current in [&transport_current, &legacy_current] {
        assert_eq!(
            current["data"]["thetaUpdates"]["itemsCompleted"], 0,
            "{current}"
        );
    }
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let answerer = if viewer == "proctor" {
        &student
    } else {
        &token
    };
    let answers = viewer != "proctor";
    let first = answer(app, answerer, &exam, &item, true).await;
    // Theta when shown; the standard error must be shown exactly when theta is.
    let shown = |v: &Value| {
        assert_eq!(
            v["theta"].is_null(),
            v["standardError"].is_null(),
            "theta and standardError are shown or hidden together: {v}"
        );
        v["theta"].as_f64()
    };
    let events: Vec<Value> = vec![
        transport
            .next(Duration::from_secs(10))
            .await
            .expect("event"),
        legacy.next(Duration::from_secs(10)).await.expect("event"),
    ];
    let event_theta = |e: &Value| shown(&e["data"]["thetaUpdates"]);
    assert_eq!(
        events[0]["data"]["thetaUpdates"]["itemsCompleted"], 1,
        "{events:?}"
    );
    assert_eq!(
        events[1]["data"]["thetaUpdates"]["itemsCompleted"], 1,
        "{events:?}"
    );
    // The answerer sends the same answer again: the recorded result, replayed.
    let replay = app
        .ok(
            answerer,
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": item, "response": "A"}}),
        )
        .await;
    let replay = shown(&replay["submitAnswer"]);
    let session = app.ok(&token, EXAM, json!({"id": exam})).await;
    let summary = app.ok(&token, SUMMARY, json!({"id": exam})).await;
    let next = first["nextItem"]["itemId"]
        .as_str()
        .expect("next")
        .to_owned();
    let last = answer(app, answerer, &exam, &next, false).await;
    assert_eq!(last["completed"], true);
    let last_event = transport
        .next(Duration::from_secs(10))
        .await
        .expect("event");
    let final_session = app.ok(&token, EXAM, json!({"id": exam})).await;
    let own = |v: Option<f64>| answers.then_some(v);
    Seen {
        start: shown(&started["examSession"]),
        answer: own(shown(&first)),
        replay: own(replay),
        session: shown(&session["examSession"]),
        summary: shown(&summary["engineSummary"]),
        transport_ws_current: event_theta(&transport_current),
        legacy_ws_current: event_theta(&legacy_current),
        transport_ws: event_theta(&events[0]),
        legacy_ws: event_theta(&events[1]),
        last_answer: own(shown(&last)),
        final_session: shown(&final_session["examSession"]),
        last_event: event_theta(&last_event),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feedback_policy_hides_estimates_from_students_on_every_path_and_never_from_staff() {
    let app = TestApp::spawn().await;
    for feedback in ["ESTIMATES", "FINAL", "NONE"] {
        for viewer in ["student", "proctor", "admin"] {
            let seen = observe(&app, feedback, viewer).await;
            let staff = viewer != "student";
            let during = staff || feedback == "ESTIMATES";
            let after = staff || feedback != "NONE";
            let case = format!("{feedback}/{viewer}");
            // A student starts the exam, so `start` follows the student's view.
            assert_eq!(
                seen.start.is_some(),
                feedback == "ESTIMATES",
                "{case}: startExam"
            );
            for (path, value) in [
                ("submitAnswer", seen.answer),
                ("replayed submitAnswer", seen.replay),
                ("examSession", Some(seen.session)),
                ("engineSummary", Some(seen.summary)),
                (
                    "graphql-transport-ws includeCurrent",
                    Some(seen.transport_ws_current),
                ),
                ("graphql-ws includeCurrent", Some(seen.legacy_ws_current)),
                ("graphql-transport-ws", Some(seen.transport_ws)),
                ("graphql-ws", Some(seen.legacy_ws)),
            ] {
                if let Some(value) = value {
                    assert_eq!(value.is_some(), during, "{case}: {path} during the exam");
                }
            }
            for (path, value) in [
                ("completing submitAnswer", seen.last_answer),
                ("examSession after completion", Some(seen.final_session)),
                ("completing event", Some(seen.last_event)),
            ] {
                if let Some(value) = value {
                    assert_eq!(value.is_some(), after, "{case}: {path}");
                }
            }
            assert_eq!(seen.answer.is_none(), viewer == "proctor", "{case}");
        }
    }
}
