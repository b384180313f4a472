//! Pool statistics read at scrape time: the Postgres and Redis pools' connections,
//! waits and check-outs, as a `prometheus_client` collector.

use super::*;

/// A pool's numbers as `/metrics` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolStats {
    /// Connections open.
    pub connections: u32,
    /// Of which idle.
    pub idle: u32,
    /// The pool's size.
    pub max_size: u32,
    /// Check-outs that found an idle connection.
    pub gets_direct: u64,
    /// Check-outs that waited.
    pub gets_waited: u64,
    /// Check-outs that gave up.
    pub gets_timed_out: u64,
    /// Check-outs waiting now.
    pub pending: u64,
    /// Time spent waiting, in seconds.
    pub wait_seconds: f64,
}

impl PoolStats {
    /// The numbers of a bb8 pool's state.
    pub fn of(state: &bb8::State, max_size: u32) -> Self {
        let stats = &state.statistics;
        Self {
            connections: state.connections,
            idle: state.idle_connections,
            max_size,
            gets_direct: stats.get_direct,
            gets_waited: stats.get_waited,
            gets_timed_out: stats.get_timed_out,
            pending: stats.pending_gets(),
            wait_seconds: stats.get_wait_time.as_secs_f64(),
        }
    }

    /// Adds the counters (not the gauges) of `other`.
    #[must_use]
    pub fn plus_counts(mut self, other: &Self) -> Self {
        self.gets_direct += other.gets_direct;
        self.gets_waited += other.gets_waited;
        self.gets_timed_out += other.gets_timed_out;
        self.wait_seconds += other.wait_seconds;
        self
    }
}

/// Reads the pools when scraped.
#[derive(Default)]
pub(super) struct PoolCollector {
    pub(super) pools: OnceLock<AttachedPools>,
}

/// The pools of an instance.
pub(super) struct AttachedPools {
    pub(super) postgres: DbPool,
    pub(super) postgres_size: u32,
    pub(super) redis: RedisPool,
}

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolCollector").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    pool: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolResultLabels {
    pool: &'static str,
    result: &'static str,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(AttachedPools {
            postgres,
            postgres_size,
            redis,
        }) = self.pools.get()
        else {
            return Ok(());
        };
        let pools = [
            ("postgres", PoolStats::of(&postgres.state(), *postgres_size)),
            ("redis", redis.stats()),
        ];
        let breaker = ConstGauge::new(i64::from(redis.breaker_open()));
        breaker.encode(encoder.encode_descriptor(
            "redis_breaker_open",
            "1 while the Redis circuit breaker skips Redis",
            None,
            MetricType::Gauge,
        )?)?;

        let mut family = encoder.encode_descriptor(
            "pool_connections",
            "Pool connections, in use or idle",
            None,
            MetricType::Gauge,
        )?;
        for (pool, stats) in &pools {
            let in_use = stats.connections.saturating_sub(stats.idle);
            for (state, value) in [("in_use", in_use), ("idle", stats.idle)] {
                ConstGauge::new(i64::from(value))
                    .encode(family.encode_family(&PoolStateLabels { pool, state })?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "pool_max_connections",
            "Pool size",
            None,
            MetricType::Gauge,
        )?;
        for (pool, stats) in &pools {
            ConstGauge::new(i64::from(stats.max_size))
                .encode(family.encode_family(&PoolLabel { pool })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "pool_pending_gets",
            "Requests waiting for a pool connection now",
            None,
            MetricType::Gauge,
        )?;
        for (pool, stats) in &pools {
            ConstGauge::new(stats.pending as i64)
                .encode(family.encode_family(&PoolLabel { pool })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "pool_gets",
            "Pool connection check-outs: direct (one was idle), waited, timed_out",
            None,
            MetricType::Counter,
        )?;
        for (pool, stats) in &pools {
            for (result, value) in [
                ("direct", stats.gets_direct),
                ("waited", stats.gets_waited),
                ("timed_out", stats.gets_timed_out),
            ] {
                ConstCounter::new(value)
                    .encode(family.encode_family(&PoolResultLabels { pool, result })?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "pool_get_wait_seconds",
            "Time spent waiting for pool connections",
            None,
            MetricType::Counter,
        )?;
        for (pool, stats) in &pools {
            ConstCounter::new(stats.wait_seconds)
                .encode(family.encode_family(&PoolLabel { pool })?)?;
        }
        Ok(())
    }
}
