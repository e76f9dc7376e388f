"""Data sources: one reader per format, and `load_dataset`, which picks the reader for `--data_dir`."""

from __future__ import annotations

import os
from typing import Optional

from lr_jax.data.dataset import DataError, Dataset, class_counts, make_dataset
from lr_jax.data.splits import Splits, make_splits, stratified_indices


def load_dataset(name: str, data_dir: Optional[str] = None, svhn_extra: bool = False) -> Dataset:
    """TFDS when `data_dir` is None, else the reader that matches what `data_dir` holds."""
    if data_dir is None:
        from lr_jax.data.tfds_source import load_tfds

        return load_tfds(name, extra=svhn_extra)
    if not os.path.exists(data_dir):
        raise DataError(f"--data_dir {data_dir}: no such file or folder")
    from lr_jax.data.image_folder import load_image_folder

    if os.path.isdir(os.path.join(data_dir, "train")):
        return load_image_folder(data_dir, name)
    raise DataError(
        f"--data_dir {data_dir}: no known layout found; looked for an image-folder tree "
        f"({data_dir}/train/<class>/<image>.png|jpg)"
    )


__all__ = [
    "DataError", "Dataset", "Splits", "class_counts", "load_dataset", "make_dataset", "make_splits",
    "stratified_indices",
]
