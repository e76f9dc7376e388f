#!/usr/bin/env bash
# Label issues on part three's CIFAR-10N runs (experiments/part_three.sh): does the refinery find the wrong labels,
# against confident learning (cleanlab) on K-fold out-of-sample probabilities, and which cleaned label set trains
# the better model? For each design in DESIGNS (worst: CIFAR-10N's worst labels, 40.2% wrong; aggre: the aggregate,
# 9.0%) and each seed in SEEDS, from the online chain RUNS_ROOT/<design>/online_seed<S> (generation 1: a model on
# the noisy labels, the refinery; generation 2: a model on its labels), into RUNS_ROOT/label_issues/<design>/seed<S>/:
#   export_g1.npz            generation 1's soft labels (python -m lr_jax.labels export)
#   label_issues.csv/.png    the training images ranked by 1 - p(given label), the top 64 on a contact sheet
#   kfold/                   FOLDS (default 5) models, each on 4/5 of the noisy labels (the cpu preset, this seed),
#                            predicting the other fifth: kfold/kfold_probs.npz
#   detection.md/.json       the refinery's and cleanlab's flags and scores, in-sample and K-fold, against the known
#                            errors (noisy label != CIFAR-10's); relabel_refinery.csv, drop_cleanlab.csv
# and the downstream retrains, one generation each at the cpu preset, paired by seed with the chain:
#   noisy                    the chain's generation 1 (the same computation as a 1-generation run on these labels)
#   refinery                 the chain's generation 2 (trained on generation 1's labels)
#   relabel_refinery_seedS   the refinery's flagged images relabelled with its argmax (RUNS_ROOT/label_issues/<design>/)
#   drop_cleanlab_seedS      cleanlab's flagged images (on the K-fold probabilities) left out of training
# then RUNS_ROOT/label_issues/summary.md (python -m lr_jax.experiments.label_issues_table): each design's detection
# table over seeds and the paired differences between the cleanings, with 95% intervals (lr_jax.analysis.designs.
# LABEL_ISSUES). The clean-label ceiling is Part two's generation 1 of the same seed (the same computation as a
# 1-generation run on CIFAR-10's labels), so its rows appear once collect_part_three.sh has copied these runs beside
# Part two's (experiments/results/part_three_label_issues/).
# Usage: bash experiments/label_issues.sh RUNS_ROOT --data_dir JPEG_COPY [--cache_dir CACHE] [flags]
#   (the flags part_three.sh was given; they reach kfold and the retrains, after --preset cpu --seed S)
# Environment: SEEDS (default "0 1 2"), DESIGNS (default "worst aggre"), FOLDS (default 5), EPOCHS (per model; only
# for smaller trials: the chain must have been trained with the same EPOCHS to pair with it), DRY_RUN=1 (print the
# commands instead of running them; no file is written).
# Resumable: rerun the same command; finished steps are skipped, kfold folds and retrains reloaded, not retrained.
# On a fresh machine (a new VM, a clean clone), run experiments/part_three.sh first (it writes RUNS_ROOT/labels/) and
# set COLLECTED_ROOT=experiments/results (collect_part_three.sh's DEST_ROOT, committed) for both: a seed whose
# detection.json and both retrains are collected in COLLECTED_ROOT/part_three_label_issues/<design>/ is not run
# again; a collected kfold_probs.npz is restored instead of training the folds again; and a chain whose checkpoints
# are gone (only its collected copy is left) has its generation 1 retrained by part_three.sh (NEED_CHAIN=1: the same
# seed trains the same model on a machine of the same kind) for the steps that read it (export, issues, compare). On
# a machine whose numerics differ it is another model: detection.json's source gives its validation accuracy and CPU,
# collect_part_three.sh keeps the committed chain and warns, and summary.md says so under that seed's detection table.
set -euo pipefail
usage="usage: label_issues.sh RUNS_ROOT --data_dir JPEG_COPY [--cache_dir CACHE] [flags]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
root=$1
shift
here=$(dirname "$0")
# shellcheck source=experiments/run_logged.sh
. "$here/run_logged.sh"
args=("$@")
data_dir=""
for i in "${!args[@]}"; do
  case ${args[$i]} in
    --data_dir) data_dir=${args[$((i + 1))]:-} ;;
    --data_dir=*) data_dir=${args[$i]#--data_dir=} ;;
    --workdir|--workdir=*|--train_labels*|--train_label_key*|--generations*|--seed|--seed=*|--preset*)
      echo "label_issues.sh: ${args[$i]%%=*} is set by the script (see its header); leave it out" >&2; exit 2 ;;
  esac
