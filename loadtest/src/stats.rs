//! Latency histograms and error counts per operation, kept per task and merged at the end
//! (no lock on the hot path), and the report they make.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly: one hour, in microseconds (larger values saturate).
const MAX_MICROS: u64 = 3_600_000_000;

/// Samples kept raw before they go into the histogram (a histogram with these bounds
/// takes ~180 KB: tasks that make a few calls keep a few samples instead).
const RAW_SAMPLES: usize = 4096;

/// Latencies (microseconds) and errors of one operation.
#[derive(Clone, Default)]
pub struct OpStats {
    /// Latencies of successful calls not yet in `histogram`, in microseconds.
    raw: Vec<u64>,
    /// Latencies of the other successful calls, allocated once `raw` fills up.
    histogram: Option<Histogram<u64>>,
    /// Failed calls by error class (`UNAVAILABLE`, `http:503`, `transport:timeout`…).
    pub errors: BTreeMap<String, u64>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .unwrap_or_else(|e| unreachable!("valid histogram bounds: {e}"))
}

impl OpStats {
    /// Records one success that took `elapsed`.
    pub fn ok(&mut self, elapsed: Duration) {
        let micros = (elapsed.as_micros() as u64).clamp(1, MAX_MICROS);
        self.raw.push(micros);
        if self.raw.len() >= RAW_SAMPLES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let histogram = self.histogram.get_or_insert_with(new_histogram);
        for micros in self.raw.drain(..) {
            histogram.saturating_record(micros);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty() && self.histogram.is_none() && self.errors.is_empty()
    }

    /// All latencies in one histogram.
    fn latency(&self) -> Histogram<u64> {
        let mut histogram = self.histogram.clone().unwrap_or_else(new_histogram);
        for &micros in &self.raw {
            histogram.saturating_record(micros);
        }
        histogram
    }

    /// Records one failure of class `class`.
    pub fn error(&mut self, class: &str) {
        *self.errors.entry(class.to_owned()).or_default() += 1;
    }

    fn merge(&mut self, other: &OpStats) {
        if let Some(histogram) = &other.histogram {
            // Same bounds on both sides: adding cannot fail.
            let _ = self
                .histogram
                .get_or_insert_with(new_histogram)
                .add(histogram);
        }
        self.raw.extend_from_slice(&other.raw);
        if self.raw.len() >= RAW_SAMPLES {
            self.flush();
        }
        for (class, n) in &other.errors {
            *self.errors.entry(class.clone()).or_default() += n;
        }
    }

    fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Statistics of every operation a task performed, keyed by operation name.
#[derive(Clone, Default)]
pub struct Metrics {
    ops: BTreeMap<&'static str, OpStats>,
}

impl Metrics {
    /// The statistics of `op`, created on first use.
    pub fn op(&mut self, op: &'static str) -> &mut OpStats {
        self.ops.entry(op).or_default()
    }

    /// Adds another task's statistics to these.
    pub fn merge(&mut self, other: &Metrics) {
        for (name, stats) in &other.ops {
            self.op(name).merge(stats);
        }
    }

    /// Failures over all operations.
    pub fn errors_total(&self) -> u64 {
        self.ops.values().map(OpStats::errors_total).sum()
    }

    /// The summary of each operation over a window of `seconds`.
    pub fn summaries(&self, seconds: f64) -> BTreeMap<String, OpSummary> {
        self.ops
            .iter()
            .map(|(name, stats)| ((*name).to_owned(), OpSummary::new(stats, seconds)))
            .collect()
    }
}

/// One operation's figures, as printed and as written with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct OpSummary {
    /// Successful calls.
    pub count: u64,
    /// Successful calls per second over the measured window.
    pub per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile latency, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Largest latency, milliseconds.
    pub max_ms: f64,
    /// Mean latency, milliseconds.
    pub mean_ms: f64,
    /// Failed calls by error class.
    pub errors: BTreeMap<String, u64>,
}

impl OpSummary {
    fn new(stats: &OpStats, seconds: f64) -> Self {
        let h = &stats.latency();
        let ms = |micros: u64| micros as f64 / 1000.0;
        let count = h.len();
        let (p50, p95, p99, max) = if count == 0 {
            (0, 0, 0, 0)
        } else {
            (
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.95),
                h.value_at_quantile(0.99),
                h.max(),
            )
        };
        Self {
            count,
            per_second: if seconds > 0.0 {
                count as f64 / seconds
            } else {
                0.0
            },
            p50_ms: ms(p50),
            p95_ms: ms(p95),
            p99_ms: ms(p99),
            max_ms: ms(max),
            mean_ms: if count == 0 { 0.0 } else { h.mean() / 1000.0 },
            errors: stats.errors.clone(),
        }
    }
}

/// The operations table, for humans.
pub fn table(summaries: &BTreeMap<String, OpSummary>) -> String {
    let mut out = format!(
        "{:<16} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  errors\n",
        "operation", "count", "per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"
    );
    for (name, s) in summaries {
        let errors = if s.errors.is_empty() {
            "-".to_owned()
        } else {
            s.errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        out.push_str(&format!(
            "{:<16} {:>9} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}\n",
            name, s.count, s.per_second, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.mean_ms, errors
        ));
    }
    out
}
