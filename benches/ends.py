"""Reads `perf script -F pid,tid,time,event` of one orchestrator run (process
exec and exit events) and prints, in milliseconds, how long it took from its
own exec to its first child's exec, and from its last child's exit to its own:
the fixed cost of a run, apart from the steps. Used by benches/ends.sh."""

import sys

events = []
for line in sys.stdin:
    # "PID/TID TIME: EVENT:"
    parts = line.split()
    if len(parts) < 3 or "/" not in parts[0]:
        continue
    pid, tid = (int(n) for n in parts[0].split("/"))
    events.append((pid, tid, float(parts[1].rstrip(":")), parts[2].rstrip(":")))
if not events:
    sys.exit("no events: is perf allowed to read tracepoints?")
main = events[0][0]
start = events[0][2]
child_execs = [t for pid, _, t, e in events if pid != main and e.endswith("exec")]
child_exits = [t for pid, _, t, e in events if pid != main and e.endswith("exit")]
end = max(t for pid, tid, t, e in events if tid == main and e.endswith("exit"))
print(f"{1e3 * (child_execs[0] - start):.1f} {1e3 * (end - max(child_exits)):.1f}")
