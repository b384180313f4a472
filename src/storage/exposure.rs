//! Fleet-wide item exposure counts for exposure control, shared by every instance through
//! Redis and rebuilt from Postgres when Redis loses them.
//!
//! One hash per bank, `{prefix}-exposure:{bank_id}` (outside the engine-state prefix, so
//! `KEYS {prefix}:*` still lists only live exams), with the fields `n` (exams started),
//! `a:{item}` (times presented), `s:{item}` (times chosen by the selection rule before
//! Sympson–Hetter's lottery) and `i:{item}` (exams for which the item was ineligible).
//! Instances read the hash at most once a second per bank and increment it with `HINCRBY`,
//! so the rates hold for the live population, not one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::QueryResult;
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

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

/// When each bank's counts were read, and the counts.
type CountsCache = Arc<Mutex<HashMap<i64, (Instant, Arc<ExposureCounts>)>>>;

/// The exposure counts of every bank, cached per instance.
#[derive(Clone)]
pub struct ExposureTracker {
    redis: RedisPool,
    prefix: String,
    cache: CountsCache,
    fill: redis::Script,
}

impl ExposureTracker {
    /// A tracker writing under `{prefix}-exposure:`.
    pub fn new(redis: RedisPool, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            cache: Arc::default(),
            fill: redis::Script::new(FILL_SCRIPT),
        }
    }

    fn key(&self, bank_id: i64) -> String {
        format!("{}-exposure:{bank_id}", self.prefix)
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

    fn cached(&self, bank_id: i64) -> Option<Arc<ExposureCounts>> {
        lock(&self.cache)
            .get(&bank_id)
            .filter(|(at, _)| at.elapsed() < REFRESH)
            .map(|(_, c)| Arc::clone(c))
    }

    /// Counts a new exam, the items it may not see, and its first item.
    pub async fn record_start(
        &self,
        bank_id: i64,
        ineligible: &[i64],
        selected: &[i64],
        presented: Option<i64>,
    ) {
        let key = self.key(bank_id);
        let mut pipe = redis::pipe();
        pipe.hincr(&key, "n", 1).ignore();
        for id in ineligible {
            pipe.hincr(&key, format!("i:{id}"), 1).ignore();
        }
        add_presentation(&mut pipe, &key, selected, presented);
        self.send(pipe).await;
    }

    /// Counts the item presented after an answer.
    pub async fn record_presentation(
        &self,
        bank_id: i64,
        selected: &[i64],
        presented: Option<i64>,
    ) {
        if selected.is_empty() && presented.is_none() {
            return;
        }
        let key = self.key(bank_id);
        let mut pipe = redis::pipe();
        add_presentation(&mut pipe, &key, selected, presented);
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

fn add_presentation(
    pipe: &mut redis::Pipeline,
    key: &str,
    selected: &[i64],
    presented: Option<i64>,
) {
    for id in selected {
        pipe.hincr(key, format!("s:{id}"), 1).ignore();
    }
    if let Some(id) = presented {
        pipe.hincr(key, format!("a:{id}"), 1).ignore();
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
