"""Replacement training labels from a file (CIFAR-10N .pt, .npy/.npz, CSV), validated and matched to the images.

Coverage: a label file has a row for every image of the dataset's train split, except an export of
`python -m lr_jax.labels export` (.csv or .npz), which covers the training images of the run it came from: its
images without a row get NO_ROW (hard) or a NaN row (soft), which `data.splits.make_splits` accepts for images the
run does not train on (validation, --train_size leftovers) and refuses for a training image. A CSV's hard label
EXCLUDED (-1) leaves that image out of training (make_splits drops it after the validation split is drawn, so
validation is unchanged; on a validation image it changes nothing)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import pickle
import zipfile
from typing import Optional, Sequence

import numpy as np

from lr_jax.data.cifar_archive import PICKLE_GLOBALS  # numpy arrays, dtypes and byte strings, nothing else
from lr_jax.data.label_values import (  # noqa: F401 (re-exported: label_files is where callers look)
    EXCLUDED, LISTED, NO_ROW, SOFT_SUM_TOLERANCE, LabelFileError, LabelTable, check_labels, labelled, listed,
    noise_rate,
)

PROB_PREFIX = "prob_"  # soft-label CSV columns: prob_0 .. prob_{C-1}
SUPPORTED = ".pt/.pth (PyTorch-saved dict of numpy arrays, e.g. CIFAR-10_human.pt), .npy, .npz, .csv"
CSV_FORMATS = ("path,label | index,label (label -1: leave the image out of training) | path,prob_0,..,prob_{C-1} | "
               "index,prob_0,..,prob_{C-1} | an export of python -m lr_jax.labels (path|index,label,given_label,"
               "confidence,prob_0,..: its probabilities are read)")
EXPORT_COLUMNS = ("label", "given_label", "confidence")  # lr_jax.labels.export_format's columns before prob_0..
EXPORT_KEYS = ("soft_labels", "label", "given_label")  # an export .npz's label sets (--train_label_key; soft first)


@dataclasses.dataclass(frozen=True)
class ImageOrder:
    """Who a dataset's training images are, in the dataset's order: `indices[j]` is the official index of image j,
    `paths[j]` its path relative to the image-folder root ('train/cat/0001.jpg'); either may be None."""

    indices: Optional[np.ndarray] = None
    paths: Optional[tuple] = None
    describe: str = "the dataset"

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.paths)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays only: any other global (os.system, builtins.eval, torch storages) is refused unloaded."""

    def find_class(self, module, name):
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, and only numpy arrays are allowed")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"it refers to a PyTorch storage ({str(pid)[:60]}); only numpy arrays are read")


def read_torch_arrays(path: str) -> dict[str, np.ndarray]:
    """{name: array} from a PyTorch-saved zip (torch.save of a dict of numpy arrays) without PyTorch and without
    running any code from it: the zip's `*/data.pkl` is unpickled allowing numpy arrays only."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] == "data.pkl"]
            if len(members) != 1:
                raise LabelFileError(f"{path}: expected one data.pkl in the zip (torch.save's layout), found "
                                     f"{len(members)} among {listed(archive.namelist())}")
            data = archive.read(members[0])
    except (zipfile.BadZipFile, OSError) as error:
        raise LabelFileError(f"{path}: cannot read it as a PyTorch-saved zip ({error})") from None
    try:
        loaded = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as error:  # refused globals, truncated or foreign pickles raise many types
        raise LabelFileError(f"{path}: {members[0]} cannot be loaded: {error}") from None
    if not isinstance(loaded, dict):
        raise LabelFileError(f"{path}: holds a {type(loaded).__name__}, expected a dict of label arrays")
    bad = [str(k) for k, v in loaded.items() if not isinstance(v, np.ndarray) or v.dtype == object]
    if bad:
        raise LabelFileError(f"{path}: entries {listed(bad)} are not numeric numpy arrays")
    return {str(k): v for k, v in loaded.items()}


def select_array(arrays: dict, key: Optional[str], path: str) -> tuple[np.ndarray, str]:
    """(array, where) for `key`; without a key the only array. Errors list the keys the file holds."""
    if key is None:
        if len(arrays) != 1:
            raise LabelFileError(f"{path}: holds {len(arrays)} arrays ({', '.join(sorted(arrays))}); "
                                 "choose one with --train_label_key")
        key = next(iter(arrays))
    elif key not in arrays:
        raise LabelFileError(f"{path}: no key {key!r}; it holds {', '.join(sorted(arrays))}")
    return arrays[key], f"{path} [{key}]"


def read_label_file(path: str, num_classes: int, key: Optional[str] = None) -> LabelTable:
    """Reads and checks labels from .pt/.pth, .npy, .npz or .csv (by extension); `key` picks one array of a
    .pt/.npz file (needed when it holds several). Rows are keyed by official index, except path-keyed CSVs."""
    lower = path.lower()
    if not os.path.isfile(path):
        raise LabelFileError(f"{path}: no such label file")
    if lower.endswith(".csv"):
        if key is not None:
            raise LabelFileError(f"{path}: a CSV holds one label set; --train_label_key {key} does not apply")
        return read_csv_labels(path, num_classes)
    if lower.endswith((".pt", ".pth")):
        arrays = read_torch_arrays(path)
    elif lower.endswith((".npy", ".npz")):
        arrays = _read_numpy(path, key)
        if {"format", "ids", *EXPORT_KEYS} <= set(arrays):
            return _export_table(arrays, key, path, num_classes)
    else:
        raise LabelFileError(f"{path}: unknown label file type; supported: {SUPPORTED}")
    labels, where = select_array(arrays, key, path)
    return LabelTable(check_labels(labels, num_classes, where), where)


def _export_table(arrays: dict, key: Optional[str], path: str, num_classes: int) -> LabelTable:
    """An export .npz (lr_jax.labels.export_format): its soft labels (or with `key`, its hard `label` or
    `given_label`), keyed by its ids, covering one run's training images (partial)."""
    labels, where = select_array({name: arrays[name] for name in EXPORT_KEYS}, key or EXPORT_KEYS[0], path)
    labels = check_labels(labels, num_classes, where)
    ids = arrays["ids"]
    if ids.shape != (len(labels),) or ids.dtype.kind not in "iuU":
        raise LabelFileError(f"{path}: ids must be {len(labels)} paths or indices, got {ids.dtype} {ids.shape}")
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise LabelFileError(f"{path}: {int((counts > 1).sum())} id(s) hold several rows, e.g. "
                             f"{values[counts > 1][0]!r}")
    if ids.dtype.kind == "U":
        return LabelTable(labels, where, paths=tuple(ids.tolist()), partial=True)
    return LabelTable(labels, where, indices=ids.astype(np.int64), partial=True)


