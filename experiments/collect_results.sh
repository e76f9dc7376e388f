#!/usr/bin/env bash
# Copies the result files of every run under RUNS_DIR (results.json, results.md, labels_summary.npz, log.txt;
# never checkpoints) into DEST_DIR/<run>/ with `python -m lr_jax.portable`, which replaces the machine's absolute
# paths by placeholders (<data_dir>, <workdir>, <cache_dir>, ...), then writes the report over the copies into
# DEST_DIR/report/.
# Usage: bash experiments/collect_results.sh RUNS_DIR DEST_DIR [EXAMPLES_RUN_NAME]
# Environment: FIRST (default refinery): runs named FIRST_* come first in the report; REFERENCE (a run's name, e.g.
# ground_truth_seed0): the report's paired differences subtract that run's configuration (default, and while that
# run does not exist yet: the first's).
set -euo pipefail
runs=${1:?usage: collect_results.sh RUNS_DIR DEST_DIR [EXAMPLES_RUN_NAME]}
dest=${2:?usage: collect_results.sh RUNS_DIR DEST_DIR [EXAMPLES_RUN_NAME]}
examples=${3:-refinery_seed0}
copied=()
shopt -s nullglob extglob
first=${FIRST:-refinery}
for run in "$runs/${first}"_*/ "$runs"/!(${first}_*)/; do  # FIRST runs first: the report keeps this order
  run=${run%/}
  [ -f "$run/results.json" ] || continue
  name=$(basename "$run")
  python -m lr_jax.portable "$run" "$dest/$name" > /dev/null
  copied+=("$dest/$name")
done
[ ${#copied[@]} -gt 0 ] || { echo "collect_results.sh: no run with results.json under $runs" >&2; exit 2; }
reference=()
if [ -n "${REFERENCE:-}" ]; then
  if [[ " ${copied[*]} " == *" $dest/$REFERENCE "* ]]; then
    reference=(--reference "$dest/$REFERENCE")
  else  # a design still running: its report pairs against its first configuration until REFERENCE exists
    echo "collect_results.sh: no $REFERENCE under $runs yet; the report's paired differences subtract its first configuration" >&2
  fi
fi
python -m lr_jax.report "${copied[@]}" --out "$dest/report" --examples "$dest/$examples" "${reference[@]}"
