//! Metrics: every metric the service exports, with its name, labels and meaning, in one
//! Prometheus [`Registry`] per [`App`](crate::app::App) (never a process-global recorder:
//! two instances in one process count apart), rendered in the Prometheus text format
//! (version 0.0.4) by `GET /metrics`.
//!
//! Owns every metric name and what it counts; must not decide anything, log, or do I/O:
//! the code that does the work calls in here, and the pool states are read (in memory)
//! when Prometheus scrapes.
//!
//! The hot path stays cheap: counters and gauges are atomics, histograms a short
//! uncontended lock; every label set that can be known in advance is created once and kept
//! as a handle (no map look-up, no allocation per increment), and a GraphQL operation's
//! handles are created on its first request and reused after that.
//!
//! | metric | type | labels | what |
//! | --- | --- | --- | --- |
//! | `adaptive_engine_build_info` | gauge | `version` | always 1 |
//! | `adaptive_engine_graphql_requests_total` | counter | `operation`, `outcome` | GraphQL root fields run (`operation`: the root field, e.g. `submitAnswer`; `none` for a request refused before any field ran: syntax, validation, cost, size, a WebSocket's operation cap), by `outcome`: `ok` or the error's `extensions.code` (`BAD_USER_INPUT`…) |
//! | `adaptive_engine_graphql_request_duration_seconds` | histogram | `operation` | time to resolve a query or mutation root field (subscriptions: not timed) |
//! | `adaptive_engine_answers_recorded_total` | counter | `path` | answers recorded: `fast` (one statement from the cached state) or `locked` (row lock, checks in order) |
//! | `adaptive_engine_answers_replayed_total` | counter | | a repeated submission answered with the recorded result |
//! | `adaptive_engine_exams_started_total` | counter | | new exams (a resume is not one) |
//! | `adaptive_engine_exams_completed_total` | counter | `reason` | exams completed, by stop reason (`MAX_ITEMS`, `SE_TARGET`…) |
//! | `adaptive_engine_exams_abandoned_total` | counter | | exams abandoned by an admin |
//! | `adaptive_engine_engine_step_seconds` | histogram | `mode` | one engine decision: `inline` on the async worker, `blocking` on a blocking thread (heavy designs; includes the wait for a permit) |
//! | `adaptive_engine_state_cache_lookups_total` | counter | `result` | reads of a Redis engine state: `hit` (found and readable), `miss` (none), `error` (Redis unavailable, or unreadable JSON) |
//! | `adaptive_engine_state_rebuilds_total` | counter | | engine histories read back from the Postgres attempts because the cache could not serve them (missing, stale, unavailable) |
//! | `adaptive_engine_exposure_reservations_total` | counter | `result` | exposure-control reservations of a chosen item: `granted`, `refused` (at its cap: another item is chosen), `missing` (counts rebuilt first), `unavailable` (Redis down: presented anyway) |
//! | `adaptive_engine_events_published_total` | counter | | exam events published on Redis for the other instances |
//! | `adaptive_engine_events_received_total` | counter | | events of other instances received from Redis |
//! | `adaptive_engine_events_delivered_total` | counter | | event copies handed to this instance's subscribers (one per subscriber) |
//! | `adaptive_engine_events_dropped_total` | counter | `reason` | events lost: `lagged` (a slow subscriber skipped them), `publish_failed` (Redis down: the fleet did not get it), `malformed` (an unreadable message on the channel) |
//! | `adaptive_engine_websocket_connections` | gauge | | open WebSocket connections |
//! | `adaptive_engine_websocket_subscriptions` | gauge | | operations (subscriptions) running on WebSockets |
//! | `adaptive_engine_redis_errors_total` | counter | `kind` | Redis operations that did not happen: `breaker_open` (skipped), `connect` (no connection in time), `command` (failed or timed out) |
//! | `adaptive_engine_redis_breaker_open` | gauge | | 1 while the Redis circuit breaker skips Redis |
//! | `adaptive_engine_pool_connections` | gauge | `pool`, `state` | connections of the `postgres` and `redis` pools, `in_use` or `idle` |
//! | `adaptive_engine_pool_max_connections` | gauge | `pool` | the pool's size |
//! | `adaptive_engine_pool_pending_gets` | gauge | `pool` | requests waiting for a connection now |
//! | `adaptive_engine_pool_gets_total` | counter | `pool`, `result` | connection check-outs: `direct` (one was idle), `waited`, `timed_out` |
//! | `adaptive_engine_pool_get_wait_seconds_total` | counter | `pool` | time spent waiting for connections |

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::storage::db::DbPool;
use crate::storage::redis_pool::RedisPool;

