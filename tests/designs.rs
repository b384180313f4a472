//! Exam designs over the real API: polytomous items and their scoring, selection rules,
//! content balancing, enemy items, start items, every stopping rule, fleet-wide exposure
//! counts, and designs stored with the session so a rebuild reproduces the exam.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{SUBMIT, TestApp, error_code, start};
use redis::AsyncCommands;
use serde_json::{Value, json};

/// A bank from explicit item inputs; returns its id.
async fn bank_of(app: &TestApp, items: Vec<Value>) -> String {
    let data = app
        .ok(
            &app.admin(),
            "mutation($input: CreateItemBankInput!) { createItemBank(input: $input) { id itemCount } }",
            json!({"input": {"name": "designs", "items": items}}),
        )
        .await;
    data["createItemBank"]["id"]
        .as_str()
        .expect("bank id")
        .to_owned()
}

fn dichotomous(i: usize, area: &str, enemy: Option<&str>) -> Value {
    let x = i as f64;
    json!({"externalId": format!("d{i}"), "a": 0.8 + (x * 0.37).sin().abs(), "b": -2.0 + 4.0 * ((x * 0.618).fract()),
           "c": 0.1, "contentArea": area, "enemyGroup": enemy, "content": {"stem": format!("d{i}")}, "answerKey": "A"})
}

/// Submits `response` to the presented item; returns the payload or the whole error response.
async fn submit(app: &TestApp, token: &str, exam: &str, item: &str, response: &str) -> Value {
    let r = app
        .gql(
            Some(token),
            SUBMIT,
            json!({"input": {"examSessionId": exam, "itemId": item, "response": response}}),
        )
        .await;
    if r.get("errors").is_some() {
        r
    } else {
        r["data"]["submitAnswer"].clone()
    }
}

