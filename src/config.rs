//! Configuration: every environment variable the service reads, parsed once in `main` and
//! passed down (no globals, no `std::env` calls anywhere else).
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `DATABASE_URL` | `postgres://localhost/adaptive_engine` | source of truth; created and migrated at start |
//! | `REDIS_URL` | `redis://127.0.0.1:6379/0` | engine-state cache; `rediss://` and `redis://:password@host:port/db` work |
//! | `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB`, `REDIS_PASSWORD` | — | used only when `REDIS_URL` is unset |
//! | `REDIS_TLS_CA_FILE` | none | PEM CA certificate to trust for `rediss://` (besides the public roots) |
//! | `REDIS_CLUSTER_URLS` | unset | comma-separated `redis://`/`rediss://` seed nodes of a Redis Cluster; when set, cluster mode (hash-tagged keys) and `REDIS_URL` is ignored |
//! | `REDIS_KEY_PREFIX` | `adaptive_engine` | key prefix of engine states |
//! | `ENGINE_STATE_TTL_SECONDS` | `3600` | TTL of one exam's engine state, refreshed on every answer |
//! | `JWT_SECRET` | none | HS256 secret; when unset `serve` makes a random one |
//! | `HOST`, `PORT` | `127.0.0.1`, `8000` | listen address |
//! | `DATABASE_POOL_SIZE` | `16` | Postgres connections per instance |
//! | `DATABASE_PREPARED_STATEMENTS` | `true` | `false` for PgBouncer in transaction mode: every unit of work runs in one transaction and closes its statements before it ends; `serve` then neither creates the database nor migrates (run `migrate` against Postgres itself) |
//! | `REDIS_POOL_SIZE` | `16` | Redis connections per instance |
//! | `SESSION_CACHE_CAPACITY` | `100000` | exams whose fixed facts an instance keeps in memory |
//! | `GRAPHQL_INTROSPECTION` | `true` | whether the schema can be introspected (GraphiQL needs it) |
//! | `HTTP_HEADER_TIMEOUT_SECONDS` | `10` | a connection must send a request's headers within this (slowloris) |
//! | `HTTP_BODY_TIMEOUT_SECONDS` | `20` | a request's body must arrive within this (408 otherwise) |
//! | `HTTP_REQUEST_TIMEOUT_SECONDS` | `30` | a whole request must be answered within this (408 otherwise) |
//! | `MAX_CONNECTIONS` | `20000` | open connections (HTTP and WebSocket) per instance; more are closed at once |
//! | `WS_INIT_TIMEOUT_SECONDS` | `10` | a WebSocket must send `connection_init` within this (closed with 4408) |
//! | `WS_MAX_SUBSCRIPTIONS_PER_CONNECTION` | `32` | operations running at once on one WebSocket |
//! | `WS_MAX_SUBSCRIPTIONS_PER_USER` | `128` | operations running at once for one token subject, over all its WebSockets on one instance |
//! | `WS_KEEPALIVE_SECONDS` | `15` | interval of the server's WebSocket keep-alive pings |
//! | `WS_IDLE_TIMEOUT_SECONDS` | `60` | a WebSocket that sends nothing (not even a pong) for this long is closed (3008) |
//! | `CORS_ALLOWED_ORIGINS` | unset | comma-separated origins allowed by CORS (unset: same origin only) |
//! | `TOKEN_MAX_LIFETIME_SECONDS` | `86400` | tokens expiring later than this from now are refused |
//! | `METRICS_ADDR` | unset | `IP:PORT` (or `localhost:PORT`) of a separate listener for `GET /metrics`, which then leaves the main one; unset: `/metrics` is on the main listener |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` and the other `OTEL_*` variables | unset | OpenTelemetry export of the spans (binary built with the `otlp` feature; read by the exporter itself, see `telemetry` in the binary) |
//! | `RUST_LOG` | `info` | log filter (tracing-subscriber `EnvFilter` syntax) |
//! | `LOG_FORMAT` | `pretty` | `json` (one object per line, with the request's span fields: `request_id`…) or `pretty`; no ANSI colours unless stderr is a terminal (read by `main`, before the configuration) |
//!
//! Test-only, not configuration: `ADAPTIVE_ENGINE_TEST_ABORT_AFTER_COMMIT`, when set, makes
//! the process abort right after an answer's commit and before its reply, so
//! `tests/faults.rs` can kill the server exactly there. It is read once, by
//! `exam/answer.rs` itself (the one exception to "no `std::env` elsewhere"); never set it in
//! production.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

