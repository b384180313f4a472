#!/usr/bin/env bash
# Performance check of adaptive-engine (issue 6): how close does the service get to what
# this machine's Postgres can do for the same work?
#
#   (a) pgbench baseline: a scratch database migrated with the service's own migrations
#       (so `exam_sessions` and `attempts` have exactly the service's columns, constraints
#       and indexes), filled with BENCH_SESSIONS active sessions, and pgbench running what
#       one answer does in Postgres (bench/pgbench_answer.sql: BEGIN; SELECT … FOR UPDATE;
#       INSERT INTO attempts …; UPDATE exam_sessions …; COMMIT) at 32 clients, 2 threads,
#       prepared statements, 20 s. bench/pgbench_answer_full.sql (the same plus the
#       service's replay look-up SELECT) runs as well, as a second figure.
#   (b) the service: release build on a free port with a fresh database and its own Redis
#       key prefix; `loadtest --students 32 --duration 20` against it; then Redis memory
#       per live exam: `used_memory` before/after `loadtest --park-exams 1000
#       --park-answers 19` (1000 live exams with 19 answers each), ÷ 1000.
#   (c) one summary on stdout, also written as JSON to bench/results/latest.json (to
#       bench/results/profiled.json when BENCH_PROFILE is set: perf slows the service).
#   (d) optional (BENCH_IDLE_SUBSCRIPTIONS=N): N sockets, one thetaUpdates subscription
#       each, held while every exam gets answers; every event must arrive; the server's
#       VmRSS before/after gives the memory per subscription.
#
# Usage: bash bench/run.sh
# Needs: Postgres on 127.0.0.1:5432 (trust auth as root), Redis (redis-server to run a
# private one, else 127.0.0.1:6379), pgbench (installed with postgresql-contrib when
# missing and run as root), jq, curl, cargo.
# Environment (all optional): BENCH_PG_URL (postgres://root@127.0.0.1:5432),
# BENCH_REDIS_URL (default: a private redis-server on a free port, so that used_memory
# measures this run only; falls back to redis://127.0.0.1:6379/0), BENCH_CLIENTS (32),
# BENCH_SECONDS (20), BENCH_SESSIONS (10000), BENCH_PARK_EXAMS (1000),
# BENCH_PARK_ANSWERS (19), BENCH_PARAM_DECIMALS (4: decimals of the load-test bank's
# parameters, which the cached states carry), BENCH_IDLE_SUBSCRIPTIONS (0: skip the optional phase (d) that
# holds that many idle subscriptions and reports the server's RSS per subscription;
# BENCH_IDLE_SECONDS 30, BENCH_CONNECT_CONCURRENCY 16), BENCH_SKIP_BUILD=1, BENCH_KEEP=1,
# CARGO_TARGET_DIR, BENCH_PROFILE=1 (perf-record the service during (b) and write
# bench/results/flamegraph.svg and profile.json; needs perf and inferno:
# `cargo install inferno`; BENCH_PROFILE_HZ 250). Service settings such as DATABASE_POOL_SIZE or REDIS_POOL_SIZE pass
# through to the service.
# It cleans up what it started: the service, the private Redis, the scratch databases
# (unless BENCH_KEEP=1) and, on a shared Redis, its own keys.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PG_URL=${BENCH_PG_URL:-postgres://root@127.0.0.1:5432}
PGBENCH_DB=adaptive_bench_pgbench
SERVICE_DB=adaptive_bench_service
CLIENTS=${BENCH_CLIENTS:-32}
RUN_SECONDS=${BENCH_SECONDS:-20}
SESSIONS=${BENCH_SESSIONS:-10000}
PARK_EXAMS=${BENCH_PARK_EXAMS:-1000}
PARK_ANSWERS=${BENCH_PARK_ANSWERS:-19}
PARAM_DECIMALS=${BENCH_PARAM_DECIMALS:-4}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS_DIR=$ROOT/bench/results
RESULTS_FILE=$([[ -n ${BENCH_PROFILE:-} ]] && echo profiled.json || echo latest.json)
WORK=$(mktemp -d -t adaptive-bench.XXXXXX)
HZ=$(getconf CLK_TCK)

