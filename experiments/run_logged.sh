# Sourced by the experiment scripts: one training run, its output appended to a log file, a progress line on the
# terminal when it starts and when it ends (its generations and last validation accuracy, or its exit status).
# Usage: run_logged LOG WORKDIR COMMAND [ARG ...]   (returns COMMAND's exit status)
run_logged() {
  local log=$1 workdir=$2 status=0 started=$SECONDS
  shift 2
  printf '[%s] %s: started (output in %s)\n' "$(date +%H:%M:%S)" "$workdir" "$log"
  "$@" >> "$log" 2>&1 || status=$?
  local summary
  summary=$(python - "$workdir/results.json" <<'PY' 2>/dev/null || true
import json, sys
rows = json.load(open(sys.argv[1]))["generations"]
if rows:
    last = rows[-1]
    flip = "" if last.get("val_accuracy_no_flip") is None else f" ({100 * last['val_accuracy_no_flip']:.2f}% without flip averaging)"
    print(f"{len(rows)} generation(s), generation {last['generation']} val {100 * last['val_accuracy']:.2f}%{flip}")
PY
)
  printf '[%s] %s: %s after %d s%s\n' "$(date +%H:%M:%S)" "$workdir" \
    "$([ "$status" = 0 ] && echo finished || echo "stopped with exit status $status")" $((SECONDS - started)) \
    "${summary:+; $summary}"
  return "$status"
}
# result_generations RESULTS_JSON: how many generations a run's results.json holds (0 when the file is missing).
result_generations() {
  if [ -f "$1" ]; then
    python -c "import json, sys; print(len(json.load(open(sys.argv[1]))['generations']))" "$1"
  else
    echo 0
  fi
}
# differing_generations RUN_JSON COPY_JSON: one line per generation both results.json files hold whose validation
# accuracy differs ("generation K: the run X, the copy Y"); nothing when they agree or a file is missing.
differing_generations() {
  python - "$1" "$2" <<'PY'
import json, os, sys
if all(os.path.isfile(path) for path in sys.argv[1:]):
    run, copy = (json.load(open(path))["generations"] for path in sys.argv[1:])
    for new, old in zip(run, copy):
        if new["val_accuracy"] != old["val_accuracy"]:
            print(f"generation {new['generation']}: the run {new['val_accuracy']}, the copy {old['val_accuracy']}")
PY
}
# A chain's generation 1 retrained (for the controls that reuse it) on a machine whose numerics differ from those
# of the machine that trained its collected copy (a CPU with other vector extensions: results.json's code.host) is
# another model. online_controls.sh then trains the whole chain again here, so that the chain and the controls still
# to run are one machine's computation, and writes this file into the chain's folder, saying why: collect_results.sh
# replaces the copy with such a run (once it holds as many generations) instead of refusing it. It writes the file
# too for a chain trained whole here whose copy, collected part-way on another machine, differs.
REPLACES_COPY=replaces_collected_copy.txt