/// The counter type of the handles components keep.
pub use prometheus_client::metrics::counter::Counter;
/// The gauge type of the handles components keep.
pub use prometheus_client::metrics::gauge::Gauge;

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The prefix of every metric name.
const PREFIX: &str = "adaptive_engine";

/// The `operation` label of requests refused before any root field ran.
pub const NO_OPERATION: &str = "none";

/// Every `outcome` a GraphQL operation can be counted with: `ok`, then the error codes the
/// API documents (`AppError::code`, the codes the server gives parse and validation
/// errors, the WebSocket guard's). Anything else is counted as `OTHER`, so the label's
/// values stay a fixed, small set.
pub const OUTCOMES: [&str; 18] = [
    "ok",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "BAD_USER_INPUT",
    "ITEM_NOT_PRESENTED",
    "ALREADY_ANSWERED",
    "EXAM_NOT_ACTIVE",
    "ASSESSMENT_CLOSED",
    "ATTEMPT_LIMIT_REACHED",
    "NO_ITEM_AVAILABLE",
    "UNAVAILABLE",
    "INTERNAL",
    "GRAPHQL_VALIDATION_FAILED",
    "QUERY_TOO_COMPLEX",
    "PERSISTED_QUERY_NOT_FOUND",
    "TOO_MANY_SUBSCRIPTIONS",
    "OTHER",
];

/// Buckets of request latencies, in seconds (0.5 ms to 10 s).
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of engine steps, in seconds (10 µs to 2.5 s: a maximum-information step on a
/// small bank takes microseconds, a grid rule on a large one hundreds of milliseconds).
const STEP_BUCKETS: [f64; 17] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Labels of `graphql_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
    outcome: &'static str,
}

/// Labels of `graphql_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    operation: String,
}

/// One label whose values are fixed strings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The counters and histogram of one GraphQL root field (or of the refused requests),
/// each created on first use and kept.
#[derive(Debug)]
pub struct OperationMetrics {
    /// The root field.
    name: String,
    /// Its time to resolve.
    duration: OnceLock<Histogram>,
    /// One counter per entry of [`OUTCOMES`].
    outcomes: [OnceLock<Counter>; OUTCOMES.len()],
    /// Where the counters live.
    requests: Family<OperationLabels, Counter>,
    /// Where the histogram lives.
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
}

impl OperationMetrics {
    /// Counts one run of the field with `outcome` (`None`: ok; else an error code).
    pub fn count(&self, outcome: Option<&str>) {
        self.counter(outcome.map_or(0, outcome_index)).inc();
    }

    /// Counts one run of the field and records how long it took.
    pub fn observe(&self, outcome: Option<&str>, elapsed: Duration) {
        self.count(outcome);
        self.histogram().observe(elapsed.as_secs_f64());
    }

    /// Creates the success counter and the histogram now, so they are scraped at 0 before
    /// the first request.
    fn prepare(&self) {
        self.counter(0);
        self.histogram();
    }

    fn counter(&self, index: usize) -> &Counter {
        self.outcomes[index].get_or_init(|| {
            self.requests.get_or_create_owned(&OperationLabels {
                operation: self.name.clone(),
                outcome: OUTCOMES[index],
            })
        })
    }

    fn histogram(&self) -> &Histogram {
        self.duration.get_or_init(|| {
            self.durations.get_or_create_owned(&DurationLabels {
                operation: self.name.clone(),
            })
        })
    }
}

/// The index in [`OUTCOMES`] of an error code (`OTHER` for an unknown one).
fn outcome_index(code: &str) -> usize {
    OUTCOMES
        .iter()
        .skip(1)
        .position(|known| *known == code)
        .map_or(OUTCOMES.len() - 1, |i| i + 1)
}

