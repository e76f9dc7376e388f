"""Reader for TensorFlow Datasets (`cifar10`, `svhn_cropped`) through `tfds.data_source` (no TensorFlow needed)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from lr_jax.data.dataset import Dataset, make_dataset

TFDS_NAMES = {"cifar10": "cifar10", "svhn": "svhn_cropped"}


def _read_split(source) -> tuple[np.ndarray, np.ndarray]:
    records = source.__getitems__(list(range(len(source)))) if len(source) else []
    images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
    labels = np.array([int(r["label"]) for r in records], np.int32)
    return images, labels


def load_tfds(name: str, tfds_data_dir: Optional[str] = None, extra: bool = False) -> Dataset:
    """Reads the train (+ `extra` for SVHN if asked) and test splits into uint8 arrays, once."""
    import tensorflow_datasets as tfds

    tfds_name = TFDS_NAMES[name]
    builder = tfds.builder(tfds_name, data_dir=tfds_data_dir)
    class_names = builder.info.features["label"].names
    train = _read_split(tfds.data_source(tfds_name, split="train", data_dir=tfds_data_dir))
    if extra:
        more = _read_split(tfds.data_source(tfds_name, split="extra", data_dir=tfds_data_dir))
        train = (np.concatenate([train[0], more[0]]), np.concatenate([train[1], more[1]]))
    test = _read_split(tfds.data_source(tfds_name, split="test", data_dir=tfds_data_dir))
    return make_dataset(name, class_names, train, test, source=f"TFDS {tfds_name}")
