//! Exam events across instances (a start, each recorded answer, an abandonment): the
//! instance that recorded an event first hands it to its own subscribers
//! ([`EventBus::deliver_local`]), then publishes it on one Redis channel (by
//! [`super::state_store::StateStore`], in the same round trip as the state write) for the
//! rest of the fleet; each instance keeps one dedicated pub/sub connection on that channel
//! and fans events out in-process to the subscribers of each exam and of each assessment.
//! An instance ignores its own events coming back from Redis (they carry its `origin`), so
//! nobody gets one twice, and its own subscribers get them even while Redis is down.
//!
//! Delivery to other instances is at-most-once: events published while Redis is down, or
//! while an instance's listener reconnects, are lost there. Events carry `items_completed`
//! so a client can see a gap and re-read the summary.
//!
//! On a Redis Cluster the channel is a classic one (the state scripts `PUBLISH` it; the
//! cluster forwards every message to every node). The listener holds its own cluster
//! connection (RESP3, its pushes on a channel of ours) and `SUBSCRIBE`s through it, which
//! redis-rs routes to the master of the channel name's slot, or to any node while that one
//! is unreachable. When any of its nodes goes away (a master killed before a failover) the
//! listener starts over, as it does when a standalone Redis restarts: reconnect with
//! backoff, re-read the topology, subscribe again.
//!
//! Counts what it receives, delivers and loses ([`EventMetrics`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use tokio_stream::wrappers::BroadcastStream;

use super::redis_target::{ClusterSeeds, RedisTarget};
use crate::metrics::EventMetrics;

/// Events buffered per exam for a slow subscriber before it starts skipping.
const PER_EXAM_BUFFER: usize = 64;
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What happened to an exam.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    /// The exam started.
    Started,
    /// An answer was recorded (`completed` says whether it completed the exam).
    #[default]
    Answered,
    /// An admin abandoned the exam.
    Abandoned,
}

/// One event of an exam, as published and as pushed to subscribers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThetaEvent {
    /// What happened.
    #[serde(default)]
    pub kind: EventKind,
    /// The exam the answer belongs to.
    pub exam_session_id: i64,
    /// Its student.
    #[serde(default)]
    pub student_id: String,
    /// Its assessment (none for exams of the first version).
    #[serde(default)]
    pub assessment_id: Option<i64>,
    /// The instance that recorded it (it delivers to its own subscribers itself).
    #[serde(default)]
    pub origin: u64,
    /// The estimate after the answer.
    pub theta: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// Answers recorded so far, this one included.
    pub items_completed: i32,
    /// Whether this answer completed the exam.
    pub completed: bool,
    /// When the answer was committed.
    pub at: DateTime<Utc>,
}

impl ThetaEvent {
    /// The JSON published on the channel.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// This instance's end of the event channel.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// One broadcast sender per exam that has subscribers on this instance.
    senders: Mutex<HashMap<i64, broadcast::Sender<ThetaEvent>>>,
    /// One broadcast sender per assessment that has subscribers on this instance.
    assessments: Mutex<HashMap<i64, broadcast::Sender<ThetaEvent>>>,
    /// This instance's id in the events it records.
    origin: u64,
    /// Whether the listener is subscribed right now.
    listening: AtomicBool,
    /// Woken each time the listener (re)subscribes.
    subscribed: Notify,
    /// The listener task, stopped with the bus.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What is received, delivered and lost.
    metrics: EventMetrics,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }
}

impl EventBus {
    /// Starts the listener on `channel` of `target`; it connects (and reconnects) by itself.
    pub fn start(target: RedisTarget, channel: String, metrics: EventMetrics) -> Self {
        let inner = Arc::new(Inner {
            senders: Mutex::new(HashMap::new()),
            assessments: Mutex::new(HashMap::new()),
            origin: rand::random::<u64>() | 1,
            listening: AtomicBool::new(false),
            subscribed: Notify::new(),
            task: Mutex::new(None),
            metrics,
        });
        let task = tokio::spawn(listen(target, channel, Arc::downgrade(&inner)));
        if let Ok(mut slot) = inner.task.lock() {
            *slot = Some(task);
        }
        Self { inner }
    }

