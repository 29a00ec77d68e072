#!/usr/bin/env bash
# Benchmarks for the executor (issue 3). Prints one line per figure; the same
# figures, with the date, go in docs/performance.md by hand.
#
#   benches/executor.sh [ninja|noop|makespan|resume]...   (default: all)
#
# Needs ninja (apt-get install ninja-build) for the ninja comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/phoenix
work=$(mktemp -d /tmp/phoenix-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
which=${*:-ninja noop makespan resume}

for bench in $which; do
case $bench in
ninja)
  # 10,000 command steps, 100 x 100, 2-3 needs each, --concurrency 2, against
  # ninja -j2 on the same graph with the same commands.
  command -v ninja >/dev/null || { echo "ninja: not installed (apt-get install ninja-build)"; continue; }
  python3 benches/gen_plan.py "$work/plan.toml" --action command --ninja "$work/build.ninja" --floor "$work/graph.txt"
  # The floor (benches/floor.c: spawn and wait, nothing else) when a C
  # compiler is there: what ninja and phoenix take above it is their own.
  floor=""
  if command -v cc >/dev/null && cc -O2 -o "$work/floor" benches/floor.c; then floor="$work/floor"; fi
  # Alternating runs, 5 of each: wall time, and CPU (user + system of the
  # whole tree, children included), which this noisy machine moves less.
  : > "$work/ninja-times"; : > "$work/phoenix-own"
  for _ in 1 2 3 4 5; do
    if [ -n "$floor" ]; then
      rm -rf "$work/out"; mkdir "$work/out"
      (cd "$work" && /usr/bin/time -f "floor %e %U %S" -a -o "$work/ninja-times" "$floor" graph.txt 100)
    fi
    rm -rf "$work/out" "$work/state" "$work/.ninja_log"; mkdir "$work/out"
    # Phoenix's own CPU (all its threads, not its children) from its debug line.
    RUST_LOG=phoenix=debug /usr/bin/time -f "phoenix %e %U %S" -a -o "$work/ninja-times" "$bin" --state "$work/state" run "$work/plan.toml" --concurrency 2 -q 2>&1 \
      | grep -o 'cpu_seconds=[0-9.]*' | cut -d= -f2 >> "$work/phoenix-own"
    [ "$(ls "$work/out" | wc -l)" = 10000 ] || { echo "phoenix did not make every file"; exit 1; }
    rm -rf "$work/out" "$work/.ninja_log"; mkdir "$work/out"
    (cd "$work" && /usr/bin/time -f "ninja %e %U %S" -a -o "$work/ninja-times" ninja -j2 >/dev/null)
  done
  python3 -c '
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    who, wall, user, system = line.split()
    runs.setdefault(who, []).append((float(wall), float(user) + float(system)))
def figures(who):
    walls = [w for w, _ in runs[who]]
    cpus = [c for _, c in runs[who]]
    return min(walls), statistics.median(walls), statistics.median(cpus)
p, n = figures("phoenix"), figures("ninja")
own = statistics.median(float(l) for l in open(sys.argv[2]) if l.strip())
print(f"10,000 command steps, -j2 (5 runs each): phoenix best {p[0]:.2f} s, median {p[1]:.2f} s, CPU {p[2]:.1f} s "
      f"(its own {own:.2f} s); ninja best {n[0]:.2f} s, median {n[1]:.2f} s, CPU {n[2]:.1f} s; "
      f"ratio {p[0]/n[0]:.2f}x best, {p[1]/n[1]:.2f}x median")
if "floor" in runs:
    f = figures("floor")
    print(f"floor (spawn and wait only): best {f[0]:.2f} s, median {f[1]:.2f} s, CPU {f[2]:.1f} s; "
          f"above it (medians): ninja {100 * (n[1] / f[1] - 1):+.1f}%, phoenix {100 * (p[1] / f[1] - 1):+.1f}%")
' "$work/ninja-times" "$work/phoenix-own"
  ;;
noop)
  python3 benches/gen_plan.py "$work/noop.toml" --layers 1000 --width 100
  # Five runs: this machine's speed wanders by 20% from minute to minute.
  for i in 1 2 3 4 5; do
    rm -rf "$work/state"
    /usr/bin/time -f "%e %M" -o "$work/noop.$i" "$bin" --state "$work/state" run "$work/noop.toml" -q
  done
  cat "$work"/noop.? | python3 -c '
