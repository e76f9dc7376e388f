"""CIFAR-10 python and binary versions, as folders and as .tar.gz: exact pixels and labels, and bad batches."""

import os
import pickle
import tempfile
import warnings

import numpy as np
import pytest

from data_fixtures import CIFAR_CLASSES, pack, truncate, write_cifar_binary, write_cifar_python
from lr_jax.data import DataError, load_dataset


@pytest.fixture(scope="module")
def cifar_splits(lossless_cifar):
    x, y = lossless_cifar
    return (x[:100], y[:100]), (x[100:120], y[100:120])


def assert_exact(dataset, train, test):
    np.testing.assert_array_equal(dataset.train_images, train[0])
    np.testing.assert_array_equal(dataset.train_labels, train[1])
    np.testing.assert_array_equal(dataset.test_images, test[0])
    np.testing.assert_array_equal(dataset.test_labels, test[1])
    assert dataset.train_labels.dtype == np.int32 and dataset.train_images.dtype == np.uint8
    assert dataset.class_names == CIFAR_CLASSES


@pytest.mark.parametrize("packed", ["folder", "parent folder", "tar.gz"])
@pytest.mark.parametrize("version", ["python", "binary"])
def test_original_versions_give_the_exact_pixels_in_order(tmp_path, cifar_splits, version, packed):
    writer = write_cifar_python if version == "python" else write_cifar_binary
    batches = writer(tmp_path / "src", *cifar_splits)
    data_dir = {"folder": batches, "parent folder": tmp_path / "src",
                "tar.gz": pack(tmp_path / "src", tmp_path / f"cifar-10-{version}.tar.gz")}[packed]
    dataset = load_dataset("cifar10", str(data_dir))
    assert_exact(dataset, *cifar_splits)
    assert f"CIFAR-10 {version} version" in dataset.source


@pytest.mark.parametrize("protocol", [2, 5])
def test_python_batches_of_any_pickle_protocol(tmp_path, cifar_splits, protocol):
    batches = write_cifar_python(tmp_path, *cifar_splits, protocol=protocol)
    assert_exact(load_dataset("cifar10", str(batches)), *cifar_splits)


def test_python_batches_naming_numpy_core_as_the_originals_do(tmp_path, cifar_splits):
    batches = write_cifar_python(tmp_path, *cifar_splits, protocol=2)
    for member in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = (batches / member).read_bytes()
        assert b"numpy._core.multiarray" in data
        (batches / member).write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy 2 must not warn about the old numpy.core names
        assert_exact(load_dataset("cifar10", str(batches)), *cifar_splits)


def test_archive_is_read_without_unpacking(tmp_path, cifar_splits, monkeypatch):
    write_cifar_python(tmp_path / "src", *cifar_splits)
    archive = pack(tmp_path / "src", tmp_path / "in" / "cifar-10-python.tar.gz")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    load_dataset("cifar10", str(archive))
    assert os.listdir(tmp_path / "in") == ["cifar-10-python.tar.gz"] and not os.listdir(tmp_path / "tmp")


def edited(member, edit):
    return {member: edit}


@pytest.mark.parametrize("member, edit, message", [
    ("data_batch_2", lambda b: {k: v for k, v in b.items() if k != b"labels"}, "missing key(s) ['labels']"),
    ("data_batch_3", lambda b: {**b, b"data": b[b"data"][:, :3071]}, "expected uint8 (N, 3072)"),
    ("data_batch_4", lambda b: {**b, b"data": b[b"data"].astype(np.float32)}, "b'data' is float32"),
    ("test_batch", lambda b: {**b, b"labels": b[b"labels"][:-1]}, "20 images but labels of shape (19,)"),
    ("data_batch_5", lambda b: {**b, b"labels": [10] + b[b"labels"][1:]}, "label values must lie in [0, 9]"),
    ("batches.meta", lambda b: {b"names": b[b"label_names"]}, "missing key(s) ['label_names']"),
    ("data_batch_1", lambda b: [b], "holds a list, expected a dict"),
])
def test_bad_python_batch_names_the_file_and_the_problem(tmp_path, cifar_splits, member, edit, message):
    batches = write_cifar_python(tmp_path, *cifar_splits, batch_edits=edited(member, edit))
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", str(batches))
    assert str(batches / member) in str(error.value) and message in str(error.value)


def test_pickle_that_would_run_code_is_refused(tmp_path, cifar_splits):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    batches = write_cifar_python(tmp_path, *cifar_splits, batch_edits=edited("data_batch_1", lambda b: Exploit()))
    with pytest.raises(DataError, match="refers to posix.mkdir"):
        load_dataset("cifar10", str(batches))
    assert not marker.exists()


def test_missing_batch_is_named(tmp_path, cifar_splits):
    batches = write_cifar_python(tmp_path, *cifar_splits)
    (batches / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4 is missing .*data_batch_1..5, test_batch and batches.meta"):
        load_dataset("cifar10", str(batches))


def test_truncated_binary_batch(tmp_path, cifar_splits):
    batches = write_cifar_binary(tmp_path, *cifar_splits)
    truncate(batches / "data_batch_2.bin", 0.63)
    with pytest.raises(DataError, match=r"data_batch_2.bin: \d+ bytes is not a whole number of 3073-byte records"):
        load_dataset("cifar10", str(batches))


def test_binary_label_out_of_range_names_the_file(tmp_path, cifar_splits):
    batches = write_cifar_binary(tmp_path, *cifar_splits)
    data = bytearray((batches / "test_batch.bin").read_bytes())
    data[3073 * 5] = 12  # label byte of the sixth record
    (batches / "test_batch.bin").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"test_batch.bin: label values must lie in \[0, 9\], found 0..12"):
        load_dataset("cifar10", str(batches))


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_archive(tmp_path, cifar_splits, damage):
    write_cifar_python(tmp_path / "src", *cifar_splits)
    archive = pack(tmp_path / "src", tmp_path / "cifar-10-python.tar.gz")
    if damage == "truncated":
        truncate(archive, 0.6)
    else:
        data = bytearray(archive.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
        archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{archive}: truncated or corrupt gzip archive"):
        load_dataset("cifar10", str(archive))


def test_class_without_training_images(tmp_path, cifar_splits):
    (x, y), test = cifar_splits
    keep = y != 3
    batches = write_cifar_python(tmp_path, (x[keep], y[keep]), test)
    with pytest.raises(DataError, match=f"{batches}: no training images of class 'cat' \\(id 3\\)"):
        load_dataset("cifar10", str(batches))


def test_unrelated_pickle_is_not_a_cifar_batch(tmp_path, cifar_splits):
    batches = write_cifar_python(tmp_path, *cifar_splits)
    (batches / "data_batch_1").write_bytes(pickle.dumps({b"data": "text"})[:-3])
    with pytest.raises(DataError, match="data_batch_1: not a readable CIFAR pickle"):
        load_dataset("cifar10", str(batches))