/// Runs an exam to completion answering with `respond(step)`; returns (items seen, last payload).
async fn run_exam(
    app: &TestApp,
    token: &str,
    exam: &str,
    first: &str,
    respond: impl Fn(usize) -> &'static str,
) -> (Vec<String>, Value) {
    let mut item = first.to_owned();
    let mut seen = Vec::new();
    for step in 0..200 {
        seen.push(item.clone());
        let result = submit(app, token, exam, &item, respond(step)).await;
        assert!(result.get("errors").is_none(), "{result}");
        if result["completed"] == true {
            return (seen, result);
        }
        item = result["nextItem"]["itemId"]
            .as_str()
            .expect("next item")
            .to_owned();
    }
    panic!("exam did not complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polytomous_items_are_scored_by_their_scoring_map_and_estimated() {
    let app = TestApp::spawn().await;
    let mut items = vec![
        json!({"externalId": "grm1", "b": 0, "model": "GRM", "a": 1.3, "thresholds": [-1.0, 0.0, 1.2],
               "scoring": {"none": 0, "some": 1, "most": 2, "all": 3}, "content": {"stem": "essay"}, "answerKey": "all"}),
        json!({"externalId": "gpcm1", "b": 0, "model": "GPCM", "a": 0.9, "thresholds": [-0.5, 0.7],
               "content": {"stem": "likert"}, "answerKey": "2"}),
    ];
    items.extend((0..6).map(|i| dichotomous(i, "x", None)));
    let bank = bank_of(&app, items).await;
    let token = app.student("s-poly");
    let (exam, started) = start(
        &app,
        &token,
        &bank,
        json!({"maxItems": 8, "startItemIds": []}),
    )
    .await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let mut last = Value::Null;
    for _ in 0..8 {
        let content = app
            .ok(
                &token,
                "query($id: ID!) { examSession(id: $id) { currentItem { content } } }",
                json!({"id": exam}),
            )
            .await["examSession"]["currentItem"]["content"]["stem"]
            .clone();
        let response = match content.as_str() {
            Some("essay") => {
                let bad = submit(&app, &token, &exam, &item, "everything").await;
                assert_eq!(error_code(&bad), "BAD_USER_INPUT", "unknown option refused");
                "most"
            }
            Some("likert") => {
                let bad = submit(&app, &token, &exam, &item, "3").await;
                assert_eq!(
                    error_code(&bad),
                    "BAD_USER_INPUT",
                    "category out of range refused"
                );
                "1"
            }
            _ => "A",
        };
        last = submit(&app, &token, &exam, &item, response).await;
        assert!(last.get("errors").is_none(), "{last}");
        if last["completed"] == true {
            break;
        }
        item = last["nextItem"]["itemId"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    assert_eq!(last["completed"], true);
    let scores: Vec<(String, i64)> = {
        use diesel::sql_types::{BigInt, Text};
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            external_id: String,
            #[diesel(sql_type = BigInt)]
            score: i64,
        }
        let mut conn = app.db.conn().await;
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT i.external_id, a.score::bigint AS score FROM attempts a JOIN items i ON i.id = a.item_id \
             WHERE a.exam_session_id = {exam}"
        ))
        .load(&mut conn)
        .await
        .expect("attempts");
        rows.into_iter().map(|r| (r.external_id, r.score)).collect()
    };
    assert_eq!(
        scores.len(),
        8,
        "one attempt per item, refusals recorded nothing"
    );
    let by_id: HashMap<_, _> = scores.into_iter().collect();
    assert_eq!(by_id["grm1"], 2);
    assert_eq!(by_id["gpcm1"], 1);
    assert_eq!(by_id["d0"], 1);
    // The estimate equals the library's estimator on the same items and scores.
    let theta = last["theta"].as_f64().expect("theta");
    assert!(theta.is_finite() && theta.abs() < 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_balance_enemies_and_start_items_shape_the_exam() {
    let app = TestApp::spawn().await;
    let mut items = Vec::new();
    for i in 0..60 {
        let area = ["algebra", "geometry", "statistics"][i % 3];
        let enemy = (i < 12).then_some(if i % 2 == 0 { "pair-even" } else { "pair-odd" });
        items.push(dichotomous(i, area, enemy));
    }
    let bank = bank_of(&app, items).await;
    let ids = common::bank_item_ids(&app, &bank).await;
    let token = app.student("s-balance");
    let (exam, started) = start(
        &app,
        &token,
        &bank,
        json!({"maxItems": 20, "startItemIds": [ids[30], ids[31]],
               "contentBalance": [{"contentArea": "algebra", "proportion": 0.5},
                                  {"contentArea": "geometry", "proportion": 0.3},
                                  {"contentArea": "statistics", "proportion": 0.2}]}),
    )
    .await;
    let first = started["nextItem"]["itemId"].as_str().expect("item");
    assert_eq!(first, ids[30], "the first start item comes first");
    let (seen, _) = run_exam(&app, &token, &exam, first, |s| {
        if s % 3 == 0 { "C" } else { "A" }
    })
    .await;
    assert_eq!(seen.len(), 20);
    assert_eq!(seen[1], ids[31], "then the second");
    let index: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut per_area = [0usize; 3];
    let mut enemies = HashMap::new();
    for id in &seen {
        let i = index[id.as_str()];
        per_area[i % 3] += 1;
        if i < 12 {
            *enemies.entry(i % 2).or_insert(0) += 1;
        }
    }
    for (area, target) in [(0, 10.0), (1, 6.0), (2, 4.0)] {
        let got = per_area[area] as f64;
        assert!(
            (got - target).abs() <= 1.0,
            "area {area}: {got} items for a target of {target}: {per_area:?}"
        );
    }
    assert!(
        enemies.values().all(|n| *n <= 1),
        "two enemies in one exam: {enemies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stopping_rule_says_why_the_exam_stopped() {
    let app = TestApp::spawn().await;
    let bank = bank_of(&app, (0..40).map(|i| dichotomous(i, "x", None)).collect()).await;
    let token = app.student("s-stop");

    let (exam, started) = start(
        &app,
        &token,
        &bank,
        json!({"maxItems": 30, "minItems": 3, "cutScore": -1.5}),
    )
    .await;
    let (seen, last) = run_exam(
        &app,
        &token,
        &exam,
        started["nextItem"]["itemId"].as_str().expect("item"),
        |_| "A",
    )
    .await;
    assert_eq!(last["stopReason"], "CLASSIFICATION");
    assert!(seen.len() >= 3 && seen.len() < 30);
    let theta = last["theta"].as_f64().expect("theta");
    let se = last["standardError"].as_f64().expect("se");
    assert!(
        theta - 1.959_963_984_540_054 * se > -1.5,
        "the 95% interval excludes the cut"
    );

    let (exam, started) = start(
        &app,
        &token,
        &bank,
        json!({"maxItems": 30, "minItems": 2, "minInformation": 0.6}),
    )
    .await;
    let (_, last) = run_exam(
        &app,
        &token,
        &exam,
        started["nextItem"]["itemId"].as_str().expect("item"),
        |s| if s % 2 == 0 { "A" } else { "C" },
    )
    .await;
    assert_eq!(last["stopReason"], "MIN_INFORMATION");

    let (exam, started) = start(
        &app,
        &token,
        &bank,
        json!({"maxItems": 30, "maxDurationSeconds": 1}),
    )
    .await;
    let item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let first = submit(&app, &token, &exam, &item, "A").await;
    assert_eq!(first["completed"], false);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let late = submit(
        &app,
        &token,
        &exam,
        first["nextItem"]["itemId"].as_str().expect("next"),
        "A",
    )
    .await;
    assert_eq!(late["completed"], true, "{late}");
    assert_eq!(late["stopReason"], "MAX_DURATION");
    assert_eq!(
        late["itemsCompleted"], 2,
        "the late answer is still recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_selection_rule_and_estimator_option_runs_and_survives_a_rebuild() {
    let app = TestApp::spawn().await;
    let bank = bank_of(&app, (0..40).map(|i| dichotomous(i, "x", None)).collect()).await;
    let token = app.student("s-rules");
    let mut conn = app.redis().await;
    for (n, rule) in [
        "MAX_INFO",
        "URRY",
        "KL",
        "KLP",
        "MLWI",
        "MPWI",
        "MEPV",
        "PROGRESSIVE",
        "PROPORTIONAL",
        "RANDOM",
    ]
    .into_iter()
    .enumerate()
    {
        let estimator = match n % 4 {
            0 => json!({"method": "EAP", "prior": "JEFFREYS"}),
            1 => json!({"method": "MAP", "prior": "UNIFORM", "priorLower": -3, "priorUpper": 3}),
            2 => json!({"method": "MLE", "constantPatternRule": "STEP"}),
            _ => json!({"method": "WLE", "standardErrorType": "SANDWICH"}),
        };
        let (exam, started) = start(
            &app,
            &token,
            &bank,
            json!({"maxItems": 6, "selectionRule": rule, "randomesque": 2, "estimator": estimator}),
        )
        .await;
        let mut item = started["nextItem"]["itemId"]
            .as_str()
            .expect("item")
            .to_owned();
        for step in 0..6 {
            // Half the answers go through a rebuilt engine: the stored design must give
            // the same estimates as the cached one would.
            if step % 2 == 1 {
                let _: i64 = conn.del(app.key(&exam)).await.expect("del");
            }
            let result = submit(
                &app,
                &token,
                &exam,
                &item,
                if step < 2 {
                    "A"
                } else if step % 2 == 0 {
                    "C"
                } else {
                    "A"
                },
            )
            .await;
            assert!(result.get("errors").is_none(), "{rule}: {result}");
            let theta = result["theta"].as_f64().expect("theta");
            assert!(
                theta.is_finite() && (-4.0..=4.0).contains(&theta),
                "{rule}: theta {theta}"
            );
            if result["completed"] == true {
                assert_eq!(result["stopReason"], "MAX_ITEMS");
                break;
            }
            item = result["nextItem"]["itemId"]
                .as_str()
                .expect("next")
                .to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposure_counts_are_shared_in_redis_and_rebuilt_from_postgres() {
    let app = TestApp::spawn().await;
    let bank = bank_of(&app, (0..30).map(|i| dichotomous(i, "x", None)).collect()).await;
    let token = app.student("s-exposure");
    let key = adaptive_engine::storage::keys::Keys::new(&app.prefix)
        .exposure(bank.parse().expect("bank id"));
    let mut conn = app.redis().await;
    let mut presented: HashMap<String, u64> = HashMap::new();
    for n in 0..12 {
        let method = if n % 2 == 0 {
            "ITEM_ELIGIBILITY"
        } else {
            "SYMPSON_HETTER"
        };
        let (exam, started) = start(
            &app,
            &token,
            &bank,
            json!({"maxItems": 4, "exposure": {"method": method, "maxRate": 0.3}}),
        )
        .await;
        let (seen, _) = run_exam(
            &app,
            &token,
            &exam,
            started["nextItem"]["itemId"].as_str().expect("item"),
            |_| "A",
        )
        .await;
        for id in seen {
            *presented.entry(id).or_default() += 1;
        }
        if n == 5 {
            // Redis loses the counts: they are rebuilt from Postgres on the next read.
            let _: i64 = conn.del(&key).await.expect("del");
            tokio::time::sleep(Duration::from_millis(1_100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // One more start reads (and, if needed, rebuilds) the hash.
    let _ = start(
        &app,
        &token,
        &bank,
        json!({"maxItems": 1, "exposure": {"maxRate": 0.3}}),
    )
    .await;
    let fields: HashMap<String, u64> = conn.hgetall(&key).await.expect("hgetall");
    assert_eq!(fields.get("n").copied(), Some(13), "{fields:?}");
    for (id, count) in &presented {
        let stored = fields.get(&format!("a:{id}")).copied().unwrap_or(0);
        assert!(
            stored >= *count,
            "item {id}: {stored} presentations counted, {count} seen"
        );
    }
    let exam_keys: Vec<String> = conn.keys(format!("{}:*", app.prefix)).await.expect("keys");
    assert!(
        exam_keys
            .iter()
            .all(|k| k[app.prefix.len() + 1..].parse::<i64>().is_ok()),
        "{exam_keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_designs_are_refused_with_bad_user_input() {
    let app = TestApp::spawn().await;
    let bank = bank_of(&app, (0..10).map(|i| dichotomous(i, "x", None)).collect()).await;
    let _ = app.student("s-invalid");
    for bad in [
        json!({"exposure": {"maxRate": 0}}),
        json!({"exposure": {"maxRate": 1.5}}),
        json!({"contentBalance": [{"contentArea": "nowhere", "proportion": 1}]}),
        json!({"contentBalance": [{"contentArea": "x", "proportion": -1}]}),
        json!({"startItemIds": ["999999"]}),
        json!({"confidenceLevel": 1.0}),
        json!({"minInformation": -1}),
        json!({"maxDurationSeconds": 0}),
        json!({"estimator": {"prior": "UNIFORM", "priorLower": 2, "priorUpper": 1}}),
    ] {
        let input = json!({"name": "bad", "itemBankId": bank, "design": bad});
        let response = app
            .gql(
                Some(&app.admin()),
                common::CREATE_ASSESSMENT,
                json!({"input": input}),
            )
            .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{bad}: {response}");
    }
    let bad_items = app
        .gql(
            Some(&app.admin()),
            "mutation($input: CreateItemBankInput!) { createItemBank(input: $input) { id } }",
            json!({"input": {"name": "bad", "items": [
                {"externalId": "p", "b": 0, "model": "GRM", "thresholds": [1.0, 0.0], "content": {}, "answerKey": "3"}]}}),
        )
        .await;
    assert_eq!(error_code(&bad_items), "BAD_USER_INPUT");
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM exam_sessions")
            .await,
        0
    );
}
