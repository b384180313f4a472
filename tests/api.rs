//! The exam flow over real HTTP against real Postgres and Redis: estimates and item
//! choices, the Redis state contract, idempotency, error codes, auth and admin operations.

mod common;

use std::time::Duration;

use common::{
    CREATE_ASSESSMENT, Options, START, SUBMIT, SUMMARY, TestApp, TestDb, answer, bank_item_ids,
    bank_params, error_code, reference_eap, reference_information, start,
};
use redis::AsyncCommands;
use serde_json::{Value, json};

fn item_index(bank_ids: &[String], id: &str) -> usize {
    bank_ids
        .iter()
        .position(|b| b == id)
        .expect("presented item is in the bank")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_item_exam_matches_catr_eap_and_always_presents_the_most_informative_item() {
    let app = TestApp::spawn().await;
    let params = bank_params(80);
    let bank = app.create_bank(&params).await;
    let ids = bank_item_ids(&app, &bank).await;
    let token = app.student("student-1");
    let (exam, started) = start(&app, &token, &bank, json!({})).await;
    assert_eq!(started["examSession"]["theta"], 0.0);
    assert_eq!(started["examSession"]["standardError"], 1.0);
    assert_eq!(started["examSession"]["status"], "ACTIVE");

    let mut item = started["nextItem"].clone();
    let mut seen: Vec<usize> = Vec::new();
    let mut responses: Vec<bool> = Vec::new();
    let mut theta = 0.0;
    for step in 0..20 {
        let index = item_index(&ids, item["itemId"].as_str().expect("item id"));
        assert_eq!(item["position"], step + 1);
        // The presented item is the most informative one left at the current theta.
        let best = (0..params.len())
            .filter(|i| !seen.contains(i))
            .max_by(|&x, &y| {
                let (a, b, c) = params[x];
                let (a2, b2, c2) = params[y];
                reference_information(a, b, c, theta)
                    .total_cmp(&reference_information(a2, b2, c2, theta))
                    .then(y.cmp(&x))
            })
            .expect("items left");
        assert_eq!(
            index, best,
            "step {step}: presented item is not the most informative"
        );
        assert!(item.get("answerKey").is_none() && item["content"]["stem"].is_string());

        let correct = (step * 7 + 3) % 5 < 3;
        let result = answer(
            &app,
            &token,
            &exam,
            item["itemId"].as_str().expect("id"),
            correct,
        )
        .await;
        seen.push(index);
        responses.push(correct);
        let administered: Vec<(f64, f64, f64)> = seen.iter().map(|&i| params[i]).collect();
        let (expected_theta, expected_se) =
            reference_eap(&administered, &responses, 0.0, 1.0, -4.0, 4.0, 33);
        let got_theta = result["theta"].as_f64().expect("theta");
        let got_se = result["standardError"].as_f64().expect("se");
        assert!(
            (got_theta - expected_theta).abs() < 1e-9,
            "step {step}: theta {got_theta} vs {expected_theta}"
        );
        assert!(
            (got_se - expected_se).abs() < 1e-9,
            "step {step}: se {got_se} vs {expected_se}"
        );
        assert_eq!(result["itemsCompleted"], step + 1);
        theta = got_theta;
        if step < 19 {
            assert_eq!(result["completed"], false);
            item = result["nextItem"].clone();
        } else {
            assert_eq!(result["completed"], true);
            assert_eq!(result["stopReason"], "MAX_ITEMS");
            assert!(result["nextItem"].is_null());
            assert_eq!(result["examSession"]["status"], "COMPLETED");
        }
    }
    let stored = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM attempts WHERE exam_session_id = {exam}"
        ))
        .await;
    assert_eq!(stored, 20);
}

