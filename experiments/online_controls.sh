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
#   precomputed_seedS       (only when CONTROLS names it) the chain's generation 1 refining GENERATIONS-1 generations
#                           with precomputed labels (the blog's variant)
# Usage: bash experiments/online_controls.sh RUNS_DIR SEED [flags, e.g. --data_dir DIR --cache_dir C --preset cpu]
# Environment: GENERATIONS (default 3), EPOCHS (per generation; default: the flags' or preset's, as the chain
# records it), CONTROLS (default "ground_truth matched_smoothing distillation compute_matched"), COLLECTED (below).
# Resumable: rerun the same command to continue after an interruption (finished generations are reloaded).
# On a fresh machine (a new Colab VM, a clean clone) set COLLECTED to the committed copies of RUNS_DIR's runs
# (collect_results.sh's DEST_DIR): a run whose copy there holds all its generations is not trained again, and
# matched_smoothing.json is taken from there. The chain's generation 1 is retrained (the same seed trains the same
# model on a machine of the same kind; collect_results.sh checks it) only while a control that reuses it (all but
# compute_matched) is still to run, or when NEED_CHAIN=1 (experiments/label_issues.sh, which reads its checkpoint).
# Where it differs from its copy (a machine whose numerics differ: another CPU's vector extensions), a control still
# to run has the whole chain trained again here first, and that chain replaces the copy (run_logged.sh's
# REPLACES_COPY), as does a chain trained whole here whose copy, collected part-way, differs; the controls collected
# earlier stay paired with the copy they were trained beside.
set -euo pipefail
runs=${1:?usage: online_controls.sh RUNS_DIR SEED [flags]}
seed=${2:?usage: online_controls.sh RUNS_DIR SEED [flags]}
shift 2
flags=("$@")  # the script's flags, passed on to every run
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
# train_chain GENERATIONS: the online chain, trained (or resumed) to GENERATIONS generations.
train_chain() { train "${flags[@]}" "${epochs[@]}" --label_mode online --generations "$1" --workdir "$chain"; }
# replaces_copy WHY: marks the chain as this machine's computation that replaces its collected copy, and logs why.
replaces_copy() {
  local why=${1//$'\n'/ }
  printf '[%s] %s: %s\n' "$(date +%H:%M:%S)" "$chain" "$why" | tee -a "$log"
  echo "$why" > "$chain/$REPLACES_COPY"
}
# collected RUN GENERATIONS: true when COLLECTED holds RUN's copy with at least GENERATIONS generations.
collected() {
  [ -n "${COLLECTED:-}" ] && [ "$(result_generations "$COLLECTED/$1/results.json")" -ge "$2" ] || return 1
  printf '[%s] %s: collected in %s, not trained again\n' "$(date +%H:%M:%S)" "$runs/$1" "$COLLECTED"
}
# The run each control trains, and its number of generations.
control_run() { echo "${1}_seed$seed"; }
control_generations() {
  case $1 in ground_truth|precomputed) echo "$generations" ;; distillation) echo 2 ;; *) echo 1 ;; esac
}

chain="$runs/online_seed$seed"
pending=()
reuses_chain=${NEED_CHAIN:-}  # set when a pending control reuses the chain's generation 1 (all but compute_matched do)
for control in $controls; do
  collected "$(control_run "$control")" "$(control_generations "$control")" && continue
  pending+=("$control")
  [ "$control" = compute_matched ] || reuses_chain=1
done
copy="${COLLECTED:+$COLLECTED/online_seed$seed/results.json}"
if [ -e "$chain/$REPLACES_COPY" ]; then  # trained again here (below), perhaps interrupted
  [ "$(result_generations "$chain/results.json")" -ge "$generations" ] || train_chain "$generations"
elif ! collected "online_seed$seed" "$generations"; then
  train_chain "$generations"
  differ=$(differing_generations "$chain/results.json" "$copy")
  [ -z "$differ" ] || replaces_copy "trained whole on this machine, where its copy collected part-way differs
(${differ//$'\n'/; }): another machine's numerics; this run replaces the copy"
elif [ -n "$reuses_chain" ] && [ ! -e "$chain/checkpoints/finished/1" ]; then
  train_chain 1  # for the controls that reuse it
  differ=$(differing_generations "$chain/results.json" "$copy")
  if [ ${#pending[@]} -gt 0 ] && [ -n "$differ" ]; then
    replaces_copy "generation 1 retrained on this machine ($(python -c "from lr_jax import provenance as p; print(p.host())"))
differs from its collected copy ($differ): this machine's numerics differ from those of the machine that trained
the copy, so the whole chain is trained again here for ${pending[*]}, and replaces the copy"
    train_chain "$generations"
  fi
fi
[ ${#pending[@]} -gt 0 ] || exit 0
record="$chain/results.json"
[ -e "$record" ] || record="$COLLECTED/online_seed$seed/results.json"  # collected, and not retrained: none reuses it
chain_epochs=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['config']['epochs'])" "$record")
for control in "${pending[@]}"; do
  case $control in
    ground_truth)
      workdir="$runs/ground_truth_seed$seed"
      if [ ! -e "$workdir/checkpoints/finished/1" ]; then  # copied whole or not at all
        mkdir -p "$workdir/checkpoints/finished"
        rm -rf "$workdir/checkpoints/copying"
        cp -r "$chain/checkpoints/finished/1" "$workdir/checkpoints/copying"
        mv "$workdir/checkpoints/copying" "$workdir/checkpoints/finished/1"
      fi
      train "${flags[@]}" "${epochs[@]}" --label_mode ground_truth --generations "$generations" --workdir "$workdir" ;;
    matched_smoothing)
      # Matched once, to the first seed's generation 1, and kept for every seed (so the seeds share one
      # configuration); each seed's own entropies go to the log.
      matched="$runs/matched_smoothing.json"
      [ -e "$matched" ] || [ ! -e "${COLLECTED:-}/matched_smoothing.json" ] || cp "$COLLECTED/matched_smoothing.json" "$matched"
      python -m lr_jax.experiments.matched_smoothing "$chain" --generation 1 > "$runs/matched_smoothing_seed$seed.json"
      cat "$runs/matched_smoothing_seed$seed.json" >> "$log"
      [ -e "$matched" ] || cp "$runs/matched_smoothing_seed$seed.json" "$matched"
      smoothing=$(python -c "import json, sys; print(round(json.load(open(sys.argv[1]))['smoothing_crops'], 3))" "$matched")
      train "${flags[@]}" "${epochs[@]}" --generations 1 --label_smoothing "$smoothing" --workdir "$runs/matched_smoothing_seed$seed" ;;
    distillation)
      train "${flags[@]}" "${epochs[@]}" --label_mode online --refinery_workdir "$chain" --refinery_generation 1 --temperature 4 \
        --gt_weight 0.5 --generations 2 --workdir "$runs/distillation_seed$seed" ;;
    compute_matched)
      train "${flags[@]}" --generations 1 --epochs $((generations * chain_epochs)) --workdir "$runs/compute_matched_seed$seed" ;;
    precomputed)
      train "${flags[@]}" "${epochs[@]}" --refinery_workdir "$chain" --refinery_generation 1 --generations "$generations" \
        --workdir "$runs/precomputed_seed$seed" ;;
    *) echo "online_controls.sh: unknown control '$control' in CONTROLS" >&2; exit 2 ;;
  esac
done
