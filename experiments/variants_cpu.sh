#!/usr/bin/env bash
# The paper's variants side by side on one small CIFAR-10 configuration (JPEG-75 copy, held-out validation):
# 5,000 training images, 6 epochs per generation, 3 generations, small_cnn, seed 0.
# Usage: bash experiments/variants_cpu.sh DATA_DIR [RUNS_DIR]   (resumable: rerun to continue)
set -euo pipefail
data_dir=${1:?usage: variants_cpu.sh DATA_DIR [RUNS_DIR]}
runs=${2:-runs/variants}
mkdir -p "$runs"  # also its parent folder, where "$runs.log" goes
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
for name in precomputed online online_train_bn resnet20_refinery jitter kd_t2_gt05 label_smoothing; do
  # shellcheck disable=SC2086
  python -m lr_jax.experiments.cifar10 "${common[@]}" ${variants[$name]} --workdir "$runs/$name" \
    >> "$runs.log" 2>&1
done
# Paired differences against the precomputed chain (the folders come in alphabetical order, jitter first).
python -m lr_jax.report "$runs"/* --out "${runs}_report" --reference "$runs/precomputed"
