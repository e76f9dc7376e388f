"""A finished run's labels for the label tools (python -m lr_jax.labels): its training images as it trained on
them (ids, given labels, the dataset's own labels), and the soft labels one of its generations hands on, with
where they came from; and the label files the tools write back for --train_labels."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Callable, Optional

import numpy as np

from lr_jax import checkpoints, files, run_data, workdir
from lr_jax.config import CONFIG_FIELDS, RUN_OPTION_FIELDS, Config, RunOptions
from lr_jax.data import Dataset, Splits
from lr_jax.data.label_files import EXCLUDED
from lr_jax.labels import checks


@dataclasses.dataclass
class RunLabels:
    """Generation `generation` of the run in `run_dir`: `soft_labels[i]` is its softmax on the un-augmented
    training image `splits.train_ids[i]` (Splits order), given label `splits.train_labels[i]`."""

    run_dir: str
    payload: dict  # results.json
    data: Dataset  # the run's dataset (every image of its train split, for label files that cover them all)
    splits: Splits
    generation: int
    soft_labels: np.ndarray
    model: str

    @property
    def given(self) -> np.ndarray:
        return np.asarray(self.splits.train_labels, np.int64)

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.run_dir))

    def source(self, tool: str) -> dict:
        """Where the labels came from, for an export's metadata: run folder, generation, model, code commit, the CPU
        and accelerator that trained it and its validation accuracy (which tell a retrained generation from the one it
        repeats)."""
        rows = [row for row in self.payload.get("generations", []) if row.get("generation") == self.generation]
        code = (rows[0].get("code") if rows else None) or self.payload.get("code") or {}
        config, dataset_info = self.payload["config"], self.payload.get("dataset") or {}
        return {"tool": tool, "run": self.name, "run_dir": os.path.abspath(self.run_dir),
                "generation": self.generation, "model": self.model, "code_commit": code.get("commit"),
                "code_dirty": code.get("dirty"), "host": code.get("host"),
                "platform": dataset_info.get("platform"), "device_kind": dataset_info.get("device_kind"),
                "val_accuracy": rows[0].get("val_accuracy") if rows else None, "dataset": config.get("dataset"),
                "seed": config.get("seed"), "train_labels": config.get("train_labels"),
                "train_label_key": config.get("train_label_key")}


def load_run_labels(run_dir: str, generation: Optional[int] = None,
                    log: Callable[[str], None] = lambda line: None) -> RunLabels:
    """The run's data, split as it trained (read through the runner, checked against the run's fingerprint), and
    the soft labels of its finished generation `generation` (None: its newest). Errors (CheckpointError,
    DataError, LabelsError) name the run folder."""
    from lr_jax.experiments import runner

    payload = run_data.read_payload(run_dir)
    arrays, info = checkpoints.load_generation(run_dir, generation)  # before the data: a missing one fails fast
    config = Config(**{k: v for k, v in payload["config"].items() if k in CONFIG_FIELDS})
    options = RunOptions(**{k: v for k, v in payload["run"].items() if k in RUN_OPTION_FIELDS})
    data, splits, _ = runner.read_splits(config, options, log)
    workdir.check_same_data(run_dir, splits)
    soft = np.asarray(arrays["soft_labels"], np.float32)
    if soft.shape != (len(splits.train_labels), splits.num_classes):
        raise checks.LabelsError(f"{run_dir}: the saved soft labels have shape {soft.shape}, but the run has "
                                 f"{len(splits.train_labels)} training images of {splits.num_classes} classes")
    number = generation if generation is not None else int(info["metrics"]["generation"])
    return RunLabels(run_dir, payload, data, splits, number, soft, info["model_name"])


def label_file_text(data: Dataset, splits: Splits, train_labels: np.ndarray) -> str:
    """A --train_labels CSV (path,label or index,label) with a row for every image of the dataset's train split:
    `train_labels[i]` for training image i of `splits` (EXCLUDED, -1, leaves it out of training), EXCLUDED for
    every other image (validation, --train_size leftovers: not trained on; validation keeps the dataset's labels
    in any case). A run with the same --data_dir, --seed, --val_size and --train_size reads it back."""
    ids = np.arange(len(data.train_labels)) if data.train_ids is None else np.asarray(data.train_ids)
    labels = np.full(len(ids), EXCLUDED, np.int64)
    labels[np.asarray(splits.train_index)] = np.asarray(train_labels, np.int64)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index" if ids.dtype.kind in "iu" else "path", "label"])
    writer.writerows(zip(ids.tolist(), labels.tolist()))
    return buffer.getvalue()


def write_label_file(path: str, data: Dataset, splits: Splits, train_labels: np.ndarray) -> str:
    """Writes `label_file_text` atomically; returns `path`."""
    files.write_text_atomic(path, label_file_text(data, splits, train_labels))
    return path
