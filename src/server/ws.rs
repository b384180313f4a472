//! GraphQL over WebSocket (`/graphql/ws`, `graphql-transport-ws` and legacy `graphql-ws`):
//! authentication at `connection_init`, and the guard that bounds what one socket can hold
//! of the server: the init timeout (4408), the token's expiry (4401), unique operation ids
//! (4409), operations per connection and per token subject (`TOO_MANY_SUBSCRIPTIONS`),
//! oversized messages (1009), keep-alive pings and the idle timeout (3008), and a close
//! frame that says why. Each connection runs in its own `websocket` span (its upgrade
//! request's id, then the caller's role) and is counted in the metrics' WebSocket gauges
//! (connections, operations running).
//!
//! Owns the WebSocket session; must not know what an operation does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, close_code};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use super::Shutdown;
use crate::app::App;
use crate::config::HttpLimits;
use crate::metrics::{Gauge, Metrics};

/// Read and write buffer of one WebSocket.
const WS_BUFFER_BYTES: usize = 4 * 1024;
/// Largest WebSocket message accepted (a subscribe message is a few hundred bytes).
const WS_MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub(super) async fn graphql_ws(
    State(app): State<App>,
    Extension(shutdown): Extension<Shutdown>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let legacy = offered.split(',').map(str::trim).any(|p| p == "graphql-ws")
        && !offered
            .split(',')
            .map(str::trim)
            .any(|p| p == "graphql-transport-ws");
    // The connection outlives its upgrade request: it gets a span of its own, with the
    // request's id (set by the middleware), so its log lines name it.
    let request_id = headers
        .get("x-request-id")
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        parent: None,
        "websocket",
        request_id,
        role = tracing::field::Empty
    );
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // tungstenite's defaults (128 KiB read buffer per socket, 64 MiB messages) would cost
        // over 100 KiB per idle subscription; GraphQL subscription messages are small.
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_message_size(WS_MAX_MESSAGE_BYTES)
        .max_frame_size(WS_MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            let sessions = shutdown.sessions.clone();
            let connection_span = span.clone();
            sessions.track_future(async move {
            let _open = OpenConnection::new(app.metrics.websocket_connections.clone());
            let keys = app.keys.clone();
            let (mut socket_tx, socket_rx) = socket.split();
            // The GraphQL session writes through a channel, so that once it ends (the client
            // left, shutdown or a limit cut its input) we still own the socket to close it
            // with the right code.
            let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
            let session = Arc::new(WsSession::new(
                app.http,
                app.ws_operations.clone(),
                out_tx.downgrade(),
                legacy,
                Arc::clone(&app.metrics),
            ));
            let writer = tokio::spawn({
                let session = Arc::clone(&session);
                async move {
                    while let Some(message) = out_rx.recv().await {
                        if socket_tx.send(message).await.is_err() {
                            return;
                        }
                    }
                    let _ = socket_tx.send(Message::Close(Some(session.close_frame()))).await;
                    let _ = socket_tx.close().await;
                }
            });
            let sink = futures_util::sink::unfold(
                (out_tx, Arc::clone(&session)),
                |(tx, session), message: Message| async move {
                    if let Message::Text(text) = &message {
                        session.on_server_message(text);
                    }
                    tx.send(message)
                        .map(|()| (tx, session))
                        .map_err(|_| axum::Error::new("socket closed"))
                },
            );
            let (expiry_tx, expiry_rx) = watch::channel(None::<u64>);
            let ends = {
                let session = Arc::clone(&session);
                async move {
                    tokio::select! {
                        () = shutdown.begun() => session.close_with(close_code::AWAY, "server shutting down"),
                        (code, reason) = deadline(session.limits.ws_init_timeout, expiry_rx) => {
                            session.close_with(code, reason);
                        }
                    }
                }
            };
            let input = guard_input(socket_rx, Arc::clone(&session)).take_until(ends);
            let init_session = Arc::clone(&session);
            // Keep-alive: the server pings every WS_KEEPALIVE_SECONDS; a graphql-transport-ws
            // client's pong counts as traffic, so only a dead client meets the idle timeout.
            // Legacy graphql-ws clients never answer ("ka" has no reply): no idle timeout.
            let pinger = tokio::spawn(keep_alive(
                session.out.clone(),
                app.http.ws_keepalive,
                legacy,
            ));
            let idle = (!legacy).then_some(app.http.ws_idle_timeout);
            GraphQLWebSocket::new_with_pair(sink, input, app.schema.clone(), protocol)
                .keepalive_timeout(idle)
                .on_connection_init(move |payload| async move {
                    // Browsers cannot set headers on WebSockets: the token comes in the
                    // connection_init payload. No valid token, no connection.
                    let auth = keys.verify_header(authorization_param(&payload));
                    connection_span.record("role", auth.role_name());
                    let caller = auth
                        .caller()
                        .map_err(|e| async_graphql::Error::new(e.to_string()))?;
                    init_session.authenticated(&caller.sub);
                    let _ = expiry_tx.send(Some(caller.expires_at));
                    let mut data = Data::default();
                    data.insert(auth);
                    Ok(data)
                })
                .serve()
                .await;
            pinger.abort();
            let _ = writer.await;
            }.instrument(span))
        })
}