/// A 4PL bank `(a, b, c, d)` of `n` items with `d < 1` (an upper asymptote below one:
/// careless errors), deterministic.
fn four_pl_params(n: usize) -> Vec<(f64, f64, f64, f64)> {
    (0..n)
        .map(|i| {
            let x = i as f64;
            (
                0.7 + 1.1 * (x * 0.41).sin().abs(),
                -2.5 + 5.0 * ((x * 0.618 + 0.1).fract()),
                0.05 + 0.15 * (x * 0.29).cos().abs(),
                0.82 + 0.15 * (x * 0.83).sin().abs(),
            )
        })
        .collect()
}

/// Promise: every estimator setting of an assessment's design, and the bank's scaling
/// constant, is honoured ("every exam of the assessment runs on exactly that design";
/// EAP equal to catR's). With a N(0.5, 1.3) prior, a 21-point grid on [-3, 3.5], D = 1.702,
/// initialTheta 0.8 and 4PL items with d < 1: the start shows theta 0.8 and SE 1.3,
/// every theta/SE equals the independent reference EAP of exactly those settings to 1e-9,
/// and every presented item is the most informative 4PL item (D = 1.702) at the current
/// estimate, the first one at the initial theta. The Redis state lists every administered
/// item with its own `a`, `b`, `c` and `d` (README "Looking at Redis": `d` appears when it
/// is not 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_default_prior_grid_scaling_constant_initial_theta_and_4pl_items_are_honoured() {
    const D: f64 = 1.702;
    const STEPS: usize = 12;
    let (prior_mean, prior_sd, lo, hi, points) = (0.5, 1.3, -3.0, 3.5, 21);
    let app = TestApp::spawn().await;
    let params = four_pl_params(40);
    let items: Vec<Value> = params
        .iter()
        .enumerate()
        .map(|(i, &(a, b, c, d))| {
            json!({"externalId": format!("q{i}"), "a": a, "b": b, "c": c, "d": d,
                   "content": {"stem": format!("q{i}")}, "answerKey": "A"})
        })
        .collect();
    let bank = app
        .ok(
            &app.admin(),
            "mutation($input: CreateItemBankInput!) { createItemBank(input: $input) { id scalingConstant } }",
            json!({"input": {"name": "4PL, D = 1.702", "scalingConstant": D, "items": items}}),
        )
        .await["createItemBank"]
        .clone();
    assert_eq!(bank["scalingConstant"], D);
    let bank = bank["id"].as_str().expect("bank id").to_owned();
    let ids = bank_item_ids(&app, &bank).await;
    let token = app.student("s-settings");
    let (exam, started) = start(
        &app,
        &token,
        &bank,
        json!({"maxItems": STEPS, "initialTheta": 0.8,
               "estimator": {"method": "EAP", "priorMean": prior_mean, "priorSd": prior_sd,
                             "quadraturePoints": points, "thetaMin": lo, "thetaMax": hi}}),
    )
    .await;
    assert_eq!(started["examSession"]["theta"], 0.8, "the initial theta");
    assert_eq!(
        started["examSession"]["standardError"], prior_sd,
        "the prior's SD before any answer"
    );
    let mut redis = app.redis().await;
    let mut item = started["nextItem"].clone();
    let mut theta = 0.8;
    let mut seen: Vec<usize> = Vec::new();
    let mut responses: Vec<bool> = Vec::new();
    for step in 0..STEPS {
        let index = item_index(&ids, item["itemId"].as_str().expect("item id"));
        let information = |i: usize| {
            let (a, b, c, d) = params[i];
            common::reference_information_4pl(a, b, c, d, D, theta)
        };
        let best = (0..params.len())
            .filter(|i| !seen.contains(i))
            .map(information)
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            information(index) >= best * (1.0 - 1e-12),
            "step {step}: item {index} has information {} at theta {theta}, the best {best}",
            information(index)
        );
        let correct = (step * 5 + 1) % 3 != 0;
        let result = answer(
            &app,
            &token,
            &exam,
            item["itemId"].as_str().expect("id"),
            correct,
        )
        .await;
        seen.push(index);
        responses.push(correct);
        let (expected_theta, expected_se) = common::reference_eap_of(
            |t| {
                seen.iter()
                    .zip(&responses)
                    .map(|(&i, &right)| {
                        let (a, b, c, d) = params[i];
                        let p = common::reference_p_4pl(a, b, c, d, D, t);
                        if right { p } else { 1.0 - p }
                    })
                    .product()
            },
            prior_mean,
            prior_sd,
            lo,
            hi,
            points,
        );
        let got_theta = result["theta"].as_f64().expect("theta");
        let got_se = result["standardError"].as_f64().expect("se");
        assert!(
            (got_theta - expected_theta).abs() < 1e-9,
            "step {step}: theta {got_theta} vs reference {expected_theta}"
        );
        assert!(
            (got_se - expected_se).abs() < 1e-9,
            "step {step}: se {got_se} vs reference {expected_se}"
        );
        theta = got_theta;
        assert_eq!(result["completed"], step + 1 == STEPS);
        if step + 1 < STEPS {
            let json: String = redis
                .get(app.key(&exam))
                .await
                .expect("the state is cached");
            let state: Value = serde_json::from_str(&json).expect("JSON");
            let listed = state["item_params_list"]
                .as_array()
                .expect("item_params_list");
            assert_eq!(listed.len(), seen.len(), "{state}");
            for (entry, &i) in listed.iter().zip(&seen) {
                let (a, b, c, d) = params[i];
                assert_eq!(
                    ["a", "b", "c", "d"].map(|p| entry[p].as_f64()),
                    [Some(a), Some(b), Some(c), Some(d)],
                    "step {step}: the state's parameters of item {i}: {entry}"
                );
            }
        }
        item = result["nextItem"].clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_state_follows_the_contract_and_is_deleted_on_completion() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(30)).await;
    let token = app.student("s-redis");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 3})).await;
    let mut redis = app.redis().await;
    let key = app.key(&exam);

    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    for step in 1..=3 {
        let result = answer(&app, &token, &exam, &item, step != 2).await;
        if step < 3 {
            let json: String = redis.get(&key).await.expect("state is cached");
            let state: Value = serde_json::from_str(&json).expect("state is JSON");
            for field in [
                "theta",
                "standard_error",
                "item_params_list",
                "responses",
                "max_items",
                "items_completed",
            ] {
                assert!(state.get(field).is_some(), "state lacks {field}: {state}");
            }
            assert_eq!(state["items_completed"], step);
            assert_eq!(state["max_items"], 3);
            assert_eq!(state["theta"], result["theta"]);
            assert_eq!(state["standard_error"], result["standardError"]);
            let params = state["item_params_list"].as_array().expect("list");
            assert_eq!(params.len(), step as usize);
            assert!(
                params[0].get("a").is_some()
                    && params[0].get("b").is_some()
                    && params[0].get("c").is_some()
            );
            assert!(
                params[0].get("d").is_none(),
                "d is written only when it is not 1"
            );
            let expected: Vec<bool> = (1..=step).map(|s| s != 2).collect();
            assert_eq!(state["responses"], json!(expected));
            let ttl: i64 = redis.ttl(&key).await.expect("ttl");
            assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
            item = result["nextItem"]["itemId"]
                .as_str()
                .expect("next")
                .to_owned();
        } else {
            assert_eq!(result["completed"], true);
            let exists: bool = redis.exists(&key).await.expect("exists");
            assert!(!exists, "the state must be gone once the exam completes");
        }
    }
    // Only engine states live under the prefix.
    let keys: Vec<String> = redis.keys(format!("{}:*", app.prefix)).await.expect("keys");
    assert!(keys.is_empty(), "{keys:?}");
}

