//! Bank maintenance (issue 16): items added to a live bank and items retired from it,
//! through two instances whose cached copies of the bank must follow: new exams see every
//! change at once, running exams none (they select among the items their bank had when they
//! started, and a retired item they could still be given stays theirs); pretest items are
//! never selected.

mod common;

use std::collections::HashSet;

use common::{
    Options, TestApp, answer, bank_item_ids, bank_params, create_assessment, error_code,
    start_assessment,
};
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

const ADD_ITEMS: &str = "mutation($b: ID!, $items: [ItemInput!]!) {
    addItems(itemBankId: $b, items: $items) { id itemCount } }";
const RETIRE: &str = "mutation($i: ID!) { retireItem(itemId: $i) }";

/// Answers an exam to its end (every answer "A" on alternating instances); returns the
/// item ids presented, in order.
async fn finish(apps: [&TestApp; 2], token: &str, exam: &str, first: &str) -> Vec<String> {
    let mut presented = vec![first.to_owned()];
    let mut item = first.to_owned();
    for n in 0.. {
        let result = answer(apps[n % 2], token, exam, &item, n % 3 != 0).await;
        match result["nextItem"]["itemId"].as_str() {
            Some(next) => {
                item = next.to_owned();
                presented.push(item.clone());
            }
            None => break,
        }
    }
    presented
}

fn item(external_id: &str, b: Option<f64>, status: &str) -> Value {
    let mut item = json!({"externalId": external_id, "a": 1.2, "content": {"stem": external_id},
                          "answerKey": "A", "status": status});
    if let Some(b) = b {
        item["b"] = json!(b);
    }
    item
}

/// Promise: an exam started before `addItems` and `retireItem` runs to its end on its
/// original items, including the one retired meanwhile (running exams are unaffected),
/// whichever instance serves it; an exam started after, on the instance whose cached bank
/// predates the retirement, never gets the retired item, may get the added operational
/// items, and no exam ever gets a pretest item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_exams_keep_their_bank_and_new_exams_see_every_change() {
    let (a, b) = TestApp::spawn_pair().await;
    let bank = a.create_bank(&bank_params(10)).await;
    let original: Vec<String> = bank_item_ids(&a, &bank).await;
    let assessment = create_assessment(
        &a,
        &bank,
        json!({"maxItems": 10}),
        json!({"maxAttemptsPerStudent": null}),
    )
    .await;
    let alice = a.student("alice");
    let (early, started) = start_assessment(&a, &alice, &assessment).await;
    let first = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    // Both instances hold the bank as it was.
    let on_b = answer(&b, &alice, &early, &first, true).await;
    let second = on_b["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();

    let added = a
        .ok(
            &a.admin(),
            ADD_ITEMS,
            json!({"b": bank, "items": [
                item("new-1", Some(-0.2), "OPERATIONAL"),
                item("new-2", Some(0.1), "OPERATIONAL"),
                item("new-3", Some(0.4), "OPERATIONAL"),
                item("pre-1", None, "PRETEST"),
                item("pre-2", Some(0.0), "PRETEST"),
            ]}),
        )
        .await;
    assert_eq!(added["addItems"]["itemCount"], 15, "{added}");
    let all = bank_item_ids(&a, &bank).await;
    let new_ids: HashSet<&String> = all.iter().filter(|i| !original.contains(i)).collect();
    assert_eq!(new_ids.len(), 5);
    // Retire, on the other instance, an original item the early exam has not had yet.
    let retired = original
        .iter()
        .find(|i| **i != first && **i != second)
        .expect("an item left")
        .clone();
    let response = b.ok(&b.admin(), RETIRE, json!({"i": retired})).await;
    assert_eq!(response["retireItem"], true);
    let again = a.ok(&a.admin(), RETIRE, json!({"i": retired})).await;
    assert_eq!(again["retireItem"], false, "retiring twice changes nothing");

    // The early exam: its ten original items, the retired one included, nothing new.
    let mut early_items = vec![first.clone()];
    early_items.extend(finish([&a, &b], &alice, &early, &second).await);
    let early_set: HashSet<&String> = early_items.iter().collect();
    assert_eq!(early_items.len(), 10, "{early_items:?}");
    assert_eq!(
        early_set,
        original.iter().collect(),
        "the early exam had exactly its bank's original items"
    );

    // A late exam as long as the whole bank, started on the instance that did not retire
    // the item: it gets every selectable item and nothing else (then the bank is exhausted).
    let whole_bank = create_assessment(&a, &bank, json!({"maxItems": 15}), json!({})).await;
    let bob = a.student("bob");
    let (late, started) = start_assessment(&a, &bob, &whole_bank).await;
    let first = started["nextItem"]["itemId"]
        .as_str()
        .expect("item")
        .to_owned();
    let late_items = finish([&b, &a], &bob, &late, &first).await;
    let pretest: HashSet<&String> = all.iter().filter(|i| new_ids.contains(i)).skip(3).collect();
    let selectable: HashSet<&String> = all
        .iter()
        .filter(|i| **i != retired && !pretest.contains(i))
        .collect();
    assert_eq!(
        late_items.iter().collect::<HashSet<_>>(),
        selectable,
        "a new exam gets the nine originals left and the three new operational items, never \
         the retired or pretest ones"
    );
    assert_eq!(late_items.len(), 12);
    for p in &pretest {
        assert!(!early_items.contains(p), "pretest item {p} was selected");
    }
}