/// Counts one open WebSocket for as long as it lives.
struct OpenConnection(Gauge);

impl OpenConnection {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Sends a protocol keep-alive (`ping`, or `ka` for legacy `graphql-ws`) every `interval`
/// while the socket's writer is there.
async fn keep_alive(out: mpsc::WeakUnboundedSender<Message>, interval: Duration, legacy: bool) {
    let ping = if legacy {
        r#"{"type":"ka"}"#
    } else {
        r#"{"type":"ping"}"#
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        ticks.tick().await;
        let Some(out) = out.upgrade() else { return };
        if out.send(Message::Text(ping.into())).is_err() {
            return;
        }
    }
}

/// Resolves with the close code and reason that end a WebSocket: 4408 when no
/// `connection_init` authenticated it within `init_timeout`, else 4401 once its token
/// expires (its `exp`, sent on `expiry` at init).
async fn deadline(
    init_timeout: Duration,
    mut expiry: watch::Receiver<Option<u64>>,
) -> (u16, &'static str) {
    let authenticated = tokio::time::timeout(init_timeout, async {
        expiry.wait_for(Option::is_some).await.map(|exp| *exp)
    })
    .await;
    let expires_at = match authenticated {
        Ok(Ok(exp)) => exp.unwrap_or_default(),
        Ok(Err(_)) => return std::future::pending().await,
        Err(_) => return (4408, "Connection initialisation timeout"),
    };
    let left = expires_at.saturating_sub(crate::auth::now_seconds());
    tokio::time::sleep(Duration::from_secs(left)).await;
    (4401, "Unauthorized: token expired")
}

/// The client's messages, checked before async-graphql sees them: operation ids must be
/// unique (4409), operations are capped per connection and per token subject (the excess
/// `subscribe` gets an error and runs nothing), and a message too large closes with 1009.
fn guard_input(
    socket: futures_util::stream::SplitStream<axum::extract::ws::WebSocket>,
    session: Arc<WsSession>,
) -> impl futures_util::Stream<Item = Result<Message, axum::Error>> {
    futures_util::stream::unfold((socket, session), |(mut socket, session)| async move {
        loop {
            let message = match socket.next().await? {
                Ok(message) => message,
                Err(e) => {
                    let too_big = e.to_string().contains("limit");
                    if too_big {
                        session.close_with(close_code::SIZE, "message too big");
                    } else {
                        session.close_with(close_code::PROTOCOL, "protocol error");
                    }
                    return None;
                }
            };
            let Message::Text(text) = &message else {
                return Some((Ok(message), (socket, session)));
            };
            match session.inspect(text) {
                Verdict::Pass => return Some((Ok(message), (socket, session))),
                Verdict::Refused => {}
                Verdict::Close(code, reason) => {
                    session.close_with(code, reason);
                    return None;
                }
            }
        }
    })
}

/// What [`WsSession::inspect`] decided about a client message.
enum Verdict {
    /// Hand it to the GraphQL session.
    Pass,
    /// Dropped; the client was sent an error for it.
    Refused,
    /// End the connection with this close code.
    Close(u16, &'static str),
}

/// Operations running on this instance's WebSockets, per token subject (the per-user cap).
#[derive(Clone, Default)]
pub struct OperationCounts(Arc<Mutex<HashMap<String, usize>>>);

impl OperationCounts {
    /// Counts one more operation of `user` unless they already run `max`.
    fn try_add(&self, user: &str, max: usize) -> bool {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(user.to_owned()).or_default();
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    /// Forgets `n` operations of `user`.
    fn remove(&self, user: &str, n: usize) {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(user) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                counts.remove(user);
            }
        }
    }

    /// Operations running for `user` now.
    pub fn of(&self, user: &str) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(user)
            .copied()
            .unwrap_or_default()
    }
}

