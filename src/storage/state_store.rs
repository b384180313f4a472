//! The Redis engine-state store: one JSON string per live exam under
//! `{prefix}:{exam_session_id}` (`adaptive_engine:{123}`, hash-tagged, on a cluster, see
//! [`super::keys`]), with a TTL reset on every save, deleted on completion.
//!
//! It stores what it is given and never decides anything: the exam flow checks a loaded
//! state against Postgres before trusting it. Writes are versioned by `items_completed`
//! so a slow instance can never overwrite a newer state with an older one, and a completed
//! exam leaves a short-lived marker (`{prefix}-completed:{id}`, outside the state prefix)
//! so a late write cannot bring its state back. Each write also publishes the answer's
//! event in the same round trip (counted as published, or as dropped when Redis is down).
//!
//! On a cluster every script touches one slot only: an exam's state and marker share their
//! hash tag, and the event goes out with a classic `PUBLISH` (a channel is no key, and a
//! cluster forwards classic messages to every node). `SPUBLISH` could not ride in the
//! script: a shard channel must hash to the script's slot, which one fleet-wide channel
//! cannot.

use redis::{AsyncCommands, Script};

use super::keys::Keys;
use super::redis_pool::{RedisPool, RedisUnavailable};
use crate::metrics::EventMetrics;

/// Saves a state unless a newer one (or the completion marker) is there, then publishes.
/// KEYS: state key, completion marker. ARGV: json, items_completed, ttl, channel, event.
const SAVE_SCRIPT: &str = r#"
local saved = 0
if redis.call('EXISTS', KEYS[2]) == 0 then
  local current = redis.call('GET', KEYS[1])
  local newer = false
  if current then
    -- A pattern match, not a JSON decode: this runs on every answer.
    local version = tonumber(string.match(current, '"items_completed":(%d+)'))
    if version and version > tonumber(ARGV[2]) then
      -- Only a readable state may hold a newer version: garbage that merely contains
      -- the pattern must not block every save until it expires.
      local ok, state = pcall(cjson.decode, current)
      newer = ok and type(state) == 'table' and type(state.theta) == 'number'
        and type(state.standard_error) == 'number' and type(state.item_ids) == 'table'
        and type(state.responses) == 'table' and state.items_completed == version
        and #state.item_ids == version and #state.responses == version
    end
  end
  if not newer then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
    saved = 1
  end
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return saved
"#;

/// Deletes a completed exam's state, leaves the completion marker, then publishes.
/// KEYS: state key, completion marker. ARGV: ttl, channel, event.
const COMPLETE_SCRIPT: &str = r"
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[1]))
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
";

/// Adds seconds to a key's TTL; returns the new TTL, or -2 when the key does not exist.
const EXTEND_SCRIPT: &str = r"
local ttl = redis.call('TTL', KEYS[1])
if ttl == -2 then return -2 end
if ttl < 0 then ttl = 0 end
local new_ttl = ttl + tonumber(ARGV[1])
redis.call('EXPIRE', KEYS[1], new_ttl)
return new_ttl
";

/// Keys deleted per `UNLINK` when clearing.
const CLEAR_BATCH: usize = 500;

/// Engine states of live exams in Redis.
#[derive(Clone)]
pub struct StateStore {
    redis: RedisPool,
    keys: Keys,
    ttl_seconds: u64,
    save_script: Script,
    complete_script: Script,
    extend_script: Script,
    events: EventMetrics,
}

impl StateStore {
    /// A store writing under `prefix` (in the key form of `redis`'s deployment) with the
    /// given TTL; the events it publishes are counted in `events`.
    pub fn new(redis: RedisPool, prefix: &str, ttl_seconds: u64, events: EventMetrics) -> Self {
        Self {
            keys: Keys::with_form(prefix, redis.key_form()),
            redis,
            ttl_seconds,
            save_script: Script::new(SAVE_SCRIPT),
            complete_script: Script::new(COMPLETE_SCRIPT),
            extend_script: Script::new(EXTEND_SCRIPT),
            events,
        }
    }

    /// Counts the publication of `event` (when there is one) by a write that ended so.
    fn count_publication<T>(&self, event: Option<&str>, result: &Result<T, RedisUnavailable>) {
        if event.is_some_and(|e| !e.is_empty()) {
            match result {
                Ok(_) => self.events.published.inc(),
                Err(_) => self.events.publish_failed.inc(),
            };
        }
    }

    /// The pool underneath (health checks use it).
    pub fn redis(&self) -> &RedisPool {
        &self.redis
    }

    /// The key and channel names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The TTL every save sets.
    pub fn ttl_seconds(&self) -> u64 {
        self.ttl_seconds
    }

    /// `{prefix}:{id}` (cluster: `{prefix}:{` id `}`): the key of one exam's state.
    pub fn key(&self, exam_session_id: i64) -> String {
        self.keys.state(exam_session_id)
    }

    fn completed_marker(&self, exam_session_id: i64) -> String {
        self.keys.completed(exam_session_id)
    }

    /// The pub/sub channel theta updates go through.
    pub fn events_channel(&self) -> String {
        self.keys.events()
    }