    /// Whether the listener is subscribed to Redis now.
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    /// Waits until the listener is subscribed, or `timeout` passes; returns whether it is.
    pub async fn wait_listening(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.subscribed.notified();
                if self.is_listening() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// This instance's id, to put in the events it records.
    pub fn origin(&self) -> u64 {
        self.inner.origin
    }

    /// Hands an event this instance recorded to its own subscribers (before it is
    /// published for the others).
    pub fn deliver_local(&self, event: &ThetaEvent) {
        deliver(&self.inner, event);
    }

    /// The events of one exam from now on, as long as the stream is kept.
    pub fn subscribe(&self, exam_session_id: i64) -> ExamEvents {
        self.subscribe_to(Channel::Exam, exam_session_id)
    }

    /// The events of every exam of one assessment from now on.
    pub fn subscribe_assessment(&self, assessment_id: i64) -> ExamEvents {
        self.subscribe_to(Channel::Assessment, assessment_id)
    }

    fn subscribe_to(&self, channel: Channel, id: i64) -> ExamEvents {
        let receiver = {
            let mut senders = lock(self.inner.map(channel));
            senders
                .entry(id)
                .or_insert_with(|| broadcast::channel(PER_EXAM_BUFFER).0)
                .subscribe()
        };
        ExamEvents {
            stream: BroadcastStream::new(receiver),
            channel,
            id,
            bus: Arc::downgrade(&self.inner),
            lagged: self.inner.metrics.lagged.clone(),
        }
    }

    /// Number of exams with at least one subscriber on this instance.
    pub fn watched_exams(&self) -> usize {
        lock(&self.inner.senders).len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The listener: subscribe, fan out until the connection ends, back off, repeat.
async fn listen(target: RedisTarget, channel: String, bus: std::sync::Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let subscription = match &target {
            RedisTarget::Standalone(client) => subscribe(client, &channel)
                .await
                .map(|pubsub| Subscription::Standalone(Box::pin(pubsub.into_on_message()))),
            RedisTarget::Cluster(seeds) => subscribe_cluster(seeds, &channel).await,
        };
        match subscription {
            Ok(mut subscription) => {
                backoff = Duration::from_millis(100);
                let Some(inner) = bus.upgrade() else { return };
                inner.listening.store(true, Ordering::Release);
                inner.subscribed.notify_waiters();
                drop(inner);
                tracing::info!(channel = %channel, "listening for theta updates");
                while let Some(message) = subscription.next_message().await {
                    let Some(inner) = bus.upgrade() else { return };
                    dispatch(&inner, message.payload());
                }
                let Some(inner) = bus.upgrade() else { return };
                inner.listening.store(false, Ordering::Release);
                tracing::warn!("theta update listener lost its Redis connection; reconnecting");
            }
            Err(e) => {
                tracing::debug!(error = %e, "theta update listener cannot subscribe yet");
            }
        }
        if bus.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A live subscription to the event channel.
enum Subscription {
    /// The messages of a standalone pub/sub connection.
    Standalone(Pin<Box<dyn Stream<Item = redis::Msg> + Send>>),
    /// A cluster connection and the pushes its nodes send.
    Cluster {
        /// Kept open: dropping it closes every node connection.
        _connection: redis::cluster_async::ClusterConnection,
        /// The pushes of every node of the connection (messages, disconnections).
        pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    },
}

/// One message received on the event channel.
enum Message {
    /// From a standalone pub/sub connection.
    Standalone(redis::Msg),
    /// The payload of a cluster node's push.
    Cluster(Vec<u8>),
}

impl Message {
    fn payload(&self) -> &[u8] {
        match self {
            Self::Standalone(message) => message.get_payload_bytes(),
            Self::Cluster(payload) => payload,
        }
    }
}

impl Subscription {
    /// The next message; `None` once the subscription is lost.
    async fn next_message(&mut self) -> Option<Message> {
        match self {
            Self::Standalone(messages) => messages.next().await.map(Message::Standalone),
            Self::Cluster { pushes, .. } => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    redis::PushKind::Message => {
                        // [channel, payload]
                        if let Some(redis::Value::BulkString(payload)) =
                            push.data.into_iter().nth(1)
                        {
                            return Some(Message::Cluster(payload));
                        }
                    }
                    // A node is gone (killed, or failing over): start over rather than rely
                    // on the connection's own recovery, which only runs when a command fails.
                    redis::PushKind::Disconnection => return None,
                    _ => {}
                }
            },
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    };
    within_subscribe_timeout(connect).await
}

/// Connects to the cluster with a connection of the listener's own (RESP3, which carries
/// pub/sub messages as pushes) and subscribes to `channel`.
async fn subscribe_cluster(
    seeds: &ClusterSeeds,
    channel: &str,
) -> redis::RedisResult<Subscription> {
    let connect = async {
        let (sender, pushes) = tokio::sync::mpsc::unbounded_channel();
        let client = seeds
            .builder()
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(sender)
            .connection_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_secs(1))
            .build()?;
        let mut connection = client.get_async_connection().await?;
        connection.subscribe(channel).await?;
        Ok(Subscription::Cluster {
            _connection: connection,
            pushes,
        })
    };
    within_subscribe_timeout(connect).await
}

async fn within_subscribe_timeout<T>(
    connect: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "subscribe timed out",
            )))
        })
}