/// One WebSocket's bookkeeping: its running operation ids, its caller, how it closes.
struct WsSession {
    limits: HttpLimits,
    users: OperationCounts,
    /// Where refusals are written (the socket's writer). Weak: the writer ends when the
    /// GraphQL session drops its sender, and this session lives as long as the writer.
    out: mpsc::WeakUnboundedSender<Message>,
    /// The legacy `graphql-ws` protocol (its `start`/`stop`/`error` shapes differ).
    legacy: bool,
    /// Where the operations running and the refused ones are counted.
    metrics: Arc<Metrics>,
    state: Mutex<WsState>,
}

#[derive(Default)]
struct WsState {
    /// Ids of the operations running.
    active: HashSet<String>,
    /// The token subject, once `connection_init` succeeded.
    user: Option<String>,
    /// The close frame to send when the session ends (first reason wins).
    close: Option<(u16, &'static str)>,
}

/// The fields of a protocol message that the guard reads.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
}

impl WsSession {
    fn new(
        limits: HttpLimits,
        users: OperationCounts,
        out: mpsc::WeakUnboundedSender<Message>,
        legacy: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            limits,
            users,
            out,
            legacy,
            metrics,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WsState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn authenticated(&self, user: &str) {
        self.state().user = Some(user.to_owned());
    }

    fn close_with(&self, code: u16, reason: &'static str) {
        self.state().close.get_or_insert((code, reason));
    }

    fn close_frame(&self) -> CloseFrame {
        let (code, reason) = self.state().close.unwrap_or((close_code::NORMAL, ""));
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }

    /// Checks a client message (see [`guard_input`]).
    fn inspect(&self, text: &str) -> Verdict {
        let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
            return Verdict::Pass; // async-graphql answers malformed messages itself
        };
        let id = envelope.id.unwrap_or_default();
        match envelope.kind.as_str() {
            "subscribe" | "start" => {
                let mut state = self.state();
                if state.active.contains(&id) {
                    return Verdict::Close(4409, "Subscriber for this id already exists");
                }
                let Some(user) = state.user.clone() else {
                    return Verdict::Pass; // async-graphql refuses it before connection_init
                };
                if state.active.len() >= self.limits.ws_max_subscriptions_per_connection {
                    drop(state);
                    self.refuse(&id, "too many operations on this connection");
                    return Verdict::Refused;
                }
                if !self
                    .users
                    .try_add(&user, self.limits.ws_max_subscriptions_per_user)
                {
                    drop(state);
                    self.refuse(&id, "too many operations for this user");
                    return Verdict::Refused;
                }
                state.active.insert(id);
                self.metrics.websocket_subscriptions.inc();
                Verdict::Pass
            }
            "complete" | "stop" => {
                self.finished(&id);
                Verdict::Pass
            }
            _ => Verdict::Pass,
        }
    }

    /// Notes operations that the server ended (`complete`, `error`).
    fn on_server_message(&self, text: &str) {
        if !(text.contains("\"complete\"") || text.contains("\"error\"")) {
            return;
        }
        if let Ok(envelope) = serde_json::from_str::<Envelope>(text)
            && matches!(envelope.kind.as_str(), "complete" | "error")
            && let Some(id) = envelope.id
        {
            self.finished(&id);
        }
    }

    fn finished(&self, id: &str) {
        let mut state = self.state();
        if !state.active.remove(id) {
            return;
        }
        self.metrics.websocket_subscriptions.dec();
        if let Some(user) = state.user.clone() {
            self.users.remove(&user, 1);
        }
    }

    /// Answers a refused operation with the protocol's error message (and counts it).
    fn refuse(&self, id: &str, message: &str) {
        self.metrics.graphql_rejected("TOO_MANY_SUBSCRIPTIONS");
        let error = json!({"message": message, "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS"}});
        let payload = if self.legacy { error } else { json!([error]) };
        let reply = json!({"id": id, "type": "error", "payload": payload});
        if let Some(out) = self.out.upgrade() {
            let _ = out.send(Message::Text(reply.to_string().into()));
        }
    }
}

impl Drop for WsSession {
    fn drop(&mut self) {
        let state = self.state();
        self.metrics
            .websocket_subscriptions
            .dec_by(state.active.len() as i64);
        if let Some(user) = &state.user {
            self.users.remove(user, state.active.len());
        }
    }
}

/// The `authorization` entry of a connection_init payload (any capitalisation).
fn authorization_param(payload: &serde_json::Value) -> Option<&str> {
    payload
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.as_str())
}
