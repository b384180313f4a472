//! HTTP: the only place that knows routes and middleware.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /graphql` | GraphQL over HTTP (single operations; batches are refused) |
//! | `GET /graphql` | GraphiQL, wired to `/graphql/ws` |
//! | `GET /graphql/ws` | subscriptions (`graphql-transport-ws` and `graphql-ws`) |
//! | `GET /health` | Postgres and Redis status; 503 when Postgres is down |
//! | `GET /health/redis` | Redis status with a timestamp |

use std::future::Future;
use std::time::Duration;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::{Data, ErrorExtensions};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Extension;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, close_code};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower_http::limit::RequestBodyLimitLayer;

use crate::app::App;
use crate::error::AppError;
use crate::storage::db;

/// Largest request body accepted (a large bank import fits; anything bigger gets 413).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Longest GraphQL document accepted; longer ones are refused before parsing (bank
/// imports carry their items in variables, not in the document).
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Read and write buffer of one WebSocket.
const WS_BUFFER_BYTES: usize = 4 * 1024;
/// Largest WebSocket message accepted (a subscribe message is a few hundred bytes).
const WS_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// WebSocket clients that send nothing (not even pings) for this long are closed.
const WS_KEEPALIVE: Duration = Duration::from_secs(120);

/// Tells long-lived connections (WebSockets) that the server is shutting down, and lets
/// the server wait for them: every WebSocket session holds a clone of `_sessions` until it
/// has closed its socket.
#[derive(Clone)]
struct Shutdown(watch::Receiver<bool>, mpsc::Sender<()>);

impl Shutdown {
    /// Resolves once shutdown has begun.
    async fn begun(mut self) {
        let _ = self.0.wait_for(|down| *down).await;
    }
}

/// The service's routes around `app`; `shutdown` turns true when the server stops.
fn router(app: App, shutdown: Shutdown) -> Router {
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/health", get(health))
        .route("/health/redis", get(health_redis))
        .layer(Extension(shutdown))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, drains the
/// in-flight requests, and closes WebSockets with 1001 (going away) so clients reconnect
/// to another instance.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let (sessions_tx, mut sessions_rx) = mpsc::channel::<()>(1);
    let stop = Shutdown(rx.clone(), sessions_tx.clone());
    // Without TCP_NODELAY, small responses and pushed events wait for delayed ACKs (~40 ms).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, router(app, Shutdown(rx, sessions_tx)))
        .with_graceful_shutdown(stop.clone().begun())
        .await;
    // Upgraded connections are not drained by axum: wait (bounded) until every WebSocket
    // session has sent its close frame, then return.
    drop(stop);
    let _ = tokio::time::timeout(Duration::from_secs(5), sessions_rx.recv()).await;
    served
}

async fn graphql(
    State(app): State<App>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
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
        return async_graphql::Response::from_errors(vec![server_error]).into();
    }
    app.documents.prepare(&mut request);
    let mut response = app.schema.execute(request.data(auth)).await;
    // Parse and validation errors (syntax, unknown fields, depth and complexity limits,
    // bad variable types) come from async-graphql without a code: give them one.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "GRAPHQL_VALIDATION_FAILED");
        }
    }
    response.into()
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("adaptive-engine")
            .finish(),
    )
}

async fn graphql_ws(
    State(app): State<App>,
    Extension(shutdown): Extension<Shutdown>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // tungstenite's defaults (128 KiB read buffer per socket, 64 MiB messages) would cost
        // over 100 KiB per idle subscription; GraphQL subscription messages are small.
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_message_size(WS_MAX_MESSAGE_BYTES)
        .max_frame_size(WS_MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let session_guard = shutdown.1.clone();
            let keys = app.keys.clone();
            let (mut socket_tx, socket_rx) = socket.split();
            // The GraphQL session writes through a channel, so that once it ends (the client
            // left, or shutdown cut its input) we still own the socket to close it properly.
            let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
            let writer = tokio::spawn(async move {
                while let Some(message) = out_rx.recv().await {
                    if socket_tx.send(message).await.is_err() {
                        return;
                    }
                }
                let _ = socket_tx
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::AWAY,
                        reason: "server shutting down".into(),
                    })))
                    .await;
                let _ = socket_tx.close().await;
            });
            let sink = futures_util::sink::unfold(out_tx, |tx, message: Message| async move {
                tx.send(message)
                    .map(|()| tx)
                    .map_err(|_| axum::Error::new("socket closed"))
            });
            let input = socket_rx.take_until(shutdown.begun());
            GraphQLWebSocket::new_with_pair(sink, input, app.schema.clone(), protocol)
                .keepalive_timeout(WS_KEEPALIVE)
                .on_connection_init(move |payload| async move {
                    // Browsers cannot set headers on WebSockets: the token comes in the
                    // connection_init payload. No valid token, no connection.
                    let auth = keys.verify_header(authorization_param(&payload));
                    if let Err(e) = auth.caller() {
                        return Err(async_graphql::Error::new(e.to_string()));
                    }
                    let mut data = Data::default();
                    data.insert(auth);
                    Ok(data)
                })
                .serve()
                .await;
            let _ = writer.await;
            drop(session_guard);
        })
}

/// The `authorization` entry of a connection_init payload (any capitalisation).
fn authorization_param(payload: &serde_json::Value) -> Option<&str> {
    payload
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.as_str())
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
