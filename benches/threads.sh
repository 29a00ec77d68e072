#!/usr/bin/env bash
# How long each orchestrator thread ran and how long it waited for a CPU
# while runnable, on the 10,000-step command benchmark (issue 3), from the
# kernel's own per-thread counters (/proc/PID/task/TID/schedstat, in ns; no
# tracing, so the run is not slowed). Rounds alternate ninja and each binary.
#
#   benches/threads.sh ROUNDS BINARY...
#
# A thread's figures are read every 20 ms until the process exits, so the
# last 20 ms of a run may be missing. Needs ninja (ninja-build).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1; shift
command -v ninja >/dev/null || { echo "ninja: not installed (apt-get install ninja-build)"; exit 1; }
source benches/rounds.sh
make_work threads
run_one() {
  local who=$1 bin=${2:-}
  fresh_outputs
  local start pid
  start=$(date +%s%N)
  if [ "$who" = ninja ]; then
    (cd "$work" && exec ninja -j2 >/dev/null) & pid=$!
  else
    "$bin" --state "$work/state" run "$work/plan.toml" --concurrency 2 -q >/dev/null 2>&1 & pid=$!
  fi
  declare -A last=()
  local task name figures
  while kill -0 "$pid" 2>/dev/null; do
    for task in /proc/"$pid"/task/*; do
      name=$(cat "$task/comm" 2>/dev/null) || continue
      figures=$(cut -d' ' -f1,2 "$task/schedstat" 2>/dev/null) || continue
      [ -n "$figures" ] && last["$name"]=$figures
    done
    sleep 0.02
  done
  wait "$pid"
  local wall=$(( ($(date +%s%N) - start) / 1000000 ))
  for name in "${!last[@]}"; do
    set -- ${last[$name]}
    echo "$who $name $wall $(( $1 / 1000000 )) $(( $2 / 1000000 ))" >> "$work/figures"
  done
}
: > "$work/figures"
bins=("$@")
for round in $(seq "$rounds"); do
  run_round "$round" "${bins[@]}"
done
python3 - "$work/figures" "$@" <<'PY'
import collections, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
names = {"ninja": "ninja", **{f"bin{i}": n for i, n in enumerate(sys.argv[2:], 1)}}
by = collections.defaultdict(lambda: ([], [], []))
for who, thread, wall, ran, waited in rows:
    w, r, q = by[(who, thread)]
    w.append(int(wall)); r.append(int(ran)); q.append(int(waited))
print("medians: wall ms, ran ms, waited runnable ms")
for (who, thread), (w, r, q) in sorted(by.items()):
    print(f"{names[who]:>24} {thread:<16} {statistics.median(w):8.0f} {statistics.median(r):6.0f} {statistics.median(q):6.0f}")
PY
