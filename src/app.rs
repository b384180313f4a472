//! Start-up: turns a [`Config`] into a running [`App`], with context on every step so a
//! failure says what could not be reached and how to fix it.

use std::sync::Arc;

use anyhow::Context;

use crate::auth::{JwtKeys, Role, random_secret};
use crate::config::{Config, redact_url};
use crate::exam::ExamService;
use crate::graphql::{AppSchema, Limits, build_schema};
use crate::metrics::Metrics;
use crate::storage::db;
use crate::storage::events::EventBus;
use crate::storage::redis_pool::RedisPool;
use crate::storage::redis_target::{ClusterSeeds, RedisTarget};
use crate::storage::state_store::StateStore;

/// Everything a request handler needs; cheap to clone (all shared handles).
#[derive(Clone)]
pub struct App {
    /// The exam flow with its pools.
    pub service: ExamService,
    /// The GraphQL schema (holds a clone of `service`).
    pub schema: AppSchema,
    /// Token verification.
    pub keys: JwtKeys,
    /// Parsed GraphQL documents, reused across requests.
    pub documents: crate::graphql::DocumentCache,
    /// Timeouts and caps of connections, requests and WebSockets.
    pub http: crate::config::HttpLimits,
    /// Operations running on this instance's WebSockets, per token subject.
    pub ws_operations: crate::server::OperationCounts,
    /// Origins allowed by CORS (empty: same origin only).
    pub cors_allowed_origins: Vec<String>,
    /// This instance's metrics (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is served instead of the main listener (`METRICS_ADDR`).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Installs the TLS crypto provider once; without it the first `rediss://` connection panics
/// inside a pool task and only shows up as a timeout.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Creates the database when missing and applies pending migrations.
pub async fn prepare_database(config: &Config) -> anyhow::Result<()> {
    // Behind PgBouncer (DATABASE_PREPARED_STATEMENTS=false) the maintenance database may
    // not be reachable: the database must exist already.
    if config.database_prepared_statements {
        db::create_database_if_missing(&config.database_url)
            .await
            .with_context(|| {
                format!(
                    "Postgres is not reachable at {} (is it running? is DATABASE_URL right?)",
                    redact_url(&config.database_url)
                )
            })?;
    }
    let applied =
        db::run_migrations(&config.database_url, config.database_prepared_statements).await?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "database migrated");
    }
    Ok(())
}

/// The Redis client of `REDIS_URL`, trusting `REDIS_TLS_CA_FILE` for `rediss://` when set
/// (managed Redis such as Memorystore signs with its own CA).
fn redis_client(config: &Config) -> anyhow::Result<redis::Client> {
    let unusable = || format!("REDIS_URL {} is not usable", redact_url(&config.redis_url));
    match &config.redis_tls_ca_file {
        None => redis::Client::open(config.redis_url.as_str()).with_context(unusable),
        Some(path) => {
            let root_cert = std::fs::read(path)
                .with_context(|| format!("cannot read REDIS_TLS_CA_FILE {}", path.display()))?;
            redis::Client::build_with_tls(
                config.redis_url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
            .with_context(unusable)
        }
    }
}

/// The Redis of the configuration: the cluster of `REDIS_CLUSTER_URLS` when set, else the
/// server of `REDIS_URL`; with a description for the logs (passwords redacted).
fn redis_target(config: &Config) -> anyhow::Result<(RedisTarget, String)> {
    if config.redis_cluster_urls.is_empty() {
        let described = redact_url(&config.redis_url);
        return Ok((RedisTarget::Standalone(redis_client(config)?), described));
    }
    let described = format!(
        "cluster {}",
        config
            .redis_cluster_urls
            .iter()
            .map(|url| redact_url(url))
            .collect::<Vec<_>>()
            .join(",")
    );
    let root_cert = match &config.redis_tls_ca_file {
        None => None,
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read REDIS_TLS_CA_FILE {}", path.display()))?,
        ),
    };
    let seeds = ClusterSeeds::new(&config.redis_cluster_urls, root_cert)
        .with_context(|| format!("REDIS_CLUSTER_URLS {described} is not usable"))?;
    Ok((RedisTarget::Cluster(seeds), described))
}

/// Builds the application: pools, Redis store, event listener, schema. Redis may be down.
pub async fn build(config: &Config) -> anyhow::Result<App> {
    install_crypto_provider();
    if config.database_prepared_statements {
        prepare_database(config).await?;
    } else {
        // Behind PgBouncer in transaction mode the migration lock (a session advisory lock)
        // would not hold: `adaptive-engine migrate` runs against Postgres itself, and
        // /health/ready stays unready until it has.
        tracing::info!(
            "DATABASE_PREPARED_STATEMENTS=false: one transaction per unit of work; not creating or migrating the database"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let pool = db::Db::new(
        &config.database_url,
        config.database_pool_size,
        config.database_prepared_statements,
    );
    anyhow::ensure!(
        db::ping(&pool).await,
        "Postgres is not reachable at {}",
        redact_url(&config.database_url)
    );
    let (target, described) = redis_target(config)?;
    let redis = RedisPool::new(&target, config.redis_pool_size, metrics.redis.clone())
        .with_context(|| {
            let variable = if config.redis_cluster_urls.is_empty() {
                "REDIS_URL"
            } else {
                "REDIS_CLUSTER_URLS"
            };
            format!("{variable} {described} is not usable")
        })?;
    metrics.attach_pools(
        pool.pool().clone(),
        config.database_pool_size,
        redis.clone(),
    );
    if !redis.ping().await {
        tracing::warn!(
            redis = %described,
            "Redis is not reachable: serving from Postgres until it is"
        );
    }
    let states = StateStore::new(
        redis,
        &config.redis_key_prefix,
        config.engine_state_ttl_seconds,
        metrics.events.clone(),
    );
    let events = EventBus::start(target, states.events_channel(), metrics.events.clone());
    let service = ExamService::new(
        pool,
        states,
        events,
        config.session_cache_capacity,
        Arc::clone(&metrics),
    );
    let keys = match &config.jwt_secret {
        Some(secret) => {
            JwtKeys::new(secret.as_bytes()).with_max_lifetime(config.token_max_lifetime_seconds)
        }
        None => {
            let keys = JwtKeys::new(random_secret().as_bytes())
                .with_max_lifetime(config.token_max_lifetime_seconds);
            let ttl = config.token_max_lifetime_seconds.min(24 * 3600);
            let admin = keys.mint("admin", Role::Admin, ttl);
            let student = keys.mint("student-1", Role::Student, ttl);
            tracing::warn!(
                "JWT_SECRET is not set: using a random secret for this process only.\n  \
                 Paste a token into GraphiQL's headers as {{\"Authorization\": \"Bearer <token>\"}}.\n  \
                 Admin token (24 h):\n  {admin}\n  \
                 Student token for student-1 (24 h):\n  {student}\n  \
                 For tokens of other students, set JWT_SECRET (e.g. in .env), restart, and run \
                 `adaptive-engine token --role student --sub <student-id>`"
            );
            keys
        }
    };
    let limits = Limits {
        introspection: config.graphql_introspection,
        ..Limits::default()
    };
    let schema = build_schema(Some(service.clone()), limits);
    Ok(App {
        service,
        schema,
        keys,
        documents: crate::graphql::DocumentCache::default(),
        http: config.http,
        ws_operations: crate::server::OperationCounts::default(),
        cors_allowed_origins: config.cors_allowed_origins.clone(),
        metrics,
        metrics_listen: config.metrics_listen,
    })
}
