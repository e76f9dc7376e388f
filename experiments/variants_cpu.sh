#!/usr/bin/env bash
# The paper's variants side by side on one small CIFAR-10 configuration (JPEG-75 copy, held-out validation):
# 5,000 training images, 6 epochs per generation, 3 generations, small_cnn, seed 0.
# Usage: bash experiments/variants_cpu.sh DATA_DIR [RUNS_DIR] [flags, e.g. --cache_dir CACHE --epochs 3]
# Runs go to RUNS_DIR/<variant> (default runs/variants), their output to RUNS_DIR/log.txt, the report (paired
# differences against the precomputed chain) to RUNS_DIR/report. Extra flags come last, so they override the
# configuration. Resumable: rerun the same command to continue (finished generations are reloaded).
set -euo pipefail
data_dir=${1:?usage: variants_cpu.sh DATA_DIR [RUNS_DIR] [flags]}
shift
runs=runs/variants
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then runs=$1; shift; fi
mkdir -p "$runs"
# shellcheck source=experiments/run_logged.sh
. "$(dirname "$0")/run_logged.sh"
common=(--data_dir "$data_dir" --preset cpu_v1 --train_size 5000 --epochs 6 --generations 3 --seed 0 --no_progress)
# resnet20_refinery: ResNet-20 with 1x1 projection shortcuts, as in the committed results (experiments/README).
declare -A variants=(
  [precomputed]=""
  [online]="--label_mode online"
  [online_train_bn]="--label_mode online --refinery_bn train"
  [resnet20_refinery]="--refinery_model resnet20_proj"
  [jitter]="--adversarial_jitter 0.25 --jitter_epsilon 0.0078431"
  [kd_t2_gt05]="--temperature 2 --gt_weight 0.5"
  [label_smoothing]="--label_smoothing 0.1"
)
names=(precomputed online online_train_bn resnet20_refinery jitter kd_t2_gt05 label_smoothing)
for name in "${names[@]}"; do
  # shellcheck disable=SC2086
  run_logged "$runs/log.txt" "$runs/$name" python -m lr_jax.experiments.cifar10 "${common[@]}" ${variants[$name]} "$@" \
    --workdir "$runs/$name"
done
python -m lr_jax.report "${names[@]/#/$runs/}" --out "$runs/report" --reference "$runs/precomputed"
echo "report: $runs/report/summary.md"