def _read_numpy(path: str, key: Optional[str]) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            if key is not None:
                raise LabelFileError(f"{path}: a .npy holds one array; --train_label_key {key} does not apply")
            return {"array": loaded}
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except LabelFileError:
        raise
    except Exception as error:  # bad zips, object arrays (pickles) and truncated files raise many types
        raise LabelFileError(f"{path}: cannot read it as {os.path.splitext(path)[1]} ({error})") from None


def read_csv_labels(path: str, num_classes: int) -> LabelTable:
    """A CSV with a header of `CSV_FORMATS`: one row per training image, keyed by its path (relative to the
    image-folder root, '/'-separated) or its official index; soft labels give one probability column per class."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [(number, row) for number, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
    if not rows:
        raise LabelFileError(f"{path}: empty; expected a header {CSV_FORMATS}")
    header = [column.strip() for column in rows[0][1]]
    soft_columns = [f"{PROB_PREFIX}{c}" for c in range(num_classes)]
    known = (["label"], soft_columns, [*EXPORT_COLUMNS, *soft_columns])
    if not header or header[0] not in ("path", "index") or header[1:] not in known:
        raise LabelFileError(f"{path}: header {','.join(header)!r} is not one of {CSV_FORMATS} "
                             f"(C = {num_classes} classes)")
    if len(rows) == 1:
        raise LabelFileError(f"{path}: a header but no label rows")
    export = header[1:] == known[2]
    read_from = 1 + len(EXPORT_COLUMNS) if export else 1  # an export: its probabilities
    keys, values = [], []
    for number, row in rows[1:]:
        if len(row) != len(header):
            raise LabelFileError(f"{path}: line {number} has {len(row)} fields, the header {len(header)}")
        keys.append(_csv_key(row[0], header[0], path, number))
        values.append(_csv_values(row[read_from:], path, number))
    _check_unique(keys, rows[1:], path)
    labels = np.asarray(values, np.int64 if header[1:] == ["label"] else np.float64)
    labels = check_labels(labels, num_classes, path, markers=(EXCLUDED,))
    if header[0] == "path":
        return LabelTable(labels, path, tuple(keys), partial=export)
    if export:
        return LabelTable(labels, path, indices=np.asarray(keys, np.int64), partial=True)
    order = np.argsort(keys)
    missing = sorted(set(range(max(keys, default=-1) + 1)) - set(keys))
    if missing:
        raise LabelFileError(f"{path}: no rows for index {listed(missing)}")
    return LabelTable(labels[order], path)


def _csv_key(text: str, kind: str, path: str, number: int):
    text = text.strip()
    if kind == "path":
        normalised = text.replace("\\", "/")
        while normalised.startswith("./"):
            normalised = normalised[2:]
        if not normalised:
            raise LabelFileError(f"{path}: line {number} has an empty path")
        return normalised
    if not text.isdigit():
        raise LabelFileError(f"{path}: line {number}: index {text!r} is not a non-negative integer")
    return int(text)


def _csv_values(fields: Sequence[str], path: str, number: int) -> list:
    if len(fields) == 1:
        text = fields[0].strip()
        if not text.lstrip("-").isdigit():
            raise LabelFileError(f"{path}: line {number}: label {text!r} is not an integer")
        return int(text)
    try:
        return [float(field) for field in fields]
    except ValueError:
        raise LabelFileError(f"{path}: line {number}: probabilities {listed(fields)} are not all numbers") from None


def _check_unique(keys: list, rows: list, path: str) -> None:
    first_line = {}
    for key, (number, _) in zip(keys, rows):
        if key in first_line:
            raise LabelFileError(f"{path}: duplicate rows for {key!r} (lines {first_line[key]} and {number})")
        first_line[key] = number


def official_order(num_images: int) -> ImageOrder:
    """Readers that keep the original files' order: the CIFAR python and binary archives, and lr_jax's TFDS
    reader (it sorts TFDS's records back into that order by their id)."""
    return ImageOrder(indices=np.arange(num_images), describe=f"the official order ({num_images} images)")


def tfds_order(order_file: str) -> ImageOrder:
    """TFDS `cifar10` train order as `tfds.load` yields it (shuffled): element i of `order_file` (CIFAR-10N's
    image_order_c10.npy) is the official index of TFDS's i-th image."""
    try:
        indices = np.load(order_file, allow_pickle=False)
    except Exception as error:  # missing, truncated or pickled files raise many types
        raise LabelFileError(f"{order_file}: cannot read the image order ({error})") from None
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer) or not np.array_equal(
            np.sort(indices), np.arange(len(indices))):
        raise LabelFileError(f"{order_file}: not a permutation of 0..N-1 ({indices.dtype} {indices.shape})")
    return ImageOrder(indices=indices.astype(np.int64), describe=f"TFDS order from {order_file}")


