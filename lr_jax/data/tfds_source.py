"""Reader for TensorFlow Datasets (`cifar10`, `svhn_cropped`) through `tfds.data_source` (no TensorFlow needed)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from lr_jax.data.dataset import DataError, Dataset, concatenate_splits, make_dataset

TFDS_NAMES = {"cifar10": "cifar10", "svhn": "svhn_cropped"}


def read_split(source) -> tuple[np.ndarray, np.ndarray]:
    """All records of a TFDS data source as (images uint8, int32 labels), filled in place one record at a time."""
    count = len(source)
    if count == 0:
        raise DataError(f"{source}: the split is empty")
    first = np.asarray(source[0]["image"], np.uint8)
    images = np.empty((count, *first.shape), np.uint8)
    labels = np.empty(count, np.int32)
    for i in range(count):
        record = source[i]
        images[i] = record["image"]
        labels[i] = record["label"]
    return images, labels


def load_tfds(name: str, tfds_data_dir: Optional[str] = None, extra: bool = False) -> Dataset:
    """Reads the train (+ SVHN's `extra` when asked) and test splits into uint8 arrays, once."""
    import tensorflow_datasets as tfds

    if name not in TFDS_NAMES:
        raise DataError(f"{name}: no TFDS reader; pass --data_dir (TFDS is used for {', '.join(TFDS_NAMES)})")
    if extra and name != "svhn":
        raise DataError(f"--svhn_extra adds SVHN's extra split; it does not apply to {name}")
    tfds_name = TFDS_NAMES[name]
    builder = tfds.builder(tfds_name, data_dir=tfds_data_dir)
    class_names = builder.info.features["label"].names

    def split(split_name):
        return read_split(tfds.data_source(tfds_name, split=split_name, data_dir=tfds_data_dir))

    train = concatenate_splits([split("train"), split("extra")]) if extra else split("train")
    source = f"TFDS {tfds_name} (train{' + extra' if extra else ''}, test)"
    return make_dataset(name, class_names, train, split("test"), source=source)