/// How an answer was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerPath {
    /// One conditional statement from the cached engine state.
    Fast,
    /// The locked transaction.
    Locked,
}

/// Where an engine step ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepMode {
    /// On the async worker.
    Inline,
    /// On a blocking thread.
    Blocking,
}

/// What a read of a Redis engine state found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A readable state.
    Hit,
    /// No state.
    Miss,
    /// Redis unavailable, or the state unreadable.
    Error,
}

/// Counters of the Redis engine-state cache.
#[derive(Clone, Debug)]
pub struct CacheMetrics {
    hit: Counter,
    miss: Counter,
    error: Counter,
    /// Histories read back from Postgres.
    pub rebuilds: Counter,
}

impl CacheMetrics {
    /// Counts one read of a state.
    pub fn lookup(&self, lookup: Lookup) {
        match lookup {
            Lookup::Hit => self.hit.inc(),
            Lookup::Miss => self.miss.inc(),
            Lookup::Error => self.error.inc(),
        };
    }
}

/// Counters of the exposure reservations, one per result.
#[derive(Clone, Debug)]
pub struct ExposureMetrics {
    /// The item may be presented.
    pub granted: Counter,
    /// The item is at its cap.
    pub refused: Counter,
    /// The counts had to be rebuilt first.
    pub missing: Counter,
    /// Redis was down: the item is presented anyway.
    pub unavailable: Counter,
}

/// Counters of the exam events (the event bus and the state store use them).
#[derive(Clone, Debug)]
pub struct EventMetrics {
    /// Published on Redis.
    pub published: Counter,
    /// Received from other instances.
    pub received: Counter,
    /// Copies handed to local subscribers.
    pub delivered: Counter,
    /// Skipped by slow subscribers.
    pub lagged: Counter,
    /// Not published because Redis was unavailable.
    pub publish_failed: Counter,
    /// Unreadable messages on the channel.
    pub malformed: Counter,
}

/// Counters of Redis operations that did not happen (the Redis pool uses them).
#[derive(Clone, Debug)]
pub struct RedisMetrics {
    /// Skipped while the breaker is open.
    pub breaker_open: Counter,
    /// No connection in time.
    pub connect: Counter,
    /// Failed or timed-out commands.
    pub command: Counter,
}

