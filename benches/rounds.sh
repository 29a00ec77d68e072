# Sourced by the A/B benchmarks (compare.sh, slots.sh, threads.sh, waits.sh).
#
#   make_work NAME        sets $work: a scratch directory, removed on exit,
#                         with the 10,000-step plan.toml and build.ninja
#                         (LAYERS=20 in the environment: 2,000 steps, five
#                         times the rounds in the same minutes); sets $steps;
#                         exits first if ninja is not installed
#   fresh_outputs         empties $work of one run's outputs and state
#   check_outputs WHO     exits unless WHO's run made every step's file
#   run_round ROUND BINARY...
#
# Calls the sourcing script's `run_one ninja` and `run_one binN BINARY` once
# each. The order turns each round, so that no build always follows the same
# one.
run_round() {
  local round=$1; shift
  local bins=() order=(ninja) i who b
  # A path made absolute, as some scripts run the binary from inside $work;
  # a bare name is left to PATH, which does not depend on the directory.
  for b in "$@"; do
    if [[ $b == */* ]]; then bins+=("$(realpath "$b")"); else bins+=("$b"); fi
  done
  for i in "${!bins[@]}"; do order+=("bin$((i + 1))"); done
  local shift_by=$(( (round - 1) % ${#order[@]} ))
  order=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
  for who in "${order[@]}"; do
    if [ "$who" = ninja ]; then run_one ninja; else run_one "$who" "${bins[${who#bin} - 1]}"; fi
  done
}

make_work() {
  command -v ninja >/dev/null || { echo "ninja: not installed (apt-get install ninja-build)"; exit 1; }
  work=$(mktemp -d "/tmp/phoenix-$1.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  steps=$(( ${LAYERS:-100} * 100 ))
  python3 benches/gen_plan.py "$work/plan.toml" --action command --ninja "$work/build.ninja" \
    --layers "${LAYERS:-100}"
}

fresh_outputs() {
  rm -rf "$work/out" "$work/state" "$work/.ninja_log"
  mkdir "$work/out"
}

check_outputs() {
  [ "$(ls "$work/out" | wc -l)" = "$steps" ] || { echo "$1 did not make every file"; exit 1; }
}
