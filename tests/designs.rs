//! Exam designs over the real API: polytomous items and their scoring, selection rules,
//! content balancing, enemy items, start items, every stopping rule, fleet-wide exposure
//! counts, and designs stored with the session so a rebuild reproduces the exam.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Options, SUBMIT, TestApp, error_code, start};
use redis::AsyncCommands;
use serde_json::{Value, json};

/// A bank from explicit item inputs; returns its id.
async fn bank_of(app: &TestApp, items: Vec<Value>) -> String {
    bank_of_scaled(app, items, 1.0).await
}

/// A bank from explicit item inputs with the scaling constant D `scaling`; returns its id.
async fn bank_of_scaled(app: &TestApp, items: Vec<Value>, scaling: f64) -> String {
    let data = app
        .ok(
            &app.admin(),
            "mutation($input: CreateItemBankInput!) { createItemBank(input: $input) { id itemCount } }",
            json!({"input": {"name": "designs", "scalingConstant": scaling, "items": items}}),
        )
        .await;
    data["createItemBank"]["id"]
        .as_str()
        .expect("bank id")
        .to_owned()
}

/// The (a, b, c) of the dichotomous item `d{i}` of [`dichotomous`].
fn dichotomous_params(i: usize) -> (f64, f64, f64) {
    let x = i as f64;
    (
        0.8 + (x * 0.37).sin().abs(),
        -2.0 + 4.0 * ((x * 0.618).fract()),
        0.1,
    )
}

fn dichotomous(i: usize, area: &str, enemy: Option<&str>) -> Value {
    let (a, b, c) = dichotomous_params(i);
    json!({"externalId": format!("d{i}"), "a": a, "b": b, "c": c, "contentArea": area,
           "enemyGroup": enemy, "content": {"stem": format!("d{i}")}, "answerKey": "A"})
}

/// An item of the polytomous test, for the independent reference below.
enum ReferenceItem {
    /// 3PL `(a, b, c)`.
    Dichotomous(f64, f64, f64),
    /// Samejima's GRM: slope and ordered boundaries.
    Grm(f64, Vec<f64>),
    /// Muraki's GPCM: slope and step parameters.
    Gpcm(f64, Vec<f64>),
}

impl ReferenceItem {
    /// The probability of score `k` at `theta` with scaling constant `scaling` (catR's
    /// parametrisation), written plainly:
    /// * GRM: `P*_0 = 1`, `P*_j = 1/(1 + exp(−D·a·(θ − b_j)))`, `P*_{m+1} = 0`,
    ///   `P_k = P*_k − P*_{k+1}`;
    /// * GPCM: `P_k ∝ exp(Σ_{j≤k} D·a·(θ − δ_j))` (empty sum 0 for `k = 0`);
    /// * 3PL: `P_1 = c + (1 − c)/(1 + exp(−D·a·(θ − b)))`, `P_0 = 1 − P_1`.
    fn probability(&self, k: usize, theta: f64, scaling: f64) -> f64 {
        match self {
            Self::Dichotomous(a, b, c) => {
                let p = c + (1.0 - c) / (1.0 + (-scaling * a * (theta - b)).exp());
                if k == 1 { p } else { 1.0 - p }
            }
            Self::Grm(a, bounds) => {
                let cumulative = |j: usize| {
                    if j == 0 {
                        1.0
                    } else if j > bounds.len() {
                        0.0
                    } else {
                        1.0 / (1.0 + (-scaling * a * (theta - bounds[j - 1])).exp())
                    }
                };
                cumulative(k) - cumulative(k + 1)
            }
            Self::Gpcm(a, steps) => {
                let numerator = |c: usize| {
                    steps[..c]
                        .iter()
                        .map(|delta| scaling * a * (theta - delta))
                        .sum::<f64>()
                        .exp()
                };
                let total: f64 = (0..=steps.len()).map(numerator).sum();
                numerator(k) / total
            }
        }
    }
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

/// Promise: GRM and GPCM items are scored through their scoring map (unknown options and
/// out-of-range categories are `BAD_USER_INPUT` and record nothing), and every estimate of
/// an exam mixing them with 3PL items equals an independent GRM/GPCM/3PL EAP (catR's
/// trapezoid EAP, N(0, 1) prior, 33 points on [-4, 4]) to 1e-9, on a bank with D = 1 and
/// on one with D = 1.702 (every model, GPCM included, scales its slope by D).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polytomous_items_are_scored_by_their_scoring_map_and_estimated() {
    let app = TestApp::spawn().await;
    for scaling in [1.0, 1.702] {
        polytomous_exam(&app, scaling).await;
    }
}

