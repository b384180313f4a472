//! The Redis connection pool, wrapped so that a slow or dead Redis costs a request at most
//! a few hundred milliseconds, and usually nothing at all.
//!
//! bb8's `get()` waits up to `connection_timeout` (30 s by default): here it is 250 ms, every
//! command has its own timeout, and a circuit breaker skips Redis entirely for a while after
//! a failure, so a dead Redis is not paid for on every request. Callers treat every error
//! as a cache miss: Postgres is the source of truth.
//!
//! Counts every operation that did not happen ([`RedisMetrics`]) and reports its pool's
//! numbers and the breaker's state when `/metrics` is scraped.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;

use crate::metrics::{PoolStats, RedisMetrics};

/// How long a request waits for a pooled connection.
const CONNECTION_TIMEOUT: Duration = Duration::from_millis(250);
/// How long one Redis command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// The breaker's first pause after a failure; doubled per consecutive failure.
const BREAKER_BASE: Duration = Duration::from_millis(250);
/// The breaker's longest pause.
const BREAKER_MAX: Duration = Duration::from_secs(2);

/// Why a Redis operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RedisUnavailable {
    /// The breaker is open after recent failures; Redis was not tried.
    #[error("redis skipped: circuit breaker open")]
    BreakerOpen,
    /// No connection could be had in time.
    #[error("redis connection: {0}")]
    Connect(String),
    /// The command failed or timed out.
    #[error("redis command: {0}")]
    Command(String),
}

/// The outcome of one try.
enum Attempt {
    /// The connection was dead (worth one retry on a fresh one).
    Dropped(RedisUnavailable),
    /// Anything else.
    Failed(RedisUnavailable),
}

impl Attempt {
    fn into_error(self) -> RedisUnavailable {
        match self {
            Self::Dropped(e) => {
                // Dead twice in a row: Redis is down.
                e
            }
            Self::Failed(e) => e,
        }
    }
}

/// A pool without connecting. No ping on check-out (it would double the round trips):
/// dead connections are detected by their first failed command instead.
fn build(manager: RedisConnectionManager, max_size: u32) -> bb8::Pool<RedisConnectionManager> {
    bb8::Pool::builder()
        .max_size(max_size)
        .connection_timeout(CONNECTION_TIMEOUT)
        .error_sink(Box::new(LogErrors))
        .test_on_check_out(false)
        .build_unchecked(manager)
}

/// Logs the real cause of connection failures, which otherwise only surface as "timed out".
#[derive(Debug, Clone, Copy)]
struct LogErrors;

impl bb8::ErrorSink<redis::RedisError> for LogErrors {
    fn sink(&self, error: redis::RedisError) {
        tracing::warn!(error = %error, "redis connection failed");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<redis::RedisError>> {
        Box::new(*self)
    }
}

/// A Redis pool with timeouts and a circuit breaker.
#[derive(Clone)]
pub struct RedisPool {
    /// The current pool; replaced wholesale when a connection turns out to be dead.
    pool: Arc<RwLock<bb8::Pool<RedisConnectionManager>>>,
    /// How to build a new pool.
    manager: RedisConnectionManager,
    max_size: u32,
    breaker: Arc<Breaker>,
    /// Check-out counts of the pools replaced by [`RedisPool::reset`], so the reported
    /// counters never go back.
    retired: Arc<std::sync::Mutex<PoolStats>>,
    metrics: RedisMetrics,
}

/// Shared breaker state: when it is open, and how many failures in a row.
struct Breaker {
    /// Milliseconds since `epoch` until which Redis is not tried.
    open_until_ms: AtomicU64,
    /// Consecutive failures, for the exponential pause.
    failures: AtomicU32,
    /// Reference point of `open_until_ms`.
    epoch: Instant,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            open_until_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn is_open(&self) -> bool {
        self.now_ms() < self.open_until_ms.load(Ordering::Relaxed)
    }

    fn record_success(&self) {
        if self.failures.swap(0, Ordering::Relaxed) > 0 {
            tracing::info!("redis is reachable again");
        }
        self.open_until_ms.store(0, Ordering::Relaxed);
    }

