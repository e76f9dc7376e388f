"""Reader for SVHN cropped digits as the original train_32x32.mat / test_32x32.mat / extra_32x32.mat files."""

from __future__ import annotations

import io

import numpy as np

from lr_jax.data.dataset import DataError, Dataset, concatenate_splits, make_dataset
from lr_jax.data.source_tree import SourceTree

CLASS_NAMES = [str(digit) for digit in range(10)]
FILES = "train_32x32.mat, optional test_32x32.mat and extra_32x32.mat"


def mat_split(tree: SourceTree, rel: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W, 3) uint8, labels 0..9) from a .mat with X (H, W, 3, N) uint8 and y (N, 1) in 1..10."""
    import scipy.io

    where = tree.where(rel)
    if not tree.has_file(rel):
        raise DataError(f"{where} is missing (SVHN cropped digits come as {FILES})")
    item = tree.item(rel)
    try:
        contents = scipy.io.loadmat(io.BytesIO(item) if isinstance(item, bytes) else item)
    except NotImplementedError:  # scipy's message for MATLAB v7.3 (HDF5) files
        raise DataError(f"{where}: a MATLAB v7.3 (HDF5) file; save it in the v5 format (-v7) as SVHN ships") from None
    except Exception as error:  # truncated or foreign files raise many types
        raise DataError(f"{where}: not a readable .mat file ({error})") from None
    missing = [k for k in ("X", "y") if k not in contents]
    if missing:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise DataError(f"{where}: missing variable(s) {missing}; found {found}")
    x, y = contents["X"], contents["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise DataError(f"{where}: X is {x.dtype} {x.shape}, expected uint8 (H, W, 3, N)")
    if y.shape not in ((x.shape[3], 1), (x.shape[3],)):
        raise DataError(f"{where}: y is {y.shape} but X holds {x.shape[3]} images; expected y of shape (N, 1)")
    y = y.reshape(-1)
    if not np.issubdtype(y.dtype, np.number) or (not np.issubdtype(y.dtype, np.integer) and np.any(np.mod(y, 1) != 0)):
        raise DataError(f"{where}: y must hold whole numbers, got {y.dtype}")
    bad = (y < 1) | (y > 10)
    if bad.any():
        raise DataError(
            f"{where}: label values must lie in 1..10 (10 means digit 0); found {np.unique(y[bad])[:10].tolist()}"
        )
    labels = np.where(y == 10, 0, y).astype(np.int32)
    return np.ascontiguousarray(np.moveaxis(x, 3, 0)), labels


def read_svhn_mat(tree: SourceTree, prefix: str, name: str, extra: bool = False) -> Dataset:
    """train_32x32.mat (+ extra_32x32.mat appended when `extra`) and test_32x32.mat when present; ids are the
    index in the file, extra's continuing after train's."""
    train = mat_split(tree, f"{prefix}train_32x32.mat")
    if extra:
        train = concatenate_splits([train, mat_split(tree, f"{prefix}extra_32x32.mat")])
    test_rel = f"{prefix}test_32x32.mat"
    test = mat_split(tree, test_rel) if tree.has_file(test_rel) else None
    parts = "train" + (" + extra" if extra else "") + (", test" if test is not None else "")
    source = f"SVHN .mat files ({parts}) {tree.where(prefix.rstrip('/'))}"
    return make_dataset(name, CLASS_NAMES, train, test, source=source)
