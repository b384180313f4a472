//! `loadtest`: a load generator for a running adaptive-engine.
//!
//! It mints its own HS256 tokens with the server's `JWT_SECRET` (same claims as the
//! service: `sub`, `role`, `exp`), creates (or reuses) a 3PL item bank as admin, and then
//! runs one of three modes:
//!
//! - **load** (default): `--students N` virtual students, each with a true theta drawn
//!   from N(0, 1), start exams and answer every presented item by the 3PL model ("A", the
//!   key, when the draw is correct, else "B") until the exam completes, then start again,
//!   for `--duration` seconds or `--exams K` exams in total. `--subscribers M` adds M
//!   graphql-transport-ws clients following the students' live exams through
//!   `thetaUpdates`.
//! - **idle subscriptions** (`--idle-subscriptions K`): starts K exams, opens one socket
//!   per exam subscribed to its `thetaUpdates`, holds them for `--duration` seconds while
//!   answering `--idle-answers` items of every exam, and checks every subscription got
//!   every event (with `--server-pid`, reports the server's RSS per subscription).
//! - **park** (`--park-exams N --park-answers A`): starts N exams and answers A items of
//!   each, leaving them live (to measure Redis memory per live exam).
//!
//! Every operation's latency goes into an HDR histogram (microseconds); failures are
//! counted by GraphQL `extensions.code`, HTTP status or transport error. The report is a
//! table, or one JSON object with `--json`; `--fail-on-error` exits 1 after any error.

mod api;
mod stats;
mod ws;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adaptive_engine::auth::{JwtKeys, Role};
use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use api::{Api, CallError, Presented};
use stats::{Metrics, OpStats, OpSummary};

/// Load generator for adaptive-engine: virtual students taking adaptive exams over the
/// GraphQL API, live `thetaUpdates` subscribers, and latency/throughput/error figures.
#[derive(Parser, Debug)]
#[command(name = "loadtest", version, long_about = None)]
struct Cli {
    /// Base URL of the running service.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// The server's JWT_SECRET (HS256); tokens are minted locally.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// Reuse this item bank instead of creating one (items of banks this tool did not
    /// create are answered correctly with probability 0.5).
    #[arg(long)]
    bank_id: Option<String>,
    /// Items of the bank to create.
    #[arg(long, default_value_t = 500)]
    bank_items: usize,
    /// Decimals of the created bank's parameters (4, as calibration software reports them;
    /// the cached engine state holds the parameters, so this sets its size).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=17))]
    param_decimals: u32,
    /// Concurrent virtual students (also the concurrency of the setup phases of the idle
    /// and park modes).
    #[arg(long, default_value_t = 32)]
    students: usize,
    /// Seconds of measured load (idle mode: how long subscriptions are held).
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Stop after this many exams in total (each finished) instead of after --duration.
    #[arg(long)]
    exams: Option<u64>,
    /// Seconds of load before measuring starts (operations then are not counted).
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// maxItems of every exam.
    #[arg(long, default_value_t = 20)]
    max_items: u32,
    /// WebSocket clients following the students' live exams (thetaUpdates); with fewer
    /// subscribers than students one socket follows several students' exams, with more
    /// each exam is followed by several sockets.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    /// Idle-subscriptions mode: open this many sockets, one subscription each, to exams
    /// started for the purpose, and hold them for --duration seconds.
    #[arg(long)]
    idle_subscriptions: Option<usize>,
    /// Idle mode: answer rounds (one item of every exam per round), the first right after
    /// the subscriptions are open, the last at the end of the hold.
    #[arg(long, default_value_t = 2)]
    idle_answers: u32,
    /// Idle mode: sockets being opened at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Park mode: start this many exams and leave them live.
    #[arg(long)]
    park_exams: Option<usize>,
    /// Park mode: answers given in each parked exam (must be below --max-items).
    #[arg(long, default_value_t = 19)]
    park_answers: u32,
    /// PID of the server, when on this machine: its VmRSS is reported (idle mode: before
    /// and after the subscriptions, and per subscription).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Prefix of the students' ids (default: load-<pid>-<random>).
    #[arg(long)]
    student_prefix: Option<String>,
    /// Seed of the students' abilities and responses.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when any error occurred, or an event was lost (idle mode: any
    /// event missing).
    #[arg(long)]
    fail_on_error: bool,
}

/// What the tool prints with `--json`.
#[derive(Serialize, Default)]
struct Report {
    mode: &'static str,
    url: String,
    bank_id: String,
    students: usize,
    duration_s: f64,
    max_items: u32,
    operations: std::collections::BTreeMap<String, OpSummary>,
    exams_started: u64,
    exams_completed: u64,
    answers: u64,
    correct_rate: f64,
    errors_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions: Option<SubscriptionReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    park: Option<ParkReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_kib: Option<RssReport>,
}

