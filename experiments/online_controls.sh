#!/usr/bin/env bash
# The paper's method (online labels: the frozen refinery labels every augmented crop) beside matched controls,
# one seed per call, CIFAR-10. Runs, in RUNS_DIR:
#   online_seedS            generation 1 on ground truth, then GENERATIONS-1 generations on online labels
#   ground_truth_seedS      GENERATIONS independent models on ground truth (--label_mode ground_truth): generation k
#                           has the same initialisation and data order as the chain's generation k, and the chain's
#                           ensemble of generations 1..k is compared with the ensemble of these k models. Its
#                           generation 1 is the chain's generation 1 (the same computation: same seed, data, labels),
#                           copied instead of retrained.
#   matched_smoothing_seedS generation 1's schedule on ground truth smoothed so that the targets carry the mean
#                           entropy of generation 1's labels on augmented crops (lr_jax.experiments.matched_smoothing;
#                           matched to the first seed run, saved in RUNS_DIR/matched_smoothing.json, rounded to 0.001)
#   distillation_seedS      the chain's generation 1 reused as the teacher of one student: online labels at
#                           temperature 4 mixed half and half with ground truth (Hinton et al.)
#   compute_matched_seedS   one model on ground truth trained for GENERATIONS x the epochs: the chain's SGD steps
# Usage: bash experiments/online_controls.sh RUNS_DIR SEED [flags, e.g. --data_dir DIR --cache_dir C --preset cpu]
# Environment: GENERATIONS (default 3), EPOCHS (per generation; default: the flags' or preset's, as the chain
# records it), CONTROLS (default "ground_truth matched_smoothing distillation compute_matched").
# Resumable: rerun the same command to continue after an interruption (finished generations are reloaded).
set -euo pipefail
runs=${1:?usage: online_controls.sh RUNS_DIR SEED [flags]}
seed=${2:?usage: online_controls.sh RUNS_DIR SEED [flags]}
shift 2
generations=${GENERATIONS:-3}
epochs=()
[ -z "${EPOCHS:-}" ] || epochs=(--epochs "$EPOCHS")
controls=${CONTROLS:-ground_truth matched_smoothing distillation compute_matched}
mkdir -p "$runs"
log="$runs/log.txt"
# shellcheck source=experiments/run_logged.sh
. "$(dirname "$0")/run_logged.sh"
# train ... --workdir DIR: one run (the workdir is its last flag), output into $log, a progress line on the terminal.
train() { run_logged "$log" "${@: -1}" python -m lr_jax.experiments.cifar10 --seed "$seed" --no_progress "$@"; }

chain="$runs/online_seed$seed"
train "$@" "${epochs[@]}" --label_mode online --generations "$generations" --workdir "$chain"
chain_epochs=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['config']['epochs'])" "$chain/results.json")
for control in $controls; do
  case $control in
    ground_truth)
      workdir="$runs/ground_truth_seed$seed"
      if [ ! -e "$workdir/checkpoints/finished/1" ]; then  # copied whole or not at all
        mkdir -p "$workdir/checkpoints/finished"
        rm -rf "$workdir/checkpoints/copying"
        cp -r "$chain/checkpoints/finished/1" "$workdir/checkpoints/copying"
        mv "$workdir/checkpoints/copying" "$workdir/checkpoints/finished/1"
      fi
      train "$@" "${epochs[@]}" --label_mode ground_truth --generations "$generations" --workdir "$workdir" ;;
    matched_smoothing)
      # Matched once, to the first seed's generation 1, and kept for every seed (so the seeds share one
      # configuration); each seed's own entropies go to the log.
      matched="$runs/matched_smoothing.json"
      python -m lr_jax.experiments.matched_smoothing "$chain" --generation 1 > "$runs/matched_smoothing_seed$seed.json"
      cat "$runs/matched_smoothing_seed$seed.json" >> "$log"
      [ -e "$matched" ] || cp "$runs/matched_smoothing_seed$seed.json" "$matched"
      smoothing=$(python -c "import json, sys; print(round(json.load(open(sys.argv[1]))['smoothing_crops'], 3))" "$matched")
      train "$@" "${epochs[@]}" --generations 1 --label_smoothing "$smoothing" --workdir "$runs/matched_smoothing_seed$seed" ;;
    distillation)
      train "$@" "${epochs[@]}" --label_mode online --refinery_workdir "$chain" --refinery_generation 1 --temperature 4 \
        --gt_weight 0.5 --generations 2 --workdir "$runs/distillation_seed$seed" ;;
    compute_matched)
      train "$@" --generations 1 --epochs $((generations * chain_epochs)) --workdir "$runs/compute_matched_seed$seed" ;;
    *) echo "online_controls.sh: unknown control '$control' in CONTROLS" >&2; exit 2 ;;
  esac
done
