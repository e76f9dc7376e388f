#!/usr/bin/env bash
# Copies the result files of every run under RUNS_DIR (results.json, results.md, labels_summary.npz, log.txt;
# never checkpoints) into DEST_DIR/<run>/ with `python -m lr_jax.portable`, which replaces the machine's absolute
# paths by placeholders (<data_dir>, <workdir>, <cache_dir>, ...), and RUNS_DIR's own .json files (e.g.
# matched_smoothing.json) into DEST_DIR/, then writes the report over the copies into DEST_DIR/report/.
# The generations a run and its copy in DEST_DIR both hold must agree (a run retrained on a fresh machine is the
# same computation), or the script stops (exit 3) without copying that run or writing the report: delete the copy to
# replace it with another computation. A copy that holds more generations than the run (a run retrained only as far
# as others need it) is kept; otherwise the run replaces it.
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
  if [ "$kept" -gt 0 ]; then
    python - "$run/results.json" "$dest/$name/results.json" <<'PY' || exit 3
import json, sys
run, kept = (json.load(open(path))["generations"] for path in sys.argv[1:])
for new, old in zip(run, kept):
    if new["val_accuracy"] != old["val_accuracy"]:
        sys.exit(f"collect_results.sh: {sys.argv[1]} generation {new['generation']} has validation accuracy "
                 f"{new['val_accuracy']}, its copy {sys.argv[2]} {old['val_accuracy']}: not the same computation "
                 f"(delete the copy to replace it)")
both = min(len(run), len(kept))
print(f"collect_results.sh: {'kept' if len(kept) > len(run) else 'replaced'} {sys.argv[2]} ({len(kept)} "
      f"generations; the run has {len(run)}, and the {both} both hold agree)")
PY
  fi
  if [ "$kept" -le "$(result_generations "$run/results.json")" ]; then
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
