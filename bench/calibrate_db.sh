#!/usr/bin/env bash
# Calibration of a million attempts through Postgres (issue 16): a scratch database with a
# 300-item operational bank and 40 pretest items, 40,000 finished exams of 21 operational
# and 4 pretest answers each (1,000,000 attempts, 4,000 pretest answers per pretest item,
# drawn by SQL from known abilities and parameters), then `adaptive-engine calibrate` by
# each method under /usr/bin/time: wall time, peak resident memory, and the RMSE of the
# estimates against the generating parameters.
#
# Usage: bash bench/calibrate_db.sh [BINARY]   (default target/release/adaptive-engine)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/adaptive-engine}
db=ae_calibrate_bench
export DATABASE_URL="postgres://root@127.0.0.1:5432/$db"
psql -h 127.0.0.1 -U root -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
"$bin" migrate >/dev/null
started=$(date +%s.%N)
psql -h 127.0.0.1 -U root -d "$db" -q <<'SQL'
SELECT setseed(0.42);
INSERT INTO item_banks (id, name) VALUES (1, 'calibration bench');
CREATE TABLE truth AS
  SELECT g, 0.8 + 1.2 * random() AS a,
         sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS b
  FROM generate_series(1, 340) g;
INSERT INTO items (id, item_bank_id, external_id, a, b, content, answer_key, status)
  SELECT g, 1, CASE WHEN g <= 300 THEN 'op-' ELSE 'pre-' END || g,
         CASE WHEN g <= 300 THEN a ELSE 1 END, CASE WHEN g <= 300 THEN b ELSE 0 END,
         '{}', 'A', CASE WHEN g <= 300 THEN 'OPERATIONAL' ELSE 'PRETEST' END
  FROM truth;
CREATE TEMP TABLE thetas AS
  SELECT e, sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS theta
  FROM generate_series(1, 40000) e;
INSERT INTO exam_sessions (id, student_id, item_bank_id, status, config, theta,
                           standard_error, items_completed)
  SELECT e, 's' || e, 1, 'COMPLETED', '{}', 0, 1, 25 FROM thetas;
INSERT INTO attempts (exam_session_id, item_id, position, response, correct, score, theta,
                      standard_error, completed, pretest)
  SELECT t.e, tr.g, k + 1, 'A', x.correct, x.correct::int, 0, 1, false, false
  FROM thetas t
  CROSS JOIN generate_series(0, 20) k
  JOIN truth tr ON tr.g = 1 + ((t.e + k * 14) % 300)
  CROSS JOIN LATERAL (SELECT random() < 1 / (1 + exp(-tr.a * (t.theta - tr.b))) AS correct) x;
INSERT INTO attempts (exam_session_id, item_id, position, response, correct, score, theta,
                      standard_error, completed, pretest)
  SELECT t.e, tr.g, 22 + k, 'A', x.correct, x.correct::int, 0, 1, false, true
  FROM thetas t
  CROSS JOIN generate_series(0, 3) k
  JOIN truth tr ON tr.g = 301 + ((t.e * 4 + k) % 40)
  CROSS JOIN LATERAL (SELECT random() < 1 / (1 + exp(-tr.a * (t.theta - tr.b))) AS correct) x;
ANALYZE;
SQL
echo "generated $(psql -h 127.0.0.1 -U root -d "$db" -Atc 'SELECT count(*) FROM attempts') attempts in $(echo "$(date +%s.%N) - $started" | bc) s"
truth=$(psql -h 127.0.0.1 -U root -d "$db" -Atc "SELECT json_object_agg(g, json_build_array(a, b)) FROM truth WHERE g > 300")
for method in fixed-theta oem mem; do
  out=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$out.time" "$bin" calibrate --bank 1 --method "$method" --min-responses 200 >"$out" 2>/dev/null
  read -r seconds kb <"$out.time"
  python3 - "$out" "$truth" "$method" "$seconds" "$kb" <<'PY'
import json, math, sys
run = json.load(open(sys.argv[1])); truth = json.loads(sys.argv[2])
items = [i for i in run["items"] if i["a"] is not None]
ra = math.sqrt(sum((i["a"] - truth[str(i["itemId"])][0]) ** 2 for i in items) / len(items))
rb = math.sqrt(sum((i["b"] - truth[str(i["itemId"])][1]) ** 2 for i in items) / len(items))
print(f"{sys.argv[3]}: {float(sys.argv[4]):.1f} s, peak RSS {int(sys.argv[5]) / 1024:.1f} MB, "
      f"{run['cycles']} cycles, {len(items)} items, {items[0]['responses']} responses each, "
      f"RMSE a {ra:.4f}, b {rb:.4f}")
PY
  rm -f "$out" "$out.time"
done
psql -h 127.0.0.1 -U root -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