SERVICE_PID=
REDIS_PID=
REDIS_SHARED=
PREFIX=bench_$$_$RANDOM

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local status=$?
    set +e
    if [[ -n $SERVICE_PID ]] && kill -0 "$SERVICE_PID" 2>/dev/null; then
        kill -TERM "$SERVICE_PID"
        for _ in $(seq 50); do kill -0 "$SERVICE_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVICE_PID" 2>/dev/null
        wait "$SERVICE_PID" 2>/dev/null
    fi
    if [[ -n $REDIS_PID ]]; then
        kill -TERM "$REDIS_PID" 2>/dev/null
        wait "$REDIS_PID" 2>/dev/null
    elif [[ -n $REDIS_SHARED ]]; then
        for pattern in "$PREFIX:*" "$PREFIX-*"; do
            rcli --scan --pattern "$pattern" | xargs -r -n 500 "${RCLI[@]}" UNLINK >/dev/null
        done
    fi
    if [[ -z ${BENCH_KEEP:-} ]]; then
        psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" \
            -c "DROP DATABASE IF EXISTS $SERVICE_DB WITH (FORCE)" >/dev/null 2>&1
    fi
    if [[ $status -ne 0 && -f $WORK/service.log ]]; then
        log "service log (last lines):"
        tail -n 20 "$WORK/service.log" >&2
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

# CPU ticks (user + system) of the given processes, summed.
ticks() {
    local total=0 pid t
    for pid in "$@"; do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# "busy idle" jiffies of the whole machine.
machine_cpu() {
    awk '/^cpu / {idle = $5 + $6; busy = 0; for (i = 2; i <= NF; i++) busy += $i; print busy - idle, idle}' /proc/stat
}

# Percent of the machine's CPU busy between two machine_cpu samples.
busy_pct() {
    local b0 i0 b1 i1
    read -r b0 i0 <<<"$1"
    read -r b1 i1 <<<"$2"
    awk -v b="$((b1 - b0))" -v i="$((i1 - i0))" 'BEGIN { printf "%.1f", ((b + i) > 0 ? 100 * b / (b + i) : 0) }'
}

# Backend pids of one database.
backends() {
    psql -At "$PG_URL/postgres" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$1'"
}

# --- prerequisites ---------------------------------------------------------------------

for tool in psql curl jq cargo; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $PGBENCH && $(id -u) -eq 0 ]]; then
    log "installing postgresql-contrib for pgbench"
    apt-get install -y postgresql-contrib >/dev/null 2>&1 || (apt-get update >/dev/null && apt-get install -y postgresql-contrib >/dev/null)
    PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1 || true)
fi
[[ -n $PGBENCH ]] || die "pgbench not found (apt-get install postgresql-contrib)"
psql -q "$PG_URL/postgres" -c "SELECT 1" >/dev/null || die "cannot reach Postgres at $PG_URL"

# Thousands of sockets are fine, but the default soft limit may be low.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ -n ${BENCH_REDIS_URL:-} ]]; then
    REDIS_URL=$BENCH_REDIS_URL
    REDIS_SHARED=1
elif command -v redis-server >/dev/null; then
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --logfile "$WORK/redis.log" >/dev/null 2>&1 &
    REDIS_PID=$!
    REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
else
    REDIS_URL=redis://127.0.0.1:6379/0
    REDIS_SHARED=1
