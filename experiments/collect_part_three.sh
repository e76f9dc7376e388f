#!/usr/bin/env bash
# Copies Part three's result files (never checkpoints; no absolute paths) from RUNS_ROOT (experiments/part_three.sh's)
# into DEST_ROOT/part_three_<design>/ for every design that has runs, writes each design's report there (paired
# against the independent models of the same seed), the crop mechanism (part_three.sh's crops_008/mechanism/: the
# crop_confidence of crops_008's first refinery), then DEST_ROOT/part_three_headline.md and .png (both evaluations;
# python -m lr_jax.experiments.part_three_table). DEST_ROOT must also hold Part two's collected part_two_online:
# its generation 1 is the clean-label ceiling of the same seeds. Where experiments/label_issues.sh has run, it also
# copies its retrains and each finished seed's (one with a detection.json) detection.json/.md, kfold_probs.npz (so that a fresh machine need not train
# the folds again), contact sheet and top 1,000 suspects (label_issues.csv's first rows; no absolute paths) into
# DEST_ROOT/part_three_label_issues/<set>/, and writes the label-issues tables
# DEST_ROOT/part_three_label_issues/summary.md and .png (python -m lr_jax.experiments.label_issues_table).
# Usage: bash experiments/collect_part_three.sh RUNS_ROOT [DEST_ROOT, default experiments/results]
set -euo pipefail
root=${1:?usage: collect_part_three.sh RUNS_ROOT [DEST_ROOT]}
dest_root=${2:-experiments/results}
here=$(dirname "$0")
for design in worst aggre random1 crops_008 crops_035; do
  # A design the queue has only just started (no run with a finished generation yet) has nothing to collect.
  compgen -G "$root/$design/*/results.json" > /dev/null || continue
  FIRST=online REFERENCE=ground_truth_seed0 bash "$here/collect_results.sh" "$root/$design" \
    "$dest_root/part_three_$design" online_seed0
done
if [ -f "$root/crops_008/mechanism/crop_confidence.json" ]; then
  rm -rf "$dest_root/part_three_crops_008/mechanism.tmp"
  cp -r "$root/crops_008/mechanism" "$dest_root/part_three_crops_008/mechanism.tmp"
  rm -rf "$dest_root/part_three_crops_008/mechanism"
  mv "$dest_root/part_three_crops_008/mechanism.tmp" "$dest_root/part_three_crops_008/mechanism"
fi
issues_dest="$dest_root/part_three_label_issues"
for issues in "$root"/label_issues/*/; do
  [ -d "$issues" ] || continue
  issues=${issues%/}
  label_set=$(basename "$issues")
  if compgen -G "$issues/*_seed*/results.json" > /dev/null; then
    FIRST=relabel_refinery REFERENCE=drop_cleanlab_seed0 bash "$here/collect_results.sh" "$issues" \
      "$issues_dest/$label_set" relabel_refinery_seed0
  fi
  for seed_dir in "$issues"/seed*/; do
    seed_dir=${seed_dir%/}
    # unfinished: its suspects come from a generation 1 that the machine finishing it may retrain differently
    if [ ! -f "$seed_dir/detection.json" ]; then
      echo "collect_part_three.sh: $seed_dir: unfinished (no detection.json), not collected" >&2
      continue
    fi
    copy="$issues_dest/$label_set/$(basename "$seed_dir")"
    for name in detection.json detection.md kfold/kfold_probs.npz; do
      if [ -f "$seed_dir/$name" ]; then
        python -m lr_jax.portable "$seed_dir/$name" "$copy/$(basename "$name")" --runs_root "$root" > /dev/null
      fi
    done
    if [ -f "$seed_dir/label_issues.png" ]; then mkdir -p "$copy" && cp "$seed_dir/label_issues.png" "$copy/"; fi
    if [ -f "$seed_dir/label_issues.csv" ]; then
      mkdir -p "$copy"
      head -n 1001 "$seed_dir/label_issues.csv" > "$copy/label_issues_top1000.csv.tmp"
      mv "$copy/label_issues_top1000.csv.tmp" "$copy/label_issues_top1000.csv"
    fi
  done
done
if [ -d "$issues_dest" ]; then
  python -m lr_jax.experiments.label_issues_table "$dest_root" --both_evaluations --out "$issues_dest/summary.md" \
    --plot "$issues_dest/summary.png" > /dev/null
  echo "label issues: $issues_dest/summary.md"
fi
python -m lr_jax.experiments.part_three_table "$dest_root" --out "$dest_root/part_three_headline.md" \
  --plot "$dest_root/part_three_headline.png" --both_evaluations > /dev/null
echo "headline: $dest_root/part_three_headline.md"
