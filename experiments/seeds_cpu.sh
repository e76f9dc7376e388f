#!/usr/bin/env bash
# The experiments section's CPU design: 4 generations x 3 seeds with the `cpu` preset, plus the
# label-smoothing control (2 generations: ground truth smoothed by 0.1, then refined), then the report.
# Usage: bash experiments/seeds_cpu.sh DATASET RUNS_DIR [extra flags, e.g. --data_dir /path]
# DATASET: cifar10 or fashion_mnist. Resumable: rerun the same command to continue after an interruption.
set -euo pipefail
dataset=${1:?usage: seeds_cpu.sh DATASET RUNS_DIR [flags]}
runs=${2:?usage: seeds_cpu.sh DATASET RUNS_DIR [flags]}
shift 2
mkdir -p "$runs"
for seed in 0 1 2; do
  for control in refinery label_smoothing; do
    flags=(--preset cpu --generations 4 --seed "$seed" --no_progress)
    [ "$control" = label_smoothing ] && flags+=(--label_smoothing 0.1 --generations 2)
    python -m "lr_jax.experiments.$dataset" "${flags[@]}" "$@" --workdir "$runs/${control}_seed$seed" \
      >> "$runs/log.txt" 2>&1
  done
done
python -m lr_jax.report "$runs"/refinery_seed* "$runs"/label_smoothing_seed* --out "$runs/report"
