//! Raw WebSocket clients for the tests that drive the protocol message by message
//! (`graphql-transport-ws`, or the legacy `graphql-ws`): connect, `connection_init`,
//! send, read the next message, read the close code.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A client socket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a socket to `/graphql/ws` speaking `subprotocol`.
pub async fn connect(addr: SocketAddr, subprotocol: &str) -> Result<Ws, String> {
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        subprotocol.parse().expect("header"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(socket)
}

/// Sends `connection_init` (with `token` as a bearer authorization when given) and
/// returns the server's answer (`connection_ack`, or Null when none came).
pub async fn init(socket: &mut Ws, token: Option<&str>) -> Value {
    let payload = match token {
        Some(t) => json!({"authorization": format!("Bearer {t}")}),
        None => json!({}),
    };
    send(
        socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    next_json(socket, Duration::from_secs(5)).await
}

/// A `graphql-transport-ws` socket; with a token, initialized (the ack checked).
pub async fn open(addr: SocketAddr, token: Option<&str>) -> Ws {
    let mut socket = connect(addr, "graphql-transport-ws")
        .await
        .expect("connect");
    if let Some(token) = token {
        let ack = init(&mut socket, Some(token)).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
    }
    socket
}

/// Sends one protocol message.
pub async fn send(socket: &mut Ws, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .expect("ws send");
}

/// Sends a `subscribe` for operation `id`.
pub async fn subscribe(socket: &mut Ws, id: &str, query: &str, variables: Value) {
    send(
        socket,
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}),
    )
    .await;
}

/// The next JSON message, skipping WebSocket-level ping/pong frames (Null when the
/// socket closed, the text was not JSON or nothing came within `timeout`).
pub async fn next_json(socket: &mut Ws, timeout: Duration) -> Value {
    loop {
        match tokio::time::timeout(timeout, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return serde_json::from_str(&text).unwrap_or(Value::Null);
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            _ => return Value::Null,
        }
    }
}

/// [`next_json`], answering the protocol's `ping` messages with `pong` as a live
/// client does (they are not returned).
pub async fn next_answering_pings(socket: &mut Ws, timeout: Duration) -> Value {
    loop {
        let message = next_json(socket, timeout).await;
        if message["type"] != "ping" {
            return message;
        }
        send(socket, json!({"type": "pong"})).await;
    }
}

/// Reads until the server closes; returns the close code (None: no close frame in time).
pub async fn close_code(socket: &mut Ws, timeout: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}
