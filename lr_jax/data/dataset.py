"""The in-memory dataset every reader returns, and the checks it must pass before training."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np


class DataError(ValueError):
    """Input data that cannot be used; the message names the file or flag and what is wrong."""


@dataclasses.dataclass
class Dataset:
    """Whole splits as host arrays: images (N, H, W, C) uint8, labels (N,) int32, and the class names.

    `train_ids[j]` names training image j for label files and exports: its official index (int64: the position in
    the original files' order, SVHN's extra split continuing after train) or, for image folders, its path relative
    to the tree's root ('train/cat/0001.jpg', str)."""

    name: str
    class_names: Sequence[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: Optional[np.ndarray] = None
    test_labels: Optional[np.ndarray] = None
    source: str = ""  # which reader and from where, for the log
    train_ids: Optional[np.ndarray] = None  # make_dataset always sets it

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train_images.shape[1:])


def check_split(images: np.ndarray, labels: np.ndarray, num_classes: int, where: str) -> None:
    """Raises DataError unless images are (N, H, W, C) uint8 and labels (N,) integers in [0, num_classes)."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(f"{where}: images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} images but labels of shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{where}: label values must lie in [0, {num_classes - 1}], found {labels.min()}..{labels.max()}"
        )


def make_dataset(name, class_names, train, test=None, source="", train_ids=None) -> Dataset:
    """Checks and packs (images, labels) pairs into a Dataset with int32 labels; `train_ids` None: the official
    index 0..N-1 (readers that keep the original files' order)."""
    class_names = list(class_names)
    check_split(*train, len(class_names), f"{source or name} train split")
    train_ids = check_ids(np.arange(len(train[1])) if train_ids is None else train_ids, len(train[1]),
                          f"{source or name} train split")
    if test is not None:
        check_split(*test, len(class_names), f"{source or name} test split")
        if test[0].shape[1:] != train[0].shape[1:]:
            raise DataError(
                f"{source or name}: test images are {test[0].shape[1:]} but train images {train[0].shape[1:]}"
            )
    return Dataset(
        name=name,
        class_names=class_names,
        train_images=train[0],
        train_labels=train[1].astype(np.int32),
        test_images=None if test is None else test[0],
        test_labels=None if test is None else test[1].astype(np.int32),
        source=source,
        train_ids=train_ids,
    )


def check_ids(ids, count: int, where: str) -> np.ndarray:
    """`count` distinct image ids as int64 (official indices) or str (paths); DataError otherwise."""
    ids = np.asarray(ids)
    if np.issubdtype(ids.dtype, np.integer):
        ids = ids.astype(np.int64)
    elif ids.dtype.kind != "U" and not (ids.dtype == object and all(isinstance(i, str) for i in ids.tolist())):
        raise DataError(f"{where}: image ids must be integers or paths, got {ids.dtype}")
    else:
        ids = ids.astype(str)
    if ids.shape != (count,):
        raise DataError(f"{where}: {count} images but image ids of shape {ids.shape}")
    if len(np.unique(ids)) != count:
        raise DataError(f"{where}: image ids are not distinct")
    return ids


def class_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    """How many examples of each class."""
    return np.bincount(labels, minlength=num_classes).tolist()


def concatenate_splits(parts) -> tuple[np.ndarray, np.ndarray]:
    """One (images, int32 labels) pair from several, in order (e.g. CIFAR's five train batches)."""
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int32)


def check_every_class(dataset: Dataset, where: str) -> None:
    """Raises DataError naming the classes that have no training image."""
    counts = class_counts(dataset.train_labels, dataset.num_classes)
    empty = [f"{name!r} (id {i})" for i, (name, n) in enumerate(zip(dataset.class_names, counts)) if n == 0]
    if empty:
        raise DataError(f"{where}: no training images of class {', '.join(empty)}")


def summary_lines(dataset: Dataset) -> list[str]:
    """What was read, for the log: the reader and source, then images per split and per class."""
    lines = [f"read {dataset.name} with reader: {dataset.source}"]
    for split, labels in (("train", dataset.train_labels), ("test", dataset.test_labels)):
        if labels is None:
            lines.append(f"  {split}: none")
            continue
        counts = class_counts(labels, dataset.num_classes)
        per_class = ", ".join(f"{name} {n}" for name, n in zip(dataset.class_names, counts))
        lines.append(f"  {split}: {len(labels)} images of shape {dataset.image_shape}; per class: {per_class}")
    return lines