/// The metrics of one service instance. Components get a handle to the counters they
/// move; `GET /metrics` renders all of them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<OperationLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    /// Handles of the operations seen so far, by root field.
    operations: RwLock<std::collections::HashMap<String, Arc<OperationMetrics>>>,
    /// The requests refused before any root field ran.
    rejected: OperationMetrics,
    answers_fast: Counter,
    answers_locked: Counter,
    /// Repeated submissions answered with the recorded result.
    pub answers_replayed: Counter,
    /// New exams.
    pub exams_started: Counter,
    completed: Family<ReasonLabel, Counter>,
    /// Exams abandoned by an admin.
    pub exams_abandoned: Counter,
    step_inline: Histogram,
    step_blocking: Histogram,
    /// The engine-state cache.
    pub cache: CacheMetrics,
    /// Exposure reservations.
    pub exposure: ExposureMetrics,
    /// Exam events.
    pub events: EventMetrics,
    /// Redis operations that did not happen.
    pub redis: RedisMetrics,
    /// Open WebSockets.
    pub websocket_connections: Gauge,
    /// Operations running on WebSockets.
    pub websocket_subscriptions: Gauge,
    /// The pools read at scrape time, once the application attached them.
    pools: Arc<PoolCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric of one instance, registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let info = Family::<VersionLabel, Gauge>::default();
        info.get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register("build_info", "Always 1; the version serving", info);

        let requests = Family::<OperationLabels, Counter>::default();
        registry.register(
            "graphql_requests",
            "GraphQL root fields run, by root field (none: refused before any ran) and \
             outcome (ok or the error code)",
            requests.clone(),
        );
        let durations =
            Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(REQUEST_BUCKETS)
            });
        registry.register(
            "graphql_request_duration_seconds",
            "Time to resolve a query or mutation root field",
            durations.clone(),
        );

        let answers = Family::<PathLabel, Counter>::default();
        let answers_fast = answers.get_or_create_owned(&PathLabel { path: "fast" });
        let answers_locked = answers.get_or_create_owned(&PathLabel { path: "locked" });
        registry.register(
            "answers_recorded",
            "Answers recorded, by path (fast: from the cached state; locked: under the row lock)",
            answers,
        );
        let answers_replayed = Counter::default();
        registry.register(
            "answers_replayed",
            "Repeated submissions answered with the recorded result",
            answers_replayed.clone(),
        );
        let exams_started = Counter::default();
        registry.register(
            "exams_started",
            "New exams started (resumes excluded)",
            exams_started.clone(),
        );
        let completed = Family::<ReasonLabel, Counter>::default();
        for reason in crate::storage::enums::StopCode::ALL {
            completed.get_or_create_owned(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        registry.register(
            "exams_completed",
            "Exams completed, by stop reason",
            completed.clone(),
        );
        let exams_abandoned = Counter::default();
        registry.register(
            "exams_abandoned",
            "Exams abandoned by an admin",
            exams_abandoned.clone(),
        );

        let steps = Family::<ModeLabel, Histogram, fn() -> Histogram>::new_with_constructor(|| {
            Histogram::new(STEP_BUCKETS)
        });
        let step_inline = steps.get_or_create_owned(&ModeLabel { mode: "inline" });
        let step_blocking = steps.get_or_create_owned(&ModeLabel { mode: "blocking" });
        registry.register(
            "engine_step_seconds",
            "Time of one engine decision (inline, or on a blocking thread with the wait for it)",
            steps,
        );

        let lookups = Family::<ResultLabel, Counter>::default();
        let lookup = |result| lookups.get_or_create_owned(&ResultLabel { result });
        let (hit, miss, error) = (lookup("hit"), lookup("miss"), lookup("error"));
        registry.register(
            "state_cache_lookups",
            "Reads of Redis engine states: hit, miss (none), error (unavailable or unreadable)",
            lookups,
        );
        let rebuilds = Counter::default();
        registry.register(
            "state_rebuilds",
            "Engine histories read back from Postgres because the cache could not serve them",
            rebuilds.clone(),
        );

        let reservations = Family::<ResultLabel, Counter>::default();
        let reservation = |result| reservations.get_or_create_owned(&ResultLabel { result });
        let exposure = ExposureMetrics {
            granted: reservation("granted"),
            refused: reservation("refused"),
            missing: reservation("missing"),
            unavailable: reservation("unavailable"),
        };
        registry.register(
            "exposure_reservations",
            "Exposure-control reservations of a chosen item, by result",
            reservations,
        );

        let events = event_metrics(&mut registry);
        let redis = redis_metrics(&mut registry);

        let websocket_connections = Gauge::default();
        registry.register(
            "websocket_connections",
            "Open WebSocket connections",
            websocket_connections.clone(),
        );
        let websocket_subscriptions = Gauge::default();
        registry.register(
            "websocket_subscriptions",
            "Operations (subscriptions) running on WebSockets",
            websocket_subscriptions.clone(),
        );

        let pools = Arc::new(PoolCollector::default());
        registry.register_collector(Box::new(Arc::clone(&pools)));

        let rejected = OperationMetrics {
            name: NO_OPERATION.to_owned(),
            duration: OnceLock::new(),
            outcomes: Default::default(),
            requests: requests.clone(),
            durations: durations.clone(),
        };
        let metrics = Self {
            registry,
            requests,
            durations,
            operations: RwLock::default(),
            rejected,
            answers_fast,
            answers_locked,
            answers_replayed,
            exams_started,
            completed,
            exams_abandoned,
            step_inline,
            step_blocking,
            cache: CacheMetrics {
                hit,
                miss,
                error,
                rebuilds,
            },
            exposure,
            events,
            redis,
            websocket_connections,
            websocket_subscriptions,
            pools,
        };
        // The operations a dashboard looks at first are there from the first scrape.
        for operation in ["startExam", "submitAnswer", "engineSummary"] {
            metrics.operation(operation).prepare();
        }
        metrics
    }

    /// The pools whose connections `/metrics` reports (read when scraped); `postgres_size`
    /// is the Postgres pool's size (bb8 does not tell). The first call wins; later ones are
    /// ignored.
    pub fn attach_pools(&self, postgres: DbPool, postgres_size: u32, redis: RedisPool) {
        let _ = self.pools.pools.set(AttachedPools {
            postgres,
            postgres_size,
            redis,
        });
    }

    /// The handles of a GraphQL root field (created on its first request).
    pub fn operation(&self, field: &str) -> Arc<OperationMetrics> {
        let read = self
            .operations
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(operation) = read.get(field) {
            return Arc::clone(operation);
        }
        drop(read);
        let mut write = self
            .operations
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let operation = write.entry(field.to_owned()).or_insert_with(|| {
            Arc::new(OperationMetrics {
                name: field.to_owned(),
                duration: OnceLock::new(),
                outcomes: Default::default(),
                requests: self.requests.clone(),
                durations: self.durations.clone(),
            })
        });
        Arc::clone(operation)
    }

    /// Counts a GraphQL request refused before any root field ran, with its error code.
    pub fn graphql_rejected(&self, code: &str) {
        self.rejected.count(Some(code));
    }

    /// Counts a recorded answer.
    pub fn answer_recorded(&self, path: AnswerPath) {
        match path {
            AnswerPath::Fast => self.answers_fast.inc(),
            AnswerPath::Locked => self.answers_locked.inc(),
        };
    }

    /// Counts a completed exam under its stop reason (`UNKNOWN` when it has none).
    pub fn exam_completed(&self, reason: Option<&'static str>) {
        self.completed
            .get_or_create(&ReasonLabel {
                reason: reason.unwrap_or("UNKNOWN"),
            })
            .inc();
    }

    /// Records one engine step.
    pub fn engine_step(&self, mode: StepMode, elapsed: Duration) {
        let histogram = match mode {
            StepMode::Inline => &self.step_inline,
            StepMode::Blocking => &self.step_blocking,
        };
        histogram.observe(elapsed.as_secs_f64());
    }

    /// The whole registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoder error would mean a bug in a metric.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            text.push_str(&format!("# encoding failed: {e}\n"));
        }
        text
    }
}

