"""Figures for benches/waits.sh.

`waits.py WHO < perf-script-output` reads one run's scheduler events (`perf
script -F comm,tid,cpu,time,event,trace` of sched_process_exec,
sched_waking and sched_switch, recorded on every CPU) and prints how long
the orchestrator's main thread (the first program exec'd) waited for a CPU
after each wake-up, by what woke it:

    exec releases vfork  a child it started, at its exec (the spawn returns)
    step's process       a step's process: its output closing, its exit
    own thread           another thread of the orchestrator (the journal)
    kernel               the kernel's threads and interrupts

and whether the waker ran on the core the thread then ran on ("same core")
or on the other ("other core"). A wait lasts from the wake-up to the
thread's next switch onto a CPU. Also: how much and how often it ran.

On this machine's kernel the trace lacks some switches out of the idle task
(in one run of 2,000 steps, 564 of 1,212 CPUs going idle had no switch back
recorded). A thread seen on a CPU (an event of its own) without its switch
there is taken to have been switched in at that event: its wait ends there,
at the latest, and the count of such cases is printed ("switch-ins missing").
"""

import re
import statistics
import sys

EVENT = re.compile(r"\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s*(.*)")
FIELD = re.compile(r"(\w+)=(\S+)")
KERNEL = ("swapper", "kworker", "ksoftirqd", "migration", "rcu", "perf")


def waker_kind(comm, main_comm):
    if comm.startswith(KERNEL):
        return "kernel"
    if comm == main_comm:
        # Until its exec, a child started by vfork has its parent's name.
        return "exec releases vfork"
    if comm in ("journal", "inotify") or comm.startswith("tokio"):
        return "own thread"
    return "step's process"


def main(who, lines):
    main_tid = main_comm = None
    woken = None  # (time, kind, waker's cpu) of the pending wake-up
    ran_since = None
    bursts, waits = [], {}
    missing = 0

    def switched_in(time, cpu):
        """The thread got a CPU: its pending wait, if any, ends now."""
        nonlocal ran_since, woken
        ran_since = time
        if woken:
            start, kind, waker_cpu = woken
            where = "same core" if waker_cpu == cpu else "other core"
            waits.setdefault((kind, where), []).append(time - start)
            woken = None

    for line in lines:
        match = EVENT.match(line)
        if not match:
            continue
        comm, tid, cpu, time, event, rest = match.groups()
        tid, cpu, time = int(tid), int(cpu), float(time)
        if main_tid is None:
            if event == "sched_process_exec":
                main_tid, main_comm = tid, comm
                ran_since = time
            continue
        fields = dict(FIELD.findall(rest))

        if tid == main_tid and ran_since is None:
            # On a CPU without a recorded switch there (see above).
            missing += 1
            switched_in(time, cpu)
        if event == "sched_waking" and int(fields["pid"]) == main_tid and tid != main_tid:
            woken = (time, waker_kind(comm, main_comm), cpu)
        elif event == "sched_switch":
            if int(fields["prev_pid"]) == main_tid and ran_since is not None:
                bursts.append(time - ran_since)
                ran_since = None
            if int(fields["next_pid"]) == main_tid:
                switched_in(time, cpu)
    if main_tid is None or not bursts:
        sys.exit(f"{who}: no exec or no run of its main thread in the trace")
    total = sum(sum(v) for v in waits.values())
    print(
        f"{who}: ran {1e3 * sum(bursts):.0f} ms in {len(bursts)} bursts "
        f"(median {1e6 * statistics.median(bursts):.0f} us); waited {1e3 * total:.0f} ms "
        f"after {sum(len(v) for v in waits.values())} wake-ups ({missing} switch-ins missing)"
    )
    for (kind, where), v in sorted(waits.items(), key=lambda kv: -sum(kv[1])):
        v.sort()
        print(
            f"  {kind:20s} {where:10s} {len(v):6d} wake-ups {1e3 * sum(v):8.1f} ms  "
            f"median {1e6 * v[len(v) // 2]:6.0f} us  p90 {1e6 * v[len(v) * 9 // 10]:6.0f} us"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.stdin)
