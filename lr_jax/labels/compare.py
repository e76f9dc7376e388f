"""python -m lr_jax.labels compare RUN [--generation K] [--kfold FILE] --out DIR

For a run trained on labels other than the dataset's (--train_labels, e.g. CIFAR-10N's noisy labels), where the
dataset's own labels are known: the label errors are the training images whose given label differs from the
dataset's. Scored against them (labels.detection: the flagged set's precision, recall and F1, the score's AUROC,
average precision and precision among its REVIEW_TOP = 1,000 most suspect images), on generation K's soft labels
(in-sample) and, with --kfold, on out-of-fold probabilities (python -m lr_jax.labels kfold on the same training
images):
  refinery   flags: the argmax is not the given label; score: 1 - p(given)              (labels.scores)
  cleanlab   flags: cleanlab.filter.find_label_issues; score: 1 - label quality         (labels.confident_learning)
Writes DIR/detection.json and DIR/detection.md (the table), and two --train_labels files for retraining on the
same data, --seed, --val_size and --train_size (one row per image of the dataset's train split; -1: not trained on,
so validation images and --train_size leftovers are -1 and keep their roles):
  relabel_refinery.csv  the refinery's flagged images (in-sample) relabelled with its argmax, the rest as given
  drop_cleanlab.csv     cleanlab's flagged images (on the K-fold probabilities when given, else in-sample) left out
                        of training (-1), the rest as given."""

from __future__ import annotations

import os

import numpy as np

from lr_jax import files
from lr_jax.data.label_files import EXCLUDED
from lr_jax.labels import checks, confident_learning, detection, scores
from lr_jax.labels.run_labels import RunLabels, load_run_labels, write_label_file

DETECTION_JSON = "detection.json"
DETECTION_MD = "detection.md"
RELABEL_FILE = "relabel_refinery.csv"
DROP_FILE = "drop_cleanlab.csv"
IN_SAMPLE = "in-sample"
KFOLD = "k-fold"
METHODS = {  # name: (flags, suspicion score), both of (probs, given)
    "refinery": (scores.refinery_flags, scores.suspicion),
    "cleanlab": (confident_learning.cleanlab_flags, confident_learning.cleanlab_scores),
}
REVIEW_TOP = 1000  # precision at the top: the share of wrong labels among the 1,000 most suspect images
COLUMNS = (("method", "method"), ("probabilities", "probabilities"), ("flagged", "flagged"),
           ("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("auroc", "AUROC"),
           ("average_precision", "AP"), ("precision_top", f"precision, top {REVIEW_TOP:,}"))


def _load_kfold(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in ("ids", "given", "probs")}
    except (OSError, ValueError, KeyError) as error:
        raise checks.LabelsError(f"--kfold {path}: cannot read it as a kfold_probs.npz of python -m lr_jax.labels "
                                 f"kfold ({error})") from None


def read_kfold(path: str, ids, given) -> np.ndarray:
    """The out-of-fold probabilities of `path` in the order of `ids` (the run's training images), checked: the
    same images with the same given labels, else a LabelsError naming the file."""
    loaded = _load_kfold(path)
    ids = np.asarray(ids)
    position = {key: i for i, key in enumerate(ids.tolist())}
    theirs = loaded["ids"].tolist()
    if len(theirs) != len(ids) or len(set(theirs)) != len(ids) or any(key not in position for key in theirs):
        strangers = [key for key in theirs if key not in position]
        raise checks.LabelsError(
            f"--kfold {path}: its {len(theirs)} images are not the run's {len(ids)} training images"
            f"{' (e.g. ' + repr(strangers[0]) + ' is not one)' if strangers else ''}; run kfold with the run's data, "
            f"--seed, --val_size, --train_size and --train_labels")
    order = np.asarray([position[key] for key in theirs], np.int64)
    probs = checks.probabilities(loaded["probs"], f"--kfold {path}: probs", len(ids))
    if not np.array_equal(np.asarray(loaded["given"]), np.asarray(given)[order]):
        raise checks.LabelsError(f"--kfold {path}: its given labels differ from the run's; run kfold with the "
                                 f"run's --train_labels")
    out = np.empty_like(probs)
    out[order] = probs
    return out


def detect(probabilities: dict, given, is_error) -> tuple[list[dict], dict]:
    """(one metrics row per method and probabilities, {(method, probabilities): flagged mask})."""
    rows, flags = [], {}
    for source, probs in probabilities.items():
        for method, (flag, score) in METHODS.items():
            flagged = flag(probs, given)
            flags[method, source] = flagged
            suspicion = score(probs, given)
            rows.append({"method": method, "probabilities": source, **detection.flag_metrics(flagged, is_error),
                         **detection.score_metrics(suspicion, is_error),
                         "precision_top": detection.precision_at_top(suspicion, is_error, REVIEW_TOP)})
    return rows, flags


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict], title: str) -> str:
    """detection.md: the title, then one table row per method and probabilities."""
    lines = [f"# {title}", "", "| " + " | ".join(name for _, name in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[key]) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def known_errors(run: RunLabels) -> np.ndarray:
    """bool (N,): the training images whose given label differs from the dataset's; a LabelsError for a run on
    the dataset's own labels (nothing to score against)."""
    if not run.payload["config"].get("train_labels"):
        raise checks.LabelsError(f"{run.run_dir}: trained on the dataset's own labels (no --train_labels), so no "
                                 f"label errors are known to score against")
    return run.given != np.asarray(run.splits.dataset_train_labels, np.int64)


def cleaned_labels(run: RunLabels, flags: dict, drop_source: str) -> dict:
    """{file name: (training labels, what they are)} for the two retraining files."""
    relabel_flags, drop_flags = flags["refinery", IN_SAMPLE], flags["cleanlab", drop_source]
    return {
        RELABEL_FILE: (scores.relabel(run.given, run.soft_labels, relabel_flags),
                       f"{int(relabel_flags.sum())} flagged by the refinery ({IN_SAMPLE}) relabelled with its argmax"),
        DROP_FILE: (np.where(drop_flags, EXCLUDED, run.given),
                    f"{int(drop_flags.sum())} flagged by cleanlab ({drop_source}) left out of training"),
    }


def compare_command(args) -> str:
    run = load_run_labels(args.run, args.generation)
    is_error = known_errors(run)
    probabilities = {IN_SAMPLE: run.soft_labels}
    if args.kfold:
        probabilities[KFOLD] = read_kfold(args.kfold, run.splits.train_ids, run.given)
    rows, flags = detect(probabilities, run.given, is_error)
    cleaned = cleaned_labels(run, flags, KFOLD if args.kfold else IN_SAMPLE)
    title = (f"{run.name}, generation {run.generation}: {int(is_error.sum())} of {len(is_error)} training labels "
             f"differ from the dataset's")
    payload = {"source": run.source("python -m lr_jax.labels compare"), "images": len(is_error),
               "errors": int(is_error.sum()), "kfold": args.kfold, "rows": rows,
               "label_files": {name: what for name, (_, what) in cleaned.items()}}
    files.write_json_atomic(os.path.join(args.out, DETECTION_JSON), payload)
    files.write_text_atomic(os.path.join(args.out, DETECTION_MD), markdown(rows, title))
    for name, (labels, _) in cleaned.items():
        write_label_file(os.path.join(args.out, name), run.data, run.splits, labels)
    return f"wrote {os.path.join(args.out, DETECTION_MD)} ({title}), detection.json, {RELABEL_FILE}, {DROP_FILE}"

