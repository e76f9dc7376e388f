"""python -m lr_jax.labels kfold OUT_DIR --folds K [--dataset NAME] [flags of a training run]

Out-of-sample probabilities for every training image (what confident learning wants): the training images (those
the flags' run trains on, with its given labels: --train_labels or the dataset's) are dealt into K folds,
stratified by given label with the run's --seed (labels.folds.assign_folds); model k is generation 1 of a run with
these flags (trained from scratch on the given labels: --generations and --label_mode do not apply) on every
training image outside fold k, its validation split the run's, and it predicts fold k's images, un-augmented and
without flip averaging, like a generation's soft labels. OUT_DIR/fold_<k> is model k's workdir (config.json with
its data fingerprint, checkpoints, fold_ids.npz: its training and held-out ids): a rerun reloads finished folds
and resumes an interrupted one, and refuses a fold folder made with other settings (--overwrite discards them).
OUT_DIR/kfold_probs.npz: ids, given (int64), probs (N, C) float32, folds (int64), class_names, source (JSON: the
folds, seed, config, code and each fold's accuracies), all in the run's training order (Splits order), as
`python -m lr_jax.labels compare --kfold` reads them."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os

import numpy as np

from lr_jax import config as config_lib
from lr_jax import files, interrupt, provenance, refinery, workdir
from lr_jax.data import Splits
from lr_jax.data.splits import channel_stats
from lr_jax.experiments import runner
from lr_jax.labels import folds

KFOLD_FILE = "kfold_probs.npz"
FOLD_IDS = "fold_ids.npz"
DATASETS = ("cifar10", "svhn", "fashion_mnist")


@dataclasses.dataclass
class FoldPlan:
    """Model `fold`'s data: every training image but fold `fold`'s (train), fold `fold`'s images (held_out, indices
    into the run's training images) as the test split it predicts."""

    fold: int
    train: np.ndarray
    held_out: np.ndarray
    splits: Splits
    held_out_ids: np.ndarray


def fold_dir(out_dir: str, fold: int) -> str:
    return os.path.join(out_dir, f"fold_{fold}")


def fold_splits(splits: Splits, train: np.ndarray, held_out: np.ndarray) -> Splits:
    """`splits` restricted to the training images `train` (normalisation statistics recomputed on them, as a run
    on those images would), the validation split unchanged, and the images `held_out` as the test split (labelled
    with their given labels)."""
    pick = lambda values: None if values is None else np.asarray(values)[train]
    images = splits.train_images[train]
    mean, std = channel_stats(images)
    return dataclasses.replace(
        splits, train_images=images, train_labels=splits.train_labels[train], mean=mean, std=std,
        test_images=splits.train_images[held_out], test_labels=splits.train_labels[held_out],
        train_ids=pick(splits.train_ids), train_index=pick(splits.train_index),
        dataset_train_labels=pick(splits.dataset_train_labels), train_targets=pick(splits.train_targets))


def fold_plans(splits: Splits, count: int, seed: int) -> tuple[np.ndarray, list[FoldPlan]]:
    """(the fold of each training image, each fold's plan); FoldsError when a class has fewer than `count`."""
    assignment = folds.assign_folds(splits.train_labels, count, seed, splits.class_names)
    plans = []
    for fold in range(count):
        train, held_out = folds.fold_split(assignment, fold)
        ids = np.asarray(splits.train_ids)[held_out] if splits.train_ids is not None else held_out
        plans.append(FoldPlan(fold, train, held_out, fold_splits(splits, train, held_out), ids))
    return assignment, plans


def build_parser(dataset: str) -> argparse.ArgumentParser:
    parser = runner.build_parser(dataset)
    parser.prog = "python -m lr_jax.labels kfold"
    parser.description = __doc__.split("\n\n")[1]
    parser.epilog = None
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder for fold_<k>/ and kfold_probs.npz")
    parser.add_argument("--folds", type=int, required=True, metavar="K", help="number of folds (models), >= 2")
    parser.add_argument("--dataset", choices=DATASETS, default="cifar10", help="the runner's dataset (its defaults)")
    return parser


def parse(argv: list) -> tuple:
    """(config, options, out_dir, folds, overwrite, progress) from the command line; one-line errors, exit 2."""
    dataset = argparse.ArgumentParser(add_help=False)
    dataset.add_argument("--dataset", choices=DATASETS, default="cifar10")
    parser = build_parser(dataset.parse_known_args(argv)[0].dataset)
    args = vars(parser.parse_args(argv))
    out_dir, count, name = args.pop("out_dir"), args.pop("folds"), args.pop("dataset")
    progress, overwrite, config_file = not args.pop("no_progress"), args.pop("overwrite"), args.pop("config")
    if args.get("workdir") is not None:
        parser.error(f"kfold trains fold k in {fold_dir(out_dir, 'k')}; it takes no --workdir")
    if (args.get("num_processes") or 1) > 1:
        parser.error("kfold runs in one process (no --num_processes)")
    try:
        config, options = config_lib.build_config(name, {**args, "workdir": out_dir}, config_file)
    except ValueError as error:
        parser.error(str(error))
    if config.refinery_workdir is not None:
        parser.error(f"--refinery_workdir {config.refinery_workdir}: kfold trains each fold's model from scratch "
                     "on the given labels; leave it out")
    config = dataclasses.replace(config, generations=1, eval_flip=False)
    return config, options, out_dir, count, overwrite, progress


