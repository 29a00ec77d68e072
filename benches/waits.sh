#!/usr/bin/env bash
# How long each orchestrator's main thread waits for a CPU once woken, and
# what woke it, on the command benchmark of issue 3 (2,000 steps unless
# LAYERS says otherwise): one traced run of ninja and of each binary.
#
#   benches/waits.sh BINARY...
#
# threads.sh gives the totals untraced; this splits them by wake-up (see
# benches/waits.py), which is where Phoenix's executor and ninja's thread
# differ. The trace (scheduler events on every CPU) slows the runs a
# little. Needs perf (linux-perf) with access to tracepoints (root, or
# perf_event_paranoid -1), and ninja (ninja-build).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf: not installed (apt-get install linux-perf)"; exit 1; }
LAYERS=${LAYERS:-20}
source benches/rounds.sh
make_work waits
run_one() {
  local who=$1 bin=${2:-}
  fresh_outputs
  local command=(ninja -j2)
  [ "$who" = ninja ] || command=("$bin" --state "$work/state" run "$work/plan.toml" --concurrency 2 -q)
  (cd "$work" && perf record -q -a -o "$work/perf.data" \
    -e sched:sched_process_exec -e sched:sched_waking -e sched:sched_switch \
    "${command[@]}" >/dev/null 2>"$work/stderr") || { cat "$work/stderr"; exit 1; }
  check_outputs "$who"
  perf script -i "$work/perf.data" -F comm,tid,cpu,time,event,trace 2>/dev/null \
    | python3 benches/waits.py "${bin:-ninja}"
}
run_round 1 "$@"
