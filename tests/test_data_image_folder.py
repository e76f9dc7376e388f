"""Image-folder trees as folder, .tar, .tar.gz, .zip: exact PNG pixels, JPEG = PIL's decoding, workers, bad files."""

import io
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from data_fixtures import CIFAR_CLASSES, class_major, encode_image, pack, truncate, write_image_tree
from lr_jax.data import DataError, load_dataset
from lr_jax.data.image_folder import decode_all, jpeg_frame
from lr_jax.data.source_tree import open_tree, tar_members


@pytest.fixture(scope="module")
def png_splits(lossless_cifar):
    x, y = lossless_cifar
    return {"train": (x[:100], y[:100]), "test": (x[100:200], y[100:200])}


@pytest.fixture(scope="module")
def png_tree(tmp_path_factory, png_splits):
    return write_image_tree(tmp_path_factory.mktemp("png") / "cifar", png_splits)


@pytest.mark.parametrize("packed", ["folder", "tar", "tar.gz", "zip", "zip with top folder"])
def test_png_tree_gives_exact_pixels_class_by_class(tmp_path, png_tree, png_splits, packed):
    data_dir = png_tree if packed == "folder" else pack(
        png_tree, tmp_path / f"cifar.{packed.split()[0]}", top="cifar10-png" if "top" in packed else ""
    )
    dataset = load_dataset("cifar10", str(data_dir))
    for split in ("train", "test"):
        images, labels = class_major(*png_splits[split])
        np.testing.assert_array_equal(getattr(dataset, f"{split}_images"), images)
        np.testing.assert_array_equal(getattr(dataset, f"{split}_labels"), labels)
    assert dataset.class_names == CIFAR_CLASSES and dataset.train_labels.dtype == np.int32


