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
source benches/rounds.sh
make_work threads
run_one() {
  local who=$1 bin=${2:-}
  fresh_outputs
  local start pid
  start=$(date +%s%N)
  if [ "$who" = ninja ]; then
    ninja -C "$work" -j2 >/dev/null & pid=$!
  else
    "$bin" --state "$work/state" run "$work/plan.toml" --concurrency 2 -q >/dev/null 2>&1 & pid=$!
  fi
  declare -A last=()
  # Read with builtins only: a process started per reading (cat, or sleep)
  # would take CPU from the run it measures. `read -t` on a pipe nobody
  # writes is the pause.
  local task name ran waited pause
  exec {pause}<> <(:)
  while kill -0 "$pid" 2>/dev/null; do
    for task in /proc/"$pid"/task/*; do
      { read -r name < "$task/comm" && read -r ran waited _ < "$task/schedstat"; } 2>/dev/null || continue
      # By thread id: the main thread's name changes when it execs.
      last["${task##*/}"]="$name $ran $waited"
    done
    read -r -t 0.02 -u "$pause" _ || true
  done
  exec {pause}>&-
  wait "$pid"
  local wall=$(( ($(date +%s%N) - start) / 1000000 ))
  # `round` is run_round's: bash lets the functions it calls see its locals.
  for task in "${!last[@]}"; do
    set -- ${last[$task]}
    echo "$round $who $1 $wall $(( $2 / 1000000 )) $(( $3 / 1000000 ))" >> "$work/figures"
  done
}
: > "$work/figures"
bins=("$@")
for round in $(seq "$rounds"); do
  run_round "$round" "${bins[@]}"
done
python3 - "$work/figures" "$@" <<'PY'
import collections, statistics, sys
names = {"ninja": "ninja", **{f"bin{i}": n for i, n in enumerate(sys.argv[2:], 1)}}
# Threads of one name (a pool's) add up within a run.
runs = collections.defaultdict(lambda: [0, 0, 0])
for line in open(sys.argv[1]):
    round_, who, thread, wall, ran, waited = line.split()
    run = runs[(who, thread, round_)]
    run[0] = int(wall); run[1] += int(ran); run[2] += int(waited)
by = collections.defaultdict(list)
for (who, thread, _), figures in runs.items():
    by[(who, thread)].append(figures)
print("medians: wall ms, ran ms, waited runnable ms (threads of one name added up)")
for (who, thread), rows in sorted(by.items()):
    wall, ran, waited = (statistics.median(column) for column in zip(*rows))
    print(f"{names[who]:>24} {thread:<16} {wall:8.0f} {ran:6.0f} {waited:6.0f}")
PY
