#!/usr/bin/env bash
# Copies Part two's result files (never checkpoints; no absolute paths) from RUNS_ROOT (experiments/part_two.sh's)
# into DEST_ROOT/part_two_{online,stronger,converged}/ and writes each design's report there, paired against the
# independent ground-truth models of the same seed (for the stronger refinery: design 1's).
# Then writes DEST_ROOT/part_two_headline.md and .png (python -m lr_jax.experiments.part_two_table).
# Usage: bash experiments/collect_part_two.sh RUNS_ROOT [DEST_ROOT, default experiments/results]
set -euo pipefail
root=${1:?usage: collect_part_two.sh RUNS_ROOT [DEST_ROOT]}
dest_root=${2:-experiments/results}
here=$(dirname "$0")
for design in online converged; do
  FIRST=online REFERENCE=ground_truth_seed0 bash "$here/collect_results.sh" "$root/$design" \
    "$dest_root/part_two_$design" online_seed0
done
dest="$dest_root/part_two_stronger"
copied=()
for run in "$root"/stronger/online_seed*/; do
  run=${run%/}
  [ -f "$run/results.json" ] || continue
  python -m lr_jax.portable "$run" "$dest/$(basename "$run")" > /dev/null
  copied+=("$dest/$(basename "$run")")
done
[ ${#copied[@]} -gt 0 ] || { echo "collect_part_two.sh: no run with results.json under $root/stronger" >&2; exit 2; }
python -m lr_jax.report "${copied[@]}" "$dest_root"/part_two_online/ground_truth_seed*/ --out "$dest/report" \
  --reference "$dest_root/part_two_online/ground_truth_seed0" --examples "$dest/online_seed0"
# The headline: every design's paired differences against its controls, with 95% intervals and per-seed values,
# flip-averaged and without flip averaging.
python -m lr_jax.experiments.part_two_table "$dest_root" --out "$dest_root/part_two_headline.md" \
  --plot "$dest_root/part_two_headline.png" --both_evaluations > /dev/null
