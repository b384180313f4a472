//! HTTP: the only place that knows routes and middleware.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /graphql` | GraphQL over HTTP (single operations; batches are refused) |
//! | `GET /graphql`, `GET /monitor`, `GET /assets/…` | the browser pages ([`crate::web`]) |
//! | `GET /graphql/ws` | subscriptions (`graphql-transport-ws` and `graphql-ws`; `server::ws`) |
//! | `GET /health` | Postgres and Redis status; 503 when Postgres is down |
//! | `GET /health/redis` | Redis status with a timestamp |
//! | `GET /health/live` | 200 as long as the process serves (liveness) |
//! | `GET /health/ready` | 200 when Postgres answers and every migration is applied, else 503 (readiness; Redis is reported, never required) |
//! | `GET /metrics` | Prometheus text ([`crate::metrics`]); on its own listener instead when `METRICS_ADDR` is set |
//!
//! Every response carries `x-request-id`: the request's own when it sent a short printable
//! one, else 32 new random hex digits. Each request runs in a `request` span (request id,
//! method, path; for GraphQL also the operation name, first root field, exam id and caller
//! role), so every log line of the request names it; a WebSocket gets one `websocket` span
//! for its whole life.
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
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::{DefaultOnFailure, MakeSpan, TraceLayer};

use crate::app::App;
use crate::error::AppError;
use crate::storage::db::{self, MigrationStatus};

/// Largest request body accepted (a large bank import fits; anything bigger gets 413).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Longest GraphQL document accepted; longer ones are refused before parsing (bank
/// imports carry their items in variables, not in the document).
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Longest `x-request-id` taken from a client; a longer (or unprintable) one is replaced.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Connections the separate metrics listener (`METRICS_ADDR`) serves at once.
const METRICS_MAX_CONNECTIONS: usize = 64;

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
            .expose_headers([X_REQUEST_ID])
            .max_age(Duration::from_secs(3600)),
    )
}

/// The request-id header.
const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// The service's routes around `app`; `shutdown` turns true when the server stops.
/// Outermost first: a client's unusable request id is dropped, a missing one made, the id
/// copied onto the response and the request's span opened; only then CORS, the timeouts
/// and the body limit, so their refusals carry the id too.
fn router(app: App, shutdown: Shutdown) -> Router {
    let limits = app.http;
    let cors = cors(&app.cors_allowed_origins);
    let mut routes = Router::new()
        .route("/graphql", post(graphql))
        .merge(crate::web::routes())
        .route("/graphql/ws", get(ws::graphql_ws))
        .route("/health", get(health))
        .route("/health/redis", get(health_redis))
        .route("/health/live", get(health_live))
        .route("/health/ready", get(health_ready));
    if app.metrics_listen.is_none() {
        routes = routes.route("/metrics", get(metrics));
    }
    routes
        .layer(Extension(shutdown))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(tower::util::option_layer(cors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan)
                // A 503 from /health/ready is an answer, not a failure of the server.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, RandomRequestId))
        .layer(tower::util::MapRequestLayer::new(drop_unusable_request_id))
        .with_state(app)
}

/// The routes of the separate metrics listener (`METRICS_ADDR`).
fn metrics_router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// Removes a client's `x-request-id` that is empty, longer than [`MAX_REQUEST_ID_BYTES`]
/// or not printable ASCII, so a fresh one is made: ids go into every log line.
fn drop_unusable_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    if let Some(id) = request.headers().get(&X_REQUEST_ID)
        && !usable_request_id(id)
    {
        request.headers_mut().remove(&X_REQUEST_ID);
    }
    request
}

/// Whether a client's request id can be kept: 1 to [`MAX_REQUEST_ID_BYTES`] printable
/// ASCII characters, no space.
fn usable_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_BYTES
        && bytes.iter().all(u8::is_ascii_graphic)
}

/// Makes request ids: 32 random hex digits (128 bits from the thread's generator, no
/// system call).
#[derive(Clone, Copy, Debug)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("{:032x}", rand::random::<u128>());
        HeaderValue::try_from(id).ok().map(RequestId::new)
    }
}

/// Opens the `request` span of a request: its id, method and path, and empty GraphQL
/// fields that the handler fills in ([`record_graphql`]).
#[derive(Clone, Copy, Debug)]
struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &axum::http::Request<B>) -> tracing::Span {
        let id = request
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(|id| id.to_str().ok())
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            request_id = id,
            method = %request.method(),
            path = request.uri().path(),
            operation = tracing::field::Empty,
            field = tracing::field::Empty,
            exam_id = tracing::field::Empty,
            role = tracing::field::Empty,
        )
    }
}

