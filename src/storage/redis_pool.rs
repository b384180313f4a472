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
//!
//! The same code runs on one Redis server and on a Redis Cluster: operations get a
//! [`RedisConnection`], a pooled multiplexed connection in standalone mode or the
//! instance's one cluster connection (itself multiplexed: it routes each command to its
//! slot's master, follows `MOVED` and failovers, and reconnects by itself, so it is shared
//! rather than pooled and never reset). The breaker, the command timeout and the metrics
//! are the same in both modes (a cluster has no check-out step: its failures to reach a
//! node count as command errors, and `/metrics` shows it as one idle connection).
//!
//! `SCAN` on every master ([`RedisPool::scan_match`]) and multi-key `UNLINK`
//! ([`RedisConnection::unlink`]) do not trust redis-rs's cached slot map, which it refreshes
//! only after a keyed command was redirected: right after a failover it still names the
//! dead master, and a multi-node command would skip or fail its part.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bb8_redis::RedisConnectionManager;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::NodeAddress;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisFuture, Value};

use super::keys::KeyForm;
use super::redis_target::RedisTarget;
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

/// A connection an operation runs on: one server's, or the cluster's. Both are
/// [`ConnectionLike`], so every command, pipeline and script runs on either unchanged.
pub enum RedisConnection<'a> {
    /// A pooled connection to the one Redis server.
    Standalone(&'a mut MultiplexedConnection),
    /// The cluster connection (routes every command by its keys).
    Cluster(&'a mut ClusterConnection),
}

impl ConnectionLike for RedisConnection<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl RedisConnection<'_> {
    /// Runs `cmd` on every master (standalone: the server); returns each one's reply with
    /// its node (`None` standalone), for commands whose state is per node (`SCAN`).
    async fn on_every_master(
        &mut self,
        cmd: &Cmd,
    ) -> redis::RedisResult<Vec<(Option<NodeAddress>, Value)>> {
        match self {
            Self::Standalone(conn) => Ok(vec![(None, cmd.query_async(&mut **conn).await?)]),
            Self::Cluster(conn) => {
                let masters = masters(conn).await?;
                let replies = masters.iter().map(|node| {
                    let mut conn = conn.clone();
                    async move { conn.route_command(cmd.clone(), by_address(node)).await }
                });
                let replies = futures_util::future::try_join_all(replies).await?;
                masters
                    .into_iter()
                    .zip(replies)
                    .map(|(node, reply)| Ok((Some(node), reply.extract_error()?)))
                    .collect()
            }
        }
    }

    /// Deletes `keys` in the background of Redis (`UNLINK`); returns how many existed. One
    /// command on a server; on a cluster one command per key, sent together on the
    /// multiplexed connection: a multi-key command is split by redis-rs's cached slot map,
    /// which right after a failover still names the dead master and loses that part.
    pub async fn unlink(&mut self, keys: &[String]) -> redis::RedisResult<i64> {
        match self {
            Self::Standalone(conn) => {
                redis::cmd("UNLINK")
                    .arg(keys)
                    .query_async(&mut **conn)
                    .await
            }
            Self::Cluster(conn) => {
                let unlinked = keys.iter().map(|key| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("UNLINK")
                            .arg(key)
                            .query_async::<i64>(&mut conn)
                            .await
                    }
                });
                Ok(futures_util::future::try_join_all(unlinked)
                    .await?
                    .iter()
                    .sum())
            }
        }
    }

    /// Runs `cmd` on `node` (standalone: the server).
    async fn on_node(
        &mut self,
        node: Option<&NodeAddress>,
        cmd: &Cmd,
    ) -> redis::RedisResult<Value> {
        match (self, node) {
            (Self::Cluster(conn), Some(node)) => conn
                .route_command(cmd.clone(), by_address(node))
                .await?
                .extract_error(),
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

/// The address of every master, from a node's `CLUSTER SLOTS`. Not redis-rs's
/// `AllMasters` routing: it follows the slot map the connection routes by, which redis-rs
/// refreshes only after a keyed command was redirected, so right after a failover it would
/// skip the promoted master without an error and a `SCAN` would miss its keys.
async fn masters(conn: &mut ClusterConnection) -> redis::RedisResult<Vec<NodeAddress>> {
    let ranges: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut masters = Vec::new();
    for range in ranges {
        // [first slot, last slot, [host, port, id, …] of the master, replicas…]
        let master = match &range {
            Value::Array(fields) => fields.get(2),
            _ => None,
        };
        let Some(Value::Array(master)) = master else {
            return Err(unexpected("a CLUSTER SLOTS range", &range));
        };
        let (Some(host), Some(port)) = (master.first(), master.get(1)) else {
            return Err(unexpected("a master's host and port", &range));
        };
        let host: String = redis::from_redis_value_ref(host)?;
        if host.is_empty() || host == "?" {
            // The node does not know that master's address: the list would be incomplete.
            return Err(unexpected("a master's address", &range));
        }
        let node = NodeAddress::new(host, redis::from_redis_value_ref(port)?);
        if !masters.contains(&node) {
            masters.push(node);
        }
    }
    Ok(masters)
}

/// The route to one node of the cluster.
fn by_address(node: &NodeAddress) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: node.host().to_owned(),
        port: node.port(),
    })
}