/// Promise: bad additions are refused with a code and change nothing: an `externalId`
/// already in the bank, an operational item without `b`, an unknown bank or item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_additions_and_retirements_are_refused_and_change_nothing() {
    let app = TestApp::spawn_with(Options::default()).await;
    let bank = app.create_bank(&bank_params(4)).await;
    let admin = app.admin();
    for (items, code) in [
        (
            json!([item("item-1", Some(0.0), "OPERATIONAL")]),
            "BAD_USER_INPUT",
        ),
        (
            json!([
                item("fresh", Some(0.0), "OPERATIONAL"),
                item("fresh", Some(1.0), "PRETEST")
            ]),
            "BAD_USER_INPUT",
        ),
        (json!([item("no-b", None, "OPERATIONAL")]), "BAD_USER_INPUT"),
        (
            json!([item("nul\u{0}", Some(0.0), "OPERATIONAL")]),
            "BAD_USER_INPUT",
        ),
        (json!([]), "BAD_USER_INPUT"),
    ] {
        let response = app
            .gql(Some(&admin), ADD_ITEMS, json!({"b": bank, "items": items}))
            .await;
        assert_eq!(error_code(&response), code, "{items}: {response}");
    }
    let response = app
        .gql(
            Some(&admin),
            ADD_ITEMS,
            json!({"b": "999999", "items": [item("x", Some(0.0), "OPERATIONAL")]}),
        )
        .await;
    assert_eq!(error_code(&response), "NOT_FOUND", "{response}");
    let response = app.gql(Some(&admin), RETIRE, json!({"i": "999999"})).await;
    assert_eq!(error_code(&response), "NOT_FOUND", "{response}");
    assert_eq!(app.db.count("SELECT count(*) AS n FROM items").await, 4);
    assert_eq!(
        app.db.count("SELECT revision AS n FROM item_banks").await,
        0,
        "no change, no new revision"
    );
}

// ---------------------------------------------------------------------------------------
// Calibration runs and promotion
// ---------------------------------------------------------------------------------------

const CALIBRATE: &str = "mutation($b: ID!, $m: CalibrationMethod!, $n: Int!) {
    calibrateItems(itemBankId: $b, method: $m, model: TWO_PL, minResponses: $n) { id status } }";
const RUN: &str = "query($id: ID!) { calibrationRun(id: $id) { id status cycles error minResponses
    items { itemId externalId responses a b c seA seB fit converged } } }";

/// A calibration's inputs as the test itself recorded them: per exam, the operational
/// answers it sent (item parameters, score) and the pretest answers it stored.
struct Recorded {
    operational: Vec<((f64, f64, f64), bool)>,
    pretest: Vec<(usize, bool)>,
}