def order_from_ids(ids: np.ndarray, labels: np.ndarray, num_classes: int, clean_labels: Optional[np.ndarray],
                   describe: str) -> ImageOrder:
    """The ImageOrder of training images with these ids (official indices, or image-folder paths grouped class by
    class) and labels. Paths with the official `clean_labels` are also mapped to official indices (see
    `official_index_paths`); official indices need no clean labels, and any given are not used."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return ImageOrder(indices=ids.astype(np.int64), describe=describe)
    paths = tuple(ids.tolist())
    if clean_labels is None:
        return ImageOrder(paths=paths, describe=describe)
    labels = np.asarray(labels)
    class_paths = [ids[labels == c].tolist() for c in range(num_classes)]
    index_paths = official_index_paths(clean_labels, class_paths, f"{describe} with clean labels")
    position = {path: j for j, path in enumerate(paths)}
    indices = np.empty(len(paths), np.int64)
    indices[[position[path] for path in index_paths]] = np.arange(len(index_paths))
    return ImageOrder(indices=indices, paths=paths, describe=describe)


def image_order(dataset, clean_labels: Optional[np.ndarray] = None) -> ImageOrder:
    """Who the training images of `dataset` (a `Dataset`) are, from its `train_ids`: official indices, or paths
    (with the official `clean_labels`, e.g. CIFAR-10N's clean_label, also official indices)."""
    return order_from_ids(dataset.train_ids, dataset.train_labels, dataset.num_classes, clean_labels,
                          dataset.source or dataset.name)


def image_folder_classes(tree, prefix: str = "") -> dict[str, list[str]]:
    """{class folder: training image ids ('train/cat/0001.jpg')} in the order `image_folder.read_image_tree`
    decodes them (it takes its order and ids from the same `list_train_images`)."""
    from lr_jax.data.image_folder import list_train_images

    class_tree, ids = list_train_images(tree, prefix)
    counts = np.cumsum([len(rels) for rels in class_tree.values()])[:-1]
    return {name: part.tolist() for name, part in zip(class_tree, np.split(ids, counts))}


def official_index_paths(clean_labels: np.ndarray, class_paths: Sequence[Sequence[str]], where: str) -> list[str]:
    """The path of each official index i: the k-th file of class folder c = clean_labels[i], k being the number
    of class-c images before i in the official order (how CIFAR-10 image-folder copies number their files)."""
    clean = check_labels(clean_labels, len(class_paths), where)
    counts = np.bincount(clean, minlength=len(class_paths))
    folders = [len(paths) for paths in class_paths]
    if counts.tolist() != folders:
        raise LabelFileError(f"{where}: the clean labels count {counts.tolist()} images per class, but the class "
                             f"folders hold {folders}")
    out = np.empty(len(clean), object)
    for c, paths in enumerate(class_paths):
        out[clean == c] = np.asarray(list(paths), object)
    return out.tolist()


def image_folder_order(data_dir: str, clean_labels: Optional[np.ndarray] = None) -> ImageOrder:
    """`image_order` of the image-folder tree `data_dir` (folder or archive) without decoding it: the ids and order
    its reader would give (for tools such as `lr_jax.cifar10n`; a run has its Dataset: use `image_order`)."""
    from lr_jax.data.formats import find_image_folder

    tree, prefix = find_image_folder(data_dir)
    classes = image_folder_classes(tree, prefix)
    ids = np.asarray([path for paths in classes.values() for path in paths], dtype=str)
    labels = np.repeat(np.arange(len(classes)), [len(paths) for paths in classes.values()])
    return order_from_ids(ids, labels, len(classes), clean_labels, f"image folder {tree.where(prefix.rstrip('/'))}")


def labels_for_images(table: LabelTable, order: ImageOrder) -> np.ndarray:
    """The label (row) of each of the dataset's training images, in the dataset's order."""
    if table.paths is not None:
        return _labels_by_path(table, order)
    if order.indices is None:
        raise LabelFileError(f"{table.where}: rows are keyed by official index, but {order.describe} names its images "
                             "only by path; give the official clean labels to map them, or use a path,label CSV")
    if table.indices is not None:
        return _matched(table, table.indices.tolist(), order.indices.tolist(), order, "index(es)")
    if len(table.labels) != len(order):
        raise LabelFileError(f"{table.where}: {len(table.labels)} labels, but {order.describe} has {len(order)} "
                             "training images")
    return table.labels[order.indices]


def _labels_by_path(table: LabelTable, order: ImageOrder) -> np.ndarray:
    if order.paths is None:
        raise LabelFileError(f"{table.where}: rows are keyed by image path, but {order.describe} has no paths; "
                             "use an index,label CSV, .npy or .npz")
    return _matched(table, table.paths, order.paths, order, "path(s)")


def _matched(table: LabelTable, keys: Sequence, wanted: Sequence, order: ImageOrder, noun: str) -> np.ndarray:
    """The rows of `table` (keyed by `keys`) in the order of `wanted` (the dataset's keys); a partial table's
    images without a row get NO_ROW (hard) or NaN (soft), a complete table's are an error."""
    in_tree = set(wanted)
    strangers = [key for key in keys if key not in in_tree]
    if strangers:
        raise LabelFileError(f"{table.where}: {len(strangers)} {noun} are not training images of {order.describe}: "
                             f"{listed(strangers)}")
    row_of = {key: r for r, key in enumerate(keys)}
    rows = np.asarray([row_of.get(key, -1) for key in wanted], np.int64)
    missing = np.flatnonzero(rows < 0)
    if len(missing) and not table.partial:
        raise LabelFileError(f"{table.where}: no rows for {len(missing)} training image(s) of {order.describe}: "
                             f"{listed([wanted[i] for i in missing])}")
    labels = table.labels[np.maximum(rows, 0)]
    labels[missing] = np.nan if table.soft else NO_ROW
    return labels


def load_train_labels(path: str, order: ImageOrder, num_classes: int, key: Optional[str] = None) -> np.ndarray:
    """Reads, checks and matches a label file: hard (N,) int64 or soft (N, C) float32 labels in the dataset's order."""
    return labels_for_images(read_label_file(path, num_classes, key), order)


def file_sha256(path: str) -> str:
    """SHA-256 of the file's bytes, hex; a LabelFileError naming it if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise LabelFileError(f"{path}: cannot read the label file ({error.strerror or error})") from None
    return digest.hexdigest()


def label_source_record(path: str, key: Optional[str], sha256: str, given: np.ndarray,
                        dataset_labels: np.ndarray) -> dict:
    """The run's record of where its training labels came from: {file, key, sha256, noise_rate}. `given` and
    `dataset_labels` are aligned with the dataset's whole train split (before the validation split and
    --train_size), so noise_rate is the fraction of the file's labels (argmax of soft ones) that differ from the
    dataset's over all of the train split's images the file labels (not its -1 rows, nor the images an export has
    no row for)."""
    if len(given) != len(dataset_labels):
        raise LabelFileError(f"{path}: {len(given)} labels, but the dataset has {len(dataset_labels)} training images")
    return dict(file=path, key=key, sha256=sha256, noise_rate=noise_rate(given, dataset_labels))
