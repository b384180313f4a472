//! The stopping rule and the normal quantile it uses.

use adaptive_engine::irt::{IrtError, StopInputs, StopReason, StoppingRule, normal_quantile};

fn inputs(
    items_completed: usize,
    theta: f64,
    standard_error: f64,
    items_left: usize,
) -> StopInputs {
    StopInputs {
        items_completed,
        theta,
        standard_error,
        items_left,
        max_information_left: 1.0,
        elapsed_seconds: 0.0,
    }
}

#[test]
fn normal_quantile_matches_r_qnorm() {
    // R 4.x: qnorm(p), printed with 17 significant digits.
    let cases = [
        (0.5, 0.0),
        (0.75, 0.674_489_750_196_081_7),
        (0.9, 1.281_551_565_544_600_4),
        (0.95, 1.644_853_626_951_472_2),
        (0.975, 1.959_963_984_540_054),
        (0.995, 2.575_829_303_548_900_4),
        (0.999, 3.090_232_306_167_813_5),
        (0.025, -1.959_963_984_540_054),
        (1e-10, -6.361_340_902_404_056),
        (1e-20, -9.262_340_089_798_408),
    ];
    for (p, expected) in cases {
        let z = normal_quantile(p);
        assert!(
            (z - expected).abs() <= 4.0 * f64::EPSILON * expected.abs().max(1.0),
            "qnorm({p}) = {z}, expected {expected}"
        );
    }
    // Symmetry, monotonicity and the ends.
    let mut previous = f64::NEG_INFINITY;
    for k in 1..2_000 {
        let p = f64::from(k) / 2_000.0;
        let z = normal_quantile(p);
        assert!(z > previous);
        assert!((z + normal_quantile(1.0 - p)).abs() < 1e-12);
        previous = z;
    }
    assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
    assert_eq!(normal_quantile(1.0), f64::INFINITY);
    assert!(normal_quantile(-0.1).is_nan());
    assert!(normal_quantile(1.5).is_nan());
    assert!(normal_quantile(f64::NAN).is_nan());
}

#[test]
fn stopping_rule_table() {
    let rule = StoppingRule {
        max_items: 20,
        min_items: 5,
        se_target: Some(0.3),
        ..StoppingRule::default()
    };
    let cases = [
        // (completed, se, left, expected)
        (0, f64::INFINITY, 100, None),
        (4, 0.2, 100, None), // precise enough but below min_items
        (5, 0.2, 100, Some(StopReason::SeTarget)),
        (5, 0.3, 100, Some(StopReason::SeTarget)), // boundary: se == target
        (5, 0.31, 100, None),
        (19, 0.5, 100, None),
        (20, 0.5, 100, Some(StopReason::MaxItems)),
        (20, 0.1, 0, Some(StopReason::MaxItems)), // max_items reported first
        (10, 0.1, 0, Some(StopReason::SeTarget)), // then the precision
        (10, 0.5, 0, Some(StopReason::BankExhausted)),
        (3, 0.1, 0, Some(StopReason::BankExhausted)), // not gated by min_items
        (10, f64::NAN, 50, None),
    ];
    for (completed, se, left, expected) in cases {
        assert_eq!(
            rule.check(&inputs(completed, 0.0, se, left)),
            expected,
            "{completed} items, se {se}, {left} left"
        );
    }
}

#[test]
fn classification_stops_when_the_interval_excludes_the_cut_score() {
    let z95 = 1.959_963_984_540_054;
    let z90: f64 = 1.644_853_626_951_472_2;
    let rule = StoppingRule {
        max_items: 40,
        min_items: 3,
        cut_score: Some(0.0),
        ..StoppingRule::default()
    };
    assert_eq!(rule.confidence_level, 0.95);
    let at = |r: &StoppingRule, n: usize, theta: f64, se: f64| r.check(&inputs(n, theta, se, 100));
    // 0.5 − 1.96·0.25 = 0.0100 > 0: above the cut with 95 % confidence.
    assert_eq!(at(&rule, 10, 0.5, 0.25), Some(StopReason::Classification));
    // 0.5 − 1.96·0.26 = −0.0096: the interval still contains the cut.
    assert_eq!(at(&rule, 10, 0.5, 0.26), None);
    // Symmetric below the cut.
    assert_eq!(at(&rule, 10, -0.5, 0.25), Some(StopReason::Classification));
    assert_eq!(at(&rule, 10, -0.5, 0.26), None);
    // At 90 %: 0.5 − 1.645·0.3 = 0.0065 > 0, but not at 95 %.
    let ninety = StoppingRule {
        confidence_level: 0.90,
        ..rule
    };
    assert_eq!(at(&ninety, 10, 0.5, 0.3), Some(StopReason::Classification));
    assert_eq!(at(&rule, 10, 0.5, 0.3), None);
    // catR's `>=`: an interval ending exactly on the cut stops.
    let edge = StoppingRule {
        cut_score: Some(1.0 - z95 * 0.25),
        ..rule
    };
    assert_eq!(at(&edge, 10, 1.0, 0.25), Some(StopReason::Classification));
    assert!((0.5 - z90 * 0.3 - 0.006_543_912).abs() < 1e-8);
    // Gated by min_items; NaN never classifies.
    assert_eq!(at(&rule, 2, 3.0, 0.1), None);
    assert_eq!(at(&rule, 10, f64::NAN, 0.1), None);
    assert_eq!(at(&rule, 10, 3.0, f64::NAN), None);
    // The precision rule is checked first.
    let both = StoppingRule {
        se_target: Some(0.3),
        ..rule
    };
    assert_eq!(at(&both, 10, 0.5, 0.25), Some(StopReason::SeTarget));
}