def train_fold(config, options, plan: FoldPlan, out_dir: str, overwrite: bool, progress: bool, log, code: dict):
    """Model `plan.fold`'s held-out probabilities and accuracies; trained in its workdir, or reloaded from it."""
    directory = fold_dir(out_dir, plan.fold)
    fold_log = lambda line: log(f"fold {plan.fold}: {line}")
    record = workdir.run_record({**dataclasses.asdict(config), "kfold_fold": plan.fold}, plan.splits)
    workdir.prepare_workdir(directory, record, overwrite, fold_log)
    ids = {"train_ids": plan.splits.train_ids, "held_out_ids": plan.held_out_ids}
    files.write_atomic(os.path.join(directory, FOLD_IDS), lambda f: np.savez(f, **ids), binary=True)
    with contextlib.closing(refinery.run_chain(config, plan.splits, log=fold_log, progress=progress,
                                               workdir=directory, run=options, code=code)) as chain:
        (result,) = list(chain)
    metrics = {"val_accuracy": result.metrics.get("val_accuracy"), "reloaded": result.reloaded,
               "held_out_accuracy": refinery.accuracy(result.test_probs, plan.splits.test_labels),
               "train_images": int(len(plan.train)), "held_out_images": int(len(plan.held_out))}
    return np.asarray(result.test_probs, np.float32), metrics


def write_kfold(path: str, splits: Splits, assignment: np.ndarray, probs: np.ndarray, source: dict) -> str:
    """Writes kfold_probs.npz (see the module docstring) atomically; returns `path`."""
    arrays = {"ids": np.asarray(splits.train_ids), "given": np.asarray(splits.train_labels, np.int64),
              "probs": np.asarray(probs, np.float32), "folds": np.asarray(assignment, np.int64),
              "class_names": np.asarray(splits.class_names, dtype=str), "source": np.asarray(json.dumps(source))}
    files.write_atomic(path, lambda f: np.savez_compressed(f, **arrays), binary=True)
    return path


def _run_locked(config, options, out_dir: str, count: int, overwrite: bool, progress: bool) -> str:
    early: list = []  # lines logged before anything is written; they reach OUT_DIR/log.txt with the first fold
    log = runner.make_logger(None, True, early)
    code = provenance.run_provenance()
    _, splits, _ = runner.read_splits(config, options, log)
    assignment, plans = fold_plans(splits, count, config.seed)
    for plan in plans:  # every fold's batch against its images, before any fold is written
        runner.check_against_data(config, plan.splits)
    log = runner.make_logger(out_dir, True, early)
    log(f"kfold: {count} folds of {len(splits.train_labels)} training images (seed {config.seed}); each model is "
        f"generation 1 of {dataclasses.asdict(config)}")
    held_out, summary = {}, []
    for plan in plans:
        probs, metrics = train_fold(config, options, plan, out_dir, overwrite, progress, log, code)
        held_out[plan.fold] = (plan.held_out, probs)
        summary.append({"fold": plan.fold, **metrics})
        log(f"fold {plan.fold}: held-out accuracy against the given labels {metrics['held_out_accuracy']:.4f}")
    probs = folds.out_of_fold(held_out, len(splits.train_labels), assignment)
    source = {"tool": "python -m lr_jax.labels kfold", "folds": count, "seed": config.seed,
              "config": dataclasses.asdict(config), "code": code, "fold_results": summary}
    path = write_kfold(os.path.join(out_dir, KFOLD_FILE), splits, assignment, probs, source)
    accuracy = refinery.accuracy(probs, splits.train_labels)
    reloaded = sum(row["reloaded"] for row in summary)
    return (f"wrote {path}: out-of-fold probabilities of {len(probs)} training images from {count} models "
            f"({count - reloaded} trained now, {reloaded} reloaded); their accuracy against the given labels "
            f"{accuracy:.4f}")


def kfold_command(argv: list) -> str:
    """Parses the command line, locks OUT_DIR (one kfold at a time), trains or reloads every fold, writes
    kfold_probs.npz; returns the line to print. Stops cleanly on SIGTERM/SIGINT (interrupt.Interrupted)."""
    config, options, out_dir, count, overwrite, progress = parse(argv)
    with interrupt.stop_on_signals(), workdir.workdir_lock(out_dir):
        return _run_locked(config, options, out_dir, count, overwrite, progress)
