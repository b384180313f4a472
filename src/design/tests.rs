//! Unit tests of the design vocabulary and its cost model.

use super::*;
use crate::irt::ItemParams;

/// An engine design of `rule` at `points` quadrature points, 20 items.
fn engine_design(rule: SelectionRule, points: usize) -> ExamDesign {
    ExamDesign {
        stopping: StoppingRule {
            max_items: 20,
            ..StoppingRule::default()
        },
        initial_theta: 0.0,
        randomesque: 1,
        estimator: irt::EstimatorSettings {
            quadrature_points: points,
            ..irt::EstimatorSettings::default()
        },
        selection_rule: rule.into(),
        exposure: None,
        content_balance: None,
        start_item_ids: Vec::new(),
        ineligible_item_ids: Vec::new(),
        pretest: Vec::new(),
        seed: 1,
    }
}

#[test]
fn grid_rules_cost_an_eighth_when_their_tables_fit_and_the_plain_scan_otherwise() {
    let params = vec![ItemParams::three_pl(1.2, 0.3, 0.2); 5_000];
    let mut bank = EngineBank::from_params(1.0, &params);
    let klp = engine_design(SelectionRule::Klp, 1001);
    // 5,000 x 1,001: 126 units per item with tables (80 MB), 1,001 without.
    assert_eq!(design_cost(&klp, &bank), 5_000 * 126 + 20 * 1001);
    bank.set_fast_selection(false);
    assert_eq!(design_cost(&klp, &bank), 5_000 * 1001 + 20 * 1001);
    assert!(design_cost(&klp, &bank) > MAX_DESIGN_COST);
    // Rules without tables are unchanged.
    let mfi = engine_design(SelectionRule::MaxInfo, 1001);
    assert_eq!(design_cost(&mfi, &bank), 5_000 + 20 * 1001);
}

#[test]
fn designs_too_costly_even_with_tables_are_over_the_limit() {
    // 40,000 items at 1,001 points: the tables fit (640 MB) but cost 5.04 M units.
    let params = vec![ItemParams::two_pl(1.0, 0.0); 40_000];
    let bank = EngineBank::from_params(1.0, &params);
    let klp = engine_design(SelectionRule::Klp, 1001);
    assert!(bank.selection_tables_fit(&klp.estimator, klp.selection_rule));
    assert!(design_cost(&klp, &bank) > MAX_DESIGN_COST);
    // 100,000 items: the tables (1.6 GB) exceed the budget, so the plain cost counts.
    let params = vec![ItemParams::two_pl(1.0, 0.0); 100_000];
    let bank = EngineBank::from_params(1.0, &params);
    assert!(!bank.selection_tables_fit(&klp.estimator, klp.selection_rule));
    assert_eq!(design_cost(&klp, &bank), 100_000 * 1001 + 20 * 1001);
}

#[test]
fn a_design_with_defaults_reads_back_as_itself_and_spells_enums_as_the_schema() {
    let design = ExamDesignInput::from_json(
        r#"{"maxItems": 5, "selectionRule": "KLP", "estimator": {"method": "MAP"},
            "exposure": {"maxRate": 0.3}}"#,
    )
    .unwrap()
    .with_defaults();
    let json = serde_json::to_value(&design).unwrap();
    assert_eq!(json["selectionRule"], "KLP");
    assert_eq!(json["estimator"]["method"], "MAP");
    assert_eq!(json["estimator"]["quadraturePoints"], 33);
    assert_eq!(json["exposure"]["method"], "ITEM_ELIGIBILITY");
    assert_eq!(json["minItems"], 1);
    let back: ExamDesignInput = serde_json::from_value(json).unwrap();
    assert_eq!(back, design);
}

#[test]
fn unknown_design_fields_are_refused_by_name() {
    let err = ExamDesignInput::from_json(r#"{"itemBankId": "1"}"#).unwrap_err();
    assert!(err.to_string().contains("itemBankId"), "{err}");
}

#[test]
fn pretest_settings_are_checked_and_default_to_every_position_after_the_first() {
    let input = |per, first, last| PretestInput {
        items_per_exam: per,
        first_position: first,
        last_position: last,
    };
    // maxItems 10, 3 per exam: positions 2..=12 (an exam ends on an operational item).
    assert_eq!(
        input(3, None, None).checked(10).expect("defaults"),
        PretestPlanRange {
            per_exam: 3,
            first: 2,
            last: 12
        }
    );
    assert_eq!(
        input(2, Some(5), Some(6)).checked(10).expect("tight").last,
        6
    );
    for (bad, why) in [
        (input(0, None, None), "itemsPerExam"),
        (input(51, None, None), "itemsPerExam"),
        (input(1, Some(1), None), "firstPosition"),
        (input(3, None, Some(13)), "lastPosition"),
        (input(3, Some(5), Some(6)), "itemsPerExam positions"),
    ] {
        let error = bad.checked(10).expect_err(why).to_string();
        assert!(error.contains(why), "{error}");
    }
    let design = ExamDesignInput {
        max_items: Some(10),
        pretest: Some(input(3, None, None)),
        ..ExamDesignInput::default()
    };
    let shown = design.with_defaults().pretest.expect("kept");
    assert_eq!(shown, input(3, Some(2), Some(12)));
}
