"""Labels as a label file holds them (`LabelTable`) and what a label array may hold: hard class indices or soft
rows, checked (`check_labels`), with the markers of rows that carry no label (EXCLUDED, NO_ROW; see
lr_jax.data.label_files), and the noise rate of labels against a reference."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from lr_jax.data.dataset import DataError

SOFT_SUM_TOLERANCE = 1e-3  # how far a soft label's row may sum from 1
LISTED = 5  # how many offending entries a message names
EXCLUDED = -1  # a CSV's hard label meaning "leave this image out of training"
NO_ROW = -2  # (internal) a hard label for an image an export has no row for; soft: a row of NaN


class LabelFileError(DataError):
    """A label file that cannot be used; the one-line message names the file and the problem."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass(frozen=True)
class LabelTable:
    """Labels as a file holds them: hard (N,) int64 or soft (N, C) float32 rows, keyed by official index (row i is
    the image of official index i; `paths` and `indices` None), by image path (`paths[i]`, relative to the
    image-folder root) or, in a partial table, by official index (`indices[i]`)."""

    labels: np.ndarray
    where: str  # the file (and key), for messages
    paths: Optional[tuple] = None
    indices: Optional[np.ndarray] = None  # a partial table keyed by official index: row i is image indices[i]
    partial: bool = False  # an export: rows for one run's training images only (see the module docstring)

    @property
    def soft(self) -> bool:
        return self.labels.ndim == 2


def listed(items: Sequence) -> str:
    shown = ", ".join(str(item) for item in list(items)[:LISTED])
    return shown + (f" (+{len(items) - LISTED} more)" if len(items) > LISTED else "")


def check_labels(labels: np.ndarray, num_classes: int, where: str, markers: Sequence[int] = ()) -> np.ndarray:
    """Hard labels (N,) integers in [0, num_classes) -> int64; soft (N, num_classes) non-negative rows summing
    to 1 -> float32. Anything else is a LabelFileError naming `where`. `markers`: the negative hard labels also
    allowed (EXCLUDED, NO_ROW); with NO_ROW, soft rows of NaN too."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
            raise LabelFileError(f"{where}: hard labels must be integers, got {labels.dtype} "
                                 f"(soft labels are (N, {num_classes}) probabilities)")
        outside = np.flatnonzero(((labels < 0) & ~np.isin(labels, list(markers))) | (labels >= num_classes))
        if len(outside):
            hint = f" ({EXCLUDED}: leave the image out of training)" if EXCLUDED in markers else ""
            raise LabelFileError(f"{where}: {len(outside)} label(s) outside [0, {num_classes}){hint}, e.g. "
                                 f"{labels[outside[0]]} in row {outside[0]} (0-based)")
        return labels.astype(np.int64)
    if labels.ndim != 2 or labels.shape[1] != num_classes or not np.issubdtype(labels.dtype, np.floating):
        raise LabelFileError(f"{where}: expected hard labels (N,) integers or soft labels (N, {num_classes}) "
                             f"floats, got {labels.dtype} {labels.shape}")
    rows = ~np.isnan(labels).all(axis=1) if NO_ROW in markers else slice(None)
    if not np.all(np.isfinite(labels[rows])) or labels[rows].min(initial=0.0) < 0:
        raise LabelFileError(f"{where}: soft labels must be finite and non-negative")
    off = np.flatnonzero(np.abs(labels.sum(axis=1) - 1.0) > SOFT_SUM_TOLERANCE)
    off = off[~np.isnan(labels[off]).all(axis=1)] if NO_ROW in markers else off
    if len(off):
        raise LabelFileError(f"{where}: {len(off)} soft-label row(s) do not sum to 1, e.g. row {off[0]} (0-based) "
                             f"sums to {labels[off[0]].sum():.4f}")
    return labels.astype(np.float32)


def labelled(labels: np.ndarray) -> np.ndarray:
    """bool (N,): the rows that carry a label (not EXCLUDED, not NO_ROW / NaN)."""
    labels = np.asarray(labels)
    return ~np.isnan(labels).any(axis=1) if labels.ndim == 2 else labels >= 0


def noise_rate(labels: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of the labelled rows (`labelled`) that differ from `reference` (soft labels count by their
    argmax); 0.0 when no row is labelled."""
    labels = np.asarray(labels)
    known = labelled(labels)
    hard = labels.argmax(axis=1) if labels.ndim == 2 else labels
    return float(np.mean(hard[known] != np.asarray(reference)[known])) if known.any() else 0.0
