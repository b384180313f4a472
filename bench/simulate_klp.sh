#!/usr/bin/env bash
# Exams per second of `simulate` with KLP on a 5,000-item 3PL bank, with the grid tables
# (the default) and with --plain-selection (the plain scan every step took before them).
# Both runs give the same exams (tests/simulate.rs checks it); only the time differs.
# Usage: bash bench/simulate_klp.sh [EXAMINEES]   (default 500; 20-item exams, 2 threads)
set -euo pipefail
cd "$(dirname "$0")/.."
examinees=${1:-500}
bank=$(mktemp --suffix=.json)
trap 'rm -f "$bank"' EXIT
python3 - "$bank" <<'PY'
import json, random, sys
random.seed(5000)
items = [{"externalId": f"i{i:04d}", "a": round(random.uniform(0.5, 2.5), 4),
          "b": round(random.uniform(-3, 3), 4), "c": round(random.uniform(0, 0.3), 4),
          "content": {"stem": f"Item {i}"}, "answerKey": "A"} for i in range(5000)]
json.dump({"name": "5000 3PL items", "items": items}, open(sys.argv[1], "w"))
PY
cargo build --release --quiet
for mode in tables plain; do
  flag=()
  [ "$mode" = plain ] && flag=(--plain-selection)
  "${CARGO_TARGET_DIR:-target}/release/adaptive-engine" simulate --bank "$bank" --selection KLP --max-items 20 \
    --examinees "$examinees" --seed 11 --threads 2 --json "${flag[@]}" |
    python3 -c "import json,sys; s=json.load(sys.stdin); print(f\"$mode: {s['examinees']} exams in {s['elapsed_s']:.2f} s = {s['exams_per_second']:.1f} exams/s, RMSE {s['rmse']:.4f}\")"
done
