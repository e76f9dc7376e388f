"""Writers of every original dataset format, for tests: fed real pixels, they produce the files users download."""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import pickle
import struct
import tarfile
import zipfile

import numpy as np
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
C = 10  # classes of the tiny label-file trees below
N = 30  # their images: three per class
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072) CIFAR rows: all red values row-major, then green, then blue."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar_python(folder, train, test, protocol: int = 2, batch_edits=None) -> pathlib.Path:
    """`folder/cifar-10-batches-py/` as in cifar-10-python.tar.gz; train is cut into 5 batches in order.

    `batch_edits` maps a member name to a function(dict) -> object that replaces that pickle's contents."""
    root = pathlib.Path(folder) / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i + 1}": part for i, part in
               enumerate(zip(np.array_split(train[0], 5), np.array_split(train[1], 5)))}
    batches["test_batch"] = test
    contents = {"batches.meta": {b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_cases_per_batch": 10000,
                                 b"num_vis": 3072}}
    for member, (images, labels) in batches.items():
        contents[member] = {b"batch_label": member.encode(), b"labels": [int(v) for v in labels],
                            b"data": cifar_rows(images), b"filenames": [b"x.png"] * len(labels)}
    for member, value in contents.items():
        if batch_edits and member in batch_edits:
            value = batch_edits[member](value)
        (root / member).write_bytes(pickle.dumps(value, protocol=protocol))
    return root


def write_cifar_binary(folder, train, test) -> pathlib.Path:
    """`folder/cifar-10-batches-bin/` as in cifar-10-binary.tar.gz: records of label byte + 3072 pixel bytes."""
    root = pathlib.Path(folder) / "cifar-10-batches-bin"
    root.mkdir(parents=True, exist_ok=True)
    parts = list(zip(np.array_split(train[0], 5), np.array_split(train[1], 5)))
    for member, (images, labels) in [(f"data_batch_{i + 1}.bin", p) for i, p in enumerate(parts)] + [
        ("test_batch.bin", test)
    ]:
        records = np.concatenate([np.asarray(labels, np.uint8)[:, None], cifar_rows(images)], axis=1)
        (root / member).write_bytes(records.tobytes())
    (root / "batches.meta.txt").write_text("\n".join(CIFAR_CLASSES) + "\n\n")
    return root


def write_svhn_mat(folder, splits: dict, x_key: str = "X", y_key: str = "y") -> pathlib.Path:
    """`folder/<split>_32x32.mat` for each split: X (32, 32, 3, N) uint8, y (N, 1) uint8 with 10 for digit 0."""
    import scipy.io

    root = pathlib.Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for split, (images, digits) in splits.items():
        y = np.where(np.asarray(digits) == 0, 10, digits).astype(np.uint8)[:, None]
        scipy.io.savemat(root / f"{split}_32x32.mat", {x_key: np.moveaxis(images, 0, 3), y_key: y})
    return root


def write_idx(path, array: np.ndarray, gz: bool = True) -> pathlib.Path:
    """One IDX file of unsigned bytes (gzip-compressed when `gz`, as distributed)."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path = pathlib.Path(str(path) + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_idx_dataset(folder, train, test=None, gz: bool = True) -> pathlib.Path:
    """train-images-idx3-ubyte / train-labels-idx1-ubyte (+ t10k-*) from (N, H, W[, 1]) images and labels."""
    root = pathlib.Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for split, pair in (("train", train), ("t10k", test)):
        if pair is not None:
            write_idx(root / f"{split}-images-idx3-ubyte", pair[0].reshape(pair[0].shape[:3]), gz)
            write_idx(root / f"{split}-labels-idx1-ubyte", np.asarray(pair[1]), gz)
    return root


def encode_image(array: np.ndarray, fmt: str = "png", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_image_tree(folder, splits: dict, fmt: str = "png", names: str = "{:04d}", **options) -> pathlib.Path:
    """`folder/<split>/<class>/<k>.<fmt>`, k counting images of that class in order; returns `folder`."""
    root = pathlib.Path(folder)
    for split, (images, labels) in splits.items():
        for label, class_name in enumerate(CIFAR_CLASSES):
            indices = np.flatnonzero(np.asarray(labels) == label)
            if not len(indices):
                continue
            class_dir = root / split / class_name
            class_dir.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(indices):
                (class_dir / f"{names.format(k)}.{fmt}").write_bytes(encode_image(images[i], fmt, **options))
    return root


def class_major(images: np.ndarray, labels: np.ndarray):
    """What an image-folder reader returns: classes in order, each class's images in their original order."""
    order = np.argsort(labels, kind="stable")
    return images[order], np.asarray(labels)[order]


def pack(folder, archive: str, top: str = "") -> pathlib.Path:
    """Packs the contents of `folder` into `archive` (.tar, .tar.gz or .zip), under `top/` when given."""
    folder, archive = pathlib.Path(folder), pathlib.Path(archive)
    paths = sorted(folder.rglob("*"))
    archive.parent.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as z:
            for p in paths:
                z.write(p, os.path.join(top, str(p.relative_to(folder))))
        return archive
    with tarfile.open(archive, "w:gz" if archive.name.endswith(".gz") else "w") as t:
        for p in paths:
            t.add(p, os.path.join(top, str(p.relative_to(folder))), recursive=False)
    return archive


def truncate(path, keep: float = 0.5) -> pathlib.Path:
    """Cuts a file to `keep` of its length, as an interrupted download would."""
    path = pathlib.Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --- tiny trees for label files (CIFAR-10N's layout at 30 images) ---------------------------------------------


def write_torch_zip(path, contents, pickle_bytes=None):
    """A file laid out as torch.save writes it (zip: archive/data.pkl, archive/version) holding `contents`."""
    data = pickle_bytes if pickle_bytes is not None else pickle.dumps(contents, protocol=2)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/version", "3\n")
    return str(path)


def synthetic_sets(seed=0):
    """clean labels (3 per class, shuffled) and two noisy sets, as CIFAR-10N's file holds them (int64)."""
    rng = np.random.default_rng(seed)
    clean = rng.permutation(np.repeat(np.arange(C), N // C)).astype(np.int64)
    noisy = np.where(rng.random(N) < 0.4, rng.integers(0, C, N), clean).astype(np.int64)
    return {"clean_label": clean, "worse_label": noisy, "aggre_label": clean.copy()}


def index_images(clean):
    """4x4 grey images whose every pixel is the official index, so a reader's order is identifiable."""
    return np.broadcast_to(np.arange(len(clean), dtype=np.uint8)[:, None, None, None], (len(clean), 4, 4, 1)).copy()


def write_tree(tmp_path, clean, archive=True):
    """train/<class>/<k:04d>.png, k counting each class's images in official order (the JPEG copy's layout)."""
    root = write_image_tree(pathlib.Path(tmp_path) / "tree", {"train": (index_images(clean), clean)})
    return str(pack(root, pathlib.Path(tmp_path) / "tree.tar.gz")) if archive else str(root)
