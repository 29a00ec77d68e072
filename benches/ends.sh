#!/usr/bin/env bash
# The fixed cost of a run on the command benchmark of issue 3: from the
# orchestrator's exec to its first step's exec (reading the plan, opening
# the state), and from its last step's exit to its own (the last sync, the
# report), for ninja and each binary in alternating rounds.
#
#   benches/ends.sh ROUNDS BINARY...
#
# 10,000 steps unless LAYERS says otherwise. Both cores are idle for most
# of these: at 10,000 steps each millisecond is about 0.01% of the run.
# Needs perf (linux-perf) with access to tracepoints (root, or
# perf_event_paranoid -1), and ninja (ninja-build).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf: not installed (apt-get install linux-perf)"; exit 1; }
rounds=${1:?usage: benches/ends.sh ROUNDS BINARY...}; shift
source benches/rounds.sh
make_work ends
declare -A starts ends
run_one() {
  local who=$1 bin=${2:-}
  fresh_outputs
  local command=(ninja -j2)
  [ "$who" = ninja ] || command=("$bin" --state "$work/state" run "$work/plan.toml" --concurrency 2 -q)
  (cd "$work" && perf record -q -o "$work/perf.data" \
    -e sched:sched_process_exec -e sched:sched_process_exit \
    "${command[@]}" >/dev/null 2>"$work/stderr") || { cat "$work/stderr"; exit 1; }
  check_outputs "$who"
  local start end
  read -r start end < <(perf script -i "$work/perf.data" -F pid,tid,time,event 2>/dev/null \
    | python3 benches/ends.py)
  printf ' %s %s/%s' "$who" "$start" "$end"
  starts[$who]+="$start "
  ends[$who]+="$end "
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
for round in $(seq "$rounds"); do
  printf 'round %s (start/end ms):' "$round"
  run_round "$round" "$@"
  echo
done
for who in "${!starts[@]}"; do
  echo "$who: start median $(echo "${starts[$who]}" | median) ms, end median $(echo "${ends[$who]}" | median) ms"
done | sort