/// Promise: "`ENGINE_STATE_TTL_SECONDS` is the TTL of an exam's engine state, refreshed on
/// every answer" (and of the completion marker). With 120 instead of the default 3600: the
/// state's TTL is in (100, 120] after the start and after every answer, although it was
/// lowered to 30 by hand before each (as if the exam had been idle), `engineSummary`
/// reports it, and the completion marker lives 120 s too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_state_ttl_seconds_sets_the_state_ttl_and_every_answer_resets_it() {
    const MAX_ITEMS: usize = 4;
    let app = TestApp::spawn_with(Options {
        env: vec![("ENGINE_STATE_TTL_SECONDS".into(), "120".into())],
        ..Options::default()
    })
    .await;
    let bank = app.create_bank(&bank_params(20)).await;
    let token = app.student("s-ttl");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": MAX_ITEMS})).await;
    let mut redis = app.redis().await;
    let key = app.key(&exam);
    let fresh = |ttl: i64| (101..=120).contains(&ttl);
    let ttl: i64 = redis.ttl(&key).await.expect("ttl");
    assert!(fresh(ttl), "the TTL after the start: {ttl}");
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    for step in 1..=MAX_ITEMS {
        let lowered: i64 = redis::cmd("EXPIRE")
            .arg(&key)
            .arg(30)
            .query_async(&mut redis)
            .await
            .expect("EXPIRE");
        assert_eq!(lowered, 1, "the state is there before answer {step}");
        let result = answer(&app, &token, &exam, &item, step % 2 == 1).await;
        if step < MAX_ITEMS {
            let ttl: i64 = redis.ttl(&key).await.expect("ttl");
            assert!(fresh(ttl), "answer {step} set the TTL again: {ttl}");
            let summary =
                app.ok(&token, SUMMARY, json!({"id": exam})).await["engineSummary"].clone();
            assert_eq!(summary["source"], "CACHE", "{summary}");
            let reported = summary["ttlSeconds"].as_i64().expect("ttlSeconds");
            assert!(fresh(reported), "engineSummary.ttlSeconds {reported}");
            item = result["nextItem"]["itemId"]
                .as_str()
                .expect("next")
                .to_owned();
        } else {
            assert_eq!(result["completed"], true, "{result}");
            let exists: bool = redis.exists(&key).await.expect("exists");
            assert!(!exists, "the completed exam's state is deleted");
            let marker = adaptive_engine::storage::keys::Keys::new(&app.prefix)
                .completed(exam.parse().expect("exam id"));
            let ttl: i64 = redis.ttl(&marker).await.expect("ttl");
            assert!(fresh(ttl), "the completion marker's TTL: {ttl}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_the_same_answer_replays_it_and_a_different_one_is_refused() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(20)).await;
    let token = app.student("s-idem");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 5})).await;
    let first_item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let first = answer(&app, &token, &exam, &first_item, true).await;
    let again = answer(&app, &token, &exam, &first_item, true).await;
    assert_eq!(first["theta"], again["theta"]);
    assert_eq!(first["standardError"], again["standardError"]);
    assert_eq!(first["itemsCompleted"], again["itemsCompleted"]);
    assert_eq!(first["nextItem"]["itemId"], again["nextItem"]["itemId"]);

    let different = app
        .gql(
            Some(&token),
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": first_item, "response": "B"}}),
        )
        .await;
    assert_eq!(error_code(&different), "ALREADY_ANSWERED");

    // An item of the bank that is not the one presented.
    let ids = bank_item_ids(&app, &bank).await;
    let next = first["nextItem"]["itemId"].as_str().expect("next");
    let other = ids
        .iter()
        .find(|id| *id != next && *id != &first_item)
        .expect("another item");
    let wrong = app
        .gql(
            Some(&token),
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": other, "response": "A"}}),
        )
        .await;
    assert_eq!(error_code(&wrong), "ITEM_NOT_PRESENTED");

    let attempts = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM attempts WHERE exam_session_id = {exam}"
        ))
        .await;
    assert_eq!(attempts, 1, "replays and refusals record nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_identical_concurrent_submissions_record_one_attempt() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(20)).await;
    let token = app.student("s-race");
    let (exam, started) = start(&app, &token, &bank, json!({"maxItems": 5})).await;
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let calls = (0..20).map(|_| {
        let (app, token, exam, item) = (&app, &token, &exam, &item);
        async move {
            app.gql(
                Some(token),
                SUBMIT,
                json!({"input": {"examSessionId": exam, "itemId": item, "response": "A"}}),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    for r in &results {
        assert!(r.get("errors").is_none(), "{r}");
        assert_eq!(
            r["data"]["submitAnswer"]["theta"],
            results[0]["data"]["submitAnswer"]["theta"]
        );
        assert_eq!(r["data"]["submitAnswer"]["itemsCompleted"], 1);
    }
    let attempts = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM attempts WHERE exam_session_id = {exam}"
        ))
        .await;
    assert_eq!(attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_need_a_valid_token_and_see_only_their_own_exams() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(10)).await;
    let alice = app.student("alice");
    let (exam, started) = start(&app, &alice, &bank, json!({})).await;
    let item = started["nextItem"]["itemId"].as_str().expect("item");

    let anonymous = app.gql(None, SUMMARY, json!({"id": exam})).await;
    assert_eq!(error_code(&anonymous), "UNAUTHENTICATED");
    let forged = adaptive_engine::auth::JwtKeys::new(b"not the secret").mint(
        "alice",
        adaptive_engine::auth::Role::Student,
        60,
    );
    assert_eq!(
        error_code(&app.gql(Some(&forged), SUMMARY, json!({"id": exam})).await),
        "UNAUTHENTICATED"
    );

    let mallory = app.student("mallory");
    assert_eq!(
        error_code(&app.gql(Some(&mallory), SUMMARY, json!({"id": exam})).await),
        "NOT_FOUND"
    );
    let steal = app
        .gql(
            Some(&mallory),
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": item, "response": "A"}}),
        )
        .await;
    assert_eq!(error_code(&steal), "NOT_FOUND");
    assert_eq!(
        error_code(
            &app.gql(Some(&mallory), "{ activeSessions }", json!({}))
                .await
        ),
        "FORBIDDEN"
    );
    assert_eq!(
        error_code(
            &app.gql(Some(&alice), "mutation { clearEngineCache }", json!({}))
                .await
        ),
        "FORBIDDEN"
    );
    let attempts = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM attempts WHERE exam_session_id = {exam}"
        ))
        .await;
    assert_eq!(attempts, 0, "a forbidden answer records nothing");

    // The owner and an admin both see it; nobody sees keys or parameters.
    let own = app.gql(Some(&alice), SUMMARY, json!({"id": exam})).await;
    assert!(own.get("errors").is_none(), "{own}");
    let admin = app
        .gql(Some(&app.admin()), SUMMARY, json!({"id": exam}))
        .await;
    assert!(admin.get("errors").is_none(), "{admin}");
    let session = app
        .ok(
            &alice,
            "query($id: ID!) { examSession(id: $id) { id studentId currentItem { id itemId content } } }",
            json!({"id": exam}),
        )
        .await;
    assert_eq!(session["examSession"]["studentId"], "alice");
    let text = session.to_string();
    assert!(
        !text.contains("answerKey") && !text.contains("\"a\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_bad_user_input_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(10)).await;
    let token = app.student("s-bad");
    for bad in [
        json!({"maxItems": 0}),
        json!({"minItems": 30, "maxItems": 20}),
        json!({"seTarget": -0.1}),
        json!({"randomesque": 0}),
        json!({"estimator": {"priorSd": 0}}),
        json!({"estimator": {"quadraturePoints": 1}}),
        json!({"estimator": {"thetaMin": 2, "thetaMax": 1}}),
    ] {
        let input = json!({"name": "bad", "itemBankId": bank, "design": bad});
        let response = app
            .gql(
                Some(&app.admin()),
                CREATE_ASSESSMENT,
                json!({"input": input}),
            )
            .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{bad}: {response}");
    }
    let missing = app
        .gql(
            Some(&token),
            START,
            json!({"input": {"assessmentId": "999999"}}),
        )
        .await;
    assert_eq!(error_code(&missing), "NOT_FOUND");
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM assessments").await,
        0,
        "an invalid design stores no assessment"
    );
    let malformed = app.gql(Some(&token), SUMMARY, json!({"id": "abc"})).await;
    assert_eq!(error_code(&malformed), "BAD_USER_INPUT");
    let sessions = app
        .db
        .count("SELECT count(*) AS n FROM exam_sessions")
        .await;
    assert_eq!(sessions, 0);

    let duplicate = app
        .gql(
            Some(&app.admin()),
            "mutation($input: CreateItemBankInput!) { createItemBank(input: $input) { id } }",
            json!({"input": {"name": "dup", "items": [
                {"externalId": "x", "b": 0, "content": {}, "answerKey": "A"},
                {"externalId": "x", "b": 1, "content": {}, "answerKey": "A"}]}}),
        )
        .await;
    assert_eq!(error_code(&duplicate), "BAD_USER_INPUT");
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM item_banks").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_can_list_extend_summarize_and_clear_live_exams() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(20)).await;
    let admin = app.admin();
    let token = app.student("s-ops");
    let (exam1, started1) = start(&app, &token, &bank, json!({})).await;
    let (exam2, _) = start(&app, &token, &bank, json!({})).await;
    answer(
        &app,
        &token,
        &exam1,
        started1["nextItem"]["itemId"].as_str().expect("item"),
        true,
    )
    .await;

    let active = app.ok(&admin, "{ activeSessions }", json!({})).await;
    let mut ids: Vec<String> =
        serde_json::from_value(active["activeSessions"].clone()).expect("ids");
    ids.sort();
    let mut expected = vec![exam1.clone(), exam2.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    let summary = app.ok(&token, SUMMARY, json!({"id": exam1})).await["engineSummary"].clone();
    assert_eq!(summary["source"], "CACHE");
    assert_eq!(summary["itemsCompleted"], 1);
    assert_eq!(summary["maxItems"], 20);
    assert!(summary["ttlSeconds"].as_i64().expect("ttl") > 3500);

    let extended = app
        .ok(
            &admin,
            "mutation($id: ID!) { extendExamTtl(examSessionId: $id, additionalSeconds: 600) }",
            json!({"id": exam1}),
        )
        .await;
    let ttl = extended["extendExamTtl"].as_i64().expect("ttl");
    assert!((4190..=4200).contains(&ttl), "ttl {ttl}");

    let cleared = app
        .ok(&admin, "mutation { clearEngineCache }", json!({}))
        .await;
    assert_eq!(cleared["clearEngineCache"], 2);
    let summary = app.ok(&token, SUMMARY, json!({"id": exam1})).await["engineSummary"].clone();
    assert_eq!(summary["source"], "DATABASE");
    assert_eq!(summary["itemsCompleted"], 1);
    assert!(summary["ttlSeconds"].is_null());
    // The summary refilled the cache.
    let summary = app.ok(&token, SUMMARY, json!({"id": exam1})).await["engineSummary"].clone();
    assert_eq!(summary["source"], "CACHE");
}

const ABANDON: &str = "mutation($id: ID!) { abandonExam(examSessionId: $id) { id status itemsCompleted currentItem { id itemId } } }";

/// Promise: "`abandonExam` (admin only) ends an exam: it takes no answer after that
/// (`EXAM_NOT_ACTIVE`, nothing recorded: the attempts stay exactly as they were), keeps its
/// attempts and frees its state at once".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_can_abandon_an_active_exam_which_then_takes_no_answer() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(20)).await;
    let admin = app.admin();
    let token = app.student("s-abandon");
    let (exam, started) = start(&app, &token, &bank, json!({})).await;
    let first = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let next = answer(&app, &token, &exam, &first, true).await["nextItem"]["itemId"]
        .as_str()
        .expect("next")
        .to_owned();

    // Only an admin may abandon, and nothing changes when a student tries.
    let refused = app.gql(Some(&token), ABANDON, json!({"id": exam})).await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
    let unknown = app
        .gql(Some(&admin), ABANDON, json!({"id": "999999"}))
        .await;
    assert_eq!(error_code(&unknown), "NOT_FOUND");

    let abandoned = app.ok(&admin, ABANDON, json!({"id": exam})).await["abandonExam"].clone();
    assert_eq!(abandoned["status"], "ABANDONED");
    assert_eq!(abandoned["itemsCompleted"], 1);
    assert!(abandoned["currentItem"].is_null());

    // The engine state is gone and the exam is no longer live; its attempt stays.
    let mut conn = app.redis().await;
    let exists: bool = conn.exists(app.key(&exam)).await.expect("exists");
    assert!(!exists, "the abandoned exam's state is dropped");
    let active = app.ok(&admin, "{ activeSessions }", json!({})).await;
    assert_eq!(active["activeSessions"], json!([]));
    let attempts = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM attempts WHERE exam_session_id = {exam}"
        ))
        .await;
    assert_eq!(attempts, 1);

    // No answer is taken any more (the item that was presented included), and a second
    // abandon is refused.
    let late = app
        .gql(
            Some(&token),
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": next, "response": "A"}}),
        )
        .await;
    assert_eq!(error_code(&late), "EXAM_NOT_ACTIVE");
    let attempts = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM attempts WHERE exam_session_id = {exam}"
        ))
        .await;
    assert_eq!(attempts, 1, "the refused answer recorded nothing");
    let again = app.gql(Some(&admin), ABANDON, json!({"id": exam})).await;
    assert_eq!(error_code(&again), "EXAM_NOT_ACTIVE");
    let session = app
        .ok(
            &token,
            "query($id: ID!) { examSession(id: $id) { status itemsCompleted } }",
            json!({"id": exam}),
        )
        .await;
    assert_eq!(session["examSession"]["status"], "ABANDONED");
    assert_eq!(session["examSession"]["itemsCompleted"], 1);
}