/// Default Postgres URL, as the contract names it.
pub const DEFAULT_DATABASE_URL: &str = "postgres://localhost/adaptive_engine";
/// Default Redis URL, as the contract names it.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Default prefix of the engine-state keys.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "adaptive_engine";

/// A configuration value that cannot be used, with the variable it came from.
#[derive(Debug, Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with its value.
    pub message: String,
}

/// Everything the service is configured with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Postgres URL of the source of truth.
    pub database_url: String,
    /// Redis URL of the engine-state cache (built from `REDIS_HOST`… when `REDIS_URL` is unset).
    pub redis_url: String,
    /// A PEM CA to trust for `rediss://` (managed Redis often uses a private CA).
    pub redis_tls_ca_file: Option<std::path::PathBuf>,
    /// Seed nodes of a Redis Cluster; empty: standalone Redis at `redis_url`.
    pub redis_cluster_urls: Vec<String>,
    /// Prefix of the engine-state keys; tests use their own so they never collide.
    pub redis_key_prefix: String,
    /// TTL of an engine state, reset on every save, so abandoned exams free their memory.
    pub engine_state_ttl_seconds: u64,
    /// HS256 secret for JWTs; `None` makes `serve` generate a throw-away one.
    pub jwt_secret: Option<String>,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Postgres pool size: one connection serves one answer transaction at a time.
    pub database_pool_size: u32,
    /// `DATABASE_PREPARED_STATEMENTS`: `false` behind PgBouncer in transaction mode (no
    /// statement outlives its transaction, `serve` neither creates nor migrates).
    pub database_prepared_statements: bool,
    /// Redis pool size for state reads and writes (pub/sub has its own connection).
    pub redis_pool_size: u32,
    /// Exams whose fixed facts (student, bank, design, start) one instance keeps in memory.
    pub session_cache_capacity: usize,
    /// Whether GraphQL introspection is enabled (GraphiQL needs it; some deployments hide it).
    pub graphql_introspection: bool,
    /// What one connection, request or WebSocket may cost the server.
    pub http: HttpLimits,
    /// Longest accepted token lifetime (from now to `exp`), in seconds.
    pub token_max_lifetime_seconds: u64,
    /// Origins allowed to call the API from a browser (CORS); empty: same origin only.
    pub cors_allowed_origins: Vec<String>,
    /// A separate listener for `GET /metrics` (kept off the public one); `None`: `/metrics`
    /// is served by the main listener.
    pub metrics_listen: Option<SocketAddr>,
}

