"""The label export file format: one row per training image with its given label, the refinery's label, its
confidence and its soft label, as .npz or .csv (by the file's extension), readable by numpy or pandas alone.
`--train_labels FILE` reads it back (lr_jax.data.label_files): its soft labels, or an .npz's `label` or
`given_label` with --train_label_key. Its rows are one run's training images: a run on the same data, --seed,
--val_size and --train_size reads it (its validation images need no row; a training image without one is refused).

.npz (np.load(path), no pickles):
  ids            (N,) str (image paths, relative to the image folder's root) or int64 (indices in the dataset's order)
  given_label    (N,) int64, the label the image was trained with
  label          (N,) int64, the refinery's label: argmax of soft_labels (ties: the lower class index)
  confidence     (N,) float32, max of soft_labels
  soft_labels    (N, C) float32, the refinery's probabilities
  class_names    (C,) str
  source         () str, JSON of where the labels came from (run, generation, ...)
  format         () int64, EXPORT_FORMAT
.csv (pandas.read_csv(path)): a header, then one row per image:
  path|index,label,given_label,confidence,prob_0,...,prob_{C-1}
  (`path` when the ids are strings, `index` when they are integers; probabilities written to round-trip float32).
  The class names and the source, which a CSV row cannot hold, are in the JSON file <path>.source.json beside it:
  {"format": EXPORT_FORMAT, "class_names": [...], "source": {...}}."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Sequence

import numpy as np

from lr_jax import files
from lr_jax.labels import checks

EXPORT_FORMAT = 1
EXTENSIONS = (".npz", ".csv")
PROB_PREFIX = "prob_"  # the same soft-label columns as the training label files (lr_jax.data.label_files)
SIDECAR_SUFFIX = ".source.json"
COLUMNS = ("label", "given_label", "confidence")  # after the id column, before prob_0 ..


def extension(path: str) -> str:
    """'.npz' or '.csv' (lower case): the export type `path` names; a LabelsError for any other name."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in EXTENSIONS:
        raise checks.LabelsError(f"{path}: unknown label export type {suffix or '(no extension)'!r}; "
                                 f"name it <name>.npz or <name>.csv")
    return suffix


def _ids(ids, n: int) -> tuple[np.ndarray, str]:
    """(ids as a str or int64 array, 'path' or 'index')."""
    values = list(ids)
    if len(values) != n:
        raise checks.LabelsError(f"ids has {len(values)} entries, expected {n} (one per image)")
    if all(isinstance(v, (str, np.str_)) for v in values):
        return np.asarray(values, dtype=str).reshape(n), "path"
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64).reshape(n), "index"
    raise checks.LabelsError("ids must be all strings (image paths) or all integers (indices)")


def sidecar_path(path: str) -> str:
    """The JSON file beside a .csv export that holds its class names and source."""
    return str(path) + SIDECAR_SUFFIX


def write_labels(path: str, ids, given, soft_labels, class_names: Sequence[str], source: dict) -> str:
    """Writes the export (format by extension, see the module docstring) atomically; returns `path`."""
    kind_of_file = extension(path)
    soft_labels, given = checks.probs_and_labels(soft_labels, given)
    soft_labels = soft_labels.astype(np.float32)
    if len(class_names) != soft_labels.shape[1]:
        raise checks.LabelsError(f"{len(class_names)} class names for {soft_labels.shape[1]} classes")
    ids, kind = _ids(ids, len(given))
    try:
        source_json = json.dumps(source)
    except (TypeError, ValueError) as error:
        raise checks.LabelsError(f"source must be JSON-serialisable: {error}") from None
    arrays = {"ids": ids, "given_label": given, "label": np.argmax(soft_labels, axis=1).astype(np.int64),
              "confidence": soft_labels.max(axis=1), "soft_labels": soft_labels,
              "class_names": np.asarray([str(name) for name in class_names], dtype=str),
              "source": np.asarray(source_json), "format": np.asarray(EXPORT_FORMAT, np.int64)}
    if kind_of_file == ".npz":
        files.write_atomic(path, lambda f: np.savez_compressed(f, **arrays), binary=True)
        return path
    sidecar = {"format": EXPORT_FORMAT, "class_names": arrays["class_names"].tolist(), "source": source}
    files.write_text_atomic(sidecar_path(path), json.dumps(sidecar, indent=2) + "\n")
    files.write_text_atomic(path, _csv_text(arrays, kind))
    return path


def _csv_text(arrays: dict, kind: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    classes = arrays["soft_labels"].shape[1]
    writer.writerow([kind, *COLUMNS, *(f"{PROB_PREFIX}{c}" for c in range(classes))])
    for row in zip(arrays["ids"], arrays["label"], arrays["given_label"], arrays["confidence"], arrays["soft_labels"]):
        identifier, label, given, confidence, probs = row
        writer.writerow([identifier, label, given, str(confidence), *(str(p) for p in probs)])
    return buffer.getvalue()


def read_labels(path: str) -> dict:
    """The export at `path` as {ids, given_label, label, confidence, soft_labels, class_names, source, format};
    for a .csv without its sidecar, class_names and source are None."""
    if extension(path) == ".npz":
        with np.load(path, allow_pickle=False) as data:
            loaded = {name: data[name] for name in data.files}
        loaded["source"] = json.loads(str(loaded["source"]))
        loaded["format"] = int(loaded["format"])
        return loaded
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    if len(header) < 6 or header[0] not in ("path", "index") or tuple(header[1:4]) != COLUMNS:
        raise checks.LabelsError(f"{path}: header {','.join(header)!r} is not an export's "
                                 f"path|index,{','.join(COLUMNS)},{PROB_PREFIX}0,...")
    columns = list(zip(*body)) if body else [()] * len(header)
    loaded = {"ids": np.asarray(columns[0], dtype=str if header[0] == "path" else np.int64),
              "label": np.asarray(columns[1], np.int64), "given_label": np.asarray(columns[2], np.int64),
              "confidence": np.asarray(columns[3], np.float32),
              "soft_labels": np.asarray(columns[4:], np.float32).T.reshape(len(body), len(header) - 4),
              "class_names": None, "source": None, "format": None}
    if os.path.exists(sidecar_path(path)):
        with open(sidecar_path(path), encoding="utf-8") as f:
            sidecar = json.load(f)
        loaded.update(class_names=np.asarray(sidecar["class_names"], dtype=str), source=sidecar["source"],
                      format=sidecar["format"])
    return loaded
