# Sourced by the A/B benchmarks (compare.sh, slots.sh).
#
#   run_round ROUND BINARY...
#
# Calls the sourcing script's `run_one ninja` and `run_one binN BINARY` once
# each. The order turns each round, so that no build always follows the same
# one.
run_round() {
  local round=$1; shift
  local bins=("$@") order=(ninja) i who
  for i in "${!bins[@]}"; do order+=("bin$((i + 1))"); done
  local shift_by=$(( (round - 1) % ${#order[@]} ))
  order=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
  for who in "${order[@]}"; do
    if [ "$who" = ninja ]; then run_one ninja; else run_one "$who" "${bins[${who#bin} - 1]}"; fi
  done
}