fi
REDIS_HOSTPORT=${REDIS_URL#redis://}
REDIS_HOSTPORT=${REDIS_HOSTPORT%%/*}
REDIS_HOSTPORT=${REDIS_HOSTPORT##*@}
RCLI=(redis-cli -h "${REDIS_HOSTPORT%%:*}" -p "${REDIS_HOSTPORT##*:}")
rcli() { "${RCLI[@]}" "$@"; }
for _ in $(seq 50); do rcli PING >/dev/null 2>&1 && break; sleep 0.1; done
rcli PING >/dev/null || die "cannot reach Redis at $REDIS_URL"

if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
    log "building (release) into $TARGET"
    # Two builds: the service alone, exactly as `cargo build --release` builds it (no
    # features unified with the load generator's), then the load generator (the workspace
    # member loadtest/); both land in the workspace's target directory.
    CARGO_TARGET_DIR=$TARGET cargo build --release -p adaptive-engine >&2
    CARGO_TARGET_DIR=$TARGET cargo build --release -p loadtest >&2
fi
SERVER_BIN=$TARGET/release/adaptive-engine
LOADTEST_BIN=$TARGET/release/loadtest
[[ -x $SERVER_BIN && -x $LOADTEST_BIN ]] || die "missing $SERVER_BIN or $LOADTEST_BIN"

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- (a) pgbench baseline ---------------------------------------------------------------

log "(a) pgbench: scratch database $PGBENCH_DB, $SESSIONS sessions"
psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" -c "CREATE DATABASE $PGBENCH_DB" >/dev/null
for migration in $(find migrations -name up.sql | sort); do
    psql -q -v ON_ERROR_STOP=1 "$PG_URL/$PGBENCH_DB" -f "$migration" >/dev/null
done
psql -q -v ON_ERROR_STOP=1 -v sessions="$SESSIONS" "$PG_URL/$PGBENCH_DB" -f bench/pgbench_setup.sql >/dev/null

# Runs pgbench with one script; sets PGB_TPS, PGB_LAT, PGB_FAILED, PGB_BUSY (machine CPU
# busy %), and PGB_PG_MS / PGB_CLIENT_MS: CPU milliseconds per transaction of the Postgres
# backends and of pgbench itself, sampled over the middle of the run (from 2 s after the
# start to 2 s before the end).
run_pgbench() { # script, output file
    local cpu0 cpu1 pids t0 t1 c0 c1 w0 w1 pid
    cpu0=$(machine_cpu)
    "$PGBENCH" -n -c "$CLIENTS" -j 2 -T "$RUN_SECONDS" -M prepared -D sessions="$SESSIONS" \
        -f "$1" "$PG_URL/$PGBENCH_DB" >"$2" 2>&1 &
    pid=$!
    sleep 2
    mapfile -t pids < <(backends "$PGBENCH_DB")
    t0=$(ticks "${pids[@]}"); c0=$(ticks "$pid"); w0=$(date +%s.%N)
    sleep $((RUN_SECONDS > 6 ? RUN_SECONDS - 4 : 1))
    t1=$(ticks "${pids[@]}"); c1=$(ticks "$pid"); w1=$(date +%s.%N)
    wait "$pid" || { cat "$2" >&2; die "pgbench failed"; }
    cpu1=$(machine_cpu)
    PGB_BUSY=$(busy_pct "$cpu0" "$cpu1")
    PGB_TPS=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$2")
    PGB_LAT=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$2")
    PGB_FAILED=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$2")
    read -r PGB_PG_MS PGB_CLIENT_MS < <(awk -v p="$((t1 - t0))" -v c="$((c1 - c0))" -v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN{print b - a}')" \
        -v tps="$PGB_TPS" -v hz="$HZ" 'BEGIN { n = w * tps; printf "%.3f %.3f\n", 1000 * p / hz / n, 1000 * c / hz / n }')
}
log "(a) pgbench -c $CLIENTS -j 2 -T $RUN_SECONDS -M prepared -f bench/pgbench_answer.sql"
run_pgbench bench/pgbench_answer.sql "$WORK/pgbench.txt"
PGBENCH_TPS=$PGB_TPS PGBENCH_LAT=$PGB_LAT PGBENCH_FAILED=$PGB_FAILED PGBENCH_BUSY=$PGB_BUSY
PGBENCH_PG_MS=$PGB_PG_MS PGBENCH_CLIENT_MS=$PGB_CLIENT_MS
log "(a) tps $PGBENCH_TPS, latency $PGBENCH_LAT ms, machine CPU busy $PGBENCH_BUSY%, CPU ms per transaction: postgres $PGBENCH_PG_MS, pgbench $PGBENCH_CLIENT_MS"
log "(a) pgbench with the replay look-up too (bench/pgbench_answer_full.sql)"
run_pgbench bench/pgbench_answer_full.sql "$WORK/pgbench_full.txt"
PGBENCH_FULL_TPS=$PGB_TPS PGBENCH_FULL_BUSY=$PGB_BUSY PGBENCH_FULL_PG_MS=$PGB_PG_MS
log "(a) full tps $PGBENCH_FULL_TPS, CPU ms per transaction: postgres $PGBENCH_FULL_PG_MS"
[[ -n ${BENCH_KEEP:-} ]] || psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" >/dev/null

# --- (b) the service --------------------------------------------------------------------

PORT=$(free_port)
URL=http://127.0.0.1:$PORT
SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $SERVICE_DB WITH (FORCE)" >/dev/null
log "(b) starting the service on $URL (database $SERVICE_DB, Redis $REDIS_URL, prefix $PREFIX)"
(
    cd "$WORK" # no stray .env
    exec env DATABASE_URL="$PG_URL/$SERVICE_DB" REDIS_URL="$REDIS_URL" REDIS_KEY_PREFIX="$PREFIX" \
        JWT_SECRET="$SECRET" HOST=127.0.0.1 PORT="$PORT" "$SERVER_BIN" serve
) >"$WORK/service.log" 2>&1 &
SERVICE_PID=$!
for _ in $(seq 300); do
    curl -sf "$URL/health" >/dev/null 2>&1 && break
    kill -0 "$SERVICE_PID" 2>/dev/null || die "the service exited"
    sleep 0.2
done
curl -sf "$URL/health" >/dev/null || die "the service did not become healthy"

redis_stat() { rcli INFO "$1" | tr -d '\r'; }
commandstats() { # -> "cmd calls" lines
    redis_stat commandstats | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\).*/\1 \2/p' | sort
}
pg_counters() {
    psql -At -F' ' "$PG_URL/postgres" -c "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_fetched, blks_hit + blks_read FROM pg_stat_database WHERE datname = '$SERVICE_DB'"
}

log "(b) loadtest --students $CLIENTS --duration $RUN_SECONDS"
CMD0=$(commandstats)
PG0=$(pg_counters)
CPU0=$(machine_cpu)
SERVICE_T0=$(ticks "$SERVICE_PID")
REDIS_T0=$([[ -n $REDIS_PID ]] && ticks "$REDIS_PID" || echo 0)
mapfile -t BACKENDS0 < <(backends "$SERVICE_DB")
PGB_T0=$(ticks "${BACKENDS0[@]}")
PERF_PID=
if [[ -n ${BENCH_PROFILE:-} ]]; then
    # Samples the service's stacks (DWARF unwinding, the release build has debug info) over
    # the middle of the run; the figures of a profiled run are lower than a plain one's.
    (
        sleep 2
        exec perf record -q -e cpu-clock -F "${BENCH_PROFILE_HZ:-250}" --call-graph dwarf,16384 \
            -p "$SERVICE_PID" -o "$WORK/perf.data" -- sleep $((RUN_SECONDS > 6 ? RUN_SECONDS - 4 : 1))
    ) >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
fi
TIMEFORMAT='%U %S %R'
{ time "$LOADTEST_BIN" --url "$URL" --jwt-secret "$SECRET" --students "$CLIENTS" \
    --param-decimals "$PARAM_DECIMALS" --duration "$RUN_SECONDS" --json >"$WORK/load.json" 2>"$WORK/load.err"; } 2>"$WORK/load.time" \
    || { cat "$WORK/load.err" >&2; die "loadtest failed"; }
if [[ -n $PERF_PID ]]; then
    wait "$PERF_PID" || { cat "$WORK/perf.log" >&2; die "perf record failed"; }
    mkdir -p "$RESULTS_DIR"
    perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$WORK/folded.txt"
    cp "$WORK/folded.txt" "$RESULTS_DIR/profile.folded"
    inferno-flamegraph --minwidth 0.5 --title "adaptive-engine under loadtest ($CLIENTS students): service CPU" \
        <"$WORK/folded.txt" >"$RESULTS_DIR/flamegraph.svg"
    # Each sample goes to the innermost component on its stack (so the shares add up to
    # 100 %; the kernel time of a socket write counts for the client that wrote, the
    # runtime's share is its own scheduling and wake-ups); "in the kernel" is the share of
    # samples whose leaf frame is the kernel's, whoever called it.
    awk '
        BEGIN {
            n_parts = split("engine (EAP, item selection)|JSON (serde_json)|JWT (jsonwebtoken)|Postgres client (diesel, tokio-postgres)|Redis client (redis-rs, bb8)|GraphQL (async-graphql)|HTTP (hyper, axum, tower)|async runtime (tokio: scheduling, wake-ups, I/O driver)", names, "|")
            patterns[1] = "adaptive_engine::(irt|engine)::"
            patterns[2] = "serde_json"
            patterns[3] = "jsonwebtoken"
            patterns[4] = "(diesel|tokio_postgres|postgres_protocol|postgres_types)"
            patterns[5] = "(redis::|bb8)"
            patterns[6] = "async_graphql"
            patterns[7] = "(hyper|axum|tower|http_body)"
            patterns[8] = "tokio::"
        }
        {
            count = $NF
            total += count
            n = split(substr($0, 1, length($0) - length($NF) - 1), frames, ";")
            if (frames[n] ~ /_\[k\]$/) kernel += count
            # The runtime only when nothing else is on the stack: a socket write under
            # hyper is HTTP, under tokio-postgres it is Postgres.
            part = "other (allocator, std, service code)"
            for (i = n; i >= 1 && part ~ /^other/; i--)
                for (j = 1; j < n_parts; j++)
                    if (frames[i] ~ patterns[j]) { part = names[j]; break }
            for (i = n; i >= 1 && part ~ /^other/; i--)
                if (frames[i] ~ patterns[n_parts]) part = names[n_parts]
            share[part] += count
        }
        END {
            printf "{\"samples_ns\": %d, \"in_the_kernel_pct\": %.1f, \"by_component_pct\": {", total, 100 * kernel / total
            sep = ""
            for (k in share) { printf "%s\"%s\": %.1f", sep, k, 100 * share[k] / total; sep = ", " }
            print "}}"
        }' "$WORK/folded.txt" | jq -S . >"$RESULTS_DIR/profile.json"
    log "(b) profile: $RESULTS_DIR/flamegraph.svg, $RESULTS_DIR/profile.json"
fi
CPU1=$(machine_cpu)
SERVICE_T1=$(ticks "$SERVICE_PID")
REDIS_T1=$([[ -n $REDIS_PID ]] && ticks "$REDIS_PID" || echo 0)
mapfile -t BACKENDS1 < <(backends "$SERVICE_DB")
# Backends that existed before count from their earlier ticks; new ones from zero.
PGB_T1=$(ticks "${BACKENDS1[@]}")
PG1=$(pg_counters)
CMD1=$(commandstats)
SERVICE_BUSY=$(busy_pct "$CPU0" "$CPU1")
read -r LT_USER LT_SYS LT_REAL <"$WORK/load.time"
grep -v '^$' "$WORK/load.err" >&2 || true

ANSWERS=$(jq '.operations.submitAnswer.count // 0' "$WORK/load.json")
LOAD_SECONDS=$(jq '.duration_s' "$WORK/load.json")
BANK_ID=$(jq -r '.bank_id' "$WORK/load.json")
cpu_seconds() { awk -v t="$1" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }'; }
CPU_JSON=$(jq -n \
    --argjson window "$LT_REAL" \
    --argjson service "$(cpu_seconds $((SERVICE_T1 - SERVICE_T0)))" \
    --argjson postgres "$(cpu_seconds $((PGB_T1 - PGB_T0)))" \
    --argjson redis "$(cpu_seconds $((REDIS_T1 - REDIS_T0)))" \
    --argjson loadtest "$(awk -v u="$LT_USER" -v s="$LT_SYS" 'BEGIN { printf "%.2f", u + s }')" \
    --argjson machine_busy_pct "$SERVICE_BUSY" \
    --argjson redis_private "$([[ -n $REDIS_PID ]] && echo true || echo false)" \
    --argjson answers "$ANSWERS" \
    '{window_s: $window, cpu_seconds: {service: $service, postgres_backends: $postgres,
      redis: (if $redis_private then $redis else null end), loadtest: $loadtest},
      cpu_ms_per_answer: (if $answers > 0 then {service: (1000 * $service / $answers),
        postgres_backends: (1000 * $postgres / $answers),
        redis: (if $redis_private then 1000 * $redis / $answers else null end),
        loadtest: (1000 * $loadtest / $answers)} | map_values(if . == null then null else (. * 1000 | round / 1000) end) else null end),
      machine_busy_pct: $machine_busy_pct}')