done
fail() { echo "label_issues.sh: $*" >&2; exit 2; }
# collected_dir NAME: where collect_part_three.sh copied a design's runs, or label_issues's (NAME label_issues);
# nothing without COLLECTED_ROOT
collected_dir() { [ -z "${COLLECTED_ROOT:-}" ] || echo "$COLLECTED_ROOT/part_three_$1"; }
[ -n "$data_dir" ] || fail "give --data_dir (the CIFAR-10 image folder of part three's runs)"
[ -d "$root/labels" ] || fail "$root/labels is missing: run experiments/part_three.sh $root first"
designs=${DESIGNS:-worst aggre}
seeds=${SEEDS:-0 1 2}
folds=${FOLDS:-5}
case $folds in ''|*[!0-9]*|0|1) fail "FOLDS must be a whole number >= 2, got '$folds'" ;; esac
epochs=()
[ -z "${EPOCHS:-}" ] || epochs=(--epochs "$EPOCHS")
for design in $designs; do
  case $design in worst|aggre) ;; *) fail "unknown design '$design' in DESIGNS (worst, aggre)" ;; esac
  for seed in $seeds; do
    case $seed in ''|*[!0-9]*) fail "SEEDS must be whole numbers, got '$seed'" ;; esac
    chain="$root/$design/online_seed$seed"
    [ -e "$chain/results.json" ] || [ -e "$(collected_dir "$design")/online_seed$seed/results.json" ] ||
      fail "$chain/results.json is missing: run experiments/part_three.sh first (on a fresh machine, give both" \
        "COLLECTED_ROOT=experiments/results)"
  done
done
out_root="$root/label_issues"
log="$out_root/log.txt"
# step COMMAND...: runs it, its output into $log and a line on the terminal (DRY_RUN: prints the command only)
step() {
  if [ -n "${DRY_RUN:-}" ]; then printf '%q' "$1"; shift; printf ' %q' "$@"; echo; return 0; fi
  mkdir -p "$out_root"
  printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"
  local status=0
  "$@" >> "$log" 2>&1 || status=$?
  [ "$status" = 0 ] || { echo "label_issues.sh: exit status $status from: $* (see $log)" >&2; return "$status"; }
}
# train WORKDIR SEED FLAGS...: one 1-generation retrain at the cpu preset
train() {
  local workdir=$1 seed=$2
  shift 2
  local command=(python -m lr_jax.experiments.cifar10 --preset cpu --seed "$seed" --no_progress "$@" "${epochs[@]}"
                 --generations 1 --workdir "$workdir")
  if [ -n "${DRY_RUN:-}" ]; then step "${command[@]}"; return 0; fi
  mkdir -p "$out_root"
  run_logged "$log" "$workdir" "${command[@]}"
}
for design in $designs; do
  key=$([ "$design" = worst ] && echo worse_label || echo aggre_label)
  for seed in $seeds; do
    chain="$root/$design/online_seed$seed"
    out="$out_root/$design/seed$seed"
    copies=$(collected_dir label_issues)  # empty without COLLECTED_ROOT
    if [ -n "$copies" ] && [ -e "$copies/$design/seed$seed/detection.json" ] &&
       [ "$(result_generations "$copies/$design/relabel_refinery_seed$seed/results.json")" -ge 1 ] &&
       [ "$(result_generations "$copies/$design/drop_cleanlab_seed$seed/results.json")" -ge 1 ]; then
      printf '[%s] %s: collected in %s, not run again\n' "$(date +%H:%M:%S)" "$out" "$copies/$design"
      continue
    fi
    [ -e "$chain/checkpoints/finished/1" ] ||
      step env NEED_CHAIN=1 DESIGNS="$design" SEEDS="$seed" bash "$here/part_three.sh" "$root" "$@"
    [ -e "$out/export_g1.npz" ] ||
      step python -m lr_jax.labels export "$chain" --generation 1 --out "$out/export_g1.npz"
    [ -e "$out/label_issues.png" ] || step python -m lr_jax.labels issues "$chain" --generation 1 --out "$out" --top 64
    if [ -e "$out/kfold/kfold_probs.npz" ]; then
      :  # written last, once every fold has predicted
    elif [ -n "$copies" ] && [ -e "$copies/$design/seed$seed/kfold_probs.npz" ]; then
      step mkdir -p "$out/kfold"
      step cp "$copies/$design/seed$seed/kfold_probs.npz" "$out/kfold/kfold_probs.npz"
    else
      step python -m lr_jax.labels kfold "$out/kfold" --folds "$folds" --preset cpu --seed "$seed" --no_progress \
        --train_labels "$root/labels/$key.csv" "$@" "${epochs[@]}"
    fi
    [ -e "$out/detection.json" ] || step python -m lr_jax.labels compare "$chain" --generation 1 \
      --kfold "$out/kfold/kfold_probs.npz" --out "$out"
    train "$out_root/$design/relabel_refinery_seed$seed" "$seed" --train_labels "$out/relabel_refinery.csv" "$@"
    train "$out_root/$design/drop_cleanlab_seed$seed" "$seed" --train_labels "$out/drop_cleanlab.csv" "$@"
  done
done
[ -n "${DRY_RUN:-}" ] && exit 0
python -m lr_jax.experiments.label_issues_table "$root" --both_evaluations --out "$out_root/summary.md" > /dev/null
echo "label_issues.sh: summary in $out_root/summary.md"
