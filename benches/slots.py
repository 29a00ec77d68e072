"""Figures for benches/slots.sh.

`slots.py WHO < perf-script-output` prints one line for one run:
    WHO start_ms life_ms idle_us end_ms wall_s
`slots.py --summary NAME... < lines` prints the medians per orchestrator and
what each binary adds against ninja.
"""

import re
import statistics
import sys

EVENT = re.compile(r"\s*.+?\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+sched:(\w+):\s*(.*)")


def one_run(who, lines):
    orchestrator = start = stop = None
    children = {}
    for line in lines:
        match = EVENT.match(line)
        if not match:
            continue
        pid, at, event, fields = int(match[1]), float(match[2]), match[3], match[4]
        if orchestrator is None and event == "sched_process_exec":
            # perf's own child, exec'ing the command: the orchestrator.
            orchestrator, start = pid, at
        elif event == "sched_process_fork" and orchestrator is not None:
            parent = int(re.search(r" pid=(\d+)", fields)[1])
            child = int(re.search(r"child_pid=(\d+)", fields)[1])
            if parent == orchestrator:
                children[child] = {"fork": at}
        elif event == "sched_process_exec" and pid in children:
            children[pid]["exec"] = at
        elif event == "sched_process_exit":
            if pid in children and "exit" not in children[pid]:
                children[pid]["exit"] = at
            elif pid == orchestrator:
                stop = at
    # Threads are forks too: a child is a fork that exec'd.
    runs = [c for c in children.values() if "exec" in c and "exit" in c]
    first = min(c["fork"] for c in runs)
    last = max(c["exit"] for c in runs)
    # The time-integral of running children, against two slots always full.
    changes = sorted([(c["fork"], 1) for c in runs] + [(c["exit"], -1) for c in runs])
    running, busy, previous = 0, 0.0, first
    for at, change in changes:
        busy += running * (at - previous)
        running, previous = running + change, at
    idle = 2 * (last - first) - busy
    life = statistics.mean(c["exit"] - c["fork"] for c in runs)
    print(
        f"{who} {1e3 * (first - start):.1f} {1e3 * life:.3f} "
        f"{1e6 * idle / len(runs):.0f} {1e3 * (stop - last):.1f} {stop - start:.2f}"
    )


def summary(names):
    rows = {}
    for line in sys.stdin:
        who, *figures = line.split()
        rows.setdefault(who, []).append([float(f) for f in figures])
    labels = ["start ms", "life ms", "idle us/step", "end ms", "wall s"]

    def medians(who):
        return [statistics.median(column) for column in zip(*rows[who])]

    ninja = medians("ninja")
    print(f"medians of {len(rows['ninja'])} rounds: " + ", ".join(labels))
    print("ninja: " + "  ".join(f"{v:g}" for v in ninja))
    for i, name in enumerate(names, 1):
        mine = medians(f"bin{i}")
        added = (mine[0] - ninja[0]) + (mine[3] - ninja[3])
        per_step = mine[2] - ninja[2]
        print(f"bin{i} {name}: " + "  ".join(f"{v:g}" for v in mine))
        # What the binary adds over ninja in wall time at 10,000 steps on two
        # slots, with the children's life taken as ninja's.
        print(
            f"  against ninja: {per_step:+.0f} us idle per step, {added:+.0f} ms at start and end; "
            f"{(added / 1e3 + 10_000 * per_step / 1e6 / 2):+.2f} s of wall time"
        )


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        summary(sys.argv[2:])
    else:
        one_run(sys.argv[1], sys.stdin)
