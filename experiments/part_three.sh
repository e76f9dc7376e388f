#!/usr/bin/env bash
# Experiments, part three (CIFAR-10, the JPEG-75 copy): Label Refinery where its premise holds. Design by design
# (in the issue's order), each for every seed in SEEDS, with the `cpu` preset; runs in RUNS_ROOT/<design>/:
#   worst    CIFAR-10N's worst labels (40.2% wrong) for the training images, clean validation labels: the online chain
#            and the controls of experiments/online_controls.sh (independent models on the same labels, entropy-
#            matched label smoothing, distillation T=4 / weight 0.5, a compute-matched 36-epoch run), plus
#            precomputed_seedS: the chain's generation 1 refining generations 2-3 with precomputed labels (the blog's)
#   crops_008, crops_035   random-resized crops of scale 0.08-1 (the paper's) and 0.35-1 (milder), ground-truth
#            labels: the online chain and independent ground-truth models; crops_008/mechanism/: the first seed's
#            refinery measured by python -m lr_jax.experiments.crop_confidence. Trained for CROP_EPOCHS (default
#            lr_jax.analysis.designs.CROP_EPOCHS, 24, twice the preset's 12) per generation: at 12, the 0.08-1
#            crops left seed 0's generation 1 badly underfit (80.5% of its un-augmented training images, against
#            89.2% with pad-and-crop; the pre-registered rule in experiments/README.md, Part three, design 3)
#   aggre, random1   CIFAR-10N's aggregate (9.0% wrong) and one annotator's (17.2%) labels: the online chain and
#            independent models on the same labels
# Usage: bash experiments/part_three.sh RUNS_ROOT --data_dir JPEG_COPY [--cache_dir CACHE] [flags]
# The label CSVs are written once into RUNS_ROOT/labels/ by `python -m lr_jax.cifar10n` from CIFAR10N (default
# ../shared/data/cifar10n/CIFAR-10_human.pt) and the image folder given as --data_dir.
# Environment: SEEDS (default "0 1 2"), DESIGNS (default "worst crops_008 crops_035 aggre random1"),
# CROP_EPOCHS (above), online_controls.sh's GENERATIONS / EPOCHS for smaller trials (EPOCHS overrides CROP_EPOCHS), and
# COLLECTED_ROOT (below).
# Resumable: rerun the same command; finished generations are reloaded, not retrained. On a fresh machine, with
# COLLECTED_ROOT=experiments/results (collect_part_three.sh's DEST_ROOT, committed), the runs collected there with all
# their generations are not trained again (online_controls.sh's COLLECTED).
set -euo pipefail
root=${1:?usage: part_three.sh RUNS_ROOT --data_dir JPEG_COPY [flags]}
shift
here=$(dirname "$0")
# shellcheck source=experiments/run_logged.sh
. "$here/run_logged.sh"
data_dir=""
previous=""
for arg in "$@"; do
  [ "$previous" = "--data_dir" ] && data_dir=$arg
  previous=$arg
done
[ -n "$data_dir" ] || { echo "part_three.sh: give --data_dir (the CIFAR-10 image folder the labels map onto)" >&2; exit 2; }
labels="$root/labels"
if [ ! -e "$labels/worse_label.csv" ]; then
  mkdir -p "$root"
  python -m lr_jax.cifar10n --labels "${CIFAR10N:-../shared/data/cifar10n/CIFAR-10_human.pt}" --key all \
    --image_folder "$data_dir" --out "$labels.tmp"
  rm -rf "$labels" && mv "$labels.tmp" "$labels"
fi
# The crop designs' default epochs live in lr_jax.analysis.designs, whose headline row states them.
crop_epochs=${CROP_EPOCHS:-$(python -c "from lr_jax.analysis.designs import CROP_EPOCHS; print(CROP_EPOCHS)")}
for design in ${DESIGNS:-worst crops_008 crops_035 aggre random1}; do
  for seed in ${SEEDS:-0 1 2}; do
    [ -z "${COLLECTED_ROOT:-}" ] || export COLLECTED="$COLLECTED_ROOT/part_three_$design"
    case $design in
      worst)
        CONTROLS="ground_truth matched_smoothing distillation precomputed compute_matched" \
          bash "$here/online_controls.sh" "$root/worst" "$seed" --preset cpu --train_labels "$labels/worse_label.csv" "$@" ;;
      crops_008|crops_035)
        scale=$([ "$design" = crops_008 ] && echo 0.08,1 || echo 0.35,1)
        CONTROLS=ground_truth bash "$here/online_controls.sh" "$root/$design" "$seed" --preset cpu \
          --epochs "$crop_epochs" --crop random_resized --crop_scale "$scale" "$@"
        # The mechanism, from the first seed's refinery while its checkpoints are here (collect_part_three.sh
        # copies it): its confidence against the crop's area, and a contact sheet.
        mechanism="$root/$design/mechanism"
        chain="$root/$design/online_seed$seed"
        if [ "$design" = crops_008 ] && [ ! -e "$mechanism/crop_confidence.json" ] &&
           [ ! -e "${COLLECTED:-}/mechanism/crop_confidence.json" ] && [ -e "$chain/checkpoints/finished/1" ]; then
          python -m lr_jax.experiments.crop_confidence "$chain" --generation 1 --crop_scale "$scale" \
            --out "$mechanism" > /dev/null
        fi ;;
      aggre|random1)
        key=$([ "$design" = aggre ] && echo aggre_label || echo random_label1)
        CONTROLS=ground_truth bash "$here/online_controls.sh" "$root/$design" "$seed" --preset cpu \
          --train_labels "$labels/$key.csv" "$@" ;;
      *) echo "part_three.sh: unknown design '$design' in DESIGNS" >&2; exit 2 ;;
    esac
  done
done
