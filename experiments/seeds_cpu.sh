#!/usr/bin/env bash
# The experiments section's seeds design: 4 generations x 3 seeds with the `cpu_v1` preset (the `cpu` preset of Results 1-6), plus the
# label-smoothing control (generation 1's schedule trained on ground truth smoothed by 0.1), then the report.
# Usage: bash experiments/seeds_cpu.sh DATASET RUNS_DIR [extra flags, e.g. --data_dir DIR --epochs 3]
# DATASET: cifar10 or fashion_mnist. Extra flags come last, so they override the preset; GENERATIONS=N (environment,
# default 4) sets the refinery chain's length.
# Resumable: rerun the same command to continue after an interruption (finished generations are reloaded).
set -euo pipefail
dataset=${1:?usage: seeds_cpu.sh DATASET RUNS_DIR [flags]}
runs=${2:?usage: seeds_cpu.sh DATASET RUNS_DIR [flags]}
shift 2
generations=${GENERATIONS:-4}
mkdir -p "$runs"
# shellcheck source=experiments/run_logged.sh
. "$(dirname "$0")/run_logged.sh"
for seed in 0 1 2; do
  run_logged "$runs/log.txt" "$runs/refinery_seed$seed" python -m "lr_jax.experiments.$dataset" --preset cpu_v1 \
    --generations "$generations" --seed "$seed" --no_progress "$@" --workdir "$runs/refinery_seed$seed"
  run_logged "$runs/log.txt" "$runs/label_smoothing_seed$seed" python -m "lr_jax.experiments.$dataset" --preset cpu_v1 \
    --generations 1 --label_smoothing 0.1 --seed "$seed" --no_progress "$@" --workdir "$runs/label_smoothing_seed$seed"
done
python -m lr_jax.report "$runs"/refinery_seed* "$runs"/label_smoothing_seed* --out "$runs/report" \
  --examples "$runs/refinery_seed0"
