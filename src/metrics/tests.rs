//! Unit tests of the metrics registry.

use super::*;
use crate::error::AppError;
use crate::storage::enums::ExamStatus;

/// Every code an `AppError` can carry is a known outcome, not `OTHER`.
#[test]
fn every_error_code_is_an_outcome_of_its_own() {
    let errors = [
        AppError::Unauthenticated(String::new()),
        AppError::Forbidden(String::new()),
        AppError::NotFound(String::new()),
        AppError::BadUserInput(String::new()),
        AppError::ItemNotPresented,
        AppError::AlreadyAnswered,
        AppError::ExamNotActive(ExamStatus::Completed),
        AppError::AssessmentClosed(String::new()),
        AppError::AttemptLimitReached(String::new()),
        AppError::NoItemAvailable(String::new()),
        AppError::Unavailable(String::new()),
        AppError::Internal,
    ];
    for error in errors {
        assert_eq!(OUTCOMES[outcome_index(error.code())], error.code());
    }
    assert_eq!(OUTCOMES[outcome_index("SOMETHING_ELSE")], "OTHER");
}

/// Counts go to the instance that counted them, and render with their labels.
#[test]
fn two_instances_count_apart() {
    let (a, b) = (Metrics::new(), Metrics::new());
    a.operation("submitAnswer")
        .observe(None, Duration::from_millis(3));
    a.operation("submitAnswer").count(Some("BAD_USER_INPUT"));
    a.exam_completed(Some("MAX_ITEMS"));
    let text = a.render();
    assert!(text.contains(
        "adaptive_engine_graphql_requests_total{operation=\"submitAnswer\",outcome=\"ok\"} 1\n"
    ));
    assert!(text.contains(
        "adaptive_engine_graphql_requests_total{operation=\"submitAnswer\",outcome=\"BAD_USER_INPUT\"} 1\n"
    ));
    assert!(text.contains("adaptive_engine_exams_completed_total{reason=\"MAX_ITEMS\"} 1\n"));
    assert!(text.contains(
        "adaptive_engine_graphql_request_duration_seconds_count{operation=\"submitAnswer\"} 1\n"
    ));
    let other = b.render();
    assert!(other.contains(
        "adaptive_engine_graphql_requests_total{operation=\"submitAnswer\",outcome=\"ok\"} 0\n"
    ));
    assert!(other.contains("adaptive_engine_exams_completed_total{reason=\"MAX_ITEMS\"} 0\n"));
}