/// Whether a cluster error says the cluster cannot serve now (a slot without a master, or
/// no node reachable), as opposed to a refused command.
fn cluster_unavailable(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        e.kind(),
        ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(ServerErrorKind::ClusterDown | ServerErrorKind::MasterDown)
    )
}

fn unexpected(expected: &str, got: &Value) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        format!("expected {expected}, got {got:?}"),
    ))
}

/// What the pool talks to.
#[derive(Clone)]
enum Backend {
    /// One server, through a bb8 pool of multiplexed connections.
    Standalone(Arc<Standalone>),
    /// A cluster, through one multiplexed cluster connection shared by every operation.
    Cluster(ClusterConnection),
}

/// The pool of the standalone mode.
struct Standalone {
    /// The current pool; replaced wholesale when a connection turns out to be dead.
    pool: RwLock<bb8::Pool<RedisConnectionManager>>,
    /// How to build a new pool.
    manager: RedisConnectionManager,
    /// Connections per pool.
    max_size: u32,
    /// Check-out counts of the pools replaced by [`RedisPool::reset`], so the reported
    /// counters never go back.
    retired: std::sync::Mutex<PoolStats>,
}

/// A Redis pool with timeouts and a circuit breaker.
#[derive(Clone)]
pub struct RedisPool {
    /// The server's pool or the cluster's connection.
    backend: Backend,
    breaker: Arc<Breaker>,
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
    /// counts the operations that do not happen in `metrics`. `max_size` bounds the
    /// standalone pool (a cluster is served by one multiplexed connection).
    pub fn new(
        target: &RedisTarget,
        max_size: u32,
        metrics: RedisMetrics,
    ) -> Result<Self, redis::RedisError> {
        let backend = match target {
            RedisTarget::Standalone(client) => {
                // The connection info carries the client's TLS settings (custom CA included).
                let manager = RedisConnectionManager::new(client.get_connection_info().clone())?;
                Backend::Standalone(Arc::new(Standalone {
                    pool: RwLock::new(build(manager.clone(), max_size)),
                    manager,
                    max_size,
                    retired: std::sync::Mutex::default(),
                }))
            }
            RedisTarget::Cluster(seeds) => {
                let client = seeds.builder().build()?;
                // Pending: it connects in the background (and again whenever it lost every
                // node), so start-up does not need the cluster.
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(CONNECTION_TIMEOUT)
                    .set_response_timeout(COMMAND_TIMEOUT);
                Backend::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        Ok(Self {
            backend,
            breaker: Arc::default(),
            metrics,
        })
    }

    /// Whether this pool talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// How keys must be named on this pool's deployment.
    pub fn key_form(&self) -> KeyForm {
        match self.backend {
            Backend::Standalone(_) => KeyForm::Plain,
            Backend::Cluster(_) => KeyForm::HashTagged,
        }
    }

    /// Whether the breaker skips Redis now.
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The pool's connections now and its check-out counts since start (pools replaced
    /// after a Redis restart included). A cluster connection counts as one connection,
    /// always idle: it is shared, never checked out.
    pub fn stats(&self) -> PoolStats {
        match &self.backend {
            Backend::Standalone(standalone) => {
                let current = PoolStats::of(&standalone.current().state(), standalone.max_size);
                let retired = *standalone
                    .retired
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                current.plus_counts(&retired)
            }
            Backend::Cluster(_) => PoolStats {
                connections: 1,
                idle: 1,
                max_size: 1,
                ..PoolStats::default()
            },
        }
    }

    /// Runs one operation on a pooled connection, unless the breaker is open; any failure
    /// or timeout opens it.
    pub async fn run<T, F>(&self, op: F) -> Result<T, RedisUnavailable>
    where
        F: AsyncFnOnce(&mut RedisConnection<'_>) -> redis::RedisResult<T> + Clone,
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
        F: AsyncFnOnce(&mut RedisConnection<'_>) -> redis::RedisResult<T> + Clone,
    {
        let result = match self.attempt(op.clone()).await {
            // A pooled connection that died with a Redis restart fails at once; the pool
            // was reset, so one retry on a fresh connection tells whether Redis is back.
            // (A cluster connection reconnects by itself; the retry goes to the new route.)
            Err(Attempt::Dropped(_)) => match self.attempt(op).await {
                Err(Attempt::Dropped(e)) if self.is_cluster() => {
                    // Standalone, the fresh connection's failed connect opened the breaker;
                    // a cluster connection has no connect step, so count it here.
                    self.breaker.record_failure();
                    Err(e)
                }
                other => other.map_err(Attempt::into_error),
            },
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
        F: AsyncFnOnce(&mut RedisConnection<'_>) -> redis::RedisResult<T> + Clone,
    {
        match &self.backend {
            Backend::Standalone(standalone) => {
                let pool = standalone.current();
                let mut conn = match pool.get().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        self.breaker.record_failure();
                        return Err(Attempt::Failed(RedisUnavailable::Connect(e.to_string())));
                    }
                };
                let result = tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    op(&mut RedisConnection::Standalone(&mut conn)),
                )
                .await;
                self.judge(result, || {
                    drop(conn);
                    standalone.reset();
                })
            }
            Backend::Cluster(connection) => {
                let mut conn = connection.clone();
                let result = tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    op(&mut RedisConnection::Cluster(&mut conn)),
                )
                .await;
                // Nothing to reset: the cluster connection reconnects on its own.
                self.judge(result, || drop(conn))
            }
        }
    }

    /// Turns an operation's outcome into a result, feeding the breaker; `reset` drops the
    /// connection when it is dead or hung.
    fn judge<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
        reset: impl FnOnce(),
    ) -> Result<T, Attempt> {
        match result {
            Ok(Ok(value)) => {
                self.breaker.record_success();
                Ok(value)
            }
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() => {
                reset();
                Err(Attempt::Dropped(RedisUnavailable::Command(e.to_string())))
            }
            Ok(Err(e)) => {
                // A server-side error (e.g. OOM, WRONGTYPE) says Redis is up; a cluster
                // that lost a slot's master (CLUSTERDOWN, no connection) is not.
                if e.is_timeout() || cluster_unavailable(&e) {
                    self.breaker.record_failure();
                }
                Err(Attempt::Failed(RedisUnavailable::Command(e.to_string())))
            }
            Err(_) => {
                self.breaker.record_failure();
                reset();
                Err(Attempt::Failed(RedisUnavailable::Command(
                    "timed out".into(),
                )))
            }
        }
    }

    /// Every key matching the glob `pattern`, found with `SCAN` (never `KEYS`, which
    /// blocks Redis on large databases): on the server, or on every master of the cluster,
    /// each page one operation.
    pub async fn scan_match(&self, pattern: &str) -> Result<Vec<String>, RedisUnavailable> {
        let scan = |cursor: u64| {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            cmd
        };
        let first = scan(0);
        let mut nodes = self
            .run(async |conn| conn.on_every_master(&first).await)
            .await?;
        let mut keys = Vec::new();
        while let Some((node, reply)) = nodes.pop() {
            let (cursor, batch): (u64, Vec<String>) = redis::from_redis_value(reply)
                .map_err(|e| RedisUnavailable::Command(redis::RedisError::from(e).to_string()))?;
            keys.extend(batch);
            if cursor != 0 {
                let next = scan(cursor);
                let reply = self
                    .run(async |conn| conn.on_node(node.as_ref(), &next).await)
                    .await?;
                nodes.push((node, reply));
            }
        }
        Ok(keys)
    }

    /// Whether Redis answers now (ignores the breaker, and resets it on success): the
    /// server answers PING; a cluster node reports `cluster_state:ok` (every slot served
    /// by a reachable master).
    pub async fn ping(&self) -> bool {
        if self.is_cluster() {
            return self
                .run_unguarded(async |conn| {
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(conn)
                        .await
                })
                .await
                .is_ok_and(|info| info.lines().any(|line| line.trim() == "cluster_state:ok"));
        }
        self.run_unguarded(async |conn| redis::cmd("PING").query_async::<String>(conn).await)
            .await
            .is_ok()
    }
}

impl Standalone {
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
}