/// Polls a run until it is no longer `RUNNING` (the run's own acknowledgement).
async fn finished_run(app: &TestApp, id: &str) -> Value {
    for _ in 0..400 {
        let run = app.ok(&app.admin(), RUN, json!({"id": id})).await["calibrationRun"].clone();
        if run["status"] != "RUNNING" {
            return run;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("calibration run {id} still running after 20 s");
}

/// The estimates `irt::calibrate` gives on the recorded data, the operational likelihood
/// computed here on the calibration grid from the parameters the test gave the bank.
fn direct(
    recorded: &[Recorded],
    items: usize,
    method: adaptive_engine::irt::CalibrationMethod,
) -> Vec<Option<adaptive_engine::irt::ItemCalibration>> {
    use adaptive_engine::irt::{CalibrationModel, CalibrationSettings, Examinee, calibrate};
    let settings = CalibrationSettings::new(method, CalibrationModel::TwoPl, 1.0);
    let nodes: Vec<f64> = (0..61).map(|k| -6.0 + 0.2 * f64::from(k)).collect();
    let likelihoods: Vec<Vec<f64>> = recorded
        .iter()
        .map(|r| {
            nodes
                .iter()
                .map(|&t| {
                    r.operational
                        .iter()
                        .map(|&((a, b, c), correct)| {
                            let p = common::reference_p_4pl(a, b, c, 1.0, 1.0, t);
                            if correct { p.ln() } else { (1.0 - p).ln() }
                        })
                        .sum()
                })
                .collect()
        })
        .collect();
    // Only the first `items` pretest items are calibrated (the others had too few answers).
    let pretest: Vec<Vec<(usize, bool)>> = recorded
        .iter()
        .map(|r| {
            r.pretest
                .iter()
                .copied()
                .filter(|&(j, _)| j < items)
                .collect()
        })
        .collect();
    calibrate(items, &settings, |visit| {
        for ((l, p), _) in likelihoods.iter().zip(&pretest).zip(recorded) {
            if p.is_empty() {
                continue;
            }
            visit(&Examinee {
                operational: l,
                pretest: p,
            });
        }
        Ok::<(), ()>(())
    })
    .expect("in memory")
    .items
}

/// OEM written plainly, independently of `irt::calibrate`: discrete posteriors on 61 nodes
/// over [-6, 6] with a N(0, 1) prior from the operational answers, expected counts per
/// node, then each item's 2PL by Newton–Raphson on the slope and intercept (a concave problem).
fn plain_oem(recorded: &[Recorded], items: usize) -> Vec<(f64, f64)> {
    let nodes: Vec<f64> = (0..61).map(|k| -6.0 + 0.2 * f64::from(k)).collect();
    let mut n = vec![vec![0.0; nodes.len()]; items];
    let mut r = vec![vec![0.0; nodes.len()]; items];
    for exam in recorded {
        let log_post: Vec<f64> = nodes
            .iter()
            .map(|&t| {
                -0.5 * t * t
                    + exam
                        .operational
                        .iter()
                        .map(|&((a, b, c), correct)| {
                            let p = common::reference_p_4pl(a, b, c, 1.0, 1.0, t);
                            if correct { p.ln() } else { (1.0 - p).ln() }
                        })
                        .sum::<f64>()
            })
            .collect();
        let max = log_post.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = log_post.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        for &(j, correct) in exam.pretest.iter().filter(|(j, _)| *j < items) {
            for (q, w) in weights.iter().enumerate() {
                n[j][q] += w / total;
                if correct {
                    r[j][q] += w / total;
                }
            }
        }
    }
    (0..items)
        .map(|j| {
            // Slope-intercept form, logit = a·t + d: the log-likelihood is concave there,
            // so Newton–Raphson with step halving finds its one maximum.
            let value = |a: f64, d: f64| -> f64 {
                nodes
                    .iter()
                    .enumerate()
                    .map(|(q, &t)| {
                        let p = 1.0 / (1.0 + (-(a * t + d)).exp());
                        r[j][q] * p.ln() + (n[j][q] - r[j][q]) * (1.0 - p).ln()
                    })
                    .sum()
            };
            let (mut a, mut d) = (1.0, 0.0);
            for _ in 0..500 {
                let (mut ga, mut gd, mut haa, mut hdd, mut had) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for (q, &t) in nodes.iter().enumerate() {
                    let p = 1.0 / (1.0 + (-(a * t + d)).exp());
                    let (res, info) = (r[j][q] - n[j][q] * p, n[j][q] * p * (1.0 - p));
                    ga += res * t;
                    gd += res;
                    haa -= info * t * t;
                    hdd -= info;
                    had -= info * t;
                }
                let det = haa * hdd - had * had;
                let (da, dd) = (-(hdd * ga - had * gd) / det, -(haa * gd - had * ga) / det);
                let mut step = 1.0;
                while value(a + step * da, d + step * dd) < value(a, d) && step > 1e-12 {
                    step /= 2.0;
                }
                a += step * da;
                d += step * dd;
                if (step * da).abs().max((step * dd).abs()) < 1e-13 {
                    break;
                }
            }
            let b = -d / a;
            (a, b)
        })
        .collect()
}

/// Promise: pretest items seeded into exams through real `startExam`/`submitAnswer` (the
/// least-answered first, at contiguous positions, changing no estimate, `maxItems` counting
/// operational items only) are what `calibrateItems` reads, with the operational answers
/// of the same exams: by FIXED_THETA, OEM and MEM the estimates equal `irt::calibrate` on
/// the data the test recorded itself to 1e-9, and OEM a plain implementation to 1e-6;
/// items under `minResponses` get no estimates, and `promoteItems` makes estimated items
/// operational with those parameters (all or none); `adaptive-engine calibrate` stores the
/// same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_exams_feed_calibration_runs_and_promotion_uses_their_estimates() {
    use adaptive_engine::irt::CalibrationMethod;
    let app = TestApp::spawn().await;
    let params = bank_params(30);
    let bank = app.create_bank(&params).await;
    let truth = [(1.4, -0.5), (0.9, 0.6), (1.1, 0.0), (1.0, 0.3)];
    app.ok(
        &app.admin(),
        ADD_ITEMS,
        json!({"b": bank, "items": [
            item("pre-a", None, "PRETEST"),
            item("pre-b", Some(0.0), "PRETEST"),
            item("pre-c", None, "PRETEST"),
        ]}),
    )
    .await;
    let ids = bank_item_ids(&app, &bank).await;
    let mut pretest_ids: Vec<i64> = ids[30..].iter().map(|i| i.parse().expect("id")).collect();
    let assessment = create_assessment(
        &app,
        &bank,
        json!({"maxItems": 6, "pretest": {"itemsPerExam": 2, "firstPosition": 2}}),
        json!({"maxAttemptsPerStudent": null}),
    )
    .await;
    // 60 candidates of known ability take the exam through the API: six operational items
    // and two seeded pretest items each, answered from the test's own generating model.
    // Before the last three exams a fourth pretest item is added: the least-answered, it
    // is seeded into all three (too few answers to calibrate).
    let mut recorded = Vec::new();
    let mut counts = [0_usize; 4];
    for n in 0..60_u32 {
        if n == 57 {
            let abc = &counts[..3];
            let spread = abc.iter().max().expect("3") - abc.iter().min().expect("3");
            assert!(
                spread <= 1,
                "least-answered first keeps them level: {counts:?}"
            );
            app.ok(
                &app.admin(),
                ADD_ITEMS,
                json!({"b": bank, "items": [item("pre-d", None, "PRETEST")]}),
            )
            .await;
            let ids = bank_item_ids(&app, &bank).await;
            pretest_ids.push(ids[33].parse().expect("id"));
        }
        let theta = -2.0 + 4.0 * f64::from(n) / 59.0;
        let token = app.student(&format!("cal-{n}"));
        let (exam, started) = start_assessment(&app, &token, &assessment).await;
        let mut presented = started["nextItem"].clone();
        let mut theta_now = started["examSession"]["theta"].as_f64().expect("theta");
        let mut operational = Vec::new();
        let mut pretest = Vec::new();
        for position in 1_i64.. {
            assert_eq!(presented["position"], position, "positions are contiguous");
            let item_id = presented["itemId"].as_str().expect("item").to_owned();
            let id: i64 = item_id.parse().expect("id");
            let k = u32::try_from(position).expect("small");
            let correct = match pretest_ids.iter().position(|&p| p == id) {
                Some(j) => {
                    let (a, b) = truth[j];
                    let p = common::reference_p_4pl(a, b, 0.0, 1.0, 1.0, theta);
                    let j = u32::try_from(j).expect("j");
                    let correct = f64::from((n * 3 + j * 5) % 10) / 10.0 + 0.05 < p;
                    pretest.push((j as usize, correct));
                    counts[j as usize] += 1;
                    correct
                }
                None => {
                    let index = ids.iter().position(|i| *i == item_id).expect("bank item");
                    let (a, b, c) = params[index];
                    let p = common::reference_p_4pl(a, b, c, 1.0, 1.0, theta);
                    let correct = f64::from((n * 7 + k * 13) % 10) / 10.0 + 0.05 < p;
                    operational.push(((a, b, c), correct));
                    correct
                }
            };
            let result = answer(&app, &token, &exam, &item_id, correct).await;
            assert_eq!(result["itemsCompleted"], position);
            let theta_after = result["theta"].as_f64().expect("theta");
            if pretest_ids.contains(&id) {
                assert_eq!(
                    theta_after, theta_now,
                    "a pretest answer changes no estimate"
                );
            }
            theta_now = theta_after;
            if result["completed"] == true {
                break;
            }
            presented = result["nextItem"].clone();
        }
        assert_eq!(
            operational.len(),
            6,
            "maxItems counts operational items only"
        );
        assert_eq!(
            pretest.len(),
            2,
            "a full-length exam presents every seeded item"
        );
        recorded.push(Recorded {
            operational,
            pretest,
        });
    }
    assert_eq!(
        counts[3], 3,
        "the new item, least answered, went to every later exam"
    );
    // Staff watch the counts grow before calibrating.
    let watched = app
        .ok(
            &app.proctor("room-1"),
            "query($b: ID!) { pretestItems(itemBankId: $b) { itemId responses retired } }",
            json!({"b": bank}),
        )
        .await;
    let listed: Vec<(String, i64)> = watched["pretestItems"]
        .as_array()
        .expect("items")
        .iter()
        .map(|x| {
            assert_eq!(x["retired"], false);
            (
                x["itemId"].as_str().expect("id").to_owned(),
                x["responses"].as_i64().expect("n"),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = pretest_ids
        .iter()
        .zip(counts)
        .map(|(id, n)| (id.to_string(), n as i64))
        .collect();
    assert_eq!(listed, want);
    let mut runs = Vec::new();
    for (method, name) in [
        (CalibrationMethod::FixedTheta, "FIXED_THETA"),
        (CalibrationMethod::Oem, "OEM"),
        (CalibrationMethod::Mem, "MEM"),
    ] {
        let started = app
            .ok(
                &app.admin(),
                CALIBRATE,
                json!({"b": bank, "m": name, "n": 10}),
            )
            .await;
        assert_eq!(started["calibrateItems"]["status"], "RUNNING");
        let run_id = started["calibrateItems"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let run = finished_run(&app, &run_id).await;
        assert_eq!(run["status"], "DONE", "{run}");
        let expected = direct(&recorded, 3, method);
        // OEM also against the plain implementation above, to 1e-6.
        let plain = (method == CalibrationMethod::Oem).then(|| plain_oem(&recorded, 3));
        let items = run["items"].as_array().expect("items");
        assert_eq!(items.len(), 4, "{run}");
        for (j, item) in items.iter().enumerate() {
            assert_eq!(item["itemId"], json!(pretest_ids[j].to_string()));
            assert_eq!(item["responses"], counts[j], "{item}");
            if j == 3 {
                assert!(item["a"].is_null() && item["b"].is_null(), "{item}");
                continue;
            }
            let want = expected[j].expect("estimated").params;
            for (got, want) in [(&item["a"], want.a), (&item["b"], want.b)] {
                let got = got.as_f64().expect("estimate");
                assert!(
                    (got - want).abs() < 1e-9,
                    "{name} item {j}: {got} vs {want}"
                );
            }
            if let Some(plain) = &plain {
                let (a, b) = plain[j];
                let got_a = item["a"].as_f64().expect("a");
                let got_b = item["b"].as_f64().expect("b");
                assert!(
                    (got_a - a).abs() < 1e-6 && (got_b - b).abs() < 1e-6,
                    "OEM item {j}: ({got_a}, {got_b}) vs plain ({a}, {b})"
                );
            }
        }
        runs.push((run_id, run));
    }

    // Promotion: all or none, with the newest run's estimates.
    let promote = "mutation($ids: [ID!]!) { promoteItems(itemIds: $ids) }";
    let response = app
        .gql(
            Some(&app.admin()),
            promote,
            json!({"ids": [pretest_ids[0].to_string(), pretest_ids[3].to_string()]}),
        )
        .await;
    assert_eq!(error_code(&response), "BAD_USER_INPUT", "{response}");
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM items WHERE status = 'PRETEST'")
            .await,
        4,
        "nothing promoted"
    );
    let promoted = app
        .ok(
            &app.admin(),
            promote,
            json!({"ids": [pretest_ids[0].to_string(), pretest_ids[1].to_string()]}),
        )
        .await;
    assert_eq!(promoted["promoteItems"].as_array().map(Vec::len), Some(2));
    let mem = &runs[2].1["items"];
    let mut conn = app.db.conn().await;
    for j in 0..2 {
        #[derive(diesel::QueryableByName)]
        struct Params {
            #[diesel(sql_type = diesel::sql_types::Double)]
            a: f64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            b: f64,
        }
        let stored: Params = diesel::sql_query(format!(
            "SELECT a, b FROM items WHERE id = {} AND status = 'OPERATIONAL'",
            pretest_ids[j]
        ))
        .get_result(&mut conn)
        .await
        .expect("promoted item");
        assert_eq!(json!(stored.a), mem[j]["a"]);
        assert_eq!(json!(stored.b), mem[j]["b"]);
    }
    let again = app
        .gql(
            Some(&app.admin()),
            promote,
            json!({"ids": [pretest_ids[0].to_string()]}),
        )
        .await;
    assert_eq!(
        error_code(&again),
        "BAD_USER_INPUT",
        "promoted twice: {again}"
    );

    // The command line runs the same calibration of the two pretest items left (the new
    // one has too few answers even for `--min-responses 5`).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_adaptive-engine"))
        .args([
            "calibrate",
            "--bank",
            &bank,
            "--method",
            "oem",
            "--min-responses",
            "5",
        ])
        .env("DATABASE_URL", &app.db.url)
        .env("LOG_FORMAT", "json")
        .output()
        .expect("run adaptive-engine calibrate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cli: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(cli["status"], "DONE", "{cli}");
    let items = cli["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "only the live pretest items: {cli}");
    assert_eq!(items[0]["responses"], counts[2]);
    assert!(items[0]["a"].is_number(), "estimated: {cli}");
    assert_eq!(items[1]["responses"], 3);
    assert!(items[1]["a"].is_null(), "3 < 5 answers: {cli}");
}

// ---------------------------------------------------------------------------------------
// Pretest seeding
// ---------------------------------------------------------------------------------------

/// One answer of an exam as its student saw it: position, item, theta and SE after it.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    position: i64,
    item: String,
    theta: f64,
    standard_error: f64,
}

/// Takes an exam of `assessment` to its end, answering each item by `correct`, on the
/// instances in turn; with `flush`, the exam's Redis state is deleted before every third
/// answer (the next instance then rebuilds it from the attempts) and every answer is sent
/// again to the other instance, which must replay exactly what was answered. Returns the
/// theta and SE at the start, every answer, the stop reason and the exam's id.
async fn take_exam(
    apps: &[&TestApp],
    token: &str,
    assessment: &str,
    correct: impl Fn(&str) -> bool,
    flush: bool,
) -> ((f64, f64), Vec<Seen>, Value, String) {
    let (exam, started) = start_assessment(apps[0], token, assessment).await;
    let start = (
        started["examSession"]["theta"].as_f64().expect("theta"),
        started["examSession"]["standardError"]
            .as_f64()
            .expect("se"),
    );
    let mut presented = started["nextItem"].clone();
    let mut seen = Vec::new();
    for n in 0.. {
        let app = apps[n % apps.len()];
        if flush && n % 3 == 2 {
            let _: i64 = redis::cmd("DEL")
                .arg(app.key(&exam))
                .query_async(&mut app.redis().await)
                .await
                .expect("DEL");
        }
        let item = presented["itemId"].as_str().expect("item").to_owned();
        let result = answer(app, token, &exam, &item, correct(&item)).await;
        if flush {
            let other = apps[(n + 1) % apps.len()];
            let again = answer(other, token, &exam, &item, correct(&item)).await;
            for field in [
                "theta",
                "standardError",
                "itemsCompleted",
                "nextItem",
                "completed",
            ] {
                assert_eq!(again[field], result[field], "replayed {field}");
            }
        }
        seen.push(Seen {
            position: presented["position"].as_i64().expect("position"),
            item,
            theta: result["theta"].as_f64().expect("theta"),
            standard_error: result["standardError"].as_f64().expect("se"),
        });
        if result["completed"] == true {
            return (start, seen, result["stopReason"].clone(), exam);
        }
        presented = result["nextItem"].clone();
    }
    unreachable!()
}

/// Promise: pretest answers change no operational estimate. The same students answering
/// the same operational items the same way get, with seeding (two instances, the Redis
/// state deleted now and then) and without (one instance), the same operational items in
/// the same order, bitwise the same theta and SE after each, the same stop (MAP with a
/// N(0, 1.5²) prior and a precision target); each pretest answer leaves theta and SE as
/// they were; the pretest items sit at distinct positions of the range, never two enemies,
/// and the exam's positions run 1, 2, 3… without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_changes_no_operational_estimate_selection_or_stop() {
    let (a, b) = TestApp::spawn_pair().await;
    let params = bank_params(40);
    let bank = a.create_bank(&params).await;
    let pretest_items: Vec<Value> = (0..6)
        .map(|k| {
            let mut item = item(&format!("pre-{k}"), None, "PRETEST");
            if k < 3 {
                item["enemyGroup"] = json!("twins");
            }
            item
        })
        .collect();
    a.ok(
        &a.admin(),
        ADD_ITEMS,
        json!({"b": bank, "items": pretest_items}),
    )
    .await;
    let ids = bank_item_ids(&a, &bank).await;
    let twins: HashSet<&String> = ids[40..43].iter().collect();
    let pretest: HashSet<&String> = ids[40..].iter().collect();
    let design = json!({"maxItems": 12, "seTarget": 0.42,
                        "estimator": {"method": "MAP", "priorSd": 1.5}});
    let mut seeded_design = design.clone();
    seeded_design["pretest"] = json!({"itemsPerExam": 3, "firstPosition": 3, "lastPosition": 10});
    let plain = create_assessment(&a, &bank, design, json!({"maxAttemptsPerStudent": null})).await;
    let seeded = create_assessment(
        &a,
        &bank,
        seeded_design,
        json!({"maxAttemptsPerStudent": null}),
    )
    .await;
    let mut stops = HashSet::new();
    for (s, ability) in [-1.5, 0.0, 0.8, 2.5].into_iter().enumerate() {
        // Right when the item is easier than the student (pretest items: by id parity).
        let correct = |item: &str| match ids.iter().position(|i| i == item) {
            Some(i) if i < 40 => params[i].1 < ability + 0.4 * ((i % 3) as f64 - 1.0),
            _ => item.len() % 2 == 0,
        };
        let token = a.student(&format!("student-{s}"));
        let (start, without, stop, _) = take_exam(&[&a], &token, &plain, correct, false).await;
        let (seeded_start, with, seeded_stop, exam) =
            take_exam(&[&b, &a], &token, &seeded, correct, true).await;
        assert_eq!(start, seeded_start);
        assert_eq!(stop, seeded_stop, "student {s}");
        stops.insert(stop.to_string());
        let positions: Vec<i64> = with.iter().map(|x| x.position).collect();
        assert_eq!(positions, (1..=with.len() as i64).collect::<Vec<_>>());
        let operational: Vec<Seen> = with
            .iter()
            .filter(|x| !pretest.contains(&x.item))
            .cloned()
            .collect();
        let renumbered: Vec<Seen> = operational
            .iter()
            .zip(&without)
            .map(|(x, w)| Seen {
                position: w.position,
                ..x.clone()
            })
            .collect();
        assert_eq!(
            renumbered, without,
            "student {s}: the operational exam is unchanged"
        );
        let seeded_items: Vec<&Seen> = with.iter().filter(|x| pretest.contains(&x.item)).collect();
        assert!(!seeded_items.is_empty(), "student {s} got pretest items");
        assert!(seeded_items.len() <= 3);
        assert!(
            seeded_items
                .iter()
                .filter(|x| twins.contains(&x.item))
                .count()
                <= 1,
            "never two enemies: {seeded_items:?}"
        );
        for x in &seeded_items {
            assert!((3..=10).contains(&x.position), "{x:?}");
            let before = match x.position {
                1 => start,
                p => {
                    let prev = &with[p as usize - 2];
                    (prev.theta, prev.standard_error)
                }
            };
            assert_eq!((x.theta, x.standard_error), before, "student {s}: {x:?}");
        }
        if without.len() == 12 {
            assert_eq!(
                seeded_items.len(),
                3,
                "a full-length exam presents all three"
            );
        }
        // Staff see which answers were pretest; the student does not.
        let attempts = "query($id: ID!) { examSession(id: $id) { attempts { itemId pretest } } }";
        let flags = |response: Value| -> Vec<Value> {
            response["examSession"]["attempts"]
                .as_array()
                .expect("attempts")
                .iter()
                .map(|x| x["pretest"].clone())
                .collect()
        };
        let staff = flags(
            a.ok(&a.proctor("room-1"), attempts, json!({"id": exam}))
                .await,
        );
        let expected: Vec<Value> = with
            .iter()
            .map(|x| json!(pretest.contains(&x.item)))
            .collect();
        assert_eq!(staff, expected);
        let own = flags(a.ok(&token, attempts, json!({"id": exam})).await);
        assert!(own.iter().all(Value::is_null), "{own:?}");
    }
    assert!(
        stops.len() > 1,
        "both stopping rules were exercised: {stops:?}"
    );
}

/// Promise: an exam never holds two enemies, pretest or not: the operational item that
/// shares a seeded pretest item's enemy group is left out of that exam (which then runs out
/// of items one early), while an exam without seeding gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_pretest_item_keeps_its_operational_enemy_out_of_the_exam() {
    let app = TestApp::spawn().await;
    let bank = app.create_bank(&bank_params(6)).await;
    let mut enemy = item("op-g", Some(0.2), "OPERATIONAL");
    enemy["enemyGroup"] = json!("g");
    let mut pretest = item("pre-g", None, "PRETEST");
    pretest["enemyGroup"] = json!("g");
    app.ok(
        &app.admin(),
        ADD_ITEMS,
        json!({"b": bank, "items": [enemy, pretest]}),
    )
    .await;
    let ids = bank_item_ids(&app, &bank).await;
    let (op_g, pre_g) = (ids[6].clone(), ids[7].clone());
    let design = json!({"maxItems": 7});
    let mut seeded_design = design.clone();
    seeded_design["pretest"] = json!({"itemsPerExam": 1, "lastPosition": 6});
    let unlimited = json!({"maxAttemptsPerStudent": null});
    let plain = create_assessment(&app, &bank, design, unlimited.clone()).await;
    let seeded = create_assessment(&app, &bank, seeded_design, unlimited).await;
    let token = app.student("erin");
    let (_, without, stop, _) = take_exam(&[&app], &token, &plain, |_| true, false).await;
    let items: Vec<&String> = without.iter().map(|x| &x.item).collect();
    assert_eq!(stop, "MAX_ITEMS");
    assert!(
        items.contains(&&op_g) && !items.contains(&&pre_g),
        "{items:?}"
    );
    let (_, with, stop, _) = take_exam(&[&app], &token, &seeded, |_| true, false).await;
    let items: Vec<&String> = with.iter().map(|x| &x.item).collect();
    assert_eq!(stop, "BANK_EXHAUSTED");
    assert_eq!(items.len(), 7, "six operational items and the pretest one");
    assert!(
        items.contains(&&pre_g) && !items.contains(&&op_g),
        "{items:?}"
    );
}
