"""The data package's public API: `load_dataset` (the reader for `--data_dir`, TFDS, or the cache) and splitting."""

from __future__ import annotations

import os
import warnings
from typing import Callable, Optional

from lr_jax.data.dataset import (
    DataError, Dataset, check_every_class, class_counts, make_dataset, summary_lines,
)
from lr_jax.data.formats import LAYOUTS, LOOKED_FOR, MAX_LAYOUT_DEPTH, SVHN_MAT, Layout, find_layout, read_source
from lr_jax.data.splits import Splits, make_splits, stratified_indices

DEFAULT_DATA_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}  # Debian's dataset-fashion-mnist


def load_dataset(
    name: str,
    data_dir: Optional[str] = None,
    svhn_extra: bool = False,
    cache_dir: Optional[str] = None,
    log: Optional[Callable[[str], None]] = None,
    tfds_data_dir: Optional[str] = None,
) -> Dataset:
    """TFDS when `data_dir` is None (Fashion-MNIST: Debian's IDX folder), else the reader for what `data_dir` holds.

    With `cache_dir`, decoded arrays of a `data_dir` source are kept there and reused while the source's file
    sizes and modification times are unchanged (TFDS keeps its own prepared copy, in `tfds_data_dir`; None:
    TFDS_DATA_DIR or ~/tensorflow_datasets). `log` receives the reader, and the images per split and per class."""
    if svhn_extra and name != "svhn":
        raise DataError(f"--svhn_extra adds SVHN's extra split; it does not apply to {name}")
    if data_dir is None and name in DEFAULT_DATA_DIRS:
        data_dir = DEFAULT_DATA_DIRS[name]
        if not os.path.exists(data_dir):
            raise DataError(
                f"{name}: --data_dir not given and the default folder {data_dir} is absent; install it with "
                "`apt-get install dataset-fashion-mnist` or pass --data_dir"
            )
    if data_dir is not None and tfds_data_dir is not None:
        raise DataError(f"--tfds_data_dir applies only where the data come from TFDS, but {name} reads {data_dir}")
    if data_dir is None:
        from lr_jax.data.tfds_source import load_tfds

        dataset = load_tfds(name, tfds_data_dir, extra=svhn_extra)
    elif not os.path.exists(data_dir):
        raise DataError(f"--data_dir {data_dir}: no such file or folder")
    elif cache_dir:
        dataset = read_through_cache(name, data_dir, svhn_extra, cache_dir)
    else:
        dataset = read_source(name, data_dir, svhn_extra)
    for line in summary_lines(dataset) if log else ():
        log(line)
    return dataset


def read_through_cache(name: str, data_dir: str, svhn_extra: bool, cache_dir: str) -> Dataset:
    """The cached arrays of `data_dir` where current, else the source read and then cached."""
    from lr_jax.data import cache

    path = cache.cache_file(cache_dir, name, data_dir, f"svhn_extra={svhn_extra}")
    dataset = cache.load_cached(path)
    if dataset is None:
        dataset = read_source(name, data_dir, svhn_extra)
        try:
            cache.save_cached(path, dataset)
        except OSError as error:  # a full disk or a read-only folder costs speed, not the run
            warnings.warn(f"--cache_dir {cache_dir}: could not write {path} ({error}); continuing without it")
    return dataset


__all__ = [
    "DEFAULT_DATA_DIRS", "DataError", "Dataset", "LAYOUTS", "LOOKED_FOR", "Layout", "MAX_LAYOUT_DEPTH", "SVHN_MAT",
    "Splits", "check_every_class", "class_counts", "find_layout", "load_dataset", "make_dataset", "make_splits",
    "read_source", "stratified_indices",
]
