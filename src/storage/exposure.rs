//! Fleet-wide item exposure counts for exposure control, shared by every instance through
//! Redis and rebuilt from Postgres when Redis loses them.
//!
//! One hash per bank, `{prefix}-exposure:{bank_id}` (outside the engine-state prefix, so
//! `KEYS {prefix}:*` still lists only live exams; hash-tagged on a cluster, see
//! [`super::keys`]: every script and pipeline here touches that one key), with the fields `n` (exams started),
//! `a:{item}` (times presented), `s:{item}` (times chosen by the selection rule before
//! Sympson–Hetter's lottery) and `i:{item}` (exams for which the item was ineligible).
//! Instances read the hash at most once a second per bank (the rates Sympson–Hetter and
//! item eligibility use), but the limit itself is enforced atomically: an item is only
//! presented after [`ExposureTracker::reserve`] ran one Lua script that reads `n` and the
//! item's count, decides, and increments, so however many instances present items at
//! whatever rate, no item is presented to more than `ceil(maxRate × n)` of the `n` exams
//! started (a share below `maxRate + 1/n`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::QueryResult;
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::keys::Keys;
use super::redis_pool::RedisPool;
use crate::engine::EngineBank;
use crate::irt::ExposureCounts;

/// How long an instance reuses a bank's counts before reading them again.
const REFRESH: Duration = Duration::from_secs(1);

/// Writes the rebuilt counts unless another instance already did.
const FILL_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], 'n') == 1 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
";

/// Counts one more exam of the bank (when the hash exists; a missing one is rebuilt from
/// Postgres, which will hold the exam).
const COUNT_EXAM_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], 'n') == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])
";

/// Reserves one presentation of an item: granted (1) only while the item has been
/// presented fewer than `max(1, ceil(maxRate × n))` times; refused (0); -1 when the hash
/// is missing (rebuild first).
const RESERVE_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], 'n') == 0 then return -1 end
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local cap = math.max(1, math.ceil(tonumber(ARGV[2]) * n - 1e-9))
local field = 'a:' .. ARGV[1]
local a = tonumber(redis.call('HGET', KEYS[1], field) or '0')
if a + 1 > cap then return 0 end
redis.call('HINCRBY', KEYS[1], field, 1)
return 1
";

/// What [`ExposureTracker::reserve`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The presentation is counted; present the item.
    Granted,
    /// The item is at its limit; choose another.
    Refused,
    /// The bank's counts are not in Redis: rebuild them, then ask again.
    Missing,
    /// Redis cannot be reached: present the item (the counts are rebuilt from Postgres
    /// when Redis is back).
    Unavailable,
}

/// The most presentations of one item that `max_rate` allows among `n` exams:
/// `max(1, ceil(max_rate × n))`, as the reservation script computes it.
pub fn presentation_cap(max_rate: f64, n: u64) -> u64 {
    ((max_rate * n as f64 - 1e-9).ceil().max(1.0)) as u64
}

/// When each bank's counts were read, and the counts.
type CountsCache = Arc<Mutex<HashMap<i64, (Instant, Arc<ExposureCounts>)>>>;

/// The exposure counts of every bank, cached per instance.
#[derive(Clone)]
pub struct ExposureTracker {
    redis: RedisPool,
    keys: Keys,
    cache: CountsCache,
    fill: redis::Script,
    count_exam: redis::Script,
    reserve: redis::Script,
}

impl ExposureTracker {
    /// A tracker writing under `{prefix}-exposure:` (in the key form of `redis`'s deployment).
    pub fn new(redis: RedisPool, prefix: &str) -> Self {
        Self {
            keys: Keys::with_form(prefix, redis.key_form()),
            redis,
            cache: Arc::default(),
            fill: redis::Script::new(FILL_SCRIPT),
            count_exam: redis::Script::new(COUNT_EXAM_SCRIPT),
            reserve: redis::Script::new(RESERVE_SCRIPT),
        }
    }

    fn key(&self, bank_id: i64) -> String {
        self.keys.exposure(bank_id)
    }

    /// The counts of a bank, at most a second old: from this instance's cache, else Redis,
    /// else (Redis lost them, or is down) rebuilt from Postgres.
    pub async fn counts(
        &self,
        conn: &mut AsyncPgConnection,
        bank_id: i64,
        bank: &EngineBank,
    ) -> QueryResult<Arc<ExposureCounts>> {
        if let Some(counts) = self.cached(bank_id) {
            return Ok(counts);
        }
        self.fresh_counts(conn, bank_id, bank).await
    }

