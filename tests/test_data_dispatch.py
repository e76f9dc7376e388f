"""`load_dataset`: reader chosen by what --data_dir holds, one array layout for all sources, the log, the cache,
and the CLI refusing bad input before writing anything (TFDS: test_data_tfds.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from data_fixtures import (
    CIFAR_CLASSES, pack, write_cifar_binary, write_cifar_python, write_idx_dataset, write_image_tree, write_svhn_mat,
)
from lr_jax.data import DataError, load_dataset
from lr_jax.experiments import runner

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sources(tmp_path_factory, lossless_cifar):
    """One small --data_dir of every supported kind, built from real pixels: {kind: (dataset name, path)}."""
    x, y = lossless_cifar
    train, test = (x[:100], y[:100]), (x[100:200], y[100:200])
    root = tmp_path_factory.mktemp("sources")
    tree = write_image_tree(root / "png", {"train": train, "test": test})
    return {
        "cifar python folder": ("cifar10", write_cifar_python(root / "py", train, test)),
        "cifar python tar.gz": ("cifar10", pack(root / "py", root / "cifar-10-python.tar.gz")),
        "cifar binary tar.gz": ("cifar10", pack(write_cifar_binary(root / "bin", train, test), root / "bin.tar.gz",
                                                top="cifar-10-batches-bin")),
        "svhn mat": ("svhn", write_svhn_mat(root / "svhn", {"train": train, "test": test})),
        "idx": ("fashion_mnist", write_idx_dataset(root / "idx", (x[:100, 2:30, 2:30, :1], y[:100]))),
        "png folder": ("cifar10", tree),
        "png zip": ("cifar10", pack(tree, root / "png.zip")),
        "jpeg tar": ("cifar10", pack(write_image_tree(root / "jpg", {"train": train}, fmt="jpeg"), root / "jpg.tar")),
    }


SOURCE_KINDS = ["cifar python folder", "cifar python tar.gz", "cifar binary tar.gz", "svhn mat", "idx", "png folder",
                "png zip", "jpeg tar"]
READERS = {"cifar python": "CIFAR-10 python version", "cifar binary": "CIFAR-10 binary version",
           "svhn": "SVHN .mat files", "idx": "IDX files", "png": "image folder tree", "jpeg": "image folder tree"}


def assert_common_layout(dataset):
    for images, labels in ((dataset.train_images, dataset.train_labels), (dataset.test_images, dataset.test_labels)):
        if images is None:
            continue
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] in (1, 3)
        assert labels.dtype == np.int32 and labels.shape == (len(images),)
        assert 0 <= labels.min() and labels.max() < dataset.num_classes
    assert all(isinstance(name, str) for name in dataset.class_names) and dataset.num_classes == 10


def expected_ids(kind, labels):
    """Official indices for the readers that keep the original order; for image folders each image's path, class
    by class ('train/<class>/<k>.png', k counting that class's images in order)."""
    if not kind.startswith(("png", "jpeg")):
        return np.arange(len(labels))
    suffix = "jpeg" if kind.startswith("jpeg") else "png"
    return np.asarray([f"train/{CIFAR_CLASSES[c]}/{k:04d}.{suffix}" for c in range(10)
                       for k in range(int(np.sum(labels == c)))])


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_every_reader_names_its_training_images(sources, lossless_cifar, kind):
    """Ids through every reader, and the image each id names: official index i is original image i; an image
    folder's path is the file that image was written to (write_image_tree numbers each class's images in order)."""
    name, path = sources[kind]
    dataset = load_dataset(name, str(path))
    x, y = lossless_cifar
    ids = dataset.train_ids
    np.testing.assert_array_equal(ids, expected_ids(kind, y[:100]))
    if ids.dtype.kind == "U":
        rows = [np.flatnonzero(y[:100] == CIFAR_CLASSES.index(p.split("/")[1]))[int(p.split("/")[2].split(".")[0])]
                for p in ids]
        error = np.abs(dataset.train_images.astype(float) - x[rows]).mean()
        assert error == 0 if kind.startswith("png") else error < 10, error  # JPEG: close, not equal
    else:
        assert ids.dtype == np.int64
        np.testing.assert_array_equal(dataset.train_labels, y[:100][ids])
        if kind != "idx":
            np.testing.assert_array_equal(dataset.train_images, x[:100][ids])


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_every_source_has_one_layout_and_logs_reader_and_counts(sources, kind):
    name, path = sources[kind]
    lines = []
    dataset = load_dataset(name, str(path), log=lines.append)
    assert_common_layout(dataset)
    reader = next(v for k, v in READERS.items() if kind.startswith(k))
    assert lines[0] == f"read {name} with reader: {dataset.source}" and reader in lines[0] and str(path) in lines[0]
    counts = np.bincount(dataset.train_labels, minlength=10)
    shape = dataset.image_shape
    assert lines[1].startswith(f"  train: {len(dataset.train_labels)} images of shape {shape}; per class: ")
    assert lines[1].endswith(f"{dataset.class_names[-1]} {counts[-1]}")


def test_missing_path():
    with pytest.raises(DataError, match="--data_dir /no/such/place: no such file or folder"):
        load_dataset("cifar10", "/no/such/place")


def test_folder_without_known_layout_lists_what_was_looked_for(tmp_path, sources):
    (tmp_path / "notes.txt").write_text("hello")
    os.symlink(sources["cifar python tar.gz"][1], tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"--data_dir {tmp_path}: no known dataset layout found")
    for looked_for in ("data_batch_1..5, test_batch, batches.meta", "data_batch_1..5.bin", "train_32x32.mat",
                       "train-images-idx3-ubyte", "train/<class>/<image>.png|jpg"):
        assert looked_for in message
    assert "archive(s) ['cifar-10-python.tar.gz']: pass one of them as --data_dir" in message


def test_two_datasets_in_one_folder_is_ambiguous(tmp_path, sources):
    for kind in ("svhn mat", "idx"):
        os.symlink(sources[kind][1], tmp_path / kind.replace(" ", "_"))
    with pytest.raises(DataError, match="more than one dataset found .*IDX files at .*SVHN .mat files at"):
        load_dataset("svhn", str(tmp_path))


def test_single_file_that_is_no_archive(tmp_path, sources):
    mat = sources["svhn mat"][1] / "train_32x32.mat"
    with pytest.raises(DataError, match=f"{mat}: neither a folder nor an archive .*pass the folder or archive"):
        load_dataset("svhn", str(mat))


def test_cache_returns_the_same_arrays_and_follows_the_source(tmp_path, sources):
    name, path = sources["png zip"]
    archive = tmp_path / "png.zip"
    archive.write_bytes(path.read_bytes())
    cache_dir = tmp_path / "cache"
    first = load_dataset(name, str(archive), cache_dir=str(cache_dir))
    [entry] = os.listdir(cache_dir)
    second = load_dataset(name, str(archive), cache_dir=str(cache_dir))
    assert "decoded arrays from cache" in second.source and "decoded arrays from cache" not in first.source
    for field in ("train_images", "train_labels", "test_images", "test_labels", "train_ids"):
        np.testing.assert_array_equal(getattr(second, field), getattr(first, field))
        assert getattr(second, field).dtype == getattr(first, field).dtype
    assert second.class_names == first.class_names
    assert second.train_ids.dtype.kind == "U" and second.train_ids[0] == "train/airplane/0000.png"
    os.utime(archive, ns=(1, 1))  # a changed modification time is a changed source: read again, old entry replaced
    third = load_dataset(name, str(archive), cache_dir=str(cache_dir))
    assert "decoded arrays from cache" not in third.source
    assert len(os.listdir(cache_dir)) == 1 and os.listdir(cache_dir) != [entry]


def test_cache_entry_without_ids_is_never_used(tmp_path, sources, monkeypatch):
    """An entry written before ids were kept has another name (CACHE_VERSION is part of it), and one found under
    the current name without ids is read again from the source, then replaced."""
    from lr_jax.data import cache

    name, path = sources["svhn mat"]
    cache_dir = tmp_path / "cache"
    current = cache.cache_file(str(cache_dir), name, str(path), "svhn_extra=False")
    monkeypatch.setattr(cache, "CACHE_VERSION", 1)
    assert cache.cache_file(str(cache_dir), name, str(path), "svhn_extra=False") != current
    monkeypatch.undo()
    first = load_dataset(name, str(path), cache_dir=str(cache_dir))
    with np.load(current) as saved:
        arrays = {key: saved[key] for key in saved.files if key != "train_ids"}
    arrays["train_labels"] = np.zeros_like(arrays["train_labels"])  # what an old entry would wrongly give
    np.savez(current, **arrays)
    assert cache.load_cached(current) is None
    again = load_dataset(name, str(path), cache_dir=str(cache_dir))
    assert "decoded arrays from cache" not in again.source
    np.testing.assert_array_equal(again.train_labels, first.train_labels)
    np.testing.assert_array_equal(cache.load_cached(current).train_ids, np.arange(100))


def test_cache_that_cannot_be_written_only_warns(tmp_path, sources):
    name, path = sources["svhn mat"]
    (tmp_path / "file").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write"):
        dataset = load_dataset(name, str(path), cache_dir=str(tmp_path / "file"))
    assert len(dataset.train_labels) == 100


def test_cache_of_a_folder_notices_a_changed_file(tmp_path, lossless_cifar):
    x, y = lossless_cifar
    root = write_svhn_mat(tmp_path / "svhn", {"train": (x[:50], y[:50])})
    cache_dir = str(tmp_path / "cache")
    load_dataset("svhn", str(root), cache_dir=cache_dir)
    write_svhn_mat(root, {"train": (x[50:90], y[50:90])})
    assert len(load_dataset("svhn", str(root), cache_dir=cache_dir).train_labels) == 40


def cli_args(tmp_path, data_dir, *extra):
    return ["--data_dir", str(data_dir), "--workdir", str(tmp_path / "run"), "--preset", "tiny", "--no_progress",
            *extra]


@pytest.mark.parametrize("case, extra, message", [
    ("missing path", (), "no such file or folder"),
    ("too few images for --val_size", ("--val_size", "500"), "--val_size=500 leaves no training images"),
    ("too few images for --train_size", ("--train_size", "90"), "--train_size=90 is more than the"),
    ("svhn_extra on CIFAR", ("--svhn_extra",), "--svhn_extra adds SVHN's extra split"),
])
def test_cli_refuses_bad_input_before_writing_anything(tmp_path, sources, capsys, case, extra, message):
    data_dir = tmp_path / "absent" if case == "missing path" else sources["cifar python tar.gz"][1]
    with pytest.raises(DataError, match=message):
        runner.run("cifar10", cli_args(tmp_path, data_dir, *extra))
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_info:
        runner.main("cifar10", cli_args(tmp_path, data_dir, *extra))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_fashion_mnist_entry_point_lists_the_data_flags():
    help_text = subprocess.run(
        [sys.executable, "-m", "lr_jax.experiments.fashion_mnist", "--help"], capture_output=True, text=True,
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": REPO_ROOT}, check=True,
    ).stdout
    assert "python -m lr_jax.experiments.fashion_mnist" in help_text
    for flag in ("--data_dir", "--svhn_extra", "--cache_dir"):
        assert flag in help_text


def test_fashion_mnist_chain_runs_on_grey_28x28_images(tmp_path, lossless_cifar):
    x, y = lossless_cifar
    idx = write_idx_dataset(tmp_path / "idx", (x[:400, 2:30, 2:30, 1:2], y[:400]))
    results = runner.run("fashion_mnist", cli_args(tmp_path, idx, "--generations", "1"))
    assert results["dataset"]["num_train"] == 256 and results["dataset"]["num_val"] == 64
    assert "IDX files" in results["dataset"]["source"] and results["complete"]


def test_read_speed_reads_the_sources_it_is_given_and_has_no_default(sources, capsys):
    from lr_jax.data import read_speed

    with pytest.raises(SystemExit) as exit_info:  # no source named: argparse's usage error, not a guessed path
        read_speed.main([])
    assert exit_info.value.code == 2 and "the following arguments are required: sources" in capsys.readouterr().err
    _, path = sources["png folder"]
    read_speed.main([str(path)])
    out = capsys.readouterr().out
    assert f"{path}: 200 images via image folder tree {path}" in out
    assert "second read (cache)" in out