    fn record_failure(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let pause = BREAKER_BASE
            .saturating_mul(1 << failures.min(5))
            .min(BREAKER_MAX);
        self.open_until_ms
            .store(self.now_ms() + pause.as_millis() as u64, Ordering::Relaxed);
    }
}

impl RedisPool {
    /// Builds the pool without connecting, so the service starts while Redis is down;
    /// counts the operations that do not happen in `metrics`.
    pub fn new(
        client: &redis::Client,
        max_size: u32,
        metrics: RedisMetrics,
    ) -> Result<Self, redis::RedisError> {
        // The connection info carries the client's TLS settings (custom CA included).
        let manager = RedisConnectionManager::new(client.get_connection_info().clone())?;
        Ok(Self {
            pool: Arc::new(RwLock::new(build(manager.clone(), max_size))),
            manager,
            max_size,
            breaker: Arc::default(),
            retired: Arc::default(),
            metrics,
        })
    }

    /// Whether the breaker skips Redis now.
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The pool's connections now and its check-out counts since start (pools replaced
    /// after a Redis restart included).
    pub fn stats(&self) -> PoolStats {
        let current = PoolStats::of(&self.current().state(), self.max_size);
        let retired = *self
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current.plus_counts(&retired)
    }

    fn current(&self) -> bb8::Pool<RedisConnectionManager> {
        self.pool
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Drops every pooled connection: a multiplexed connection never recovers once its
    /// socket is gone (Redis restarted), and bb8-redis cannot tell, so the pool starts over.
    fn reset(&self) {
        let fresh = build(self.manager.clone(), self.max_size);
        let old = std::mem::replace(
            &mut *self
                .pool
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            fresh,
        );
        let old = PoolStats::of(&old.state(), self.max_size);
        let mut retired = self
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *retired = retired.plus_counts(&old);
    }

    /// Runs one operation on a pooled connection, unless the breaker is open; any failure
    /// or timeout opens it.
    pub async fn run<T, F>(&self, op: F) -> Result<T, RedisUnavailable>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T> + Clone,
    {
        if self.breaker.is_open() {
            self.metrics.breaker_open.inc();
            return Err(RedisUnavailable::BreakerOpen);
        }
        self.run_unguarded(op).await
    }

    /// Like [`RedisPool::run`] but tries Redis even when the breaker is open (health checks).
    pub async fn run_unguarded<T, F>(&self, op: F) -> Result<T, RedisUnavailable>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T> + Clone,
    {
        let result = match self.attempt(op.clone()).await {
            // A pooled connection that died with a Redis restart fails at once; the pool
            // was reset, so one retry on a fresh connection tells whether Redis is back.
            Err(Attempt::Dropped(_)) => self.attempt(op).await.map_err(Attempt::into_error),
            other => other.map_err(Attempt::into_error),
        };
        match &result {
            Err(RedisUnavailable::Connect(_)) => self.metrics.connect.inc(),
            Err(RedisUnavailable::Command(_)) => self.metrics.command.inc(),
            Err(RedisUnavailable::BreakerOpen) => self.metrics.breaker_open.inc(),
            Ok(_) => 0,
        };
        result
    }

    async fn attempt<T, F>(&self, op: F) -> Result<T, Attempt>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T> + Clone,
    {
        let pool = self.current();
        let mut conn = match pool.get().await {
            Ok(conn) => conn,
            Err(e) => {
                self.breaker.record_failure();
                return Err(Attempt::Failed(RedisUnavailable::Connect(e.to_string())));
            }
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, op(&mut conn)).await {
            Ok(Ok(value)) => {
                self.breaker.record_success();
                Ok(value)
            }
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() => {
                drop(conn);
                self.reset();
                Err(Attempt::Dropped(RedisUnavailable::Command(e.to_string())))
            }
            Ok(Err(e)) => {
                // A server-side error (e.g. OOM, WRONGTYPE) says Redis is up.
                if e.is_timeout() {
                    self.breaker.record_failure();
                }
                Err(Attempt::Failed(RedisUnavailable::Command(e.to_string())))
            }
            Err(_) => {
                self.breaker.record_failure();
                drop(conn);
                self.reset();
                Err(Attempt::Failed(RedisUnavailable::Command(
                    "timed out".into(),
                )))
            }
        }
    }

    /// Whether Redis answers PING now (ignores the breaker, and resets it on success).
    pub async fn ping(&self) -> bool {
        self.run_unguarded(async |conn| redis::cmd("PING").query_async::<String>(conn).await)
            .await
            .is_ok()
    }
}
