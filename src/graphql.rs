//! The GraphQL API: schema assembly, and the boundary where [`AppError`]s become GraphQL
//! errors with `extensions.code`. Resolvers are thin: they parse ids, ask the request's
//! [`Auth`] for a caller, call [`ExamService`], and convert the result. Every request is
//! counted in the service's metrics ([`instrument`]).

mod calibration;
pub mod cost;
pub mod instrument;
mod mutation;
mod query;
mod results;
mod subscription;
pub mod types;

use async_graphql::extensions::apollo_persisted_queries::{
    ApolloPersistedQueries, LruCacheStorage,
};
use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, ID, MergedObject, Schema};

use crate::auth::{Auth, Caller};
use crate::error::{AppError, AppResult};
use crate::exam::ExamService;

pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::SubscriptionRoot;

/// The assembled schema.
pub type AppSchema = Schema<Query, Mutation, SubscriptionRoot>;

/// Every query, merged from the domain roots.
#[derive(MergedObject, Default)]
pub struct Query(QueryRoot, calibration::CalibrationQuery);

/// Every mutation, merged from the domain roots.
#[derive(MergedObject, Default)]
pub struct Mutation(MutationRoot, calibration::CalibrationMutation);

/// Automatic persisted queries kept per instance (least recently used out first).
pub const MAX_PERSISTED_QUERIES: usize = 512;

/// Limits applied to every operation.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Deepest selection allowed (GraphiQL's introspection query needs about 13).
    pub depth: usize,
    /// Largest complexity (one per field, list fields count their children once).
    pub complexity: usize,
    /// Most fields one operation may resolve after fragment expansion, `__typename`
    /// included (see [`cost`]); complexity counts neither repeated spreads nor `__typename`.
    pub max_fields: usize,
    /// Whether introspection is enabled.
    pub introspection: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            depth: 16,
            complexity: 1_000,
            max_fields: cost::DEFAULT_MAX_FIELDS,
            introspection: true,
        }
    }
}

/// Builds the schema around the exam service.
pub fn build_schema(service: Option<ExamService>, limits: Limits) -> AppSchema {
    let mut builder = Schema::build(Query::default(), Mutation::default(), SubscriptionRoot);
    if let Some(service) = &service {
        // First, so it sees every request whole, refusals by the extensions below included.
        builder = builder.extension(instrument::Instrument::new(Arc::clone(service.metrics())));
    }
    builder = builder
        .limit_depth(limits.depth)
        .limit_complexity(limits.complexity)
        // Runs before validation on every path (HTTP, WebSocket, pre-parsed documents).
        .extension(cost::FieldLimit::new(limits.max_fields))
        // Apollo automatic persisted queries: an unknown hash answers PersistedQueryNotFound
        // (Apollo then sends the query); at most this many documents per instance (LRU).
        .extension(ApolloPersistedQueries::new(LruCacheStorage::new(
            MAX_PERSISTED_QUERIES,
        )));
    if !limits.introspection {
        // "Did you mean …?" would name fields that introspection hides.
        builder = builder.disable_introspection().disable_suggestions();
    }
    if let Some(service) = service {
        builder = builder.data(service);
    }
    builder.finish()
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    build_schema(None, Limits::default()).sdl()
}

/// Documents longer than this are parsed every time (clients send a handful of short
/// operations over and over; long ones are rare and would crowd the cache).
const MAX_CACHED_DOCUMENT_BYTES: usize = 4 * 1024;
/// How many distinct documents are kept.
const MAX_CACHED_DOCUMENTS: usize = 512;

/// Parsed GraphQL documents by query text: clients repeat the same few operations, and
/// parsing is a measurable share of a request's CPU. Bounded and evicting (least recently
/// used documents go first), so one client sending endless distinct documents only churns
/// the cache. Validation still runs every time.
#[derive(Clone)]
pub struct DocumentCache {
    documents: std::sync::Arc<
        quick_cache::sync::Cache<String, async_graphql::parser::types::ExecutableDocument>,
    >,
}

impl Default for DocumentCache {
    fn default() -> Self {
        Self {
            documents: std::sync::Arc::new(quick_cache::sync::Cache::new(MAX_CACHED_DOCUMENTS)),
        }
    }
}

impl DocumentCache {
    /// Gives `request` its parsed document from the cache, or parses it and remembers it.
    pub fn prepare(&self, request: &mut async_graphql::Request) {
        if request.query.len() > MAX_CACHED_DOCUMENT_BYTES {
            return;
        }
        if let Some(document) = self.documents.get(&request.query) {
            request.set_parsed_query(document);
            return;
        }
        // A document that does not parse is left to `execute`, which reports it.
        if let Ok(document) = request.parsed_query().cloned() {
            self.documents.insert(request.query.clone(), document);
        }
    }
}

/// The `extensions.code` the server gives an error that has none: parse and validation
/// errors come from async-graphql without one (Apollo's persisted-query link looks for
/// either spelling of the persisted-query miss).
pub fn default_code(message: &str) -> &'static str {
    if message == "PersistedQueryNotFound" {
        "PERSISTED_QUERY_NOT_FOUND"
    } else {
        "GRAPHQL_VALIDATION_FAILED"
    }
}

/// Converts an [`AppError`] to a GraphQL error carrying its code.
pub(crate) fn gql(error: AppError) -> async_graphql::Error {
    error.extend()
}

/// The request's authenticated caller, or `UNAUTHENTICATED`.
pub(crate) fn caller<'a>(ctx: &'a Context<'_>) -> AppResult<&'a Caller> {
    match ctx.data_opt::<Auth>() {
        Some(auth) => auth.caller(),
        None => Auth::Anonymous.caller(),
    }
}

/// The exam service from the schema data.
pub(crate) fn service<'a>(ctx: &'a Context<'_>) -> AppResult<&'a ExamService> {
    ctx.data::<ExamService>()
        .map_err(|e| AppError::internal("schema has no exam service", e.message))
}

/// Parses a database id given as a GraphQL `ID` into its typed id (or a bare `i64`).
pub(crate) fn parse_id<T: From<i64>>(id: &ID, what: &str) -> AppResult<T> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(T::from)
        .ok_or_else(|| AppError::bad_input(format!("{what} must be a positive integer id")))
}

#[cfg(test)]
mod tests {
    /// `schema.graphql` is the SDL the code generates; regenerate it with
    /// `cargo run -- schema > schema.graphql` when the API changes.
    #[test]
    fn schema_graphql_is_up_to_date() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
                .expect("schema.graphql exists at the repo root");
        assert!(
            committed == super::sdl(),
            "schema.graphql is out of date: run `cargo run -- schema > schema.graphql`"
        );
    }
}
