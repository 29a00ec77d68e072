#!/usr/bin/env python3
"""Generates the benchmark plans: LAYERS layers of WIDTH steps, each step needing
2-3 steps of the layer before (seeded, so every run measures the same plan).

  gen_plan.py OUT.toml [--layers 100] [--width 100] [--action noop|command]
              [--cycle] [--ninja OUT.ninja] [--floor OUT.txt]

--action command gives each step `shell = "true && touch out/ID"`, and --ninja
writes the same graph with the same commands as a build.ninja for comparison.
--floor writes the graph as lines of step numbers (a step, then its needs)
for benches/floor.c. --cycle plants one dependency cycle deep in the graph.
"""
import argparse
import random

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--layers", type=int, default=100)
p.add_argument("--width", type=int, default=100)
p.add_argument("--action", choices=["noop", "command"], default="noop")
p.add_argument("--cycle", action="store_true")
p.add_argument("--ninja")
p.add_argument("--floor")
p.add_argument("--seed", type=int, default=7)
a = p.parse_args()
rng = random.Random(a.seed)

def sid(layer, i):
    return f"s{layer}_{i}"

needs = {}
for layer in range(a.layers):
    for i in range(a.width):
        if layer == 0:
            needs[sid(layer, i)] = []
        else:
            k = rng.choice([2, 3])
            needs[sid(layer, i)] = [sid(layer - 1, j) for j in rng.sample(range(a.width), k)]
if a.cycle:
    # s10_0 needs s60_x through its chain: make s10_0 need a step of layer 60
    # that (transitively) needs it.
    target = sid(60, 0)
    needs[sid(10, 0)].append(target)

with open(a.out, "w") as f:
    f.write(f'version = 1\n\n[plan]\nname = "bench"\nrto = "1h"\nrpo = "1h"\nconcurrency = 2\n')
    for step, deps in needs.items():
        f.write(f'\n[[step]]\nid = "{step}"\nphase = "provision"\naction = "{a.action}"\n')
        if a.action == "command":
            f.write(f'shell = "true && touch out/{step}"\ntimeout = "1m"\n')
        f.write(f"needs = {deps!r}\n".replace("'", '"'))

if a.ninja:
    with open(a.ninja, "w") as f:
        f.write("rule step\n  command = true && touch $out\n\n")
        for step, deps in needs.items():
            implicit = " ".join(f"out/{d}" for d in deps)
            f.write(f"build out/{step}: step" + (f" | {implicit}" if implicit else "") + "\n")

if a.floor:
    number = {step: n for n, step in enumerate(needs)}
    with open(a.floor, "w") as f:
        for step, deps in needs.items():
            f.write(" ".join(str(number[x]) for x in [step] + deps) + "\n")
