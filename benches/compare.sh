#!/usr/bin/env bash
# A/B comparison of phoenix builds against each other and ninja on the
# 10,000-step command benchmark (issue 3), in alternating rounds: this
# machine's speed wanders by 20% from minute to minute, so only runs
# interleaved with each other compare.
#
#   benches/compare.sh ROUNDS BINARY...
#
# Prints each round's wall times and, at the end, every binary's median wall
# time, median own CPU (phoenix's debug line), and its ratios to ninja (and
# to bin1) round by round: median, mean with its standard error, how many
# rounds it won and a sign test. Then where the time went: the CPU of the
# whole tree (user + system, the orchestrator and every step) and the cores'
# idle time (2 x wall - that CPU: both cores free while the build ran), each
# as a median and as its difference to ninja's (and bin1's) in the same
# rounds. A single run here moves by about 8%: a difference of a percent or
# two in wall time needs some 100 rounds to show (LAYERS=20 runs them on
# 2,000 steps), and one within two standard errors is noise; the idle time
# is steadier (a standard error of about 0.01 s over 30-40 rounds).
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
    (cd "$work" && /usr/bin/time -f "%e %U %S" -o "$work/t" ninja -j2 >/dev/null)
    own=0
  else
    own=$(RUST_LOG=phoenix=debug /usr/bin/time -f "%e %U %S" -o "$work/t" "$bin" --state "$work/state" run "$work/plan.toml" --concurrency 2 -q 2>&1 \
      | grep -o 'cpu_seconds=[0-9.]*' | cut -d= -f2)
    check_outputs "$bin"
  fi
  read -r wall user system < "$work/t"
  echo "$who $wall $own $user $system" >> "$work/times"
  line+=" $who $wall"
  [ "$who" = ninja ] || line+=" ($own)"
}
bins=("$@")
for round in $(seq "$rounds"); do
  line="round $round:"
  run_round "$round" "${bins[@]}"
  echo "$line"
done
python3 - "$work/times" "$@" <<'PY'
import math, statistics, sys

def sign_test(faster, n):
    """Two-sided p of `faster` wins in n rounds if either were as likely."""
    k = min(faster, n - faster)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)

def sem(values):
    """The standard error of the mean."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")

def compare(label, ratios):
    faster = sum(r < 1 for r in ratios)
    print(f"  {label}: median {statistics.median(ratios):.3f}x, mean {statistics.mean(ratios):.3f}x "
          f"+- {sem(ratios):.3f} (standard error), faster in {faster} of {len(ratios)} "
          f"(sign test p = {sign_test(faster, len(ratios)):.2f})")

rows = [l.split() for l in open(sys.argv[1])]
names = sys.argv[2:]
walls, own = {}, {}
tree = {}
for who, wall, cpu, user, system in rows:
    walls.setdefault(who, []).append(float(wall)); own.setdefault(who, []).append(float(cpu))
    tree.setdefault(who, []).append(float(user) + float(system))
idle = {who: [2 * w - c for w, c in zip(walls[who], tree[who])] for who in walls}
ninja = walls["ninja"]
print(f"ninja: median {statistics.median(ninja):.2f} s")
for i, name in enumerate(names, 1):
    w = walls[f"bin{i}"]
    print(f"bin{i} {name}: median {statistics.median(w):.2f} s, own CPU {statistics.median(own[f'bin{i}']):.2f} s, "
          f"of medians {statistics.median(w) / statistics.median(ninja):.3f}x ninja's")
    compare("round ratio to ninja", [a / b for a, b in zip(w, ninja)])
    if i > 1:
        compare("round ratio to bin1", [a / b for a, b in zip(w, walls["bin1"])])
def difference(series, who, base):
    d = [a - b for a, b in zip(series[who], series[base])]
    return f"median {statistics.median(d):+.3f}, mean {statistics.mean(d):+.3f} +- {sem(d):.3f} s"

print("where the time went (CPU of the whole tree; idle = 2 x wall - CPU), medians, and the mean")
print("difference to ninja's (and bin1's) in the same round with its standard error:")
for who in ["ninja"] + [f"bin{i}" for i in range(1, len(names) + 1)]:
    line = f"  {who}: CPU {statistics.median(tree[who]):.3f} s, idle {statistics.median(idle[who]):.3f} s"
    bases = {"ninja": (), "bin1": ("ninja",)}.get(who, ("ninja", "bin1"))
    for base in bases:
        line += f"; to {base}: CPU {difference(tree, who, base)}, idle {difference(idle, who, base)}"
    print(line)
PY