fn event_metrics(registry: &mut Registry) -> EventMetrics {
    let published = Counter::default();
    registry.register(
        "events_published",
        "Exam events published on Redis for the other instances",
        published.clone(),
    );
    let received = Counter::default();
    registry.register(
        "events_received",
        "Exam events of other instances received from Redis",
        received.clone(),
    );
    let delivered = Counter::default();
    registry.register(
        "events_delivered",
        "Exam event copies handed to this instance's subscribers (one per subscriber)",
        delivered.clone(),
    );
    let dropped = Family::<ReasonLabel, Counter>::default();
    let drop_reason = |reason| dropped.get_or_create_owned(&ReasonLabel { reason });
    let events = EventMetrics {
        published,
        received,
        delivered,
        lagged: drop_reason("lagged"),
        publish_failed: drop_reason("publish_failed"),
        malformed: drop_reason("malformed"),
    };
    registry.register(
        "events_dropped",
        "Exam events lost: lagged (a slow subscriber skipped them), publish_failed (Redis \
         down), malformed (unreadable on the channel)",
        dropped,
    );
    events
}

fn redis_metrics(registry: &mut Registry) -> RedisMetrics {
    let errors = Family::<KindLabel, Counter>::default();
    let kind = |kind| errors.get_or_create_owned(&KindLabel { kind });
    let redis = RedisMetrics {
        breaker_open: kind("breaker_open"),
        connect: kind("connect"),
        command: kind("command"),
    };
    registry.register(
        "redis_errors",
        "Redis operations that did not happen: breaker_open (skipped), connect, command",
        errors,
    );
    redis
}

mod pools;
pub use pools::PoolStats;
use pools::{AttachedPools, PoolCollector};

#[cfg(test)]
mod tests;
