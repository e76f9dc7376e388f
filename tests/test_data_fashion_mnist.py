"""IDX files (Fashion-MNIST): exact pixels from files in the original format, the Debian copy, bad files."""

import gzip
import os

import numpy as np
import pytest

from data_fixtures import FASHION_CLASSES, truncate, write_idx, write_idx_dataset
from lr_jax import data as data_lib
from lr_jax.data import DataError, load_dataset

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist installs the IDX files


@pytest.fixture(scope="module")
def grey_splits(lossless_cifar):
    """28x28 grey crops of real CIFAR pixels (the green channel), with their labels."""
    x, y = lossless_cifar
    grey = x[:, 2:30, 2:30, 1:2]
    return (grey[:100], y[:100]), (grey[100:130], y[100:130])


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_give_exact_pixels(tmp_path, grey_splits, gz):
    dataset = load_dataset("fashion_mnist", str(write_idx_dataset(tmp_path, *grey_splits, gz=gz)))
    (train_x, train_y), (test_x, test_y) = grey_splits
    np.testing.assert_array_equal(dataset.train_images, train_x)
    np.testing.assert_array_equal(dataset.train_labels, train_y)
    np.testing.assert_array_equal(dataset.test_images, test_x)
    np.testing.assert_array_equal(dataset.test_labels, test_y)
    assert dataset.image_shape == (28, 28, 1) and dataset.class_names == FASHION_CLASSES


def debian_copy():
    if not os.path.isdir(DEBIAN_DIR):
        pytest.skip(f"{DEBIAN_DIR} is absent (apt-get install dataset-fashion-mnist; .ci/run installs it)")


def test_debian_copy_is_the_default(monkeypatch):
    debian_copy()
    lines = []
    dataset = load_dataset("fashion_mnist", log=lines.append)
    assert dataset.train_images.shape == (60000, 28, 28, 1) and dataset.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(dataset.train_labels).tolist() == [6000] * 10
    assert np.bincount(dataset.test_labels).tolist() == [1000] * 10
    assert DEBIAN_DIR in lines[0] and "Shirt 6000" in lines[1] and "T-shirt/top 1000" in lines[2]
    # The official first training labels (Ankle boot, T-shirt/top, T-shirt/top, Dress).
    assert dataset.train_labels[:4].tolist() == [9, 0, 0, 3]


def test_missing_default_folder_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(data_lib.DEFAULT_DATA_DIRS, "fashion_mnist", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="absent; install it with `apt-get install dataset-fashion-mnist`"):
        load_dataset("fashion_mnist")


def rewrite(path, transform):
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(transform(data)))


@pytest.mark.parametrize("member, transform, message", [
    ("train-images-idx3-ubyte.gz", lambda d: b"\x00\x00\x09" + d[3:], "not an IDX file of unsigned bytes with 3"),
    ("train-images-idx3-ubyte.gz", lambda d: d[:-5], "holds 78395 (truncated or corrupt)"),
    ("t10k-labels-idx1-ubyte.gz", lambda d: d[:4] + (29).to_bytes(4, "big") + d[8:-1],
     "30 images but labels of shape (29,)"),
    ("train-labels-idx1-ubyte.gz", lambda d: d[:-1] + b"\x0a", "label values must lie in [0, 9], found 0..10"),
])
def test_bad_idx_names_the_file_and_the_problem(tmp_path, grey_splits, member, transform, message):
    root = write_idx_dataset(tmp_path, *grey_splits)
    rewrite(root / member, transform)
    with pytest.raises(DataError) as error:
        load_dataset("fashion_mnist", str(root))
    assert str(root / member.replace(".gz", "")) in str(error.value) and message in str(error.value)


def test_corrupt_gzip(tmp_path, grey_splits):
    root = write_idx_dataset(tmp_path, *grey_splits)
    truncate(root / "train-images-idx3-ubyte.gz", 0.5)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: truncated or corrupt gzip file"):
        load_dataset("fashion_mnist", str(root))


def test_missing_labels_file(tmp_path, grey_splits):
    root = write_idx_dataset(tmp_path, *grey_splits)
    (root / "train-labels-idx1-ubyte.gz").unlink()
    write_idx(root / "unrelated", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\[.gz\] is missing"):
        load_dataset("fashion_mnist", str(root))