import sys, statistics
runs = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
walls = sorted(w for w, _ in runs); peak = max(m for _, m in runs)
print(f"100,000 noop steps: best {walls[0]:.2f} s, median {statistics.median(walls):.2f} s wall (5 runs), peak {peak/1000:.0f} MB (worst run)")'
  ;;
makespan)
  # 40 sleep steps of known durations in 8 chains of 5 that cross over; no
  # concurrency limit. Compares the run's span with the critical path.
  python3 - "$work/sleep.toml" <<'PY' > "$work/critical.txt"
import random, sys
rng = random.Random(3)
chains, length = 8, 5
dur = {}
lines = ['version = 1', '[plan]', 'name = "makespan"', 'rto = "1h"', 'rpo = "1h"', 'concurrency = 100']
needs = {}
for c in range(chains):
    for i in range(length):
        sid = f"c{c}_{i}"
        dur[sid] = rng.choice([0.1, 0.2, 0.3, 0.4, 0.5])
        deps = [] if i == 0 else [f"c{c}_{i-1}"] + ([f"c{(c+1)%chains}_{i-1}"] if rng.random() < 0.5 else [])
        needs[sid] = deps
        lines += ['', '[[step]]', f'id = "{sid}"', 'phase = "provision"', 'action = "command"',
                  f'run = ["sleep", "{dur[sid]}"]', 'timeout = "1m"', f'needs = {deps!r}'.replace("'", '"')]
open(sys.argv[1], 'w').write("\n".join(lines) + "\n")
finish = {}
for c_i in sorted(dur, key=lambda s: int(s.split('_')[1])):
    finish[c_i] = dur[c_i] + max([finish[d] for d in needs[c_i]], default=0)
end = max(finish, key=finish.get)
path = [end]
while needs[path[-1]]:
    path.append(max(needs[path[-1]], key=lambda d: finish[d]))
print(f"{finish[end]:.3f} {len(path)}")
PY
  read -r critical on_path < "$work/critical.txt"
  rm -rf "$work/state"
  "$bin" --state "$work/state" run "$work/sleep.toml" -q
  "$bin" --state "$work/state" status --format json > "$work/status.json"
  python3 - "$work/status.json" "$critical" "$on_path" <<'PY'
import json, sys
from datetime import datetime
s = json.load(open(sys.argv[1])); critical = float(sys.argv[2]); n = int(sys.argv[3])
t = lambda x: datetime.fromisoformat(x.replace('Z', '+00:00'))
start = min(t(x['started_at']) for x in s['steps']); end = max(t(x['finished_at']) for x in s['steps'])
span = (end - start).total_seconds()
budget = critical * 1.02 + min(0.015 * n, 0.050)
print(f"makespan: {span:.3f} s for a critical path of {critical:.3f} s over {n} steps "
      f"(overhead {1000*(span-critical):.0f} ms; budget {budget:.3f} s: {'met' if span <= budget else 'NOT met'})")
PY
  ;;
resume)
  # 10,000 noop steps where layer 90 (100 steps) waits for a file: the run stops
  # with 9,000 done; the resume is timed from its start to its first step start.
  python3 benches/gen_plan.py "$work/resume.toml"
  python3 - "$work/resume.toml" <<'PY'
import re, sys
p = sys.argv[1]; text = open(p).read()
text = re.sub(r'(id = "s90_\d+"\nphase = "provision"\n)action = "noop"\n', r'\1action = "command"\nrun = ["test", "-e", "go"]\ntimeout = "1m"\n', text)
open(p, 'w').write(text)
PY
  rm -rf "$work/state" "$work/go"
  (cd "$work" && "$bin" --state "$work/state" run resume.toml -q 2>/dev/null) || true
  touch "$work/go"
  start=$(date +%s.%N)
  (cd "$work" && "$bin" --state "$work/state" --log-format json resume 2> "$work/resume.log") || true
  python3 - "$work/resume.log" "$start" <<'PY'
import json, sys
from datetime import datetime
start = float(sys.argv[2])
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get('event') == 'step_started':
        first = datetime.fromisoformat(e['timestamp'].replace('Z', '+00:00')).timestamp()
        print(f"resume of a 10,000-step run with 9,000 done: first new step after {1000*(first-start):.0f} ms")
        break
PY
  ;;
esac
done
