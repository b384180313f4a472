//! Storage: Postgres (the source of truth) and Redis (the engine-state cache and the event
//! bus). Owns every query and every Redis command; knows nothing of GraphQL or HTTP.
//!
//! Database code lives here, apart from the GraphQL resolvers, because
//! `diesel_async::RunQueryDsl` shadows `Schema::execute` wherever both are in scope.

pub mod bank_cache;
pub mod db;
pub mod enums;
pub mod events;
pub mod export_rows;
pub mod exposure;
pub mod keys;
pub mod queries;
pub mod redis_pool;
pub mod schema;
pub mod session_cache;
pub mod state_store;