/// Bounds on what a client can hold of the server: time per request phase, connections,
/// WebSocket operations. Each is an environment variable (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to send a request's headers (a slowloris client is cut off after it).
    pub header_timeout: std::time::Duration,
    /// Time for a request's body to arrive.
    pub body_timeout: std::time::Duration,
    /// Time to answer a whole request.
    pub request_timeout: std::time::Duration,
    /// Open connections per instance (each costs a file descriptor and buffers).
    pub max_connections: usize,
    /// Time for a WebSocket to send `connection_init`.
    pub ws_init_timeout: std::time::Duration,
    /// Operations running at once on one WebSocket.
    pub ws_max_subscriptions_per_connection: usize,
    /// Operations running at once per token subject, over its WebSockets on this instance.
    pub ws_max_subscriptions_per_user: usize,
    /// Interval of the server's keep-alive pings on WebSockets.
    pub ws_keepalive: std::time::Duration,
    /// A WebSocket silent this long (no message, no pong) is closed.
    pub ws_idle_timeout: std::time::Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        use std::time::Duration;
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(30),
            max_connections: 20_000,
            ws_init_timeout: Duration::from_secs(10),
            ws_max_subscriptions_per_connection: 32,
            ws_max_subscriptions_per_user: 128,
            ws_keepalive: Duration::from_secs(15),
            ws_idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Reads the configuration from the process environment (after `.env` was loaded).
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    /// Reads the configuration through `lookup`, so tests can supply their own variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let database_url = get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        let redis_url = match get("REDIS_URL") {
            Some(url) => url,
            None => redis_url_from_parts(
                get("REDIS_HOST").as_deref(),
                get("REDIS_PORT").as_deref(),
                get("REDIS_DB").as_deref(),
                get("REDIS_PASSWORD").as_deref(),
            )?,
        };
        let redis_key_prefix =
            get("REDIS_KEY_PREFIX").unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.into());
        if redis_key_prefix.contains(['*', '?', '[', ']', ' ']) {
            return Err(ConfigError {
                variable: "REDIS_KEY_PREFIX",
                message: "must not contain glob characters or spaces".into(),
            });
        }
        let redis_cluster_urls = get("REDIS_CLUSTER_URLS")
            .map(|urls| redis_cluster_urls(&urls))
            .transpose()?
            .unwrap_or_default();
        if !redis_cluster_urls.is_empty() && redis_key_prefix.contains(['{', '}']) {
            // A brace in the prefix would become the hash tag of every key.
            return Err(ConfigError {
                variable: "REDIS_KEY_PREFIX",
                message: "must not contain braces with REDIS_CLUSTER_URLS".into(),
            });
        }
        let engine_state_ttl_seconds = parse(&get, "ENGINE_STATE_TTL_SECONDS", 3600u64)?;
        if engine_state_ttl_seconds == 0 {
            return Err(ConfigError {
                variable: "ENGINE_STATE_TTL_SECONDS",
                message: "must be at least 1".into(),
            });
        }
        let host: IpAddr = match get("HOST") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(h) if h == "localhost" => IpAddr::from([127, 0, 0, 1]),
            Some(h) => h.parse().map_err(|_| ConfigError {
                variable: "HOST",
                message: format!("{h:?} is not an IP address"),
            })?,
        };
        let port = parse(&get, "PORT", 8000u16)?;
        let metrics_listen = get("METRICS_ADDR")
            .map(|raw| socket_address(&raw, "METRICS_ADDR"))
            .transpose()?;
        let graphql_introspection = boolean(&get, "GRAPHQL_INTROSPECTION", true)?;
        let database_prepared_statements = boolean(&get, "DATABASE_PREPARED_STATEMENTS", true)?;
        Ok(Self {
            database_url,
            redis_url,
            redis_tls_ca_file: get("REDIS_TLS_CA_FILE").map(Into::into),
            redis_cluster_urls,
            redis_key_prefix,
            engine_state_ttl_seconds,
            jwt_secret: get("JWT_SECRET"),
            listen: SocketAddr::new(host, port),
            database_pool_size: parse(&get, "DATABASE_POOL_SIZE", 16u32)?.max(1),
            database_prepared_statements,
            redis_pool_size: parse(&get, "REDIS_POOL_SIZE", 16u32)?.max(1),
            session_cache_capacity: parse(&get, "SESSION_CACHE_CAPACITY", 100_000usize)?,
            graphql_introspection,
            http: HttpLimits {
                header_timeout: seconds(&get, "HTTP_HEADER_TIMEOUT_SECONDS", 10)?,
                body_timeout: seconds(&get, "HTTP_BODY_TIMEOUT_SECONDS", 20)?,
                request_timeout: seconds(&get, "HTTP_REQUEST_TIMEOUT_SECONDS", 30)?,
                max_connections: parse(&get, "MAX_CONNECTIONS", 20_000usize)?.max(1),
                ws_init_timeout: seconds(&get, "WS_INIT_TIMEOUT_SECONDS", 10)?,
                ws_max_subscriptions_per_connection: parse(
                    &get,
                    "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
                    32usize,
                )?
                .max(1),
                ws_max_subscriptions_per_user: parse(
                    &get,
                    "WS_MAX_SUBSCRIPTIONS_PER_USER",
                    128usize,
                )?
                .max(1),
                ws_keepalive: seconds(&get, "WS_KEEPALIVE_SECONDS", 15)?,
                ws_idle_timeout: seconds(&get, "WS_IDLE_TIMEOUT_SECONDS", 60)?,
            },
            metrics_listen,
            cors_allowed_origins: get("CORS_ALLOWED_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().trim_end_matches('/').to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            token_max_lifetime_seconds: parse(
                &get,
                "TOKEN_MAX_LIFETIME_SECONDS",
                crate::auth::DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
            )?
            .max(1),
        })
    }
}

