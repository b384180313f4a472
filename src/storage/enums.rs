//! The enums Postgres stores as text: one Rust type each, with an exhaustive mapping to
//! its spelling (the `CHECK` constraints of the migrations list the same spellings), so a
//! row with an unknown value fails loudly instead of being read as a default, and a new
//! variant does not compile until it has a spelling.
//!
//! Owns the stored spellings; must not know what the values mean to the exam flow.

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Text;
use std::io::Write as _;

use crate::irt;

/// Declares a text-stored enum: the type, its spellings, and its diesel conversions.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
            serde::Serialize, serde::Deserialize,
        )]
        #[diesel(sql_type = Text)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stored spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The value of a stored spelling.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                out.write_all(self.as_str().as_bytes())?;
                Ok(IsNull::No)
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                let raw = std::str::from_utf8(bytes.as_bytes())?;
                Self::parse(raw).ok_or_else(|| {
                    format!(concat!("unknown ", stringify!($name), " {:?} in the database"), raw).into()
                })
            }
        }
    };
}

text_enum! {
    /// Status of an exam session.
    ExamStatus {
        /// Taking answers.
        Active = "ACTIVE",
        /// Finished by its stopping rule.
        Completed = "COMPLETED",
        /// Given up (set by operators; no answer is taken).
        Abandoned = "ABANDONED",
    }
}

text_enum! {
    /// The response model of an item.
    #[derive(Default)]
    ItemModel {
        /// 4PL right/wrong.
        #[default]
        Dichotomous = "DICHOTOMOUS",
        /// Graded response model.
        Grm = "GRM",
        /// Generalized partial credit model.
        Gpcm = "GPCM",
    }
}

text_enum! {
    /// Whether an item counts: operational items are selected and scored; pretest items
    /// are only seeded into exams, unscored, until they are calibrated and promoted.
    #[derive(Default)]
    ItemStatus {
        /// Selected by the engine and scored.
        #[default]
        Operational = "OPERATIONAL",
        /// Never selected by the engine nor scored.
        Pretest = "PRETEST",
    }
}

text_enum! {
    /// Where a calibration run is.
    CalibrationStatus {
        /// Reading answers and estimating.
        Running = "RUNNING",
        /// Estimates stored.
        Done = "DONE",
        /// Stopped by an error (stored with the run).
        Failed = "FAILED",
    }
}

text_enum! {
    /// What a student sees of their own estimates (staff always see them).
    #[derive(Default)]
    Feedback {
        /// Theta and SE after every answer.
        #[default]
        Estimates = "ESTIMATES",
        /// Theta and SE only once the exam has completed.
        Final = "FINAL",
        /// Never theta or SE.
        None = "NONE",
    }
}

text_enum! {
    /// Whether an assessment takes new exams.
    AssessmentStatus {
        /// New exams start (inside the window).
        Open = "OPEN",
        /// No new exam starts; running ones go on.
        Archived = "ARCHIVED",
    }
}

text_enum! {
    /// Why an exam stopped, as stored (`irt::StopReason`, spelled).
    StopCode {
        /// `maxItems` answers were given.
        MaxItems = "MAX_ITEMS",
        /// The standard error reached `seTarget`.
        SeTarget = "SE_TARGET",
        /// The confidence interval excludes the cut score.
        Classification = "CLASSIFICATION",
        /// No eligible item has `minInformation`.
        MinInformation = "MIN_INFORMATION",
        /// `maxDurationSeconds` passed.
        MaxDuration = "MAX_DURATION",
        /// No eligible item was left.
        BankExhausted = "BANK_EXHAUSTED",
    }
}

impl From<irt::StopReason> for StopCode {
    fn from(reason: irt::StopReason) -> Self {
        match reason {
            irt::StopReason::MaxItems => Self::MaxItems,
            irt::StopReason::SeTarget => Self::SeTarget,
            irt::StopReason::Classification => Self::Classification,
            irt::StopReason::MinInformation => Self::MinInformation,
            irt::StopReason::MaxDuration => Self::MaxDuration,
            irt::StopReason::BankExhausted => Self::BankExhausted,
        }
    }
}

impl From<StopCode> for irt::StopReason {
    fn from(code: StopCode) -> Self {
        match code {
            StopCode::MaxItems => Self::MaxItems,
            StopCode::SeTarget => Self::SeTarget,
            StopCode::Classification => Self::Classification,
            StopCode::MinInformation => Self::MinInformation,
            StopCode::MaxDuration => Self::MaxDuration,
            StopCode::BankExhausted => Self::BankExhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings the migrations' CHECK constraints allow, and the serde names the JSON
    /// stored designs use, are exactly these.
    #[test]
    fn every_value_round_trips_through_its_spelling() {
        fn check<T: Copy + PartialEq + std::fmt::Debug + serde::Serialize>(
            all: &[T],
            as_str: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            for &value in all {
                assert_eq!(parse(as_str(value)), Some(value));
                assert_eq!(
                    serde_json::to_value(value).unwrap(),
                    serde_json::Value::String(as_str(value).into())
                );
            }
            assert_eq!(parse("unknown"), None);
        }
        check(ExamStatus::ALL, ExamStatus::as_str, ExamStatus::parse);
        check(ItemModel::ALL, ItemModel::as_str, ItemModel::parse);
        check(Feedback::ALL, Feedback::as_str, Feedback::parse);
        check(
            AssessmentStatus::ALL,
            AssessmentStatus::as_str,
            AssessmentStatus::parse,
        );
        check(StopCode::ALL, StopCode::as_str, StopCode::parse);
        check(ItemStatus::ALL, ItemStatus::as_str, ItemStatus::parse);
        check(
            CalibrationStatus::ALL,
            CalibrationStatus::as_str,
            CalibrationStatus::parse,
        );
        let migrations = concat!(
            include_str!("../../migrations/2026-11-26-000001_initial/up.sql"),
            include_str!("../../migrations/2026-11-26-000002_engine_options/up.sql"),
            include_str!("../../migrations/2026-12-05-000001_assessments/up.sql"),
            include_str!("../../migrations/2026-12-05-000002_bank_maintenance/up.sql"),
        );
        for spelling in ExamStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .chain(ItemModel::ALL.iter().map(|m| m.as_str()))
            .chain(Feedback::ALL.iter().map(|f| f.as_str()))
            .chain(AssessmentStatus::ALL.iter().map(|s| s.as_str()))
            .chain(ItemStatus::ALL.iter().map(|s| s.as_str()))
            .chain(CalibrationStatus::ALL.iter().map(|s| s.as_str()))
        {
            assert!(
                migrations.contains(&format!("'{spelling}'")),
                "{spelling} is not allowed by the migrations"
            );
        }
    }
}
