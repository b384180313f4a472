//! adaptive-engine: computerized adaptive testing as a service.
//!
//! A student takes an adaptive exam: after every answer the engine re-estimates their
//! ability (theta) with item response theory and presents the most informative item left,
//! until a length or precision target is met. Postgres is the source of truth; Redis holds
//! each live exam's engine state so that any instance behind a load balancer can serve any
//! request, and carries theta updates between instances.
//!
//! # Layout
//! Dependencies point down the list; `irt` imports nothing of the crate.
//! - [`main`](../adaptive_engine/index.html) (`src/main.rs`): the CLI; parses arguments and calls in here.
//! - [`app`]: start-up: configuration → pools, migrations, schema.
//! - [`server`]: routes and middleware (GraphQL over HTTP and WebSocket, GraphiQL, health).
//! - [`graphql`]: the schema; thin resolvers over [`exam`]; error codes at the boundary.
//! - [`exam`]: the exam flow (create banks and assessments, start, answer, summarize,
//!   recover).
//! - [`design`]: the one vocabulary of an exam design (`ExamDesignInput`), shared by the
//!   API, the stored assessments and `simulate`, and its validation into the engine's.
//! - [`storage`]: Postgres queries, the in-memory bank and session caches, the Redis state
//!   store and event bus.
//! - [`simulate`]: `adaptive-engine simulate`, design studies that run simulated examinees
//!   through [`engine::decide`] in-process (bank file and design read as the API reads them).
//! - [`engine`]: one exam's design and state, and the single step function.
//! - [`irt`]: pure psychometrics: models, estimators, item selection, stopping rules.
//! - [`auth`], [`config`], [`error`], [`bank_file`]: tokens, environment, error policy,
//!   bank file parsing.

pub mod app;
pub mod auth;
pub mod bank_file;
pub mod config;
pub mod design;
pub mod engine;
pub mod error;
pub mod exam;
pub mod graphql;
pub mod irt;
pub mod server;
pub mod simulate;
pub mod storage;