/// The comma-separated seed URLs of `REDIS_CLUSTER_URLS`: each `redis://` or `rediss://`
/// with a host.
fn redis_cluster_urls(raw: &str) -> Result<Vec<String>, ConfigError> {
    let error = |message: String| ConfigError {
        variable: "REDIS_CLUSTER_URLS",
        message,
    };
    let urls: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(error("lists no URL".into()));
    }
    for raw in &urls {
        let url = url::Url::parse(raw)
            .map_err(|e| error(format!("{} is not a URL: {e}", redact_url(raw))))?;
        if !matches!(url.scheme(), "redis" | "rediss") || url.host_str().is_none_or(str::is_empty) {
            return Err(error(format!(
                "{} is not a redis:// or rediss:// URL with a host",
                redact_url(raw)
            )));
        }
    }
    Ok(urls)
}

/// `IP:PORT` or `localhost:PORT`.
fn socket_address(raw: &str, variable: &'static str) -> Result<SocketAddr, ConfigError> {
    let raw = raw.trim();
    let parsed = match raw.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|port| SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port)),
        None => raw.parse().ok(),
    };
    parsed.ok_or_else(|| ConfigError {
        variable,
        message: format!("{raw:?} is not IP:PORT"),
    })
}

/// A duration in whole seconds (at least one).
fn seconds(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
) -> Result<std::time::Duration, ConfigError> {
    Ok(std::time::Duration::from_secs(
        parse(get, variable, default)?.max(1),
    ))
}

/// A boolean: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off` (any case).
fn boolean(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    let Some(raw) = get(variable) else {
        return Ok(default);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError {
            variable,
            message: format!("{raw:?} is not a boolean"),
        }),
    }
}

fn parse<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(variable) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ConfigError {
            variable,
            message: format!("{v:?} is not a valid number"),
        }),
    }
}

/// Builds `redis://[:password@]host:port/db` from the individual variables.
fn redis_url_from_parts(
    host: Option<&str>,
    port: Option<&str>,
    db: Option<&str>,
    password: Option<&str>,
) -> Result<String, ConfigError> {
    let host = host.unwrap_or("127.0.0.1");
    let port: u16 = port.unwrap_or("6379").parse().map_err(|_| ConfigError {
        variable: "REDIS_PORT",
        message: "is not a port number".into(),
    })?;
    let db: u32 = db.unwrap_or("0").parse().map_err(|_| ConfigError {
        variable: "REDIS_DB",
        message: "is not a database number".into(),
    })?;
    let mut url =
        url::Url::parse(&format!("redis://{host}:{port}/{db}")).map_err(|e| ConfigError {
            variable: "REDIS_HOST",
            message: e.to_string(),
        })?;
    if let Some(password) = password {
        // `set_password` percent-encodes, so any character works in a password.
        url.set_password(Some(password)).map_err(|()| ConfigError {
            variable: "REDIS_PASSWORD",
            message: "cannot be put in a URL".into(),
        })?;
    }
    Ok(url.into())
}