    /// The stored JSON of an exam, if Redis has it and answers.
    pub async fn load(&self, exam_session_id: i64) -> Result<Option<String>, RedisUnavailable> {
        let key = self.key(exam_session_id);
        self.redis
            .run(async |conn| conn.get::<_, Option<String>>(&key).await)
            .await
    }

    /// The stored JSON and its remaining TTL in one round trip.
    pub async fn load_with_ttl(
        &self,
        exam_session_id: i64,
    ) -> Result<Option<(String, i64)>, RedisUnavailable> {
        let key = self.key(exam_session_id);
        let (json, ttl): (Option<String>, i64) = self
            .redis
            .run(async |conn| {
                redis::pipe()
                    .get(&key)
                    .ttl(&key)
                    .query_async::<(Option<String>, i64)>(conn)
                    .await
            })
            .await?;
        Ok(json.map(|json| (json, ttl)))
    }

    /// Saves a state (TTL reset) unless Redis holds a newer one, and publishes `event`
    /// (skipped when empty). Returns whether the state was written.
    pub async fn save(
        &self,
        exam_session_id: i64,
        json: &str,
        items_completed: i64,
        event: Option<&str>,
    ) -> Result<bool, RedisUnavailable> {
        let version = items_completed.to_string();
        self.run_on_exam(&self.save_script, exam_session_id, &[json, &version], event)
            .await
            .map(|saved| saved == 1)
    }

    /// Removes a completed exam's state for good and publishes `event`.
    pub async fn complete(
        &self,
        exam_session_id: i64,
        event: Option<&str>,
    ) -> Result<(), RedisUnavailable> {
        self.run_on_exam(&self.complete_script, exam_session_id, &[], event)
            .await
            .map(drop)
    }

    /// Runs `script` (the save or the completion) on an exam's state key and completion
    /// marker with ARGV `args`, then the TTL, the events channel and `event` (empty: none),
    /// and counts the publication.
    async fn run_on_exam(
        &self,
        script: &Script,
        exam_session_id: i64,
        args: &[&str],
        event: Option<&str>,
    ) -> Result<i64, RedisUnavailable> {
        let (key, marker, channel) = (
            self.key(exam_session_id),
            self.completed_marker(exam_session_id),
            self.events_channel(),
        );
        let ttl = self.ttl_seconds;
        let result = self
            .redis
            .run(async |conn| {
                let mut invocation = script.key(&key);
                invocation.key(&marker);
                for arg in args {
                    invocation.arg(*arg);
                }
                invocation
                    .arg(ttl)
                    .arg(&channel)
                    .arg(event.unwrap_or_default())
                    .invoke_async::<i64>(conn)
                    .await
            })
            .await;
        self.count_publication(event, &result);
        result
    }

    /// Deletes one exam's state (it will be rebuilt from Postgres when next needed).
    pub async fn delete(&self, exam_session_id: i64) -> Result<bool, RedisUnavailable> {
        let key = self.key(exam_session_id);
        self.redis
            .run(async |conn| conn.del::<_, i64>(&key).await)
            .await
            .map(|n| n > 0)
    }

    /// Remaining TTL of an exam's state in seconds; `None` when there is no state.
    pub async fn ttl(&self, exam_session_id: i64) -> Result<Option<i64>, RedisUnavailable> {
        let key = self.key(exam_session_id);
        let ttl: i64 = self
            .redis
            .run(async |conn| conn.ttl::<_, i64>(&key).await)
            .await?;
        Ok((ttl >= -1).then_some(ttl))
    }

    /// Adds `additional_seconds` to an exam's TTL; `None` when it has no state.
    pub async fn extend_ttl(
        &self,
        exam_session_id: i64,
        additional_seconds: i64,
    ) -> Result<Option<i64>, RedisUnavailable> {
        let key = self.key(exam_session_id);
        let script = &self.extend_script;
        let ttl: i64 = self
            .redis
            .run(async |conn| {
                script
                    .key(&key)
                    .arg(additional_seconds)
                    .invoke_async::<i64>(conn)
                    .await
            })
            .await?;
        Ok((ttl >= 0).then_some(ttl))
    }

    /// Ids of the exams that have a state, found with `SCAN` (never `KEYS`, which blocks
    /// Redis on large databases; on every master of a cluster). Keys whose suffix is not an
    /// id are ignored.
    pub async fn active_sessions(&self) -> Result<Vec<i64>, RedisUnavailable> {
        let keys = self.redis.scan_match(&self.keys.state_pattern()).await?;
        let mut ids: Vec<i64> = keys
            .iter()
            .filter_map(|key| self.keys.exam_of_state(key))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Deletes every engine state under the prefix (on every master of a cluster); returns
    /// how many were deleted.
    pub async fn clear(&self) -> Result<i64, RedisUnavailable> {
        let keys = self.redis.scan_match(&self.keys.state_pattern()).await?;
        let mut deleted = 0;
        for batch in keys.chunks(CLEAR_BATCH) {
            deleted += self
                .redis
                .run(async |conn| conn.unlink(batch).await)
                .await?;
        }
        Ok(deleted)
    }
}
