"""Input checks shared by the label tools: shapes, dtypes and ranges, failing with a one-line LabelsError."""

from __future__ import annotations

from typing import Optional

import numpy as np

SUM_TOLERANCE = 1e-3  # how far a probability row may sum from 1 (float32 softmax outputs sum to 1 +- 1e-6)


class LabelsError(ValueError):
    """Arrays the label tools cannot use; the one-line message names the argument and the problem."""


def _length(array: np.ndarray, name: str, n: Optional[int]) -> np.ndarray:
    if n is not None and len(array) != n:
        raise LabelsError(f"{name} has {len(array)} entries, expected {n} (one per image)")
    return array


def mask(values, name: str, n: Optional[int] = None) -> np.ndarray:
    """A 1-D boolean array (one entry per image)."""
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype != bool:
        raise LabelsError(f"{name} must be a 1-D boolean array, got {array.dtype} of shape {array.shape}")
    return _length(array, name, n)


def scores(values, name: str, n: Optional[int] = None) -> np.ndarray:
    """A 1-D real array without NaN, as float64."""
    array = np.asarray(values)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise LabelsError(f"{name} must be a 1-D array of numbers, got {array.dtype} of shape {array.shape}")
    array = array.astype(np.float64)
    if np.isnan(array).any():
        nan = np.flatnonzero(np.isnan(array))
        raise LabelsError(f"{name} holds {len(nan)} NaN value(s), e.g. at index {nan[0]}")
    return _length(array, name, n)


def hard_labels(values, name: str, num_classes: Optional[int] = None, n: Optional[int] = None) -> np.ndarray:
    """A 1-D integer array of class indices in [0, num_classes), as int64."""
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise LabelsError(f"{name} must be a 1-D integer array of class indices, got {array.dtype} of shape "
                          f"{array.shape}")
    top = np.inf if num_classes is None else num_classes
    outside = np.flatnonzero((array < 0) | (array >= top))
    if len(outside):
        raise LabelsError(f"{name}: {len(outside)} label(s) outside [0, {top}), e.g. {array[outside[0]]} at "
                          f"index {outside[0]}")
    return _length(array.astype(np.int64), name, n)


def probabilities(values, name: str = "probs", n: Optional[int] = None) -> np.ndarray:
    """An (N, C) float array of finite, non-negative rows that sum to 1 (within SUM_TOLERANCE)."""
    array = np.asarray(values)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating) or array.shape[1] < 2:
        raise LabelsError(f"{name} must be an (N, C) float array of class probabilities with C >= 2, "
                          f"got {array.dtype} of shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise LabelsError(f"{name} must be finite and non-negative")
    off = np.flatnonzero(np.abs(array.sum(axis=1, dtype=np.float64) - 1.0) > SUM_TOLERANCE)
    if len(off):
        raise LabelsError(f"{name}: {len(off)} row(s) do not sum to 1, e.g. row {off[0]} sums to "
                          f"{array[off[0]].sum():.4f} (probabilities, not logits, are expected)")
    return _length(array, name, n)


def probs_and_labels(probs, given) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N, C), given (N,) int64) checked against each other."""
    probs = probabilities(probs, "probs")
    return probs, hard_labels(given, "given", probs.shape[1], len(probs))