#[test]
fn minimum_information_and_duration() {
    let rule = StoppingRule {
        max_items: 30,
        min_items: 5,
        min_information: Some(0.2),
        max_duration_seconds: Some(600.0),
        ..StoppingRule::default()
    };
    let with = |n: usize, info: f64, left: usize, elapsed: f64| {
        rule.check(&StopInputs {
            items_completed: n,
            theta: 0.0,
            standard_error: 0.4,
            items_left: left,
            max_information_left: info,
            elapsed_seconds: elapsed,
        })
    };
    assert_eq!(with(10, 0.5, 10, 0.0), None);
    assert_eq!(with(10, 0.2, 10, 0.0), Some(StopReason::MinInformation)); // catR's <=
    assert_eq!(with(4, 0.1, 10, 0.0), None); // gated by min_items
    assert_eq!(with(10, 0.0, 0, 0.0), Some(StopReason::BankExhausted)); // nothing left
    assert_eq!(with(10, f64::NAN, 10, 0.0), None);
    assert_eq!(with(2, 0.5, 10, 599.9), None);
    assert_eq!(with(2, 0.5, 10, 600.0), Some(StopReason::MaxDuration)); // not gated
    assert_eq!(with(30, 0.5, 10, 900.0), Some(StopReason::MaxItems)); // reported first
    assert_eq!(with(10, 0.1, 0, 900.0), Some(StopReason::MaxDuration)); // before exhaustion
}

#[test]
fn stopping_rule_validation() {
    let ok = StoppingRule {
        max_items: 30,
        min_items: 10,
        se_target: Some(0.25),
        cut_score: Some(-0.3),
        confidence_level: 0.9,
        min_information: Some(0.0),
        max_duration_seconds: Some(1_800.0),
    };
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(StoppingRule::default().validate(), Ok(()));
    for bad in [
        StoppingRule { max_items: 0, ..ok },
        StoppingRule {
            min_items: 31,
            ..ok
        },
        StoppingRule {
            se_target: Some(0.0),
            ..ok
        },
        StoppingRule {
            se_target: Some(f64::NAN),
            ..ok
        },
        StoppingRule {
            cut_score: Some(f64::INFINITY),
            ..ok
        },
        StoppingRule {
            confidence_level: 1.0,
            ..ok
        },
        StoppingRule {
            confidence_level: 0.0,
            ..ok
        },
        StoppingRule {
            confidence_level: f64::NAN,
            ..ok
        },
        StoppingRule {
            min_information: Some(-1.0),
            ..ok
        },
        StoppingRule {
            max_duration_seconds: Some(0.0),
            ..ok
        },
        StoppingRule {
            max_duration_seconds: Some(f64::INFINITY),
            ..ok
        },
    ] {
        assert!(
            matches!(bad.validate(), Err(IrtError::StoppingRule(_))),
            "{bad:?}"
        );
    }
    // The confidence level only matters with a cut score.
    let no_cut = StoppingRule {
        cut_score: None,
        confidence_level: 2.0,
        ..ok
    };
    assert_eq!(no_cut.validate(), Ok(()));
}

#[test]
fn stopping_rule_serde_keeps_old_json_working() {
    let old: StoppingRule =
        serde_json::from_str(r#"{"max_items":20,"min_items":5,"se_target":0.3}"#)
            .expect("old JSON");
    assert_eq!(
        old,
        StoppingRule {
            max_items: 20,
            min_items: 5,
            se_target: Some(0.3),
            ..StoppingRule::default()
        }
    );
    assert_eq!(old.confidence_level, 0.95);
    let full = StoppingRule {
        cut_score: Some(0.5),
        confidence_level: 0.99,
        min_information: Some(0.1),
        max_duration_seconds: Some(60.0),
        ..old
    };
    let json = serde_json::to_string(&full).expect("serializes");
    assert_eq!(
        serde_json::from_str::<StoppingRule>(&json).expect("round trip"),
        full
    );
    for (reason, text) in [
        (StopReason::Classification, r#""Classification""#),
        (StopReason::MinInformation, r#""MinInformation""#),
        (StopReason::MaxDuration, r#""MaxDuration""#),
    ] {
        assert_eq!(serde_json::to_string(&reason).expect("serializes"), text);
    }
}
