#!/usr/bin/env bash
# Copies the result files of every run under RUNS_DIR (results.json, results.md, labels_summary.npz, log.txt;
# never checkpoints) into DEST_DIR/<run>/ with `python -m lr_jax.portable`, which replaces the machine's absolute
# paths by placeholders (<data_dir>, <workdir>, <cache_dir>, ...), and RUNS_DIR's own .json files (e.g.
# matched_smoothing.json) into DEST_DIR/, then writes the report over the copies into DEST_DIR/report/.
# The generations a run and its copy in DEST_DIR both hold must agree (a run retrained on a fresh machine of the same
# kind is the same computation), or the script stops (exit 3) without copying that run or writing the report: delete
# the copy to replace it with another computation. A copy that holds more generations than the run (a run retrained
# only as far as others need it) is kept, with a warning where they differ (a machine whose numerics differ);
# otherwise the run replaces it, also where they differ if the run holds run_logged.sh's REPLACES_COPY (a chain
# online_controls.sh trained again on such a machine).
# Usage: bash experiments/collect_results.sh RUNS_DIR DEST_DIR [EXAMPLES_RUN_NAME]
# Environment: FIRST (default refinery): runs named FIRST_* come first in the report; REFERENCE (a run's name, e.g.
# ground_truth_seed0): the report's paired differences subtract that run's configuration (default, and while that
# run does not exist yet: the first's). The report covers every run in DEST_DIR, those collected earlier whose
# folders this machine no longer has (a fresh machine) included.
set -euo pipefail
runs=${1:?usage: collect_results.sh RUNS_DIR DEST_DIR [EXAMPLES_RUN_NAME]}
dest=${2:?usage: collect_results.sh RUNS_DIR DEST_DIR [EXAMPLES_RUN_NAME]}
examples=${3:-refinery_seed0}
copied=()
shopt -s nullglob extglob
# shellcheck source=experiments/run_logged.sh
. "$(dirname "$0")/run_logged.sh"
first=${FIRST:-refinery}
for run in "$runs/${first}"_*/ "$runs"/!(${first}_*)/; do  # FIRST runs first: the report keeps this order
  run=${run%/}
  [ -f "$run/results.json" ] || continue
  name=$(basename "$run")
  kept=$(result_generations "$dest/$name/results.json")
  has=$(result_generations "$run/results.json")
  if [ "$kept" -gt 0 ]; then
    differ=$(differing_generations "$run/results.json" "$dest/$name/results.json" | paste -sd ';' -)
    if [ -z "$differ" ]; then
      echo "collect_results.sh: $([ "$kept" -gt "$has" ] && echo kept || echo replaced) $dest/$name/results.json" \
        "($kept generations; the run has $has, and the $((kept < has ? kept : has)) both hold agree)"
    elif [ -e "$run/$REPLACES_COPY" ] && [ "$has" -ge "$kept" ]; then
      echo "collect_results.sh: replaced $dest/$name/results.json ($kept generations) with the run ($has), trained" \
        "again on this machine ($differ): $(head -c 400 "$run/$REPLACES_COPY")"
    elif [ "$kept" -gt "$has" ]; then
      echo "collect_results.sh: kept $dest/$name/results.json ($kept generations; the run has $has, retrained only as" \
        "far as others need it, and differs: $differ): another machine's numerics (results.json's code.host)" >&2
    else
      echo "collect_results.sh: $run/results.json and its copy $dest/$name/results.json differ ($differ): not the" \
        "same computation (delete the copy to replace it)" >&2
      exit 3
    fi
  fi
  if [ "$kept" -le "$has" ]; then
    python -m lr_jax.portable "$run" "$dest/$name" > /dev/null
  fi
  copied+=("$dest/$name")
done
[ ${#copied[@]} -gt 0 ] || { echo "collect_results.sh: no run with results.json under $runs" >&2; exit 2; }
reported=()
for run in "$dest/${first}"_*/ "$dest"/!(${first}_*|report)/; do  # as above: FIRST runs first
  [ -f "${run%/}/results.json" ] && reported+=("${run%/}")
done
for record in "$runs"/*.json; do
  python -m lr_jax.portable "$record" "$dest/$(basename "$record")" > /dev/null
done
reference=()
if [ -n "${REFERENCE:-}" ]; then
  if [[ " ${reported[*]} " == *" $dest/$REFERENCE "* ]]; then
    reference=(--reference "$dest/$REFERENCE")
  else  # a design still running: its report pairs against its first configuration until REFERENCE exists
    echo "collect_results.sh: no $REFERENCE under $runs yet; the report's paired differences subtract its first configuration" >&2
  fi
fi
python -m lr_jax.report "${reported[@]}" --out "$dest/report" --examples "$dest/$examples" "${reference[@]}"
