#!/usr/bin/env bash
# Copies Part three's result files (never checkpoints; no absolute paths) from RUNS_ROOT (experiments/part_three.sh's)
# into DEST_ROOT/part_three_<design>/ for every design that has runs, writes each design's report there (paired
# against the independent models of the same seed), the crop mechanism (crop_confidence of crops_008's refinery of
# seed 0, when its checkpoints are there), then DEST_ROOT/part_three_headline.md and .png (both evaluations;
# python -m lr_jax.experiments.part_three_table). DEST_ROOT must also hold Part two's collected part_two_online:
# its generation 1 is the clean-label ceiling of the same seeds.
# Usage: bash experiments/collect_part_three.sh RUNS_ROOT [DEST_ROOT, default experiments/results]
set -euo pipefail
root=${1:?usage: collect_part_three.sh RUNS_ROOT [DEST_ROOT]}
dest_root=${2:-experiments/results}
here=$(dirname "$0")
for design in worst aggre random1 crops_008 crops_035; do
  [ -d "$root/$design" ] || continue
  FIRST=online REFERENCE=ground_truth_seed0 bash "$here/collect_results.sh" "$root/$design" \
    "$dest_root/part_three_$design" online_seed0
done
if [ -d "$root/crops_008/online_seed0/checkpoints/finished/1" ]; then
  python -m lr_jax.experiments.crop_confidence "$root/crops_008/online_seed0" --generation 1 --crop_scale 0.08,1 \
    --out "$dest_root/part_three_crops_008/mechanism" > /dev/null
fi
python -m lr_jax.experiments.part_three_table "$dest_root" --out "$dest_root/part_three_headline.md" \
  --plot "$dest_root/part_three_headline.png" --both_evaluations > /dev/null
echo "headline: $dest_root/part_three_headline.md"