PER_ANSWER_JSON=$(jq -n --argjson answers "$ANSWERS" \
    --arg pg0 "$PG0" --arg pg1 "$PG1" --arg cmd0 "$CMD0" --arg cmd1 "$CMD1" '
    def nums: split(" ") | map(tonumber);
    def table: split("\n") | map(select(length > 0) | split(" ") | {(.[0]): (.[1] | tonumber)}) | add // {};
    ($pg0 | nums) as $a | ($pg1 | nums) as $b |
    ($cmd0 | table) as $c0 | ($cmd1 | table) as $c1 |
    if $answers == 0 then null else {
      postgres: {xact_commit: (($b[0] - $a[0]) / $answers), xact_rollback: (($b[1] - $a[1]) / $answers),
                 tup_inserted: (($b[2] - $a[2]) / $answers), tup_updated: (($b[3] - $a[3]) / $answers),
                 tup_fetched: (($b[4] - $a[4]) / $answers), buffer_accesses: (($b[5] - $a[5]) / $answers)},
      redis_commands: ($c1 | to_entries | map({key, value: ((.value - ($c0[.key] // 0)) / $answers)})
                       | map(select(.value > 0.001)) | from_entries)
    } end')
log "(b) $ANSWERS answers in $LOAD_SECONDS s"

log "(b) Redis memory: $PARK_EXAMS live exams with $PARK_ANSWERS answers each"
sleep 1
MEM0=$(redis_stat memory | sed -n 's/^used_memory:\([0-9]*\)/\1/p')
KEYS0=$(rcli DBSIZE)
"$LOADTEST_BIN" --url "$URL" --jwt-secret "$SECRET" --bank-id "$BANK_ID" --students "$CLIENTS" \
    --park-exams "$PARK_EXAMS" --park-answers "$PARK_ANSWERS" --max-items $((PARK_ANSWERS + 1)) \
    --json >"$WORK/park.json" 2>"$WORK/park.err" || { cat "$WORK/park.err" >&2; die "loadtest (park) failed"; }
sleep 1
MEM1=$(redis_stat memory | sed -n 's/^used_memory:\([0-9]*\)/\1/p')
KEYS1=$(rcli DBSIZE)
PARKED=$(jq '.park.exams_parked' "$WORK/park.json")
# Cross-check: MEMORY USAGE of the state keys themselves (the parked ones are the newest).
rcli --scan --pattern "$PREFIX:*" | awk -F: '{print $NF, $0}' | sort -n | tail -n "$PARKED" \
    | awk '{print "MEMORY USAGE " $2 " SAMPLES 0"}' >"$WORK/usage.cmd"
KEY_BYTES=$(rcli <"$WORK/usage.cmd" | awk '{s += $1; n++} END { if (n) printf "%.0f", s / n; else print "null" }')
rcli --scan --pattern "$PREFIX:*" | awk -F: '{print $NF, $0}' | sort -n | tail -n 1 \
    | awk '{print "STRLEN " $2}' >"$WORK/strlen.cmd"
STATE_JSON_BYTES=$(rcli <"$WORK/strlen.cmd" | head -n 1)

# --- (d) optional: idle subscriptions ----------------------------------------------------

IDLE=${BENCH_IDLE_SUBSCRIPTIONS:-0}
echo null >"$WORK/idle.json"
if ((IDLE > 0)); then
    log "(d) $IDLE idle subscriptions held ${BENCH_IDLE_SECONDS:-30} s, ${BENCH_CONNECT_CONCURRENCY:-16} sockets opened at a time"
    "$LOADTEST_BIN" --url "$URL" --jwt-secret "$SECRET" --bank-id "$BANK_ID" --students "$CLIENTS" \
        --idle-subscriptions "$IDLE" --connect-concurrency "${BENCH_CONNECT_CONCURRENCY:-16}" \
        --duration "${BENCH_IDLE_SECONDS:-30}" --server-pid "$SERVICE_PID" --json \
        >"$WORK/idle.json" 2>"$WORK/idle.err" || { cat "$WORK/idle.err" >&2; die "loadtest (idle) failed"; }
    grep -v '^$' "$WORK/idle.err" >&2 || true
fi

# --- (c) summary ------------------------------------------------------------------------

mkdir -p "$RESULTS_DIR"
jq -n \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --arg loadavg "$LOADAVG_START" \
    --argjson nproc "$(nproc)" \
    --argjson clients "$CLIENTS" --argjson seconds "$RUN_SECONDS" --argjson sessions "$SESSIONS" \
    --argjson tps "${PGBENCH_TPS:-0}" --argjson lat "${PGBENCH_LAT:-0}" \
    --argjson failed "${PGBENCH_FAILED:-0}" --argjson busy "$PGBENCH_BUSY" \
    --argjson tps_full "${PGBENCH_FULL_TPS:-0}" --argjson busy_full "$PGBENCH_FULL_BUSY" \
    --argjson pg_ms "${PGBENCH_PG_MS:-null}" --argjson client_ms "${PGBENCH_CLIENT_MS:-null}" \
    --argjson pg_ms_full "${PGBENCH_FULL_PG_MS:-null}" \
    --slurpfile load "$WORK/load.json" --slurpfile park "$WORK/park.json" \
    --slurpfile idle "$WORK/idle.json" \
    --argjson cpu "$CPU_JSON" --argjson per_answer "$PER_ANSWER_JSON" \
    --argjson mem0 "$MEM0" --argjson mem1 "$MEM1" --argjson keys0 "$KEYS0" --argjson keys1 "$KEYS1" \
    --argjson param_decimals "$PARAM_DECIMALS" --argjson park_exams "$PARK_EXAMS" --argjson park_answers "$PARK_ANSWERS" --argjson parked "$PARKED" \
    --argjson key_bytes "${KEY_BYTES:-null}" --argjson state_json_bytes "${STATE_JSON_BYTES:-null}" \
    --arg redis "$([[ -n $REDIS_PID ]] && echo private || echo shared)" '
    $load[0] as $l | ($l.operations.submitAnswer // {}) as $s |
    {
      date: $date, commit: $commit, machine: {nproc: $nproc, loadavg_at_start: $loadavg},
      pgbench: {clients: $clients, threads: 2, seconds: $seconds, sessions: $sessions,
                script: "bench/pgbench_answer.sql", tps: $tps, latency_avg_ms: $lat,
                failed_transactions: $failed, machine_busy_pct: $busy,
                cpu_ms_per_transaction: {postgres_backends: $pg_ms, pgbench: $client_ms},
                tps_with_replay_lookup: $tps_full, machine_busy_pct_with_replay_lookup: $busy_full,
                postgres_cpu_ms_per_transaction_with_replay_lookup: $pg_ms_full},
      service: {students: $l.students, duration_s: $l.duration_s,
                answers_per_s: ($s.per_second // 0),
                submitAnswer: {count: $s.count, p50_ms: $s.p50_ms, p95_ms: $s.p95_ms,
                               p99_ms: $s.p99_ms, max_ms: $s.max_ms, mean_ms: $s.mean_ms},
                startExam: $l.operations.startExam,
                exams_completed: $l.exams_completed, errors_total: $l.errors_total,
                errors: ($l.operations | map_values(.errors) | with_entries(select(.value != {}))),
                cpu: $cpu, per_answer: $per_answer},
      ratio_pct: (if $tps > 0 then (100 * ($s.per_second // 0) / $tps * 10 | round / 10) else null end),
      redis: {instance: $redis, live_exams: $parked, answers_each: $park_answers,
              parameter_decimals: $param_decimals,
              used_memory_before: $mem0, used_memory_after: $mem1,
              bytes_per_live_exam: (if $parked > 0 then (($mem1 - $mem0) / $parked | round) else null end),
              keys_added: ($keys1 - $keys0), memory_usage_per_state_key: $key_bytes,
              state_json_bytes: $state_json_bytes,
              park_errors_total: $park[0].errors_total},
      idle_subscriptions: ($idle[0] | if . == null then null else {
              requested: .subscriptions.sockets_requested, connected: .subscriptions.sockets_connected,
              refused: .subscriptions.subscriptions_failed,
              with_every_event: .subscriptions.subscriptions_with_all_events,
              events_expected: .subscriptions.events_expected, events_received: .subscriptions.events_received,
              held_s: .duration_s, event_ms: (.operations.event | {p50_ms, p95_ms, p99_ms, max_ms, errors}),
              server_rss_kib_before: .server_rss_kib.before, server_rss_kib_after: .server_rss_kib.after,
              server_bytes_per_subscription: (.server_rss_kib.per_subscription_bytes | if . == null then null else round end),
              errors_total: .errors_total} end)
    }' >"$RESULTS_DIR/$RESULTS_FILE"

jq -r '
  "adaptive-engine bench (\(.date), commit \(.commit), \(.machine.nproc) cores, load average at start \(.machine.loadavg_at_start))",
  "  pgbench (answer transaction, \(.pgbench.clients) clients, \(.pgbench.seconds) s): \(.pgbench.tps | . * 10 | round / 10) tps (avg \(.pgbench.latency_avg_ms) ms); with the replay look-up: \(.pgbench.tps_with_replay_lookup | . * 10 | round / 10) tps",
  "  service (\(.service.students) students, \(.service.duration_s | . * 10 | round / 10) s): \(.service.answers_per_s | . * 10 | round / 10) answers/s = \(.ratio_pct)% of pgbench",
  "  submitAnswer latency ms: p50 \(.service.submitAnswer.p50_ms)  p95 \(.service.submitAnswer.p95_ms)  p99 \(.service.submitAnswer.p99_ms)  max \(.service.submitAnswer.max_ms)",
  "  errors: \(.service.errors_total) \(if .service.errors_total > 0 then (.service.errors | tostring) else "" end)",
  "  CPU ms per answer: service \(.service.cpu.cpu_ms_per_answer.service), postgres backends \(.service.cpu.cpu_ms_per_answer.postgres_backends), redis \(.service.cpu.cpu_ms_per_answer.redis), loadtest \(.service.cpu.cpu_ms_per_answer.loadtest); pgbench: postgres \(.pgbench.cpu_ms_per_transaction.postgres_backends), pgbench \(.pgbench.cpu_ms_per_transaction.pgbench) per transaction",
  "  machine CPU busy: \(.service.cpu.machine_busy_pct)% during the service run, \(.pgbench.machine_busy_pct)% during pgbench (other processes included)",
  "  per answer: \(.service.per_answer | tostring)",
  "  Redis: \(.redis.bytes_per_live_exam) bytes per live exam (used_memory delta over \(.redis.live_exams) exams with \(.redis.answers_each) answers, parameters to \(.redis.parameter_decimals) decimals; \(.redis.keys_added) keys added; MEMORY USAGE per state key \(.redis.memory_usage_per_state_key); state JSON \(.redis.state_json_bytes) bytes)",
  (.idle_subscriptions | select(. != null) |
   "  idle subscriptions: \(.connected)/\(.requested) sockets, \(.refused) refused, \(.with_every_event) with every event (\(.events_received)/\(.events_expected)); server RSS \(.server_rss_kib_before) -> \(.server_rss_kib_after) KiB = \(.server_bytes_per_subscription) bytes per subscription")
' "$RESULTS_DIR/$RESULTS_FILE"
log "written $RESULTS_DIR/$RESULTS_FILE"
