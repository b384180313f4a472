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
//! - [`server`]: routes and middleware (GraphQL over HTTP and WebSocket, GraphiQL, health,
//!   metrics), request ids and the per-request span.
//! - [`web`]: the browser pages the binary serves (GraphiQL, the `/monitor` live page) and
//!   their embedded assets; no external URL.
//! - [`graphql`]: the schema; thin resolvers over [`exam`]; error codes at the boundary.
//! - [`exam`]: the exam flow, one file per responsibility: `bank` (validate and create
//!   banks), `assessment` (assessments and starting an exam), `step` (an engine step with
//!   exposure reservation, heavy designs off the async workers), `answer` (the answer
//!   paths), `state` (engine states: cache, rebuild), `view` (read paths and view types),
//!   `results` (listings and attempts), `admin` (operator actions).
//! - [`export`]: `adaptive-engine export`, an assessment's answers as CSV, JSON Lines or a
//!   response matrix for calibration tools (rows from `storage::export_rows`).
//! - [`design`]: the one vocabulary of an exam design (`ExamDesignInput`), shared by the
//!   API, the stored assessments and `simulate`, and its validation into the engine's.
//! - [`storage`]: Postgres rows (`rows`) and queries, the text-stored enums (`enums`), the in-memory bank
//!   and session caches, every Redis key name (`keys`), the Redis state store, exposure
//!   counts and event bus.
//! - [`simulate`]: `adaptive-engine simulate`, design studies that run simulated examinees
//!   through [`engine::decide`] in-process (bank file and design read as the API reads them).
//! - [`engine`]: one exam's design and state, and the single step function.
//! - [`irt`]: pure psychometrics: models, the quadrature grid shared by estimation and
//!   selection, estimators, item selection, stopping rules.
//! - [`auth`], [`config`], [`error`], [`bank_file`], [`ids`], [`metrics`]: tokens,
//!   environment, error policy, bank file parsing, typed ids, and every metric name (one
//!   Prometheus registry per instance).

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod bank_file;
pub mod config;
pub mod design;
pub mod engine;
pub mod error;
pub mod exam;
pub mod export;
pub mod graphql;
pub mod ids;
pub mod irt;
pub mod metrics;
pub mod server;
pub mod simulate;
pub mod storage;
pub mod web;
