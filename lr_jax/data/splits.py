"""Stratified, seeded subsets: the held-out validation split and the `--train_size` subset."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from lr_jax.data.dataset import DataError, Dataset


def stratified_indices(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` indices drawn per class in proportion to class frequency (largest remainders), sorted.

    Deterministic given `seed`; every class keeps at least its proportional share rounded down."""
    labels = np.asarray(labels)
    if size > len(labels):
        raise DataError(f"asked for {size} examples but only {len(labels)} are available")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    take = np.floor(exact).astype(int)
    remainder = size - take.sum()
    take[np.argsort(-(exact - take), kind="stable")[:remainder]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)


@dataclasses.dataclass
class Splits:
    """Train / validation / (optional) test arrays ready for the chain.

    `train_labels` are what the chain trains on: the replacement labels where a label file was given (the argmax
    of soft ones), else the dataset's. `dataset_train_labels` are always the dataset's own labels of the same
    training images (equal to `train_labels` without a file); `train_targets` the file's soft rows (None unless
    the file was soft). Validation and test always keep the dataset's labels. `train_ids` / `val_ids` are the
    images' ids (`Dataset.train_ids`), `train_index` / `val_index` their rows in the dataset's train split.
    The fields after `std` are None where Splits are built by hand (tests)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: Optional[np.ndarray]
    test_labels: Optional[np.ndarray]
    class_names: list
    mean: np.ndarray  # per-channel pixel mean of the training images, in [0, 1]
    std: np.ndarray
    train_ids: Optional[np.ndarray] = None
    val_ids: Optional[np.ndarray] = None
    train_index: Optional[np.ndarray] = None
    val_index: Optional[np.ndarray] = None
    dataset_train_labels: Optional[np.ndarray] = None
    train_targets: Optional[np.ndarray] = None  # (N, C) float32 soft labels from the label file

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def split_indices(dataset: Dataset, val_size: int, train_size: Optional[int], seed: int):
    """(training rows, validation rows) of the dataset's train split, drawn from the dataset's own labels only."""
    num_train = len(dataset.train_labels)
    if val_size >= num_train:
        raise DataError(
            f"--val_size={val_size} leaves no training images: the train split has only {num_train}"
        )
    val_idx = stratified_indices(dataset.train_labels, val_size, seed)
    rest = np.setdiff1d(np.arange(num_train), val_idx)
    if train_size is not None:
        if train_size > len(rest):
            raise DataError(
                f"--train_size={train_size} is more than the {len(rest)} training images left after "
                f"holding out --val_size={val_size}"
            )
        rest = rest[stratified_indices(dataset.train_labels[rest], train_size, seed + 1)]
    return rest, val_idx


def replacement_labels(train_labels: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Replacement labels aligned with the train split's rows, checked: hard int64 or soft float32, with the
    markers of a label file's rows that carry no label (label_files.EXCLUDED, NO_ROW, NaN soft rows)."""
    from lr_jax.data.label_files import EXCLUDED, NO_ROW, check_labels

    labels = check_labels(train_labels, dataset.num_classes, "--train_labels", markers=(EXCLUDED, NO_ROW))
    if len(labels) != len(dataset.train_labels):
        raise DataError(f"--train_labels: {len(labels)} labels, but {dataset.source or dataset.name} has "
                        f"{len(dataset.train_labels)} training images")
    return labels


def training_rows(rest: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`rest` (the rows left for training once validation is drawn) less the images the label file leaves out
    (EXCLUDED); a DataError where a training image has no row (an export of another run's split)."""
    from lr_jax.data.label_files import EXCLUDED, NO_ROW, listed

    unlabelled = np.isnan(labels).any(axis=1) if labels.ndim == 2 else labels == NO_ROW
    missing = rest[unlabelled[rest]]
    if len(missing):
        raise DataError(f"--train_labels has no rows for {len(missing)} of this run's training images "
                        f"({listed(ids[missing].tolist())}); a label export covers the training images of the run "
                        f"it came from: use that run's --seed, --val_size and --train_size")
    kept = rest if labels.ndim == 2 else rest[labels[rest] != EXCLUDED]
    if not len(kept):
        raise DataError(f"--train_labels leaves every training image out (label {EXCLUDED})")
    return kept


def make_splits(dataset: Dataset, val_size: int, train_size: Optional[int], seed: int,
                train_labels: Optional[np.ndarray] = None) -> Splits:
    """Holds out a stratified validation split from train, then optionally keeps `train_size` of the rest.

    Both are drawn from the dataset's own labels, so a seed holds out the same images with or without
    `train_labels`: replacement labels (hard (N,) ints or soft (N, C) rows) aligned with the train split's rows,
    which then label the training images (see Splits). Training images labelled label_files.EXCLUDED are then
    left out of training (validation unchanged); ones without a row (NO_ROW) are an error."""
    rest, val_idx = split_indices(dataset, val_size, train_size, seed)
    ids = np.arange(len(dataset.train_labels)) if dataset.train_ids is None else dataset.train_ids
    hard, soft = dataset.train_labels, None
    if train_labels is not None:
        labels = replacement_labels(train_labels, dataset)
        rest = training_rows(rest, labels, ids)
        hard, soft = (labels.argmax(axis=1), labels) if labels.ndim == 2 else (labels, None)
        hard = hard.astype(np.int32)
    train_images = dataset.train_images[rest]
    mean, std = channel_stats(train_images)
    return Splits(
        train_images=train_images,
        train_labels=hard[rest],
        val_images=dataset.train_images[val_idx],
        val_labels=dataset.train_labels[val_idx],
        test_images=dataset.test_images,
        test_labels=dataset.test_labels,
        class_names=list(dataset.class_names),
        mean=mean,
        std=std,
        train_ids=ids[rest],
        val_ids=ids[val_idx],
        train_index=rest,
        val_index=val_idx,
        dataset_train_labels=dataset.train_labels[rest],
        train_targets=None if soft is None else soft[rest],
    )


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units, without a float copy."""
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, images.shape[-1]).astype(np.float64)
        total += block.sum(0)
        squares += (block**2).sum(0)
    count = images.size // images.shape[-1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return (mean / 255.0).astype(np.float32), np.maximum(std / 255.0, 1e-3).astype(np.float32)