/// Fills in the request span's GraphQL fields: the `operationName`, the first root field,
/// the exam id when the variables carry one (`examSessionId`, top-level or in `input`),
/// and the caller's role.
fn record_graphql(request: &mut async_graphql::Request, auth: &crate::auth::Auth) {
    let span = tracing::Span::current();
    span.record("role", auth.role_name());
    if let Some(name) = &request.operation_name {
        span.record("operation", name.as_str());
    }
    let exam_id =
        request
            .variables
            .get("examSessionId")
            .or_else(|| match request.variables.get("input") {
                Some(async_graphql::Value::Object(input)) => input.get("examSessionId"),
                _ => None,
            });
    match exam_id {
        Some(async_graphql::Value::String(id)) => {
            span.record("exam_id", id.as_str());
        }
        Some(async_graphql::Value::Number(id)) => {
            span.record("exam_id", tracing::field::display(id));
        }
        _ => {}
    }
    // Out while the document is borrowed (parsing it here is not extra work: execution
    // reuses it).
    let operation_name = request.operation_name.take();
    if let Ok(document) = request.parsed_query()
        && let Some((_, Some(field))) =
            crate::graphql::instrument::root_field(document, operation_name.as_deref())
    {
        span.record("field", field);
    }
    request.operation_name = operation_name;
}

mod ws;

pub use ws::OperationCounts;

/// How long a stopping server waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, drains the
/// in-flight requests, and closes WebSockets with 1001 (going away) so clients reconnect
/// to another instance. With `METRICS_ADDR`, `/metrics` is served on that address too
/// (bound before anything is served: a taken address is an error).
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = Shutdown {
        token: CancellationToken::new(),
        sessions: TaskTracker::new(),
    };
    let metrics_listener = match app.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("METRICS_ADDR {addr}: {e}")))?;
            tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
            Some(listener)
        }
        None => None,
    };
    tokio::spawn({
        let token = stop.token.clone();
        async move {
            shutdown.await;
            token.cancel();
        }
    });
    let limits = app.http;
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    http.http2().timer(TokioTimer::new());
    // Scrapes are short: they get no drain beyond the main listener's.
    let metrics_server = metrics_listener.map(|listener| {
        let service = TowerToHyperService::new(metrics_router(app.clone()));
        let (http, stop) = (http.clone(), stop.clone());
        tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            accept(
                listener,
                service,
                &http,
                METRICS_MAX_CONNECTIONS,
                &graceful,
                stop,
            )
            .await;
            let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
        })
    });
    let service = TowerToHyperService::new(router(app, stop.clone()));
    let graceful = GracefulShutdown::new();
    accept(
        listener,
        service,
        &http,
        limits.max_connections,
        &graceful,
        stop.clone(),
    )
    .await;
    // Stop accepting (done), let in-flight requests finish (bounded), then wait (bounded)
    // until every WebSocket session has sent its close frame.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    stop.sessions.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), stop.sessions.wait()).await;
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    Ok(())
}

/// Accepts connections on `listener` and serves each with `service` (watched by
/// `graceful`) until `stop` begins; a connection over `max_connections` is closed at once.
async fn accept(
    listener: TcpListener,
    service: TowerToHyperService<Router>,
    http: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    max_connections: usize,
    graceful: &GracefulShutdown,
    stop: Shutdown,
) {
    let connections = Arc::new(Semaphore::new(max_connections));
    let stopping = stop.begun();
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
        app.metrics.graphql_rejected(error.code());
        let mut server_error = async_graphql::ServerError::new(error.to_string(), None);
        server_error.extensions = error.extend().extensions;
        return GraphQLResponse::from(async_graphql::Response::from_errors(vec![server_error]))
            .into_response();
    }
    app.documents.prepare(&mut request);
    record_graphql(&mut request, &auth);
    let mut response = app.schema.execute(request.data(auth)).await;
    // Parse and validation errors (syntax, unknown fields, depth and complexity limits,
    // bad variable types) come from async-graphql without a code: give them one.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", crate::graphql::default_code(&error.message));
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

/// Liveness: the process serves requests.
async fn health_live() -> Json<serde_json::Value> {
    Json(json!({"status": "live"}))
}

/// Readiness: 200 only when Postgres answers and every embedded migration is applied;
/// Redis is reported but optional (the service serves from Postgres without it).
async fn health_ready(State(app): State<App>) -> Response {
    let (migrations, redis) = tokio::join!(
        db::migration_status(app.service.db()),
        app.service.states().redis().ping()
    );
    let ready = migrations == MigrationStatus::Applied;
    let (postgres, migrations, pending) = match migrations {
        MigrationStatus::Unreachable => ("down", "unknown", Vec::new()),
        MigrationStatus::Pending(pending) => ("up", "pending", pending),
        MigrationStatus::Applied => ("up", "applied", Vec::new()),
    };
    let body = json!({
        "status": if ready { "ready" } else { "unready" },
        "postgres": postgres,
        "migrations": migrations,
        "pendingMigrations": pending,
        "redis": up_down(redis),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// This instance's metrics, in the Prometheus text format.
async fn metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.metrics.render(),
    )
        .into_response()
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
