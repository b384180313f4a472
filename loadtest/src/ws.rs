//! A minimal graphql-transport-ws client: connect, `connection_init` with the bearer
//! token, then `subscribe` / `complete` / `ping` on one socket, several operations
//! multiplexed by id.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The `thetaUpdates` subscription document.
pub const THETA_UPDATES: &str = "subscription($id: ID!) { thetaUpdates(examSessionId: $id) { \
    examSessionId theta standardError itemsCompleted completed at } }";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
/// The writing half of a socket.
pub type Writer = SplitSink<Socket, Message>;
/// The reading half of a socket.
pub type Reader = SplitStream<Socket>;

/// `ws://…/graphql/ws` from the HTTP base URL.
pub fn ws_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    format!("{base}/graphql/ws")
}

/// Opens a socket and completes the `connection_init` / `connection_ack` handshake.
/// The error is a class for the report (`ws:connect`, `ws:refused`, `ws:timeout`…).
pub async fn connect(
    url: &str,
    token: &str,
    timeout: Duration,
) -> Result<(Writer, Reader), String> {
    let handshake = async {
        let mut request = url
            .into_client_request()
            .map_err(|_| "ws:bad_url".to_owned())?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", http_value("graphql-transport-ws"));
        // Small buffers (thousands of sockets; tungstenite allocates 128 KiB per socket by
        // default), and Nagle off: small messages must not wait for a delayed ACK.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(|e| classify(&e))?;
        let (mut writer, mut reader) = socket.split();
        send(
            &mut writer,
            json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}}),
        )
        .await
        .map_err(|_| "ws:send".to_owned())?;
        loop {
            match next_json(&mut reader).await {
                Some(Ok(msg)) if msg["type"] == "connection_ack" => return Ok((writer, reader)),
                Some(Ok(msg)) if msg["type"] == "ping" => {
                    let _ = send(&mut writer, json!({"type": "pong"})).await;
                }
                Some(Ok(_)) => continue,
                Some(Err(Closed(code))) => return Err(format!("ws:closed:{code}")),
                None => return Err("ws:closed".to_owned()),
            }
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .unwrap_or_else(|_| Err("ws:timeout".to_owned()))
}

fn http_value(s: &'static str) -> tokio_tungstenite::tungstenite::http::HeaderValue {
    tokio_tungstenite::tungstenite::http::HeaderValue::from_static(s)
}

fn classify(error: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Io(e) => format!("ws:io:{:?}", e.kind()),
        Error::Http(response) => format!("ws:http:{}", response.status().as_u16()),
        Error::ConnectionClosed | Error::AlreadyClosed => "ws:closed".to_owned(),
        _ => "ws:handshake".to_owned(),
    }
}

/// Sends one protocol message.
pub async fn send(writer: &mut Writer, msg: Value) -> Result<(), ()> {
    writer
        .send(Message::Text(msg.to_string().into()))
        .await
        .map_err(|_| ())
}

/// Subscribes operation `id` to the `thetaUpdates` of `exam_id`.
pub async fn subscribe(writer: &mut Writer, id: &str, exam_id: &str) -> Result<(), ()> {
    send(
        writer,
        json!({"id": id, "type": "subscribe",
               "payload": {"query": THETA_UPDATES, "variables": {"id": exam_id}}}),
    )
    .await
}

/// Ends operation `id`.
pub async fn complete(writer: &mut Writer, id: &str) -> Result<(), ()> {
    send(writer, json!({"id": id, "type": "complete"})).await
}

/// The socket closed, with this close code (0: none given).
#[derive(Debug)]
pub struct Closed(pub u16);

/// The next protocol message; `Some(Err)` when the server closed the socket with a close
/// frame, `None` when the connection ended otherwise.
pub async fn next_json(reader: &mut Reader) -> Option<Result<Value, Closed>> {
    loop {
        match reader.next().await? {
            Ok(Message::Text(text)) => {
                if let Ok(value) = serde_json::from_str(text.as_str()) {
                    return Some(Ok(value));
                }
            }
            Ok(Message::Close(frame)) => {
                return Some(Err(Closed(frame.map(|f| u16::from(f.code)).unwrap_or(0))));
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// One `thetaUpdates` event, as received.
#[derive(Debug, Clone)]
pub struct Event {
    /// The operation id it came on.
    pub op: String,
    /// The exam.
    pub exam_id: String,
    /// Answers recorded.
    pub items_completed: i64,
    /// Whether the exam completed.
    pub completed: bool,
}

/// What a server message means to a subscriber.
pub enum Incoming {
    /// A theta update.
    Event(Event),
    /// An operation failed (`error` message, or errors in `next`) with this code.
    Error(String),
    /// The server ended an operation.
    Complete,
    /// The server pinged: answer with a pong.
    Ping,
    /// The server answered our ping.
    Pong,
    /// Anything else.
    Other,
}

/// Interprets one protocol message.
pub fn interpret(msg: &Value) -> Incoming {
    let op = msg["id"].as_str().unwrap_or_default().to_owned();
    match msg["type"].as_str() {
        Some("next") => {
            let data = &msg["payload"]["data"]["thetaUpdates"];
            if let (Some(exam_id), Some(items_completed)) = (
                data["examSessionId"].as_str(),
                data["itemsCompleted"].as_i64(),
            ) {
                Incoming::Event(Event {
                    op,
                    exam_id: exam_id.to_owned(),
                    items_completed,
                    completed: data["completed"].as_bool().unwrap_or(false),
                })
            } else {
                let code = msg["payload"]["errors"][0]["extensions"]["code"]
                    .as_str()
                    .unwrap_or("graphql:no_code")
                    .to_owned();
                Incoming::Error(code)
            }
        }
        Some("error") => {
            let code = msg["payload"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("graphql:no_code")
                .to_owned();
            Incoming::Error(code)
        }
        Some("complete") => Incoming::Complete,
        Some("ping") => Incoming::Ping,
        Some("pong") => Incoming::Pong,
        _ => Incoming::Other,
    }
}
