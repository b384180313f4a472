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

use async_graphql::Data;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;

use crate::app::App;
use crate::storage::db;

/// Largest request body accepted (a large bank import fits; anything bigger gets 413).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// WebSocket clients that send nothing (not even pings) for this long are closed.
const WS_KEEPALIVE: Duration = Duration::from_secs(120);

/// The service's routes around `app`.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/health", get(health))
        .route("/health/redis", get(health_redis))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
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
    app.schema
        .execute(request.into_inner().data(auth))
        .await
        .into()
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
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            let keys = app.keys.clone();
            GraphQLWebSocket::new(stream, app.schema.clone(), protocol)
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
