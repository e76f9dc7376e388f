"""Optional cache of decoded arrays and image ids (`--cache_dir`), keyed by the source's path, its files' sizes and
modification times, and CACHE_VERSION."""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from typing import Optional

import numpy as np

from lr_jax import files
from lr_jax.data.dataset import Dataset, make_dataset
from lr_jax.data.source_tree import walk_folder

CACHE_VERSION = 2  # bump when a reader's output changes for the same files (2: train_ids)


def source_stamp(path: str) -> str:
    """Hash of the size and modification time of `path` (a file) or of every file under it (a folder)."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        for rel, is_dir, stat in sorted(walk_folder(path, with_stat=True)):
            if not is_dir:
                digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    else:
        stat = os.stat(path)
        digest.update(f"{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_file(cache_dir: str, name: str, data_dir: str, options: str) -> str:
    """`cache_dir/<name>-<source id>-<content stamp>.npz`; the source id names the path and reader options."""
    source_id = hashlib.sha256(f"{os.path.abspath(data_dir)}\0{options}".encode()).hexdigest()[:12]
    stamp = hashlib.sha256(f"{CACHE_VERSION}\0{source_stamp(data_dir)}".encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"{name}-{source_id}-{stamp}.npz")


def load_cached(path: str) -> Optional[Dataset]:
    """The dataset saved at `path`, or None if there is none (or it cannot be read)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
    except (OSError, ValueError, EOFError):
        return None
    if "train_ids" not in arrays:  # written before ids were kept: read the source again
        return None
    test = (arrays["test_images"], arrays["test_labels"]) if "test_images" in arrays else None
    return make_dataset(
        str(arrays["name"]), arrays["class_names"].tolist(), (arrays["train_images"], arrays["train_labels"]), test,
        source=f"{arrays['source']} (decoded arrays from cache {path})", train_ids=arrays["train_ids"],
    )


def save_cached(path: str, dataset: Dataset) -> None:
    """Writes the dataset to `path` atomically and removes older entries for the same source and options."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    arrays = dict(
        name=np.array(dataset.name), class_names=np.array(list(dataset.class_names)), source=np.array(dataset.source),
        train_images=dataset.train_images, train_labels=dataset.train_labels, train_ids=dataset.train_ids,
    )
    if dataset.test_images is not None:
        arrays.update(test_images=dataset.test_images, test_labels=dataset.test_labels)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    os.fchmod(handle, files.umask_mode())  # mkstemp's 0600 would hide a shared cache from its other users
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    for stale in glob.glob(glob.escape(path.rsplit("-", 1)[0]) + "-*.npz"):
        if stale != path:
            os.unlink(stale)
