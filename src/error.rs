//! The error policy, in four lines:
//! - Every failure a client can see is an [`AppError`], whose `code` goes to
//!   `extensions.code` and whose message is meant for the client.
//! - Internal failures (SQL, diesel, Redis, serde) are logged once, where they are turned
//!   into an `AppError`, and reach the client as "internal error" with no details.
//! - Postgres being unreachable is `UNAVAILABLE`, so clients know to retry.
//! - Convert with `.extend()` at the GraphQL boundary: a bare `?` drops the code.

use async_graphql::ErrorExtensions;

/// An error as clients see it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppError {
    /// No valid token was presented.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (not the owner, or not an admin).
    #[error("{0}")]
    Forbidden(String),
    /// The named thing does not exist (or the caller may not know it exists).
    #[error("{0}")]
    NotFound(String),
    /// The input is invalid; nothing was changed.
    #[error("{0}")]
    BadUserInput(String),
    /// The answer is for an item that is not the one presented.
    #[error("this item is not the one presented in this exam")]
    ItemNotPresented,
    /// The item was already answered with a different response.
    #[error("this item was already answered with a different response")]
    AlreadyAnswered,
    /// The exam no longer takes answers.
    #[error("the exam is {}, not ACTIVE", .0.as_str())]
    ExamNotActive(crate::storage::enums::ExamStatus),
    /// The assessment takes no new exams (archived, or outside its window).
    #[error("{0}")]
    AssessmentClosed(String),
    /// The student has started as many exams of the assessment as it allows.
    #[error("{0}")]
    AttemptLimitReached(String),
    /// No item can be presented to start the exam (exhausted bank or exposure limits).
    #[error("{0}")]
    NoItemAvailable(String),
    /// A dependency (Postgres) cannot be reached now; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed inside the service; the details are in the log.
    #[error("internal error")]
    Internal,
}

impl AppError {
    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::BadUserInput(_) => "BAD_USER_INPUT",
            Self::ItemNotPresented => "ITEM_NOT_PRESENTED",
            Self::AlreadyAnswered => "ALREADY_ANSWERED",
            Self::ExamNotActive(_) => "EXAM_NOT_ACTIVE",
            Self::AssessmentClosed(_) => "ASSESSMENT_CLOSED",
            Self::AttemptLimitReached(_) => "ATTEMPT_LIMIT_REACHED",
            Self::NoItemAvailable(_) => "NO_ITEM_AVAILABLE",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    /// A `BAD_USER_INPUT` error.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadUserInput(message.into())
    }

    /// Logs an internal failure with its context and hides it from the client.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "{context}");
        Self::Internal
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match &error {
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )
            | Error::BrokenTransactionManager => {
                tracing::warn!(error = %error, "postgres connection lost");
                Self::Unavailable("the database is unavailable; retry shortly".into())
            }
            Error::DatabaseError(DatabaseErrorKind::Unknown, info)
                if is_connection_message(info.message()) =>
            {
                tracing::warn!(error = %error, "postgres connection lost");
                Self::Unavailable("the database is unavailable; retry shortly".into())
            }
            _ => Self::internal("database error", &error),
        }
    }
}

fn is_connection_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "connection",
        "terminating",
        "shutting down",
        "closed",
        "broken pipe",
        "timed out",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for AppError {
    fn from(error: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        tracing::warn!(error = %error, "no postgres connection");
        Self::Unavailable("the database is unavailable; retry shortly".into())
    }
}

impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.to_string()).extend_with(|_, e| e.set("code", self.code()))
    }
}

/// Result of the exam flow and the resolvers.
pub type AppResult<T> = Result<T, AppError>;
