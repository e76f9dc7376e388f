"""SVHN .mat files (X (32, 32, 3, N), y (N, 1), 10 = digit 0): exact pixels, the extra split, bad files."""

import numpy as np
import pytest
import scipy.io

from data_fixtures import pack, truncate, write_svhn_mat
from lr_jax.data import DataError, load_dataset


@pytest.fixture(scope="module")
def digit_splits(lossless_cifar):
    """Real pixels with CIFAR labels read as digits, so every digit (and label 10 for digit 0) occurs."""
    x, y = lossless_cifar
    return {"train": (x[:100], y[:100]), "test": (x[100:130], y[100:130]), "extra": (x[130:170], y[130:170])}


def test_mat_files_give_exact_pixels_and_digit_labels(tmp_path, digit_splits):
    root = write_svhn_mat(tmp_path, digit_splits)
    assert 10 in scipy.io.loadmat(root / "train_32x32.mat")["y"]  # digit 0 really is stored as 10
    dataset = load_dataset("svhn", str(root))
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(dataset, f"{split}_images"), digit_splits[split][0])
        np.testing.assert_array_equal(getattr(dataset, f"{split}_labels"), digit_splits[split][1])
    assert dataset.class_names == [str(d) for d in range(10)] and dataset.train_labels.dtype == np.int32


def test_extra_split_is_appended_to_train_when_asked(tmp_path, digit_splits):
    archive = pack(write_svhn_mat(tmp_path / "src", digit_splits), tmp_path / "svhn.tar")
    dataset = load_dataset("svhn", str(archive), svhn_extra=True)
    train, extra = digit_splits["train"], digit_splits["extra"]
    np.testing.assert_array_equal(dataset.train_images, np.concatenate([train[0], extra[0]]))
    np.testing.assert_array_equal(dataset.train_labels, np.concatenate([train[1], extra[1]]))
    assert "train + extra" in dataset.source
    np.testing.assert_array_equal(dataset.train_ids, np.arange(len(train[1]) + len(extra[1])))  # extra's follow
    assert len(load_dataset("svhn", str(archive)).train_labels) == len(train[1])


def test_test_file_is_optional(tmp_path, digit_splits):
    dataset = load_dataset("svhn", str(write_svhn_mat(tmp_path, {"train": digit_splits["train"]})))
    assert dataset.test_images is None and len(dataset.train_labels) == 100


def test_extra_asked_but_absent(tmp_path, digit_splits):
    root = write_svhn_mat(tmp_path, {"train": digit_splits["train"]})
    with pytest.raises(DataError, match=f"{root / 'extra_32x32.mat'} is missing"):
        load_dataset("svhn", str(root), svhn_extra=True)


def test_extra_flag_on_another_dataset_is_refused(tmp_path, digit_splits):
    root = write_svhn_mat(tmp_path, {"train": digit_splits["train"]})
    with pytest.raises(DataError, match="--svhn_extra adds SVHN's extra split; it does not apply to cifar10"):
        load_dataset("cifar10", str(root), svhn_extra=True)


def save_mat(root, name, **variables):
    scipy.io.savemat(root / name, variables)


@pytest.mark.parametrize("variables, message", [
    (lambda x, y: {"images": x, "y": y}, "missing variable(s) ['X']; found ['images', 'y']"),
    (lambda x, y: {"X": x.astype(np.float64), "y": y}, "X is float64 (32, 32, 3, 100), expected uint8 (H, W, 3, N)"),
    (lambda x, y: {"X": x[:, :, :1], "y": y}, "X is uint8 (32, 32, 1, 100), expected uint8 (H, W, 3, N)"),
    (lambda x, y: {"X": x, "y": y[:-1]}, "y is (99, 1) but X holds 100 images"),
    (lambda x, y: {"X": x, "y": np.where(y == 10, 0, y)},
     "label values must lie in 1..10 (10 means digit 0); found [0]"),
    (lambda x, y: {"X": x, "y": y + 2}, "label values must lie in 1..10 (10 means digit 0); found [11, 12]"),
    (lambda x, y: {"X": x, "y": y + 0.5}, "y must hold whole numbers"),
])
def test_bad_mat_names_the_file_and_the_problem(tmp_path, digit_splits, variables, message):
    root = write_svhn_mat(tmp_path, {"train": digit_splits["train"]})
    original = scipy.io.loadmat(root / "train_32x32.mat")
    save_mat(root, "train_32x32.mat", **variables(original["X"], original["y"]))
    with pytest.raises(DataError) as error:
        load_dataset("svhn", str(root))
    assert str(root / "train_32x32.mat") in str(error.value) and message in str(error.value)


def test_truncated_mat(tmp_path, digit_splits):
    root = write_svhn_mat(tmp_path, digit_splits)
    truncate(root / "test_32x32.mat", 0.5)
    with pytest.raises(DataError, match="test_32x32.mat: not a readable .mat file"):
        load_dataset("svhn", str(root))