/// Promise: "an exam stops at the SE target after `minItems`; after completion the last
/// answer sent again is replayed and any other answer is `EXAM_NOT_ACTIVE`, with nothing
/// recorded (the attempts count stays exactly the answers given)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exam_stops_at_the_se_target_after_min_items() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(60)).await;
    let token = app.student("s-se");
    let (exam, started) = start(
        &app,
        &token,
        &bank,
        json!({"maxItems": 40, "minItems": 3, "seTarget": 0.5}),
    )
    .await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let mut last = Value::Null;
    let mut answered = Vec::new();
    for step in 0..40 {
        answered.push(item.clone());
        last = answer(&app, &token, &exam, &item, step % 2 == 0).await;
        if last["completed"] == true {
            break;
        }
        assert!(last["standardError"].as_f64().expect("se") > 0.5 || step + 1 < 3);
        item = last["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    assert_eq!(last["completed"], true);
    assert_eq!(last["stopReason"], "SE_TARGET");
    assert!(last["standardError"].as_f64().expect("se") <= 0.5);
    assert!(last["itemsCompleted"].as_i64().expect("n") >= 3);
    // Answering the last item again replays it; any other item is refused.
    let replay = answer(
        &app,
        &token,
        &exam,
        &item,
        last["itemsCompleted"].as_i64().expect("n") % 2 == 1,
    )
    .await;
    assert_eq!(replay["theta"], last["theta"]);
    let ids = bank_item_ids(&app, &bank).await;
    let unanswered = ids
        .iter()
        .rev()
        .find(|id| **id != item && !answered.contains(id))
        .expect("an item");
    let after = app
        .gql(
            Some(&token),
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": unanswered, "response": "A"}}),
        )
        .await;
    assert_eq!(error_code(&after), "EXAM_NOT_ACTIVE");
    let attempts = app
        .db
        .count(&format!(
            "SELECT count(*) AS n FROM attempts WHERE exam_session_id = {exam}"
        ))
        .await;
    assert_eq!(
        attempts,
        last["itemsCompleted"].as_i64().expect("n"),
        "the replay and the refused answer recorded nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_postgres_and_redis() {
    let app = TestApp::spawn().await;
    let health: Value = app.get_json("/health").await;
    assert_eq!(
        health,
        json!({"status": "ok", "postgres": "up", "redis": "up"})
    );
    let redis: Value = app.get_json("/health/redis").await;
    assert_eq!(redis["redis"], "up");
    assert!(chrono::DateTime::parse_from_rfc3339(redis["timestamp"].as_str().expect("ts")).is_ok());
    let page = app
        .http
        .get(app.url("/graphql"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(page.contains("graphiql"), "GraphiQL page");
    assert!(
        !page.contains("https://") && !page.contains("http://"),
        "GraphiQL loads nothing from another origin"
    );
    let script = app
        .http
        .get(app.url("/assets/graphiql.js"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        script.contains("/graphql/ws"),
        "GraphiQL wired to the ws endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_instances_can_create_and_migrate_a_new_database_at_once() {
    let db = TestDb::unborn();
    let config = adaptive_engine::config::Config::from_lookup(|k| {
        (k == "DATABASE_URL").then(|| db.url.clone())
    })
    .expect("config");
    let runs = (0..3).map(|_| adaptive_engine::app::prepare_database(&config));
    for result in futures_util::future::join_all(runs).await {
        result.expect("concurrent start-up succeeds");
    }
    let tables = db
        .count("SELECT count(*) AS n FROM information_schema.tables WHERE table_name IN ('items','exam_sessions','attempts','item_banks')")
        .await;
    assert_eq!(tables, 4);
    let _ = Duration::from_secs(0);
}

/// The introspection query GraphiQL sends (graphql-js `getIntrospectionQuery`), which nests
/// `ofType` deeply: the depth and complexity limits must let it through.
const INTROSPECTION: &str = r#"query IntrospectionQuery {
  __schema { queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } } } }
fragment FullType on __Type { kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue } interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_can_introspect_the_schema_without_a_token() {
    let app = TestApp::spawn().await;
    let response = app.gql(None, INTROSPECTION, json!({})).await;
    assert!(response.get("errors").is_none(), "{response}");
    let types = response["data"]["__schema"]["types"]
        .as_array()
        .expect("types");
    assert!(types.iter().any(|t| t["name"] == "EngineSummary"));
    assert_eq!(
        response["data"]["__schema"]["subscriptionType"]["name"],
        "Subscription"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_bank_reads_csv_and_json_files_into_banks_exams_can_use() {
    let app = TestApp::spawn().await;
    let dir = std::env::temp_dir().join(common::unique("bank"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let csv = dir.join("algebra.csv");
    std::fs::write(
        &csv,
        "externalId,a,b,c,d,contentArea,content,answerKey\n\
         q1,1.2,-0.5,0.2,,algebra,\"{\"\"stem\"\":\"\"2+2?\"\"}\",4\n\
         q2,,0.8,,,geometry,How many sides has a hexagon?,6\n",
    )
    .expect("write csv");
    let json_file = dir.join("set.json");
    std::fs::write(
        &json_file,
        r#"[{"externalId":"j1","b":0.1,"content":{"stem":"?"},"answerKey":"A"}]"#,
    )
    .expect("write json");
    for (file, expected_items) in [(&csv, 2), (&json_file, 1)] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_adaptive-engine"))
            .arg("import-bank")
            .arg(file)
            .env("DATABASE_URL", &app.db.url)
            .env("RUST_LOG", "off")
            .output()
            .expect("run import-bank");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let bank = app
            .ok(
                &app.admin(),
                "query($id: ID!) { itemBank(id: $id) { id name itemCount } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(bank["itemBank"]["itemCount"], expected_items);
        let (_, started) = start(&app, &app.student("s-import"), &id, json!({})).await;
        assert!(started["nextItem"]["itemId"].is_string());
    }
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "externalId,b,content,answerKey\nq1,hard,x,A\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_adaptive-engine"))
        .arg("import-bank")
        .arg(&bad)
        .env("DATABASE_URL", &app.db.url)
        .output()
        .expect("run import-bank");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 2: b \"hard\" is not a number"));
    let _ = std::fs::remove_dir_all(dir);
}
