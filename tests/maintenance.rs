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
