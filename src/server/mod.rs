//! HTTP: the only place that knows routes and middleware.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /graphql` | GraphQL over HTTP (single operations; batches are refused) |
//! | `GET /graphql`, `GET /monitor`, `GET /assets/…` | the browser pages ([`crate::web`]) |
//! | `GET /graphql/ws` | subscriptions (`graphql-transport-ws` and `graphql-ws`; `server::ws`) |
//! | `GET /health` | Postgres and Redis status; 503 when Postgres is down |
//! | `GET /health/redis` | Redis status with a timestamp |
//!
//! What a client can hold of the server is bounded ([`HttpLimits`](crate::config::HttpLimits)):
//! connections per instance, time to send headers (slowloris), body and whole-request
//! time; the WebSocket limits are in `server::ws`. The accept loop is our own (hyper-util)
//! because `axum::serve` installs no timer, which leaves hyper's header timeout inert.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::ErrorExtensions;
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use crate::app::App;
use crate::error::AppError;
use crate::storage::db;

/// Largest request body accepted (a large bank import fits; anything bigger gets 413).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Longest GraphQL document accepted; longer ones are refused before parsing (bank
/// imports carry their items in variables, not in the document).
pub const MAX_QUERY_BYTES: usize = 32 * 1024;

/// Tells long-lived connections (WebSockets) that the server is shutting down, and lets
/// the server wait for them: every WebSocket session runs as a task of `sessions`.
#[derive(Clone)]
struct Shutdown {
    /// Cancelled when the server starts shutting down.
    token: CancellationToken,
    /// The WebSocket sessions, waited for (bounded) before the server returns.
    sessions: TaskTracker,
}

impl Shutdown {
    /// Resolves once shutdown has begun.
    async fn begun(self) {
        self.token.cancelled_owned().await;
    }
}

/// CORS for the configured origins (`CORS_ALLOWED_ORIGINS`), with preflight for the
/// headers a GraphQL client sends; none configured: no CORS headers (same origin only).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<axum::http::HeaderValue> = origins
        .iter()
        .filter_map(|o| match o.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!(origin = %o, "CORS_ALLOWED_ORIGINS: not a valid origin, ignored");
                None
            }
        })
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
            .max_age(Duration::from_secs(3600)),
    )
}

/// The service's routes around `app`; `shutdown` turns true when the server stops.
fn router(app: App, shutdown: Shutdown) -> Router {
    let limits = app.http;
    let cors = cors(&app.cors_allowed_origins);
    Router::new()
        .route("/graphql", post(graphql))
        .merge(crate::web::routes())
        .route("/graphql/ws", get(ws::graphql_ws))
        .route("/health", get(health))
        .route("/health/redis", get(health_redis))
        .layer(Extension(shutdown))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(tower::util::option_layer(cors))
        .with_state(app)
}

mod ws;

pub use ws::OperationCounts;

/// How long a stopping server waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, drains the
/// in-flight requests, and closes WebSockets with 1001 (going away) so clients reconnect
/// to another instance.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = Shutdown {
        token: CancellationToken::new(),
        sessions: TaskTracker::new(),
    };
    tokio::spawn({
        let token = stop.token.clone();
        async move {
            shutdown.await;
            token.cancel();
        }
    });
    let limits = app.http;
    let service = TowerToHyperService::new(router(app, stop.clone()));
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    http.http2().timer(TokioTimer::new());
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let stopping = stop.clone().begun();
    tokio::pin!(stopping);
    loop {
        let tcp = tokio::select! {
            () = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before accept): keep
                    // serving the connections we have and try again shortly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        // Over the cap the connection is closed at once: it costs nothing more.
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!("connection refused: MAX_CONNECTIONS reached");
            continue;
        };
        // Without TCP_NODELAY, small responses and pushed events wait for delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let connection = http
            .serve_connection_with_upgrades(TokioIo::new(tcp), service.clone())
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    drop(service);
    // Stop accepting (done), let in-flight requests finish (bounded), then wait (bounded)
    // until every WebSocket session has sent its close frame.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    stop.sessions.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), stop.sessions.wait()).await;
    Ok(())
}

/// Raises this process's open-files limit to its hard limit, so `MAX_CONNECTIONS` is not
/// cut short by the default soft limit (often 1,024); returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            1024
        }
    }
}

async fn graphql(
    State(app): State<App>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    let request = match request {
        Ok(request) => request,
        // A body that did not arrive within HTTP_BODY_TIMEOUT_SECONDS.
        Err(rejection) if is_timeout(&rejection) => {
            return (StatusCode::REQUEST_TIMEOUT, "request body timeout\n").into_response();
        }
        Err(rejection) => return rejection.into_response(),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let auth = app.keys.verify_header(authorization);
    let mut request = request.into_inner();
    if request.query.len() > MAX_QUERY_BYTES {
        let error = AppError::bad_input(format!(
            "the query document is longer than {MAX_QUERY_BYTES} bytes; pass data in variables"
        ));
        let mut server_error = async_graphql::ServerError::new(error.to_string(), None);
        server_error.extensions = error.extend().extensions;
        return GraphQLResponse::from(async_graphql::Response::from_errors(vec![server_error]))
            .into_response();
    }
    app.documents.prepare(&mut request);
    let mut response = app.schema.execute(request.data(auth)).await;
    // Parse and validation errors (syntax, unknown fields, depth and complexity limits,
    // bad variable types) come from async-graphql without a code: give them one.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            // Apollo's persisted-query link looks for either spelling.
            let code = if error.message == "PersistedQueryNotFound" {
                "PERSISTED_QUERY_NOT_FOUND"
            } else {
                "GRAPHQL_VALIDATION_FAILED"
            };
            extensions.set("code", code);
        }
    }
    GraphQLResponse::from(response).into_response()
}

/// Whether a body could not be read because the body timeout passed.
fn is_timeout(rejection: &GraphQLRejection) -> bool {
    let text = format!("{:?}", rejection.0).to_ascii_lowercase();
    text.contains("timed out") || text.contains("timedout") || text.contains("timeout")
}

async fn health(State(app): State<App>) -> Response {
    let (postgres, redis) = tokio::join!(
        db::ping(app.service.db()),
        app.service.states().redis().ping()
    );
    // A struct keeps the contract's field order.
    #[derive(serde::Serialize)]
    struct Health {
        status: &'static str,
        postgres: &'static str,
        redis: &'static str,
    }
    let body = Health {
        status: if postgres { "ok" } else { "degraded" },
        postgres: up_down(postgres),
        redis: up_down(redis),
    };
    let status = if postgres {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn health_redis(State(app): State<App>) -> Json<serde_json::Value> {
    let redis = app.service.states().redis().ping().await;
    Json(json!({
        "redis": up_down(redis),
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
}

fn up_down(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