    /// The counts of a bank read from Redis now (bypassing this instance's one-second
    /// cache), or rebuilt from Postgres when Redis lost them or is down.
    pub async fn fresh_counts(
        &self,
        conn: &mut AsyncPgConnection,
        bank_id: i64,
        bank: &EngineBank,
    ) -> QueryResult<Arc<ExposureCounts>> {
        let key = self.key(bank_id);
        let fields = self
            .redis
            .run(async |c| {
                redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async::<HashMap<String, u64>>(c)
                    .await
            })
            .await;
        let counts = match fields {
            Ok(fields) if fields.contains_key("n") => from_fields(&fields, bank),
            other => {
                let counts = rebuild(conn, bank_id, bank).await?;
                if other.is_ok() {
                    let args = to_fields(&counts, bank);
                    let fill = &self.fill;
                    let _ = self
                        .redis
                        .run(async |c| fill.key(&key).arg(&args).invoke_async::<i64>(c).await)
                        .await;
                }
                counts
            }
        };
        let counts = Arc::new(counts);
        lock(&self.cache).insert(bank_id, (Instant::now(), Arc::clone(&counts)));
        Ok(counts)
    }

    /// Rebuilds a bank's counts from Postgres and writes them to Redis unless another
    /// instance already did (after a reservation found the hash missing).
    pub async fn refill(
        &self,
        conn: &mut AsyncPgConnection,
        bank_id: i64,
        bank: &EngineBank,
    ) -> QueryResult<()> {
        let counts = rebuild(conn, bank_id, bank).await?;
        let args = to_fields(&counts, bank);
        let (key, fill) = (self.key(bank_id), &self.fill);
        let _ = self
            .redis
            .run(async |c| fill.key(&key).arg(&args).invoke_async::<i64>(c).await)
            .await;
        lock(&self.cache).insert(bank_id, (Instant::now(), Arc::new(counts)));
        Ok(())
    }

    /// Adds `delta` exams to the bank's count `n` (1 before a start decides its first
    /// item, so the exam counts in its own limits; -1 when that start then failed).
    /// Returns whether it did: not when Redis is down or the hash is missing (read the
    /// counts, which rebuilds it, then count again).
    pub async fn count_exam(&self, bank_id: i64, delta: i64) -> bool {
        let (key, script) = (self.key(bank_id), &self.count_exam);
        match self
            .redis
            .run(async |c| script.key(&key).arg(delta).invoke_async::<i64>(c).await)
            .await
        {
            Ok(n) => n >= 0,
            Err(e) => {
                tracing::debug!(error = %e, "exam not counted for exposure");
                false
            }
        }
    }

    /// Reserves one presentation of `item_id` under `max_rate` (see the module doc).
    pub async fn reserve(&self, bank_id: i64, item_id: i64, max_rate: f64) -> Reservation {
        let (key, script) = (self.key(bank_id), &self.reserve);
        let result = self
            .redis
            .run(async |c| {
                script
                    .key(&key)
                    .arg(item_id)
                    .arg(max_rate)
                    .invoke_async::<i64>(c)
                    .await
            })
            .await;
        match result {
            Ok(1) => Reservation::Granted,
            Ok(0) => Reservation::Refused,
            Ok(_) => Reservation::Missing,
            Err(e) => {
                tracing::debug!(error = %e, "exposure reservation unavailable");
                Reservation::Unavailable
            }
        }
    }

    fn cached(&self, bank_id: i64) -> Option<Arc<ExposureCounts>> {
        lock(&self.cache)
            .get(&bank_id)
            .filter(|(at, _)| at.elapsed() < REFRESH)
            .map(|(_, c)| Arc::clone(c))
    }

    /// Counts the items a new exam may not see and the selections of its first step (the
    /// exam itself was counted by [`Self::count_exam`], its item by [`Self::reserve`]).
    pub async fn record_start(&self, bank_id: i64, ineligible: &[i64], selected: &[i64]) {
        let key = self.key(bank_id);
        let mut pipe = redis::pipe();
        for id in ineligible {
            pipe.hincr(&key, format!("i:{id}"), 1).ignore();
        }
        add_selections(&mut pipe, &key, selected);
        self.send(pipe).await;
    }