/// One exam of [`polytomous_items_are_scored_by_their_scoring_map_and_estimated`] on a
/// bank whose scaling constant is `scaling`.
async fn polytomous_exam(app: &TestApp, scaling: f64) {
    let mut items = vec![
        json!({"externalId": "grm1", "b": 0, "model": "GRM", "a": 1.3, "thresholds": [-1.0, 0.0, 1.2],
               "scoring": {"none": 0, "some": 1, "most": 2, "all": 3}, "content": {"stem": "essay"}, "answerKey": "all"}),
        json!({"externalId": "gpcm1", "b": 0, "model": "GPCM", "a": 0.9, "thresholds": [-0.5, 0.7],
               "content": {"stem": "likert"}, "answerKey": "2"}),
    ];
    items.extend((0..6).map(|i| dichotomous(i, "x", None)));
    let bank = bank_of_scaled(app, items, scaling).await;
    let token = app.student(&format!("s-poly-{scaling}"));
    let (exam, started) = start(
        app,
        &token,
        &bank,
        json!({"maxItems": 8, "startItemIds": []}),
    )
    .await;
    let mut item = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let reference_item = |stem: &str| match stem {
        "essay" => ReferenceItem::Grm(1.3, vec![-1.0, 0.0, 1.2]),
        "likert" => ReferenceItem::Gpcm(0.9, vec![-0.5, 0.7]),
        d => {
            let (a, b, c) = dichotomous_params(d[1..].parse().expect("d<i>"));
            ReferenceItem::Dichotomous(a, b, c)
        }
    };
    // (item, score) of every answer so far, for the reference.
    let mut answered: Vec<(ReferenceItem, usize)> = Vec::new();
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
        let stem = content.as_str().expect("stem");
        let (response, score) = match stem {
            "essay" => {
                let bad = submit(app, &token, &exam, &item, "everything").await;
                assert_eq!(error_code(&bad), "BAD_USER_INPUT", "unknown option refused");
                ("most", 2)
            }
            "likert" => {
                let bad = submit(app, &token, &exam, &item, "3").await;
                assert_eq!(
                    error_code(&bad),
                    "BAD_USER_INPUT",
                    "category out of range refused"
                );
                ("1", 1)
            }
            // Even 3PL items right, odd ones wrong.
            d if d[1..].parse::<usize>().expect("d<i>") % 2 == 0 => ("A", 1),
            _ => ("C", 0),
        };
        last = submit(app, &token, &exam, &item, response).await;
        assert!(last.get("errors").is_none(), "{last}");
        answered.push((reference_item(stem), score));
        let (theta, se) = common::reference_eap_of(
            |t| {
                answered
                    .iter()
                    .map(|(item, k)| item.probability(*k, t, scaling))
                    .product()
            },
            0.0,
            1.0,
            -4.0,
            4.0,
            33,
        );
        let n = answered.len();
        let got_theta = last["theta"].as_f64().expect("theta");
        let got_se = last["standardError"].as_f64().expect("se");
        assert!(
            (got_theta - theta).abs() < 1e-9,
            "D = {scaling}, answer {n} ({stem}): theta {got_theta} vs reference {theta}"
        );
        assert!(
            (got_se - se).abs() < 1e-9,
            "D = {scaling}, answer {n} ({stem}): se {got_se} vs reference {se}"
        );
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
    assert_eq!(by_id["d1"], 0);
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

/// Makes exam `twin` a twin of exam `original` before either is answered: the same
/// stored design (seed included, so randomesque and RANDOM draw alike) and the same
/// presented item. Both exams are of the same assessment, so the designs differ only by
/// the seed until then.
async fn make_twin(app: &TestApp, original: &str, twin: &str) {
    use diesel_async::RunQueryDsl;
    let mut conn = app.db.conn().await;
    let updated = diesel::sql_query(format!(
        "UPDATE exam_sessions SET config = o.config, current_item_id = o.current_item_id \
         FROM exam_sessions o WHERE o.id = {original} AND exam_sessions.id = {twin} \
         AND exam_sessions.items_completed = 0 AND o.items_completed = 0"
    ))
    .execute(&mut conn)
    .await
    .expect("copy the design");
    assert_eq!(updated, 1, "twin made");
}

/// Promise: "A rebuild from Postgres reproduces every estimate and item choice exactly"
/// (README, Architecture), for every selection rule and every estimator option. For each
/// design, exam A runs on one instance with its engine state always cached (checked before
/// every answer); its twin B (same stored design and seed) answers the same responses on
/// a second instance with its Redis state deleted before every answer, so every step of B
/// runs on an engine rebuilt from Postgres. Every payload of B must equal A's: theta and
/// SE to 1e-9, the same next item, the same completion and stop reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_selection_rule_and_estimator_option_runs_and_survives_a_rebuild() {
    let app = TestApp::spawn().await;
    // The twins are answered here: this instance reads their design from the row (the
    // one that started them cached the design they were started with).
    let rebuilding = TestApp::spawn_with(Options {
        db: Some(app.db.clone()),
        prefix: Some(app.prefix.clone()),
        ..Options::default()
    })
    .await;
    let bank = bank_of(&app, (0..40).map(|i| dichotomous(i, "x", None)).collect()).await;
    let cached_token = app.student("s-cached");
    let rebuilt_token = app.student("s-rebuilt");
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
        let assessment = common::create_assessment(
            &app,
            &bank,
            json!({"maxItems": 6, "selectionRule": rule, "randomesque": 2, "estimator": estimator}),
            json!({"maxAttemptsPerStudent": null}),
        )
        .await;
        let (cached_exam, started) =
            common::start_assessment(&app, &cached_token, &assessment).await;
        let (rebuilt_exam, _) = common::start_assessment(&app, &rebuilt_token, &assessment).await;
        make_twin(&app, &cached_exam, &rebuilt_exam).await;
        let mut item = started["nextItem"]["itemId"]
            .as_str()
            .expect("item")
            .to_owned();
        for step in 0..6 {
            let response = if step < 2 || step % 2 == 1 { "A" } else { "C" };
            // A continues from its cached state.
            let state: String = conn
                .get(app.key(&cached_exam))
                .await
                .expect("A's state is cached");
            let state: Value = serde_json::from_str(&state).expect("json");
            assert_eq!(state["items_completed"], step, "{rule}");
            let cached = submit(&app, &cached_token, &cached_exam, &item, response).await;
            assert!(cached.get("errors").is_none(), "{rule}: {cached}");
            // B's state is deleted: its engine is rebuilt from Postgres for this answer.
            let deleted: i64 = conn.del(app.key(&rebuilt_exam)).await.expect("del");
            assert_eq!(deleted, 1, "{rule}: B had a cached state to lose");
            let rebuilt = submit(&rebuilding, &rebuilt_token, &rebuilt_exam, &item, response).await;
            assert!(rebuilt.get("errors").is_none(), "{rule}: {rebuilt}");
            let case = format!("{rule} ({estimator}), answer {}", step + 1);
            for field in ["theta", "standardError"] {
                let (a, b) = (
                    cached[field].as_f64().expect("number"),
                    rebuilt[field].as_f64().expect("number"),
                );
                assert!(
                    (a - b).abs() < 1e-9,
                    "{case}: {field} {b} after a rebuild, {a} from the cache"
                );
            }
            for field in ["itemsCompleted", "completed", "stopReason"] {
                assert_eq!(cached[field], rebuilt[field], "{case}: {field}");
            }
            assert_eq!(
                cached["nextItem"]["itemId"], rebuilt["nextItem"]["itemId"],
                "{case}: the next item"
            );
            if cached["completed"] == true {
                assert_eq!(cached["stopReason"], "MAX_ITEMS");
                assert_eq!(step, 5, "{case}");
                break;
            }
            item = cached["nextItem"]["itemId"]
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