def test_hidden_files_and_macos_folders_are_ignored(tmp_path, png_splits):
    root = write_image_tree(tmp_path / "src" / "cifar", {"train": png_splits["train"]})
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "cat" / "._0001.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    macos = tmp_path / "src" / "__MACOSX" / "cifar" / "train" / "cat"
    macos.mkdir(parents=True)
    (macos / "._0001.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    for data_dir in (root, pack(tmp_path / "src", tmp_path / "tree.zip")):
        dataset = load_dataset("cifar10", str(data_dir))
        np.testing.assert_array_equal(dataset.train_images, class_major(*png_splits["train"])[0])
        assert dataset.class_names == CIFAR_CLASSES


def test_numbered_files_are_read_in_number_order(tmp_path, png_splits):
    tree = write_image_tree(tmp_path, {"train": png_splits["train"]}, names="img{}")  # img2 must precede img10
    dataset = load_dataset("cifar10", str(tree))
    np.testing.assert_array_equal(dataset.train_images, class_major(*png_splits["train"])[0])


def pil_decode(blob):
    with Image.open(io.BytesIO(blob)) as image:
        array = np.asarray(image)
    return array if array.ndim == 3 else array[..., None]


@pytest.mark.parametrize("kind", ["baseline", "progressive", "grey", "4:4:4"])
@pytest.mark.parametrize("workers", [1, 2])
def test_jpeg_fast_path_matches_pil_exactly(lossless_cifar, kind, workers):
    images = lossless_cifar[0][:60]
    if kind == "grey":
        images = images[..., :1]
    options = {"progressive": dict(progressive=True), "4:4:4": dict(subsampling=0)}.get(kind, {})
    blobs = [encode_image(a, "jpeg", quality=75, **options) for a in images]
    assert jpeg_frame(blobs[0])[1:] == images.shape[1:]
    decoded = decode_all(blobs, str, workers=workers)
    np.testing.assert_array_equal(decoded, np.stack([pil_decode(b) for b in blobs]))


def test_shared_jpeg_archive_matches_pil(shared_data):
    archive = shared_data / "cifar10-train-jpeg75.tar.gz"
    if not archive.exists():
        pytest.skip(f"{archive} is absent")
    tree = open_tree(str(archive))
    first = [f"train/{name}/{k:04d}.jpg" for name in ("cat", "truck") for k in range(150)]
    decoded = decode_all([tree.blobs[rel] for rel in first], lambda i: first[i], workers=2)
    np.testing.assert_array_equal(decoded, np.stack([pil_decode(tree.blobs[rel]) for rel in first]))


def spoil(tree_root, rel, data):
    (tree_root / rel).write_bytes(data)
    return str(tree_root / rel)


@pytest.mark.parametrize("problem, make, message", [
    ("wrong size", lambda a: encode_image(np.zeros((30, 32, 3), np.uint8)),
     "image is (30, 32, 3) (H, W, C) but the first image is (32, 32, 3)"),
    ("wrong channels", lambda a: encode_image(a[..., :1]),
     "image is (32, 32, 1) (H, W, C) but the first image is (32, 32, 3)"),
    ("unreadable", lambda a: b"not an image at all", "cannot read image"),
    ("truncated jpeg", lambda a: encode_image(a, "jpeg")[:300], "cannot read image"),
    ("16-bit png", lambda a: encode_image(a[..., 0].astype(np.uint16)[..., None] * 200), "images are not supported"),
])
@pytest.mark.parametrize("workers", [1, 2])
def test_bad_image_names_the_file(tmp_path, png_splits, problem, make, message, workers, monkeypatch):
    root = write_image_tree(tmp_path, {"train": png_splits["train"]}, fmt="jpeg" if "jpeg" in problem else "png")
    suffix = "jpeg" if "jpeg" in problem else "png"
    bad = spoil(root, f"train/dog/0003.{suffix}", make(png_splits["train"][0][0]))
    monkeypatch.setattr("lr_jax.data.image_folder.worker_count", lambda n: workers)
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", str(root))
    assert str(error.value).startswith(bad) and message in str(error.value)


def test_bad_image_inside_an_archive_names_the_member(tmp_path, png_splits):
    root = write_image_tree(tmp_path / "src", {"train": png_splits["train"]})
    spoil(root, "train/ship/0001.png", b"\x89PNG garbage")
    archive = pack(root, tmp_path / "tree.zip")
    with pytest.raises(DataError, match=f"^{archive}:train/ship/0001.png: cannot read image"):
        load_dataset("cifar10", str(archive))


def test_class_folders_differ_between_train_and_test(tmp_path, png_splits):
    root = write_image_tree(tmp_path, png_splits)
    (root / "test" / "horse").rename(root / "test" / "pony")
    with pytest.raises(DataError, match=r"class folders differ .*only in train: \['horse'\], only in test: \['pony'\]"):
        load_dataset("cifar10", str(root))


@pytest.mark.parametrize("packed", ["folder", "tar"])
def test_empty_class_folder(tmp_path, png_splits, packed):
    root = write_image_tree(tmp_path / "src", png_splits)
    for image in (root / "train" / "frog").iterdir():
        image.unlink()
    (root / "train" / "frog" / "notes.txt").write_text("no images here")
    data_dir = root if packed == "folder" else pack(root, tmp_path / "tree.tar")
    with pytest.raises(DataError, match="train/frog: class 'frog' has no .png/.jpg images"):
        load_dataset("cifar10", str(data_dir))


def test_tar_reader_agrees_with_tarfile_on_every_header_format(tmp_path):
    long_dir = "train/" + "c" * 120
    blobs = {f"{long_dir}/{'n' * 110}.png": b"one", "train/a/b.png": b"two" * 300, "train/ünï/3.png": b""}
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
            for name, data in blobs.items():
                if fmt == tarfile.USTAR_FORMAT and len(name.rpartition("/")[2]) > 100:
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        data = buffer.getvalue()
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            expected = [(m.name, False, m.offset_data, m.size) for m in archive.getmembers()]
        assert tar_members(data, "x.tar") == expected


def test_corrupt_tar_header_and_truncated_tar(tmp_path, png_tree):
    archive = pack(png_tree, tmp_path / "tree.tar")
    with tarfile.open(archive) as t:
        header_at = t.getmembers()[5].offset
    data = bytearray(archive.read_bytes())
    data[header_at + 1] ^= 0x20  # one letter of a member's name
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{damaged}: corrupt tar archive \(bad header checksum at byte {header_at}\)"):
        load_dataset("cifar10", str(damaged))
    with pytest.raises(DataError, match=f"{archive}: truncated tar archive"):
        load_dataset("cifar10", str(truncate(archive, 0.5)))


def test_truncated_zip(tmp_path, png_tree):
    archive = truncate(pack(png_tree, tmp_path / "tree.zip"), 0.8)
    with pytest.raises(DataError, match=f"{archive}: truncated or corrupt zip archive"):
        load_dataset("cifar10", str(archive))


def test_no_train_folder_in_archive(tmp_path, png_splits):
    root = write_image_tree(tmp_path / "src", {"test": png_splits["test"]})
    archive = pack(root, tmp_path / "only-test.tar.gz")
    with pytest.raises(DataError, match="no known dataset layout found"):
        load_dataset("cifar10", str(archive))


def test_a_worker_that_dies_is_reported_not_waited_for(tmp_path, png_splits, monkeypatch):
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\ncat > /dev/null\nexit 3\n")
    crashing.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crashing))
    blobs = [encode_image(a) for a in png_splits["train"][0][:20]]
    with pytest.raises(RuntimeError, match=r"image decoding worker for image1..image9 died \(exit code 3\)"):
        decode_all(blobs, lambda i: f"image{i}", workers=2)
