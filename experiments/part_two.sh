#!/usr/bin/env bash
# Experiments, part two (CIFAR-10): the paper's own method, online labels, against matched controls; seed by seed,
# every design's seed S before any design's seed S+1, so that an interrupted sitting leaves whole seeds.
#   online:    the `cpu` preset, 3 generations of online labels, with the controls of experiments/online_controls.sh
#              (independent ground-truth models, entropy-matched label smoothing, distillation T=4 / ground-truth
#              weight 0.5, a compute-matched ground-truth run of 3 x the epochs)
#   stronger:  a stronger refinery: online's compute-matched run (3 x the epochs; reused, not retrained) refines
#              one fresh small student online at the `cpu` schedule
#   converged: a teacher that fits its training set (train accuracy >= 97%: 5,000 images, 60 epochs), refined
#              online for 2 more generations, beside independent ground-truth models (Born-Again Networks' regime)
# Usage: bash experiments/part_two.sh RUNS_ROOT [flags, e.g. --data_dir DIR --cache_dir CACHE]
# Environment: SEEDS (default "0 1 2"), DESIGNS (default "online stronger converged"); GENERATIONS and EPOCHS
# (online_controls.sh's: default 3 generations and the preset's epochs) and CONVERGED_EPOCHS (default 60) for
# smaller trials.
# Resumable: rerun the same command; finished generations are reloaded, not retrained. Then
#   bash experiments/collect_part_two.sh RUNS_ROOT     # results and reports into experiments/results/part_two_*
set -euo pipefail
root=${1:?usage: part_two.sh RUNS_ROOT [flags]}
shift
here=$(dirname "$0")
# shellcheck source=experiments/run_logged.sh
. "$here/run_logged.sh"
for seed in ${SEEDS:-0 1 2}; do
  for design in ${DESIGNS:-online stronger converged}; do
    case $design in
      online)
        bash "$here/online_controls.sh" "$root/online" "$seed" --preset cpu "$@" ;;
      stronger)
        teacher="$root/online/compute_matched_seed$seed"
        if [ ! -d "$teacher/checkpoints/finished" ]; then
          echo "part_two.sh: $teacher has no finished generation; run DESIGNS=online first" >&2; exit 2
        fi
        mkdir -p "$root/stronger"
        run_logged "$root/stronger/log.txt" "$root/stronger/online_seed$seed" \
          python -m lr_jax.experiments.cifar10 --preset cpu --seed "$seed" --no_progress "$@" --label_mode online \
          --refinery_workdir "$teacher" --generations 2 --workdir "$root/stronger/online_seed$seed" ;;
      converged)
        CONTROLS=ground_truth EPOCHS=${CONVERGED_EPOCHS:-60} bash "$here/online_controls.sh" "$root/converged" "$seed" --preset cpu \
          --train_size 5000 "$@" ;;
      *) echo "part_two.sh: unknown design '$design' in DESIGNS" >&2; exit 2 ;;
    esac
  done
done
