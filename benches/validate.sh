#!/usr/bin/env bash
# Benchmark for issue 2: `validate` and `plan` on a generated 10,000-step plan
# (100 layers of 100, each step needing 2-3 of the layer before), and a cycle
# planted in it. Prints wall time and peak memory (best of 5) per command.
#   benches/validate.sh            # uses target/release/phoenix (builds it)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/phoenix
out=benches/out
mkdir -p "$out"
python3 benches/gen_plan.py "$out/p10k.toml"
python3 benches/gen_plan.py "$out/p10k-cycle.toml" --cycle

measure() {
  local label=$1; shift
  local best_wall=999 best_rss=0
  for _ in 1 2 3 4 5; do
    /usr/bin/time -f "%e %M" -o "$out/time.txt" "$bin" "$@" >/dev/null 2>"$out/stderr.txt" || true
    read -r wall rss < <(tail -n 1 "$out/time.txt")
    if awk "BEGIN{exit !($wall < $best_wall)}"; then best_wall=$wall; best_rss=$rss; fi
  done
  printf '%-40s %6.2f s wall  %6.1f MB peak\n' "$label" "$best_wall" "$(awk "BEGIN{print $best_rss/1024}")"
}

measure "validate (10,000 steps)" validate "$out/p10k.toml"
measure "plan (10,000 steps)" plan "$out/p10k.toml"
measure "validate with a planted cycle" validate "$out/p10k-cycle.toml"
grep -q "dependency cycle: s10_0 -> s60_0" "$out/stderr.txt" && echo "cycle found and printed as a full path"
