#!/usr/bin/env bash
# A/B comparison of phoenix builds against each other and ninja on the
# 10,000-step command benchmark (issue 3), in alternating rounds: this
# machine's speed wanders by 20% from minute to minute, so only runs
# interleaved with each other compare.
#
#   benches/compare.sh ROUNDS BINARY...
#
# Prints each round's wall times and, at the end, every binary's median wall
# time, median own CPU (phoenix's debug line) and median ratio to ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1; shift
source benches/rounds.sh
make_work compare
# One run of ninja (name "ninja") or of the Nth binary (name "binN").
run_one() {
  local who=$1 bin=${2:-}
  fresh_outputs
  if [ "$who" = ninja ]; then
    (cd "$work" && /usr/bin/time -f "%e" -o "$work/t" ninja -j2 >/dev/null)
    own=0
  else
    own=$(RUST_LOG=phoenix=debug /usr/bin/time -f "%e" -o "$work/t" "$bin" --state "$work/state" run "$work/plan.toml" --concurrency 2 -q 2>&1 \
      | grep -o 'cpu_seconds=[0-9.]*' | cut -d= -f2)
    [ "$(ls "$work/out" | wc -l)" = 10000 ] || { echo "$bin did not make every file"; exit 1; }
  fi
  echo "$who $(cat "$work/t") $own" >> "$work/times"
  line+=" $who $(cat "$work/t")"
  [ "$who" = ninja ] || line+=" ($own)"
}
bins=("$@")
for round in $(seq "$rounds"); do
  line="round $round:"
  run_round "$round" "${bins[@]}"
  echo "$line"
done
python3 - "$work/times" "$@" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
names = sys.argv[2:]
walls, own = {}, {}
for who, wall, cpu in rows:
    walls.setdefault(who, []).append(float(wall)); own.setdefault(who, []).append(float(cpu))
ninja = walls["ninja"]
print(f"ninja: median {statistics.median(ninja):.2f} s")
for i, name in enumerate(names, 1):
    w = walls[f"bin{i}"]
    ratios = [a / b for a, b in zip(w, ninja)]
    print(f"bin{i} {name}: median {statistics.median(w):.2f} s, own CPU {statistics.median(own[f'bin{i}']):.2f} s, "
          f"ratio to ninja: median {statistics.median(ratios):.3f}x, of medians {statistics.median(w) / statistics.median(ninja):.3f}x")
PY