fn dispatch(inner: &Inner, payload: &[u8]) {
    let event: ThetaEvent = match serde_json::from_slice(payload) {
        Ok(event) => event,
        Err(e) => {
            inner.metrics.malformed.inc();
            tracing::warn!(error = %e, "ignoring a malformed theta update");
            return;
        }
    };
    if event.origin == inner.origin {
        return; // delivered locally when it was recorded
    }
    inner.metrics.received.inc();
    deliver(inner, &event);
}

fn deliver(inner: &Inner, event: &ThetaEvent) {
    let mut delivered = 0;
    if let Some(sender) = lock(&inner.senders).get(&event.exam_session_id) {
        delivered += sender.send(event.clone()).unwrap_or(0);
    }
    if let Some(assessment) = event.assessment_id
        && let Some(sender) = lock(&inner.assessments).get(&assessment)
    {
        delivered += sender.send(event.clone()).unwrap_or(0);
    }
    if delivered > 0 {
        inner.metrics.delivered.inc_by(delivered as u64);
    }
}

/// What a subscription follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    /// One exam.
    Exam,
    /// Every exam of one assessment.
    Assessment,
}

impl Inner {
    fn map(&self, channel: Channel) -> &Mutex<HashMap<i64, broadcast::Sender<ThetaEvent>>> {
        match channel {
            Channel::Exam => &self.senders,
            Channel::Assessment => &self.assessments,
        }
    }
}

/// The events of one exam (or assessment); dropping it unsubscribes.
pub struct ExamEvents {
    stream: BroadcastStream<ThetaEvent>,
    channel: Channel,
    id: i64,
    bus: std::sync::Weak<Inner>,
    /// Counts the events this subscriber skipped.
    lagged: crate::metrics::Counter,
}

impl Stream for ExamEvents {
    type Item = ThetaEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ThetaEvent>> {
        loop {
            match self.stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => return Poll::Ready(Some(event)),
                Poll::Ready(Some(Err(lagged))) => {
                    // A slow client missed events; it sees the gap in items_completed.
                    let tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(skipped) =
                        lagged;
                    self.lagged.inc_by(skipped);
                    tracing::debug!(id = self.id, skipped, "subscriber lagged");
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for ExamEvents {
    fn drop(&mut self) {
        let Some(inner) = self.bus.upgrade() else {
            return;
        };
        let mut senders = lock(inner.map(self.channel));
        // Our receiver is still alive while we run, so "1" means we were the last one.
        if senders
            .get(&self.id)
            .is_some_and(|s| s.receiver_count() <= 1)
        {
            senders.remove(&self.id);
        }
    }
}