    /// Counts the selections of a step after an answer (its item was counted by
    /// [`Self::reserve`]).
    pub async fn record_selections(&self, bank_id: i64, selected: &[i64]) {
        if selected.is_empty() {
            return;
        }
        let key = self.key(bank_id);
        let mut pipe = redis::pipe();
        add_selections(&mut pipe, &key, selected);
        self.send(pipe).await;
    }

    async fn send(&self, pipe: redis::Pipeline) {
        // Only counts already in Redis are incremented: when the hash is missing, the next
        // read rebuilds it from Postgres, which already holds this event.
        if let Err(e) = self
            .redis
            .run(async |c| pipe.query_async::<()>(c).await)
            .await
        {
            tracing::debug!(error = %e, "exposure counts not updated");
        }
    }
}

fn add_selections(pipe: &mut redis::Pipeline, key: &str, selected: &[i64]) {
    for id in selected {
        pipe.hincr(key, format!("s:{id}"), 1).ignore();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn from_fields(fields: &HashMap<String, u64>, bank: &EngineBank) -> ExposureCounts {
    let n = fields.get("n").copied().unwrap_or(0);
    let get = |kind: &str, id: i64| fields.get(&format!("{kind}:{id}")).copied().unwrap_or(0);
    ExposureCounts {
        examinees: n,
        administered: bank.ids.iter().map(|&id| get("a", id)).collect(),
        selected: bank.ids.iter().map(|&id| get("s", id)).collect(),
        eligible: bank
            .ids
            .iter()
            .map(|&id| n.saturating_sub(get("i", id)))
            .collect(),
    }
}

fn to_fields(counts: &ExposureCounts, bank: &EngineBank) -> Vec<String> {
    let mut out = vec!["n".to_owned(), counts.examinees.to_string()];
    for (i, id) in bank.ids.iter().enumerate() {
        for (kind, value) in [
            ("a", counts.administered[i]),
            ("s", counts.selected[i]),
            ("i", counts.examinees.saturating_sub(counts.eligible[i])),
        ] {
            if value > 0 {
                out.push(format!("{kind}:{id}"));
                out.push(value.to_string());
            }
        }
    }
    out
}

/// Recomputes a bank's counts from Postgres: exams started, items presented (answered
/// ones and the ones presented now) and items ineligible per exam. Selections turned down
/// by Sympson–Hetter are not stored, so `selected` is rebuilt as `administered`.
async fn rebuild(
    conn: &mut AsyncPgConnection,
    bank_id: i64,
    bank: &EngineBank,
) -> QueryResult<ExposureCounts> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = Nullable<BigInt>)]
        item: Option<i64>,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let examinees: Vec<Count> = diesel::sql_query(
        "SELECT NULL::bigint AS item, count(*) AS n FROM exam_sessions WHERE item_bank_id = $1",
    )
    .bind::<BigInt, _>(bank_id)
    .load(conn)
    .await?;
    let presented: Vec<Count> = diesel::sql_query(
        "SELECT item, count(*) AS n FROM (
             SELECT a.item_id AS item FROM attempts a JOIN exam_sessions s ON s.id = a.exam_session_id
              WHERE s.item_bank_id = $1
             UNION ALL
             SELECT current_item_id FROM exam_sessions WHERE item_bank_id = $1 AND current_item_id IS NOT NULL
         ) p GROUP BY item",
    )
    .bind::<BigInt, _>(bank_id)
    .load(conn)
    .await?;
    let ineligible: Vec<Count> = diesel::sql_query(
        "SELECT (jsonb_array_elements_text(config->'ineligible_item_ids'))::bigint AS item, count(*) AS n
           FROM exam_sessions WHERE item_bank_id = $1 GROUP BY 1",
    )
    .bind::<BigInt, _>(bank_id)
    .load(conn)
    .await?;
    let n = <[Count]>::first(&examinees).map_or(0, |c| c.n.max(0) as u64);
    let per_item = |rows: &[Count]| -> Vec<u64> {
        let mut out = vec![0u64; bank.len()];
        for row in rows {
            if let Some(i) = row.item.and_then(|id| bank.index_of(id)) {
                out[i] = row.n.max(0) as u64;
            }
        }
        out
    };
    let administered = per_item(&presented);
    let ineligible = per_item(&ineligible);
    Ok(ExposureCounts {
        examinees: n,
        selected: administered.clone(),
        administered,
        eligible: ineligible.iter().map(|i| n.saturating_sub(*i)).collect(),
    })
}
