"""Readers for the original CIFAR-10 python (pickle) and binary versions, as the .tar.gz or the extracted folder."""

from __future__ import annotations

import io
import pickle

import numpy as np

from lr_jax.data.dataset import DataError, Dataset, check_split, concatenate_splits, make_dataset
from lr_jax.data.source_tree import SourceTree

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
PIXELS = 32 * 32 * 3  # one row: 1024 red, then 1024 green, then 1024 blue values, each 32x32 row-major
PYTHON_MEMBERS = "data_batch_1..5, test_batch and batches.meta"
BINARY_MEMBERS = "data_batch_1..5.bin, test_batch.bin and batches.meta.txt"
# What a CIFAR pickle may build: numpy arrays, dtypes and byte strings. Anything else (a pickle can run code)
# is refused.
PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}; a CIFAR batch holds only arrays and lists")
        return super().find_class(module, name)


def load_batch_pickle(tree: SourceTree, rel: str) -> dict:
    """A CIFAR pickle (written by Python 2) as a dict with str keys; errors name the member."""
    data = tree.read(rel, f"the CIFAR-10 python version has {PYTHON_MEMBERS}")
    try:
        batch = _ArraysOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # truncated or foreign pickles raise many types
        raise DataError(f"{tree.where(rel)}: not a readable CIFAR pickle ({error})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{tree.where(rel)}: holds a {type(batch).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in batch.items()}


def _require_keys(batch: dict, keys: tuple, where: str) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}; found {sorted(batch)}")


def python_batch(tree: SourceTree, rel: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels) of one python batch: b'data' (N, 3072) uint8, b'labels' N ints."""
    batch = load_batch_pickle(tree, rel)
    where = tree.where(rel)
    _require_keys(batch, ("data", "labels"), where)
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: b'data' is {described}, expected uint8 (N, {PIXELS})")
    labels = np.asarray(batch["labels"])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: b'labels' must be a list of integers, got {labels.dtype} {labels.shape}")
    images = channel_first_rows_to_images(data)
    check_split(images, labels, num_classes, where)
    return images, labels


def channel_first_rows_to_images(rows: np.ndarray) -> np.ndarray:
    """(N, 3072) rows of CIFAR's channel-first pixels -> (N, 32, 32, 3) contiguous uint8."""
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def read_cifar_python(tree: SourceTree, prefix: str, name: str) -> Dataset:
    """data_batch_1..5 (train, in order: ids are the official index), test_batch and batches.meta (class names)."""
    meta_rel = f"{prefix}batches.meta"
    meta = load_batch_pickle(tree, meta_rel)
    _require_keys(meta, ("label_names",), tree.where(meta_rel))
    class_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
    train = concatenate_splits([python_batch(tree, prefix + b, len(class_names)) for b in TRAIN_BATCHES])
    test = python_batch(tree, f"{prefix}test_batch", len(class_names))
    source = f"CIFAR-10 python version {tree.where(prefix.rstrip('/'))}"
    return make_dataset(name, class_names, train, test, source=source)


def binary_batch(tree: SourceTree, rel: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one binary batch: records of 1 label byte + 3072 channel-first pixel bytes."""
    data = tree.read(rel, f"the CIFAR-10 binary version has {BINARY_MEMBERS}")
    record = PIXELS + 1
    if len(data) == 0 or len(data) % record:
        raise DataError(
            f"{tree.where(rel)}: {len(data)} bytes is not a whole number of {record}-byte records "
            "(1 label byte + 3072 pixel bytes): truncated or not a CIFAR-10 binary batch"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, record)
    images, labels = channel_first_rows_to_images(records[:, 1:]), records[:, 0].astype(np.int32)
    check_split(images, labels, num_classes, tree.where(rel))
    return images, labels


def read_cifar_binary(tree: SourceTree, prefix: str, name: str) -> Dataset:
    """data_batch_1..5.bin (train, in order: ids are the official index), test_batch.bin, batches.meta.txt."""
    meta_rel = f"{prefix}batches.meta.txt"
    text = tree.read(meta_rel, f"the CIFAR-10 binary version has {BINARY_MEMBERS}")
    class_names = [line.strip() for line in text.decode("utf-8", "replace").splitlines() if line.strip()]
    if not class_names:
        raise DataError(f"{tree.where(meta_rel)}: no class names (expected one per line)")
    train = concatenate_splits([binary_batch(tree, f"{prefix}{b}.bin", len(class_names)) for b in TRAIN_BATCHES])
    test = binary_batch(tree, f"{prefix}test_batch.bin", len(class_names))
    source = f"CIFAR-10 binary version {tree.where(prefix.rstrip('/'))}"
    return make_dataset(name, class_names, train, test, source=source)
