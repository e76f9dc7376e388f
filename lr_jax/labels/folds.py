"""K-fold cross-validation for out-of-sample probabilities: stratified fold assignment, each fold's train and
held-out images, and the assembly of the K held-out predictions into one (N, C) array, checked so that every image
is predicted exactly once and never by a model that trained on it."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from lr_jax.labels import checks

LISTED = 5  # how many offending images a message names


class FoldsError(checks.LabelsError):
    """--folds cannot split these labels, or fold predictions do not cover the images exactly once; one line."""


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def assign_folds(given, k: int, seed: int, class_names: Optional[Sequence[str]] = None) -> np.ndarray:
    """int64 (N,): each image's fold in [0, k), stratified by given label and the same for the same seed. Each
    class's images, shuffled by `seed`, are dealt round-robin to the folds, the deal continuing from one class to
    the next: every fold holds N//k or N//k + 1 images, and every class's count per fold differs by at most 1.
    FoldsError (a ValueError) when k < 2 or k exceeds the smallest present class's count."""
    given = checks.hard_labels(given, "given")
    if not _is_integer(k) or k < 2:
        raise FoldsError(f"--folds {k}: out-of-fold probabilities need a whole number of at least 2 folds")
    if not len(given):
        raise FoldsError(f"--folds {k}: there are no images to split")
    classes, counts = np.unique(given, return_counts=True)
    smallest = int(np.argmin(counts))
    if k > counts[smallest]:
        c = int(classes[smallest])
        name = f" ({class_names[c]})" if class_names is not None and c < len(class_names) else ""
        raise FoldsError(f"--folds {k} is larger than class {c}{name}'s {counts[smallest]} images; every fold "
                         f"must hold each class")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(given == c)) for c in classes])
    folds = np.empty(len(given), np.int64)
    folds[order] = np.arange(len(given)) % k
    return folds


def fold_split(folds, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of `fold`: its model trains on every other fold and predicts this one."""
    folds = np.asarray(folds)
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)


def _fold_indices(fold: int, indices, n: int) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 1 or not (np.issubdtype(indices.dtype, np.integer) or indices.size == 0):
        raise FoldsError(f"fold {fold}: indices must be a 1-D integer array, got {indices.dtype} {indices.shape}")
    outside = indices[(indices < 0) | (indices >= n)]
    if len(outside):
        raise FoldsError(f"fold {fold}: image index {outside[0]} is outside [0, {n})")
    values, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        raise FoldsError(f"fold {fold} predicts image {values[counts > 1][0]} more than once")
    return indices.astype(np.int64)


def out_of_fold(fold_probs: Mapping[int, tuple], n: int, folds=None) -> np.ndarray:
    """(n, C) probabilities assembled from {fold: (indices, probs (len(indices), C))}. FoldsError when an image is
    predicted twice or never, or (with `folds`, the assignment) when a fold's model predicts an image outside its
    fold, i.e. one it trained on."""
    if not fold_probs:
        raise FoldsError("no fold predictions to assemble")
    if not _is_integer(n) or n < 1:
        raise FoldsError(f"n must be the number of images, a positive whole number; got {n!r}")
    if folds is not None:
        folds = checks.hard_labels(folds, "folds", n=n)
    owner = np.full(n, -1, np.int64)
    parts = []
    for fold in sorted(fold_probs):
        indices, probs = fold_probs[fold]
        indices = _fold_indices(fold, indices, n)
        probs = checks.probabilities(probs, f"fold {fold}'s probs", len(indices))
        twice = indices[owner[indices] >= 0]
        if len(twice):
            raise FoldsError(f"image {twice[0]} is predicted by folds {owner[twice[0]]} and {fold} "
                             f"({len(twice)} image(s) predicted twice)")
        if folds is not None and (folds[indices] != fold).any():
            image = indices[folds[indices] != fold][0]
            raise FoldsError(f"fold {fold}'s model predicts image {image}, which it trained on (image {image} is "
                             f"in fold {folds[image]})")
        owner[indices] = fold
        parts.append((indices, probs))
    if len({probs.shape[1] for _, probs in parts}) > 1:
        raise FoldsError(f"the folds predict different numbers of classes: {sorted({p.shape[1] for _, p in parts})}")
    never = np.flatnonzero(owner < 0)
    if len(never):
        raise FoldsError(f"{len(never)} image(s) are predicted by no fold, e.g. "
                         f"{', '.join(map(str, never[:LISTED]))}")
    out = np.zeros((n, parts[0][1].shape[1]), np.result_type(*[probs.dtype for _, probs in parts]))
    for indices, probs in parts:
        out[indices] = probs
    return out