#[derive(Serialize, Default)]
struct SubscriptionReport {
    sockets_requested: usize,
    sockets_connected: usize,
    sockets_failed: usize,
    sockets_closed_by_server: usize,
    subscriptions: u64,
    events_expected: u64,
    events_received: u64,
    events_missing: u64,
    /// Of the missing events, those published before the subscription was live (the
    /// server registers a subscription asynchronously and does not acknowledge it).
    events_missing_before_live: u64,
    /// Missing events after the subscription's first event: lost.
    events_lost: u64,
    /// Subscriptions the server answered with an error (idle mode; the error codes are
    /// in the `event` operation's errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_failed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_with_all_events: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_missing_events: Option<usize>,
    errors: std::collections::BTreeMap<String, u64>,
}

#[derive(Serialize, Default)]
struct ParkReport {
    exams_requested: usize,
    exams_parked: u64,
    answers_each: u32,
}

#[derive(Serialize, Default)]
struct RssReport {
    pid: u32,
    before: Option<u64>,
    after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_subscription_bytes: Option<f64>,
}

/// Everything the tasks share.
struct Shared {
    api: Api,
    keys: JwtKeys,
    assessment: String,
    prefix: String,
    exams_started: AtomicU64,
    exams_completed: AtomicU64,
    answers: AtomicU64,
    correct: AtomicU64,
    /// When each watched answer was sent, by (exam, itemsCompleted after it).
    sent_at: Mutex<HashMap<(String, i64), Sent>>,
    /// Events the subscribers should receive (watched answers × their watchers).
    events_expected: AtomicU64,
    events_received: AtomicU64,
    /// Latency from sending an answer to receiving its event, and subscription errors.
    events: Mutex<OpStats>,
    /// Error details already printed (only the first few are).
    printed: AtomicUsize,
    /// Events of answers sent before this (the warm-up) are not measured.
    measure_from: std::sync::OnceLock<Instant>,
}

impl Shared {
    fn student_token(&self, sub: &str) -> String {
        self.keys.mint(sub, Role::Student, 6 * 3600)
    }

    fn admin_token(&self) -> String {
        self.keys
            .mint(&format!("{}-admin", self.prefix), Role::Admin, 6 * 3600)
    }

    fn note_error(&self, what: &str, error: &dyn std::fmt::Display) {
        if self.printed.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("loadtest: {what}: {error}");
        }
    }

    /// Notes that the answer making `items_completed` of `exam` is being sent, and that
    /// `watchers` subscriptions should see its event.
    fn note_sent(&self, exam: &str, items_completed: i64, watchers: u32) {
        lock(&self.sent_at).insert(
            (exam.to_owned(), items_completed),
            Sent {
                at: Instant::now(),
                watchers,
                received: 0,
                recorded: false,
            },
        );
    }

    /// Notes that the answer was recorded (its events are due).
    fn note_recorded(&self, exam: &str, items_completed: i64) {
        if let Some(sent) = lock(&self.sent_at).get_mut(&(exam.to_owned(), items_completed)) {
            sent.recorded = true;
        }
    }

    /// Events of recorded answers that did not arrive: (missing, of which before the
    /// subscription was live). An event missing before the first one a subscription got
    /// was published before the server had registered the subscription (the protocol has
    /// no subscribe acknowledgement); one missing after it is a lost event. Prints a few
    /// examples.
    fn missing_events(&self) -> (u64, u64) {
        let sent = lock(&self.sent_at);
        let mut first_seen: HashMap<&str, i64> = HashMap::new();
        for ((exam, k), s) in sent.iter() {
            if s.received > 0 {
                let first = first_seen.entry(exam.as_str()).or_insert(*k);
                *first = (*first).min(*k);
            }
        }
        let mut missing = 0;
        let mut before_live = 0;
        let mut examples = Vec::new();
        for ((exam, k), s) in sent.iter() {
            if s.recorded && s.received < s.watchers {
                let n = u64::from(s.watchers - s.received);
                missing += n;
                let live_from = first_seen.get(exam.as_str());
                if live_from.is_none_or(|first| k < first) {
                    before_live += n;
                }
                if examples.len() < 5 {
                    examples.push(format!(
                        "exam {exam} itemsCompleted {k} (first event seen: {live_from:?})"
                    ));
                }
            }
        }
        if !examples.is_empty() {
            eprintln!("loadtest: missed events, e.g. {}", examples.join("; "));
        }
        (missing, before_live)
    }

    fn event_received(&self, exam: &str, items_completed: i64) {
        let now = Instant::now();
        self.events_received.fetch_add(1, Ordering::Relaxed);
        let sent = lock(&self.sent_at)
            .get_mut(&(exam.to_owned(), items_completed))
            .map(|s| {
                s.received += 1;
                s.at
            });
        if let (Some(sent), Some(from)) = (sent, self.measure_from.get())
            && sent < *from
        {
            return;
        }
        let mut events = lock(&self.events);
        match sent {
            Some(sent) => events.ok(now.saturating_duration_since(sent)),
            None => events.ok(Duration::from_micros(1)),
        }
    }

    fn event_error(&self, class: &str) {
        lock(&self.events).error(class);
    }
}

