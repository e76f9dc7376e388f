"""python -m lr_jax.labels: label tools over a finished run.

  export RUN [--generation K] --out FILE.npz|FILE.csv
      the soft labels generation K (default: the newest) hands on, one row per training image keyed by its id
      (image-folder path or official index), with its given label, argmax and confidence, and the source (run,
      generation, model, code commit); a later run reads it back with --train_labels FILE (its soft labels; an
      .npz's hard argmax with --train_label_key label). It covers the run's training images only: read back by a
      run on the same data, --seed, --val_size and --train_size (see lr_jax.data.label_files).
  issues RUN [--generation K] [--out DIR] [--top N]
      DIR/label_issues.csv: every training image ranked by suspicion, 1 - p(given label) under generation K's
      soft labels; DIR/label_issues.png: a contact sheet of the top N suspects.
  kfold OUT_DIR --folds K [flags of a training run]      (lr_jax.labels.kfold)
  compare RUN [--generation K] [--kfold FILE] --out DIR  (lr_jax.labels.compare)

Errors are one line on stderr, exit status 2 (74: a file could not be written; 75: kfold stopped by a signal,
rerun to resume; 3: kfold training diverged)."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from typing import Optional, Sequence

import numpy as np

from lr_jax import checkpoints, files, interrupt, loop
from lr_jax.data import DataError
from lr_jax.experiments.runner import OneLineErrors
from lr_jax.labels import checks, export_format, scores, sheet
from lr_jax.labels.run_labels import load_run_labels

PROG = "python -m lr_jax.labels"
ISSUES_CSV = "label_issues.csv"
ISSUES_PNG = "label_issues.png"
ISSUE_COLUMNS = ("rank", "id", "given_label", "given_class", "refinery_label", "refinery_class",
                 "refinery_confidence", "p_given", "suspicion")
DEFAULT_TOP = 64
INPUT_ERRORS = (checks.LabelsError, DataError, checkpoints.CheckpointError, FileNotFoundError)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog=PROG, description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrors)
    export = commands.add_parser("export", help="a generation's soft labels as a --train_labels file")
    issues = commands.add_parser("issues", help="training images ranked by label suspicion, and a contact sheet")
    compare = commands.add_parser("compare", help="the refinery's and cleanlab's flags against known label errors")
    commands.add_parser("kfold", help="out-of-fold probabilities of K models (python -m lr_jax.labels kfold --help)",
                        add_help=False)
    for sub in (export, issues, compare):
        sub.add_argument("run", metavar="RUN", help="a finished run's folder (its --workdir)")
        sub.add_argument("--generation", type=positive, help="which finished generation (default: the newest)")
    export.add_argument("--out", required=True, metavar="FILE", help="FILE.npz or FILE.csv (+ FILE.csv.source.json)")
    issues.add_argument("--out", metavar="DIR", help="folder for label_issues.csv and .png (default: RUN)")
    issues.add_argument("--top", type=positive, default=DEFAULT_TOP, help="suspects on the contact sheet")
    compare.add_argument("--kfold", metavar="FILE", help="kfold_probs.npz of python -m lr_jax.labels kfold, on "
                         "the run's training images: scored too")
    compare.add_argument("--out", required=True, metavar="DIR", help="folder for detection.json/.md and the "
                         "cleaned label files")
    return parser


def export_command(args) -> str:
    export_format.extension(args.out)  # a wrong name fails before the data are read
    run = load_run_labels(args.run, args.generation)
    source = run.source(f"{PROG} export")
    path = export_format.write_labels(args.out, run.splits.train_ids, run.given, run.soft_labels,
                                      run.splits.class_names, source)
    changed = int(np.sum(np.argmax(run.soft_labels, axis=1) != run.given))
    return (f"wrote {path}: {len(run.given)} training images of {run.name}, generation {run.generation} "
            f"({run.model}); its argmax differs from the given label on {changed}")


def issue_rows(ids, given, probs, class_names: Sequence[str]) -> list[list]:
    """The label_issues.csv rows (ISSUE_COLUMNS), most suspect first: rank from 1, ties in training order."""
    probs, given = checks.probs_and_labels(probs, given)
    order = scores.rank_suspects(probs, given)
    suspicion, top = scores.suspicion(probs, given), np.argmax(probs, axis=1)
    ids = np.asarray(ids)
    return [[rank, ids[i].item(), int(given[i]), class_names[given[i]], int(top[i]), class_names[top[i]],
             repr(float(probs[i, top[i]])), repr(float(probs[i, given[i]])), repr(float(suspicion[i]))]
            for rank, i in enumerate(order.tolist(), start=1)]


def issues_command(args) -> str:
    run = load_run_labels(args.run, args.generation)
    out = args.out or args.run
    names = run.splits.class_names
    rows = issue_rows(run.splits.train_ids, run.given, run.soft_labels, names)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([ISSUE_COLUMNS, *rows])
    top = scores.rank_suspects(run.soft_labels, run.given, args.top)
    captions = [f"{rank}. {caption}" for rank, caption in
                enumerate(sheet.suspect_captions(top, run.given, run.soft_labels, names), start=1)]
    title = f"{run.name}, generation {run.generation}: the {len(top)} most suspect labels (1 - p(given))"
    files.write_text_atomic(os.path.join(out, ISSUES_CSV), buffer.getvalue())
    sheet.contact_sheet(run.splits.train_images[top], captions, os.path.join(out, ISSUES_PNG), title=title)
    flagged = int(scores.refinery_flags(run.soft_labels, run.given).sum())
    return (f"wrote {os.path.join(out, ISSUES_CSV)} ({len(rows)} training images, {flagged} whose argmax is not "
            f"the given label) and {os.path.join(out, ISSUES_PNG)} (the top {len(top)})")


def _dispatch(argv: list) -> str:
    if argv[:1] == ["kfold"]:
        from lr_jax.labels import kfold

        return kfold.kfold_command(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "compare":
        from lr_jax.labels import compare

        return compare.compare_command(args)
    return {"export": export_command, "issues": issues_command}[args.command](args)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Runs one command; prints what it wrote, or a one-line error (exit statuses in the module docstring)."""
    try:
        print(_dispatch(list(sys.argv[1:] if argv is None else argv)))
    except interrupt.Interrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(interrupt.EXIT_STATUS)
    except files.WriteError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(74)
    except loop.NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
    except INPUT_ERRORS as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)
