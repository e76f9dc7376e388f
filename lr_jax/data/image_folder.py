"""Reader for image-folder trees: `train/<class>/*.{png,jpg}` and optionally `test/<class>/...`."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
from PIL import Image

from lr_jax.data.dataset import DataError, Dataset, make_dataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def decode_image(data_or_path, where: str, expected_shape: Optional[tuple] = None) -> np.ndarray:
    """Decodes one PNG/JPEG into (H, W, C) uint8 (grey images keep C = 1); errors name the file."""
    try:
        with Image.open(data_or_path) as image:
            image.load()
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB") if image.mode in ("RGBA", "P", "CMYK", "YCbCr") else image
            array = np.asarray(image, dtype=np.uint8)
    except Exception as error:  # PIL raises many types for bad files
        raise DataError(f"{where}: cannot read image: {error}") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if expected_shape is not None and array.shape != expected_shape:
        raise DataError(f"{where}: image is {array.shape} (H, W, C) but the first image is {expected_shape}")
    return array


def decode_all(items, where_of, workers: Optional[int] = None) -> np.ndarray:
    """Decodes many images in parallel threads into one (N, H, W, C) uint8 array; all must share a shape."""
    items = list(items)
    if not items:
        return np.zeros((0, 0, 0, 0), np.uint8)
    first = decode_image(items[0], where_of(0))
    out = np.empty((len(items), *first.shape), np.uint8)
    out[0] = first

    def work(i):
        out[i] = decode_image(items[i], where_of(i), first.shape)

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        list(pool.map(work, range(1, len(items))))
    return out


def list_class_tree(split_dir: str) -> dict[str, list[str]]:
    """{class name: sorted image file paths} for a `split/<class>/<image>` tree; errors name the folder."""
    classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
    if not classes:
        raise DataError(f"{split_dir}: no class folders found (expected {split_dir}/<class>/<image>.png|jpg)")
    tree = {}
    for name in classes:
        folder = os.path.join(split_dir, name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"{folder}: class {name!r} has no .png/.jpg images")
        tree[name] = [os.path.join(folder, f) for f in files]
    return tree


def tree_to_arrays(tree: dict[str, list], class_names: list[str], decode_items=None):
    """Decodes a {class: [files]} tree into (images, int32 labels) with label = index in class_names."""
    items = [(path, label) for label, name in enumerate(class_names) for path in tree[name]]
    paths = [p for p, _ in items]
    images = decode_all(paths if decode_items is None else decode_items(paths), lambda i: str(paths[i]))
    return images, np.array([label for _, label in items], np.int32)


def check_same_classes(train_classes, test_classes, where: str) -> None:
    if list(train_classes) != list(test_classes):
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"{where}: class folders differ between train and test "
            f"(only in train: {only_train}, only in test: {only_test})"
        )


def load_image_folder(root: str, name: str) -> Dataset:
    """Reads `root/train/<class>/*` and, if present, `root/test/<class>/*`; class ids = sorted folder names."""
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise DataError(f"{root}: no train/ folder (expected {root}/train/<class>/<image>.png|jpg)")
    train_tree = list_class_tree(train_dir)
    class_names = list(train_tree)
    train = tree_to_arrays(train_tree, class_names)
    test = None
    test_dir = os.path.join(root, "test")
    if os.path.isdir(test_dir):
        test_tree = list_class_tree(test_dir)
        check_same_classes(class_names, list(test_tree), root)
        test = tree_to_arrays(test_tree, class_names)
        if test[0].shape[1:] != train[0].shape[1:]:
            raise DataError(f"{test_dir}: images are {test[0].shape[1:]} but train images are {train[0].shape[1:]}")
    return make_dataset(name, class_names, train, test, source=f"image folder {root}")
