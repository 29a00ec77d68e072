#!/usr/bin/env bash
# What each orchestrator adds to the 10,000-step command benchmark (issue 3),
# measured from the kernel's own process events instead of wall time alone.
#
#   benches/slots.sh ROUNDS BINARY...
#
# Wall time on this machine moves 10-20% from one minute to the next with the
# speed of the children (`sh` and `touch`), which neither orchestrator
# controls. Each run is recorded with `perf record` on three scheduler
# tracepoints (a process forked, exec'd, exited: a few events per child, no
# sampling), and split into:
#   - start: the orchestrator's exec to its first child's fork;
#   - life: a child's fork to its exit, the same work under either;
#   - idle: the time a slot of `-j2` / `--concurrency 2` stays empty between
#     one child's exit and the next fork, per step: what the orchestrator adds;
#   - end: the last child's exit to the orchestrator's own.
# Wall time is start + steps x (life + idle) / 2 + end. Needs perf
# (linux-perf) with access to tracepoints (root, or perf_event_paranoid -1),
# and ninja (ninja-build).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1; shift
command -v perf >/dev/null || { echo "perf: not installed (apt-get install linux-perf)"; exit 1; }
source benches/rounds.sh
make_work slots
: > "$work/figures"
run_one() {
  local who=$1 bin=${2:-}
  fresh_outputs
  local command=(ninja -j2)
  [ "$who" = ninja ] || command=("$bin" --state "$work/state" run "$work/plan.toml" --concurrency 2 -q)
  (cd "$work" && perf record -q -o "$work/perf.data" \
    -e sched:sched_process_fork -e sched:sched_process_exec -e sched:sched_process_exit \
    "${command[@]}" >/dev/null 2>"$work/stderr") || { cat "$work/stderr"; exit 1; }
  check_outputs "$who"
  perf script -i "$work/perf.data" 2>/dev/null | python3 benches/slots.py "$who" >> "$work/figures"
  tail -1 "$work/figures"
}
bins=("$@")
for round in $(seq "$rounds"); do
  run_round "$round" "${bins[@]}"
done
python3 benches/slots.py --summary "$@" < "$work/figures"