/// One watched answer: when it was sent, how many subscriptions should see its event,
/// how many did, and whether it was recorded.
struct Sent {
    at: Instant,
    watchers: u32,
    received: u32,
    recorded: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The response a student of ability `theta` gives to `item` ("A" is the key).
fn respond(rng: &mut SmallRng, item: &Presented, theta: f64) -> (&'static str, bool) {
    let p = item.params.map(|p| p.p_correct(theta)).unwrap_or(0.5);
    if rng.random::<f64>() < p {
        ("A", true)
    } else {
        ("B", false)
    }
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match main_with(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the load; exit status 1 when `--fail-on-error` and something failed.
fn main_with(cli: &Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = runtime.block_on(run(cli))?;
    // Idle subscriptions have had time to register: every missing event counts there.
    let missing = report.subscriptions.as_ref().map_or(0, |s| {
        if report.mode == "idle-subscriptions" {
            s.events_missing
        } else {
            s.events_lost
        }
    });
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if cli.fail_on_error && (report.errors_total > 0 || missing > 0) {
        eprintln!(
            "loadtest: failing: {} errors, {missing} missed events",
            report.errors_total
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: &Cli) -> anyhow::Result<Report> {
    if cli.students == 0 {
        bail!("--students must be at least 1");
    }
    let wanted_fds = cli.idle_subscriptions.unwrap_or(0) + cli.students + cli.subscribers + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted_fds as u64 => eprintln!(
            "loadtest: warning: the open-files limit is {limit}, below the {wanted_fds} this run \
             may need (raise the hard limit: ulimit -Hn)"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("loadtest: warning: cannot raise the open-files limit: {e}"),
    }
    let prefix = cli.student_prefix.clone().unwrap_or_else(|| {
        format!(
            "load-{}-{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xff_ffff
        )
    });
    let api = Api::new(
        &cli.url,
        cli.students.max(cli.connect_concurrency) * 2,
        Duration::from_secs(cli.timeout),
    )?;
    let keys = JwtKeys::new(cli.jwt_secret.as_bytes());
    let admin = keys.mint(&format!("{prefix}-admin"), Role::Admin, 6 * 3600);
    let bank = match &cli.bank_id {
        Some(id) => {
            let count = api::check_bank(&api, &admin, id)
                .await
                .map_err(|e| anyhow::anyhow!("bank {id}: {e}"))?;
            eprintln!("loadtest: reusing bank {id} ({count} items)");
            id.clone()
        }
        None => {
            let started = Instant::now();
            let id = api::create_bank(
                &api,
                &admin,
                cli.bank_items,
                cli.param_decimals,
                &format!("{prefix} bank"),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the bank: {e}"))?;
            eprintln!(
                "loadtest: created bank {id} ({} items) in {:.0} ms",
                cli.bank_items,
                started.elapsed().as_secs_f64() * 1000.0
            );
            id
        }
    };
    let assessment = api::create_assessment(&api, &admin, &bank, cli.max_items)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the assessment: {e}"))?;
    let shared = Arc::new(Shared {
        api,
        keys,
        assessment,
        prefix,
        exams_started: AtomicU64::new(0),
        exams_completed: AtomicU64::new(0),
        answers: AtomicU64::new(0),
        correct: AtomicU64::new(0),
        sent_at: Mutex::new(HashMap::new()),
        events_expected: AtomicU64::new(0),
        events_received: AtomicU64::new(0),
        events: Mutex::new(OpStats::default()),
        printed: AtomicUsize::new(0),
        measure_from: std::sync::OnceLock::new(),
    });
    let mut report = Report {
        url: cli.url.clone(),
        bank_id: bank,
        students: cli.students,
        max_items: cli.max_items,
        ..Report::default()
    };
    let metrics = if let Some(k) = cli.idle_subscriptions {
        report.mode = "idle-subscriptions";
        idle_mode(cli, &shared, k, &mut report).await
    } else if let Some(n) = cli.park_exams {
        if cli.park_answers >= cli.max_items {
            bail!("--park-answers must be below --max-items (the exams must stay live)");
        }
        report.mode = "park";
        park_mode(cli, &shared, n, &mut report).await
    } else {
        report.mode = "load";
        load_mode(cli, &shared, &mut report).await
    };
    let mut metrics = metrics;
    let events = lock(&shared.events).clone();
    if !events.is_empty() {
        let mut m = Metrics::default();
        *m.op("event") = events;
        metrics.merge(&m);
    }
    report.operations = metrics.summaries(report.duration_s);
    report.errors_total = metrics.errors_total();
    if let Some(subs) = &report.subscriptions {
        report.errors_total += subs.errors.values().sum::<u64>();
    }
    report.exams_started = shared.exams_started.load(Ordering::Relaxed);
    report.exams_completed = shared.exams_completed.load(Ordering::Relaxed);
    report.answers = shared.answers.load(Ordering::Relaxed);
    if report.answers > 0 {
        report.correct_rate = shared.correct.load(Ordering::Relaxed) as f64 / report.answers as f64;
    }
    Ok(report)
}

fn print_table(report: &Report) {
    println!(
        "mode {}  url {}  bank {}  students {}  maxItems {}  measured {:.1} s",
        report.mode,
        report.url,
        report.bank_id,
        report.students,
        report.max_items,
        report.duration_s
    );
    print!("{}", stats::table(&report.operations));
    println!(
        "exams started {}  completed {}  answers {}  correct {:.1}%  errors {}",
        report.exams_started,
        report.exams_completed,
        report.answers,
        report.correct_rate * 100.0,
        report.errors_total
    );
    if let Some(s) = &report.subscriptions {
        println!(
            "sockets {}/{} connected ({} failed, {} closed by the server)  subscriptions {}  \
             events {}/{} received ({} missing: {} before the subscription was live, {} lost)",
            s.sockets_connected,
            s.sockets_requested,
            s.sockets_failed,
            s.sockets_closed_by_server,
            s.subscriptions,
            s.events_received,
            s.events_expected,
            s.events_missing,
            s.events_missing_before_live,
            s.events_lost
        );
        if let (Some(all), Some(missing)) = (
            s.subscriptions_with_all_events,
            s.subscriptions_missing_events,
        ) {
            println!("subscriptions with every event {all}, with missing events {missing}");
        }
        if !s.errors.is_empty() {
            println!("subscription errors {:?}", s.errors);
        }
    }
    if let Some(p) = &report.park {
        println!(
            "parked {}/{} exams with {} answers each",
            p.exams_parked, p.exams_requested, p.answers_each
        );
    }
    if let Some(r) = &report.server_rss_kib {
        println!(
            "server {} VmRSS {:?} KiB -> {:?} KiB{}",
            r.pid,
            r.before,
            r.after,
            r.per_subscription_bytes
                .map(|b| format!("  ({b:.0} bytes per subscription)"))
                .unwrap_or_default()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Load mode
// ---------------------------------------------------------------------------------------

/// A student asks its subscribers to follow a new exam; they acknowledge once the
/// subscription is sent and the server has answered a ping sent after it.
struct Watch {
    exam_id: String,
    ack: oneshot::Sender<()>,
}

/// When the load runs and when it must stop.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    deadline: Option<Instant>,
    exams: Option<u64>,
}

async fn load_mode(cli: &Cli, shared: &Arc<Shared>, report: &mut Report) -> Metrics {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(cli.warmup);
    let _ = shared.measure_from.set(measure_from);
    let window = Window {
        measure_from,
        deadline: match cli.exams {
            Some(_) => None,
            None => Some(measure_from + Duration::from_secs(cli.duration)),
        },
        exams: cli.exams,
    };
    // Subscribers: socket j follows student j % S (more sockets than students), or
    // student s is followed by socket s % M (fewer).
    let (s, m) = (cli.students, cli.subscribers);
    let mut watchers: Vec<Vec<mpsc::UnboundedSender<Watch>>> = vec![Vec::new(); s];
    let mut subscriber_tasks = Vec::new();
    let sockets_failed = Arc::new(AtomicUsize::new(0));
    let sockets_closed = Arc::new(AtomicUsize::new(0));
    let subscriptions = Arc::new(AtomicU64::new(0));
    let ws_url = ws::ws_url(&cli.url);
    for j in 0..m {
        let (tx, rx) = mpsc::unbounded_channel();
        if m >= s {
            watchers[j % s].push(tx);
        } else {
            for (student, list) in watchers.iter_mut().enumerate() {
                if student % m == j {
                    list.push(tx.clone());
                }
            }
        }
        subscriber_tasks.push(tokio::spawn(follower(
            shared.clone(),
            ws_url.clone(),
            rx,
            sockets_failed.clone(),
            sockets_closed.clone(),
            subscriptions.clone(),
        )));
    }
    let students: Vec<_> = watchers
        .into_iter()
        .enumerate()
        .map(|(i, watchers)| {
            tokio::spawn(student(
                shared.clone(),
                i,
                watchers,
                cli.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                window,
            ))
        })
        .collect();
    let mut metrics = Metrics::default();
    for task in students {
        match task.await {
            Ok(m) => metrics.merge(&m),
            Err(e) => eprintln!("loadtest: a student task failed: {e}"),
        }
    }
    let finished = Instant::now();
    // The students dropped their senders: subscribers drain late events, then stop.
    for task in subscriber_tasks {
        let _ = task.await;
    }
    report.duration_s = finished
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    if m > 0 {
        let expected = shared.events_expected.load(Ordering::Relaxed);
        let received = shared.events_received.load(Ordering::Relaxed);
        let failed = sockets_failed.load(Ordering::Relaxed);
        let (missing, before_live) = shared.missing_events();
        report.subscriptions = Some(SubscriptionReport {
            sockets_requested: m,
            sockets_connected: m - failed,
            sockets_failed: failed,
            sockets_closed_by_server: sockets_closed.load(Ordering::Relaxed),
            subscriptions: subscriptions.load(Ordering::Relaxed),
            events_expected: expected,
            events_received: received,
            events_missing: missing,
            events_missing_before_live: before_live,
            events_lost: missing - before_live,
            ..SubscriptionReport::default()
        });
    }
    metrics
}

/// One virtual student: exams back to back until the window closes.
async fn student(
    shared: Arc<Shared>,
    index: usize,
    watchers: Vec<mpsc::UnboundedSender<Watch>>,
    seed: u64,
    window: Window,
) -> Metrics {
    let sub = format!("{}-{index}", shared.prefix);
    let token = shared.student_token(&sub);
    let mut rng = SmallRng::seed_from_u64(seed);
    let theta: f64 = rng.sample(StandardNormal);
    let mut metrics = Metrics::default();
    let mut warmup = Metrics::default();
    let over = |now: Instant| window.deadline.is_some_and(|d| now >= d);
    'exams: loop {
        if over(Instant::now()) {
            break;
        }
        if let Some(budget) = window.exams
            && shared.exams_started.fetch_add(1, Ordering::Relaxed) >= budget
        {
            shared.exams_started.fetch_sub(1, Ordering::Relaxed);
            break;
        }
        let m = if Instant::now() < window.measure_from {
            &mut warmup
        } else {
            &mut metrics
        };
        let started =
            match api::start_exam(&shared.api, m.op("startExam"), &token, &shared.assessment).await
            {
                Ok(started) => started,
                Err(e) => {
                    if window.exams.is_some() {
                        shared.exams_started.fetch_sub(1, Ordering::Relaxed);
                    }
                    shared.note_error("startExam", &e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
        if window.exams.is_none() {
            shared.exams_started.fetch_add(1, Ordering::Relaxed);
        }
        let exam = started.exam_id;
        let acks: Vec<_> = watchers
            .iter()
            .filter_map(|w| {
                let (tx, rx) = oneshot::channel();
                w.send(Watch {
                    exam_id: exam.clone(),
                    ack: tx,
                })
                .ok()
                .map(|()| rx)
            })
            .collect();
        for ack in acks {
            let _ = tokio::time::timeout(Duration::from_secs(5), ack).await;
        }
        let mut item = started.item;
        let mut done = 0i64;
        while let Some(current) = item {
            // With --exams, an exam is always finished; with --duration, the clock wins.
            if over(Instant::now()) {
                break 'exams;
            }
            let (response, correct) = respond(&mut rng, &current, theta);
            if !watchers.is_empty() {
                shared.note_sent(&exam, done + 1, watchers.len() as u32);
            }
            let m = if Instant::now() < window.measure_from {
                &mut warmup
            } else {
                &mut metrics
            };
            match api::submit_answer(
                &shared.api,
                m.op("submitAnswer"),
                &token,
                &exam,
                &current.id,
                response,
            )
            .await
            {
                Ok(answered) => {
                    shared.answers.fetch_add(1, Ordering::Relaxed);
                    if correct {
                        shared.correct.fetch_add(1, Ordering::Relaxed);
                    }
                    if !watchers.is_empty() {
                        shared.note_recorded(&exam, answered.items_completed);
                        shared
                            .events_expected
                            .fetch_add(watchers.len() as u64, Ordering::Relaxed);
                    }
                    done = answered.items_completed;
                    if answered.completed {
                        shared.exams_completed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    item = answered.next;
                }
                Err(e) => {
                    // Give the exam up and start another.
                    shared.note_error("submitAnswer", &e);
                    break;
                }
            }
        }
    }
    metrics
}

/// One subscriber socket (load mode): follows the exams it is told about, acknowledges
/// each once the server has answered a ping sent after the subscription, counts events,
/// and ends each subscription when its exam completes.
async fn follower(
    shared: Arc<Shared>,
    url: String,
    mut watches: mpsc::UnboundedReceiver<Watch>,
    failed: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    subscriptions: Arc<AtomicU64>,
) {
    let token = shared.admin_token();
    let (mut writer, mut reader) = match ws::connect(&url, &token, Duration::from_secs(10)).await {
        Ok(pair) => pair,
        Err(class) => {
            failed.fetch_add(1, Ordering::Relaxed);
            shared.event_error(&class);
            shared.note_error("subscriber connect", &class);
            // Keep acknowledging, so that students do not wait for nothing.
            while let Some(watch) = watches.recv().await {
                let _ = watch.ack.send(());
            }
            return;
        }
    };
    let mut next_op = 0u64;
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut keepalive = tokio::time::interval(Duration::from_secs(20));
    keepalive.tick().await;
    // Set once the students are done: late events are awaited until then.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let drain_at = drain_until
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            watch = watches.recv(), if drain_until.is_none() => match watch {
                Some(watch) => {
                    next_op += 1;
                    let op = next_op.to_string();
                    if ws::subscribe(&mut writer, &op, &watch.exam_id).await.is_err()
                        || ws::send(&mut writer, json!({"type": "ping"})).await.is_err()
                    {
                        shared.event_error("ws:send");
                        let _ = watch.ack.send(());
                        break;
                    }
                    subscriptions.fetch_add(1, Ordering::Relaxed);
                    waiting.push(watch.ack);
                }
                // Students are done: wait a little for the last events.
                None => {
                    drain_until = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
            },
            msg = ws::next_json(&mut reader) => match msg {
                Some(Ok(msg)) => match ws::interpret(&msg) {
                    ws::Incoming::Event(event) => {
                        shared.event_received(&event.exam_id, event.items_completed);
                        if event.completed {
                            let _ = ws::complete(&mut writer, &event.op).await;
                        }
                    }
                    ws::Incoming::Pong => {
                        for ack in waiting.drain(..) {
                            let _ = ack.send(());
                        }
                    }
                    ws::Incoming::Ping => {
                        let _ = ws::send(&mut writer, json!({"type": "pong"})).await;
                    }
                    ws::Incoming::Error(code) => shared.event_error(&code),
                    ws::Incoming::Complete | ws::Incoming::Other => {}
                },
                Some(Err(ws::Closed(code))) => {
                    closed.fetch_add(1, Ordering::Relaxed);
                    shared.event_error(&format!("ws:closed:{code}"));
                    break;
                }
                None => {
                    closed.fetch_add(1, Ordering::Relaxed);
                    shared.event_error("ws:closed");
                    break;
                }
            },
            _ = keepalive.tick() => {
                let _ = ws::send(&mut writer, json!({"type": "ping"})).await;
            }
            () = tokio::time::sleep_until(drain_at) => break,
        }
    }
    for ack in waiting {
        let _ = ack.send(());
    }
    use futures_util::SinkExt;
    let _ = writer.close().await;
    // Acknowledge late watches so no student waits on a dead socket.
    while let Ok(watch) = watches.try_recv() {
        let _ = watch.ack.send(());
    }
}

// ---------------------------------------------------------------------------------------
// Exams started for the idle and park modes
// ---------------------------------------------------------------------------------------

/// An exam started by its own student, with the item it presents now.
struct Live {
    token: String,
    exam_id: String,
    item: Option<Presented>,
    done: i64,
    rng: SmallRng,
    theta: f64,
}

/// Starts `n` exams, `concurrency` at once, each owned by its own student.
async fn start_many(
    shared: &Arc<Shared>,
    n: usize,
    concurrency: usize,
    tag: &str,
    seed: u64,
) -> (Vec<Live>, Metrics) {
    let results: Vec<(Option<Live>, Metrics)> = futures_util::stream::iter(0..n)
        .map(|i| {
            let shared = shared.clone();
            let sub = format!("{}-{tag}-{i}", shared.prefix);
            async move {
                let token = shared.student_token(&sub);
                let mut metrics = Metrics::default();
                let result = api::start_exam(
                    &shared.api,
                    metrics.op("startExam"),
                    &token,
                    &shared.assessment,
                )
                .await;
                let live = match result {
                    Ok(started) => {
                        shared.exams_started.fetch_add(1, Ordering::Relaxed);
                        let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(i as u64));
                        let theta: f64 = rng.sample(StandardNormal);
                        Some(Live {
                            token,
                            exam_id: started.exam_id,
                            item: started.item,
                            done: 0,
                            rng,
                            theta,
                        })
                    }
                    Err(e) => {
                        shared.note_error("startExam", &e);
                        None
                    }
                };
                (live, metrics)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut metrics = Metrics::default();
    let mut live = Vec::new();
    for (l, m) in results {
        metrics.merge(&m);
        live.extend(l);
    }
    (live, metrics)
}

/// Answers the presented item of `exam` (noting the send time when `watched`); returns
/// whether an answer was recorded.
async fn answer_one(
    shared: &Shared,
    exam: &mut Live,
    stats: &mut OpStats,
    watched: bool,
) -> Result<bool, CallError> {
    let Some(item) = exam.item.take() else {
        return Ok(false);
    };
    let (response, correct) = respond(&mut exam.rng, &item, exam.theta);
    if watched {
        shared.note_sent(&exam.exam_id, exam.done + 1, 1);
    }
    let answered = api::submit_answer(
        &shared.api,
        stats,
        &exam.token,
        &exam.exam_id,
        &item.id,
        response,
    )
    .await?;
    shared.answers.fetch_add(1, Ordering::Relaxed);
    if correct {
        shared.correct.fetch_add(1, Ordering::Relaxed);
    }
    exam.done = answered.items_completed;
    if watched {
        shared.note_recorded(&exam.exam_id, answered.items_completed);
    }
    if answered.completed {
        shared.exams_completed.fetch_add(1, Ordering::Relaxed);
    }
    exam.item = answered.next;
    Ok(true)
}

// ---------------------------------------------------------------------------------------
// Park mode
// ---------------------------------------------------------------------------------------

async fn park_mode(cli: &Cli, shared: &Arc<Shared>, n: usize, report: &mut Report) -> Metrics {
    let started = Instant::now();
    let (exams, mut metrics) = start_many(shared, n, cli.students, "park", cli.seed).await;
    let parked = Arc::new(AtomicU64::new(0));
    let answers = cli.park_answers;
    let results: Vec<Metrics> = futures_util::stream::iter(exams)
        .map(|mut exam| {
            let shared = shared.clone();
            let parked = parked.clone();
            async move {
                let mut m = Metrics::default();
                for _ in 0..answers {
                    match answer_one(&shared, &mut exam, m.op("submitAnswer"), false).await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            shared.note_error("submitAnswer", &e);
                            break;
                        }
                    }
                }
                if exam.done == i64::from(answers) && exam.item.is_some() {
                    parked.fetch_add(1, Ordering::Relaxed);
                }
                m
            }
        })
        .buffer_unordered(cli.students)
        .collect()
        .await;
    for m in &results {
        metrics.merge(m);
    }
    report.duration_s = started.elapsed().as_secs_f64();
    report.park = Some(ParkReport {
        exams_requested: n,
        exams_parked: parked.load(Ordering::Relaxed),
        answers_each: answers,
    });
    if parked.load(Ordering::Relaxed) < n as u64 {
        metrics.op("park").error("not_parked");
    }
    metrics
}

// ---------------------------------------------------------------------------------------
// Idle-subscriptions mode
// ---------------------------------------------------------------------------------------

/// One held subscription's counters.
struct Held {
    received: AtomicU32,
    expected: AtomicU32,
    closed: AtomicBool,
    /// The server answered the subscription with an error.
    failed: AtomicBool,
}

async fn idle_mode(cli: &Cli, shared: &Arc<Shared>, k: usize, report: &mut Report) -> Metrics {
    eprintln!("loadtest: starting {k} exams");
    let (mut exams, mut metrics) = start_many(shared, k, cli.students, "idle", cli.seed).await;
    let rss_before = cli.server_pid.and_then(rss_kib);
    eprintln!(
        "loadtest: {} exams started; opening {} sockets ({} at a time)",
        exams.len(),
        exams.len(),
        cli.connect_concurrency
    );
    let url = ws::ws_url(&cli.url);
    let (stop_tx, stop_rx) = watch::channel(false);
    let held: Arc<Vec<Held>> = Arc::new(
        (0..exams.len())
            .map(|_| Held {
                received: AtomicU32::new(0),
                expected: AtomicU32::new(0),
                closed: AtomicBool::new(false),
                failed: AtomicBool::new(false),
            })
            .collect(),
    );
    let connect_errors = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let connect_stats = Arc::new(Mutex::new(OpStats::default()));
    let opened = Instant::now();
    let tasks: Vec<Option<tokio::task::JoinHandle<()>>> = futures_util::stream::iter(
        exams
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.token.clone(), e.exam_id.clone()))
            .collect::<Vec<_>>(),
    )
    .map(|(i, token, exam_id)| {
        let url = url.clone();
        let shared = shared.clone();
        let held = held.clone();
        let stop = stop_rx.clone();
        let connect_errors = connect_errors.clone();
        let connect_stats = connect_stats.clone();
        async move {
            let started = Instant::now();
            let connected = match ws::connect(&url, &token, Duration::from_secs(30)).await {
                Ok((mut writer, reader)) => {
                    if ws::subscribe(&mut writer, "1", &exam_id).await.is_ok() {
                        Ok((writer, reader))
                    } else {
                        Err("ws:send".to_owned())
                    }
                }
                Err(class) => Err(class),
            };
            match connected {
                Ok((writer, reader)) => {
                    lock(&connect_stats).ok(started.elapsed());
                    Some(tokio::spawn(hold(shared, held, i, writer, reader, stop)))
                }
                Err(class) => {
                    lock(&connect_stats).error(&class);
                    *lock(&connect_errors).entry(class).or_default() += 1;
                    held[i].closed.store(true, Ordering::Relaxed);
                    None
                }
            }
        }
    })
    .buffered(cli.connect_concurrency.max(1))
    .collect()
    .await;
    let connected = tasks.iter().filter(|t| t.is_some()).count();
    eprintln!(
        "loadtest: {connected}/{} sockets open in {:.1} s",
        exams.len(),
        opened.elapsed().as_secs_f64()
    );
    // Let the server register every subscription before the first answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = cli.server_pid.and_then(rss_kib);
    let hold_started = Instant::now();
    let rounds = cli.idle_answers;
    let hold = Duration::from_secs(cli.duration);
    for round in 0..rounds {
        if round > 0 {
            let at = hold.mul_f64(f64::from(round) / f64::from((rounds - 1).max(1)));
            tokio::time::sleep_until((hold_started + at).into()).await;
        }
        let round_started = Instant::now();
        let results: Vec<(usize, Metrics, bool)> =
            futures_util::stream::iter(exams.iter_mut().enumerate())
                .map(|(i, exam)| {
                    let shared = shared.clone();
                    let watched = !held[i].closed.load(Ordering::Relaxed);
                    async move {
                        let mut m = Metrics::default();
                        let recorded =
                            match answer_one(&shared, exam, m.op("submitAnswer"), watched).await {
                                Ok(recorded) => recorded,
                                Err(e) => {
                                    shared.note_error("submitAnswer", &e);
                                    false
                                }
                            };
                        (i, m, recorded)
                    }
                })
                .buffer_unordered(cli.students)
                .collect()
                .await;
        for (i, m, recorded) in results {
            metrics.merge(&m);
            if recorded {
                held[i].expected.fetch_add(1, Ordering::Relaxed);
            }
        }
        eprintln!(
            "loadtest: answer round {}/{rounds} took {:.1} s",
            round + 1,
            round_started.elapsed().as_secs_f64()
        );
    }
    if rounds <= 1 {
        tokio::time::sleep_until((hold_started + hold).into()).await;
    }
    // Wait for the last events (at most 10 s).
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(10)
        && held.iter().any(|h| {
            !h.closed.load(Ordering::Relaxed)
                && h.received.load(Ordering::Relaxed) < h.expected.load(Ordering::Relaxed)
        })
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.duration_s = hold_started.elapsed().as_secs_f64();
    let closed_by_server = held
        .iter()
        .zip(&tasks)
        .filter(|(h, t)| t.is_some() && h.closed.load(Ordering::Relaxed))
        .count();
    let _ = stop_tx.send(true);
    for task in tasks.into_iter().flatten() {
        let _ = task.await;
    }
    let open: Vec<&Held> = held.iter().collect();
    let expected: u64 = open
        .iter()
        .map(|h| u64::from(h.expected.load(Ordering::Relaxed)))
        .sum();
    let received: u64 = open
        .iter()
        .map(|h| {
            u64::from(h.received.load(Ordering::Relaxed))
                .min(u64::from(h.expected.load(Ordering::Relaxed)))
        })
        .sum();
    let complete = open
        .iter()
        .filter(|h| {
            h.expected.load(Ordering::Relaxed) > 0
                && h.received.load(Ordering::Relaxed) >= h.expected.load(Ordering::Relaxed)
        })
        .count();
    let missing_subs = open
        .iter()
        .filter(|h| h.received.load(Ordering::Relaxed) < h.expected.load(Ordering::Relaxed))
        .count();
    let (_, before_live) = shared.missing_events();
    let mut errors = lock(&connect_errors).clone();
    if closed_by_server > 0 {
        *errors.entry("ws:closed_early".into()).or_default() += closed_by_server as u64;
    }
    report.subscriptions = Some(SubscriptionReport {
        sockets_requested: k,
        sockets_connected: connected,
        sockets_failed: exams.len() - connected + (k - exams.len()),
        sockets_closed_by_server: closed_by_server,
        subscriptions: connected as u64,
        events_expected: expected,
        events_received: received,
        events_missing: expected - received,
        events_missing_before_live: before_live,
        events_lost: (expected - received).saturating_sub(before_live),
        subscriptions_failed: Some(
            held.iter()
                .filter(|h| h.failed.load(Ordering::Relaxed))
                .count(),
        ),
        subscriptions_with_all_events: Some(complete),
        subscriptions_missing_events: Some(missing_subs),
        errors,
    });
    let mut connect = Metrics::default();
    *connect.op("wsConnect") = lock(&connect_stats).clone();
    // Socket failures are already in `errors`: keep them out of the operation counts.
    connect.op("wsConnect").errors.clear();
    metrics.merge(&connect);
    if let Some(pid) = cli.server_pid {
        report.server_rss_kib = Some(RssReport {
            pid,
            before: rss_before,
            after: rss_after,
            per_subscription_bytes: match (rss_before, rss_after) {
                (Some(b), Some(a)) if connected > 0 => {
                    Some((a as f64 - b as f64) * 1024.0 / connected as f64)
                }
                _ => None,
            },
        });
    }
    metrics
}

/// Holds one subscription: counts its events, answers pings, pings every 20 s (the
/// server closes sockets silent for 2 minutes), and closes when told to stop.
async fn hold(
    shared: Arc<Shared>,
    held: Arc<Vec<Held>>,
    index: usize,
    mut writer: ws::Writer,
    mut reader: ws::Reader,
    mut stop: watch::Receiver<bool>,
) {
    let me = &held[index];
    let mut keepalive = tokio::time::interval(Duration::from_secs(20));
    keepalive.tick().await;
    loop {
        tokio::select! {
            msg = ws::next_json(&mut reader) => match msg {
                Some(Ok(msg)) => match ws::interpret(&msg) {
                    ws::Incoming::Event(event) => {
                        me.received.fetch_add(1, Ordering::Relaxed);
                        shared.event_received(&event.exam_id, event.items_completed);
                    }
                    ws::Incoming::Ping => {
                        let _ = ws::send(&mut writer, json!({"type": "pong"})).await;
                    }
                    ws::Incoming::Error(code) => {
                        me.failed.store(true, Ordering::Relaxed);
                        shared.event_error(&code);
                    }
                    _ => {}
                },
                Some(Err(_)) | None => {
                    me.closed.store(true, Ordering::Relaxed);
                    return;
                }
            },
            _ = keepalive.tick() => {
                let _ = ws::send(&mut writer, json!({"type": "ping"})).await;
            }
            _ = stop.changed() => break,
        }
    }
    use futures_util::SinkExt;
    let _ = writer.close().await;
}
