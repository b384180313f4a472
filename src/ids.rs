//! Typed ids: an exam id cannot be passed where an item id is expected. Each wraps the
//! `BIGSERIAL` of its table; the GraphQL boundary parses `ID`s into them and the exam flow
//! takes them in every public function.
//!
//! Owns the id types; must not know where ids come from.

/// Declares an id type over `i64`.
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl From<i64> for $name {
            fn from(id: i64) -> Self {
                Self(id)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type! {
    /// An exam session (`exam_sessions.id`).
    ExamId
}
id_type! {
    /// An item (`items.id`).
    ItemId
}
id_type! {
    /// An item bank (`item_banks.id`).
    BankId
}
id_type! {
    /// An assessment (`assessments.id`).
    AssessmentId
}