/// Hides the password of a URL so it can be logged.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.into()
        }
        Err(_) => "<unparseable url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&[]).unwrap();
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.redis_url, DEFAULT_REDIS_URL);
        assert_eq!(c.redis_key_prefix, "adaptive_engine");
        assert_eq!(c.engine_state_ttl_seconds, 3600);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
        assert!(c.jwt_secret.is_none());
    }

    #[test]
    fn redis_parts_are_used_only_without_redis_url() {
        let c = config(&[
            ("REDIS_HOST", "cache.internal"),
            ("REDIS_PORT", "6380"),
            ("REDIS_DB", "2"),
            ("REDIS_PASSWORD", "p@ss:w/rd"),
        ])
        .unwrap();
        assert_eq!(
            c.redis_url,
            "redis://:p%40ss%3Aw%2Frd@cache.internal:6380/2"
        );
        let c = config(&[("REDIS_URL", "rediss://x:6379/1"), ("REDIS_HOST", "y")]).unwrap();
        assert_eq!(c.redis_url, "rediss://x:6379/1");
    }

    #[test]
    fn bad_numbers_name_their_variable() {
        let err = config(&[("PORT", "eighty")]).unwrap_err();
        assert_eq!(err.variable, "PORT");
        let err = config(&[("ENGINE_STATE_TTL_SECONDS", "0")]).unwrap_err();
        assert_eq!(err.variable, "ENGINE_STATE_TTL_SECONDS");
    }

    #[test]
    fn metrics_addr_is_a_socket_address() {
        assert_eq!(config(&[]).unwrap().metrics_listen, None);
        let c = config(&[("METRICS_ADDR", "0.0.0.0:9100")]).unwrap();
        assert_eq!(c.metrics_listen, Some("0.0.0.0:9100".parse().unwrap()));
        let c = config(&[("METRICS_ADDR", "localhost:9100")]).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
        let err = config(&[("METRICS_ADDR", "9100")]).unwrap_err();
        assert_eq!(err.variable, "METRICS_ADDR");
    }

    #[test]
    fn booleans_accept_the_usual_spellings_and_name_their_variable() {
        let c = config(&[]).unwrap();
        assert!(c.database_prepared_statements && c.graphql_introspection);
        for off in ["false", "0", "NO", " off "] {
            let c = config(&[("DATABASE_PREPARED_STATEMENTS", off)]).unwrap();
            assert!(!c.database_prepared_statements, "{off}");
        }
        let c = config(&[("GRAPHQL_INTROSPECTION", "Yes")]).unwrap();
        assert!(c.graphql_introspection);
        let err = config(&[("DATABASE_PREPARED_STATEMENTS", "nope")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_PREPARED_STATEMENTS");
    }

    #[test]
    fn redis_cluster_urls_are_redis_urls_and_unset_means_standalone() {
        assert!(config(&[]).unwrap().redis_cluster_urls.is_empty());
        let c = config(&[(
            "REDIS_CLUSTER_URLS",
            " redis://10.0.0.1:7000, rediss://:pw@10.0.0.2:7001 ,",
        )])
        .unwrap();
        assert_eq!(
            c.redis_cluster_urls,
            ["redis://10.0.0.1:7000", "rediss://:pw@10.0.0.2:7001"]
        );
        for bad in [
            "10.0.0.1:7000",
            "redis://10.0.0.1:7000,http://10.0.0.2:7001",
            "redis://",
            " , ",
        ] {
            let err = config(&[("REDIS_CLUSTER_URLS", bad)]).unwrap_err();
            assert_eq!(err.variable, "REDIS_CLUSTER_URLS", "{bad}");
        }
        // The password of a bad URL is not echoed.
        let err = config(&[("REDIS_CLUSTER_URLS", "http://:s3cret@h:1")]).unwrap_err();
        assert!(!err.message.contains("s3cret"), "{}", err.message);
        let err = config(&[
            ("REDIS_CLUSTER_URLS", "redis://h:7000"),
            ("REDIS_KEY_PREFIX", "a{b}"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "REDIS_KEY_PREFIX");
        assert!(config(&[("REDIS_KEY_PREFIX", "a{b}")]).is_ok());
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact_url("redis://:secret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
    }
}
