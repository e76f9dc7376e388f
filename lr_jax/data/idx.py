"""Reader for IDX files (Fashion-MNIST as the Debian package `dataset-fashion-mnist` installs it; MNIST too)."""

from __future__ import annotations

import gzip
import math
import struct
import zlib

import numpy as np

from lr_jax.data.dataset import DataError, Dataset, check_split, make_dataset
from lr_jax.data.source_tree import SourceTree

CLASS_NAMES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, optional t10k-images/t10k-labels (each may end in .gz)"


def parse_idx(data: bytes, ndim: int, where: str) -> np.ndarray:
    """An IDX array of unsigned bytes: 0x00 0x00 0x08 ndim, ndim big-endian uint32 sizes, then the values."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise DataError(
            f"{where}: not an IDX file of unsigned bytes with {ndim} dimension(s) (magic {data[:4].hex() or 'none'}, "
            f"expected 000008{ndim:02x})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated IDX header")
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    if len(data) != header + math.prod(shape):
        raise DataError(
            f"{where}: IDX header says {shape} = {math.prod(shape)} values but the file holds {len(data) - header}"
            " (truncated or corrupt)"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def idx_file(tree: SourceTree, stem: str, ndim: int, required: bool):
    """The array of `stem` or `stem.gz` (None if absent and not required)."""
    for rel in (stem, stem + ".gz"):
        if tree.has_file(rel):
            data = tree.read(rel)
            if rel.endswith(".gz"):
                try:
                    data = gzip.decompress(data)
                except (OSError, EOFError, zlib.error) as error:
                    raise DataError(f"{tree.where(rel)}: truncated or corrupt gzip file ({error})") from None
            return parse_idx(data, ndim, tree.where(rel))
    if required:
        raise DataError(f"{tree.where(stem)}[.gz] is missing (IDX datasets come as {FILES})")
    return None


def idx_split(tree: SourceTree, prefix: str, split: str, num_classes: int, required: bool):
    """(images (N, H, W, 1), labels) from `split`-images-idx3-ubyte and `split`-labels-idx1-ubyte."""
    images = idx_file(tree, f"{prefix}{split}-images-idx3-ubyte", 3, required)
    labels = idx_file(tree, f"{prefix}{split}-labels-idx1-ubyte", 1, required or images is not None)
    if images is None:
        return None
    images = images[..., None]
    check_split(images, labels, num_classes, tree.where(f"{prefix}{split}-labels-idx1-ubyte"))
    return images, labels.astype(np.int32)


def read_idx(tree: SourceTree, prefix: str, name: str) -> Dataset:
    """train-* (required) and t10k-* (optional) IDX files; class names of Fashion-MNIST, else digits 0-9; ids are
    the index in the train file."""
    class_names = CLASS_NAMES.get(name, [str(d) for d in range(10)])
    train = idx_split(tree, prefix, "train", len(class_names), required=True)
    test = idx_split(tree, prefix, "t10k", len(class_names), required=False)
    return make_dataset(name, class_names, train, test, source=f"IDX files {tree.where(prefix.rstrip('/'))}")
