"""Data sources: one reader per format, and `load_dataset`, which picks the reader for `--data_dir`."""

from __future__ import annotations

import dataclasses
import importlib
import os
import warnings
from typing import Callable, Optional

from lr_jax.data.dataset import (
    DataError, Dataset, check_every_class, class_counts, make_dataset, summary_lines,
)
from lr_jax.data.source_tree import ARCHIVE_EXTENSIONS, open_tree
from lr_jax.data.splits import Splits, make_splits, stratified_indices

DEFAULT_DATA_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}  # Debian's dataset-fashion-mnist


@dataclasses.dataclass(frozen=True)
class Layout:
    """A dataset layout: what marks it (a file, or a folder for image trees) and the reader that reads it."""

    kind: str
    files: str  # what the layout holds, for messages
    markers: tuple  # paths relative to the layout's top; any one present marks the layout
    marker_is_dir: bool
    reader: str  # "module:function" under lr_jax.data, imported only when used


SVHN_MAT = Layout("SVHN .mat files", "train_32x32.mat, test_32x32.mat, extra_32x32.mat", ("train_32x32.mat",), False,
                  "svhn_mat:read_svhn_mat")
LAYOUTS = (
    Layout("CIFAR-10 python version", "data_batch_1..5, test_batch, batches.meta", ("data_batch_1",), False,
           "cifar_archive:read_cifar_python"),
    Layout("CIFAR-10 binary version", "data_batch_1..5.bin, test_batch.bin, batches.meta.txt", ("data_batch_1.bin",),
           False, "cifar_archive:read_cifar_binary"),
    SVHN_MAT,
    Layout("IDX files", "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...",
           ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"), False, "fashion_mnist:read_idx"),
    Layout("image-folder tree", "train/<class>/<image>.png|jpg, optional test/<class>/...", ("train",), True,
           "image_folder:read_image_tree"),
)
LOOKED_FOR = "; ".join(f"{layout.kind} ({layout.files})" for layout in LAYOUTS)
MAX_LAYOUT_DEPTH = 2  # a layout may sit this many folders below --data_dir (e.g. cifar-10-batches-py/ in the archive)


def find_layout(tree) -> tuple[Layout, str]:
    """The layout nearest the top of `tree` and its prefix ('' or 'folder/'); DataError if none or ambiguous."""
    level, found = [""], []
    for _ in range(MAX_LAYOUT_DEPTH + 1):
        for top in level:
            prefix = f"{top}/" if top else ""
            for layout in LAYOUTS:
                has = tree.has_dir if layout.marker_is_dir else tree.has_file
                if any(has(prefix + marker) for marker in layout.markers):
                    found.append((layout, prefix))
        if found:
            break
        level = [f"{top}/{sub}" if top else sub for top in level for sub in tree.subdirs.get(top, [])]
    if len(found) == 1:
        return found[0]
    if found:
        listed = "; ".join(f"{layout.kind} at {tree.where(prefix.rstrip('/'))}" for layout, prefix in found)
        raise DataError(f"--data_dir {tree.path}: more than one dataset found ({listed}); point --data_dir at one")
    archives = [f for f in tree.files.get("", []) if f.lower().endswith(ARCHIVE_EXTENSIONS)]
    hint = f" It holds archive(s) {archives}: pass one of them as --data_dir." if archives else ""
    raise DataError(
        f"--data_dir {tree.path}: no known dataset layout found at its top or up to {MAX_LAYOUT_DEPTH} folders down. "
        f"Looked for: {LOOKED_FOR}.{hint}"
    )


def read_source(name: str, data_dir: str, svhn_extra: bool = False) -> Dataset:
    """Reads `data_dir` (a folder or an archive) with the reader its layout calls for; checks every class is present."""
    tree = open_tree(data_dir)
    layout, prefix = find_layout(tree)
    module, function = layout.reader.split(":")
    reader = getattr(importlib.import_module(f"lr_jax.data.{module}"), function)
    if svhn_extra and layout is not SVHN_MAT:
        raise DataError(f"--svhn_extra: {data_dir} holds {layout.kind}, not SVHN .mat files with extra_32x32.mat")
    dataset = reader(tree, prefix, name, extra=True) if svhn_extra else reader(tree, prefix, name)
    check_every_class(dataset, data_dir)
    return dataset


def load_dataset(
    name: str,
    data_dir: Optional[str] = None,
    svhn_extra: bool = False,
    cache_dir: Optional[str] = None,
    log: Optional[Callable[[str], None]] = None,
    tfds_data_dir: Optional[str] = None,
) -> Dataset:
    """TFDS when `data_dir` is None (Fashion-MNIST: Debian's IDX folder), else the reader for what `data_dir` holds.

    With `cache_dir`, decoded arrays of a `data_dir` source are kept there and reused while the source's file
    sizes and modification times are unchanged (TFDS keeps its own prepared copy, in `tfds_data_dir`; None:
    TFDS_DATA_DIR or ~/tensorflow_datasets). `log` receives the reader, and the images per split and per class."""
    if svhn_extra and name != "svhn":
        raise DataError(f"--svhn_extra adds SVHN's extra split; it does not apply to {name}")
    if data_dir is None and name in DEFAULT_DATA_DIRS:
        data_dir = DEFAULT_DATA_DIRS[name]
        if not os.path.exists(data_dir):
            raise DataError(
                f"{name}: --data_dir not given and the default folder {data_dir} is absent; install it with "
                "`apt-get install dataset-fashion-mnist` or pass --data_dir"
            )
    if data_dir is not None and tfds_data_dir is not None:
        raise DataError(f"--tfds_data_dir applies only where the data come from TFDS, but {name} reads {data_dir}")
    if data_dir is None:
        from lr_jax.data.tfds_source import load_tfds

        dataset = load_tfds(name, tfds_data_dir, extra=svhn_extra)
    elif not os.path.exists(data_dir):
        raise DataError(f"--data_dir {data_dir}: no such file or folder")
    elif cache_dir:
        from lr_jax.data import cache

        path = cache.cache_file(cache_dir, name, data_dir, f"svhn_extra={svhn_extra}")
        dataset = cache.load_cached(path)
        if dataset is None:
            dataset = read_source(name, data_dir, svhn_extra)
            try:
                cache.save_cached(path, dataset)
            except OSError as error:  # a full disk or a read-only folder costs speed, not the run
                warnings.warn(f"--cache_dir {cache_dir}: could not write {path} ({error}); continuing without it")
    else:
        dataset = read_source(name, data_dir, svhn_extra)
    for line in summary_lines(dataset) if log else ():
        log(line)
    return dataset


__all__ = [
    "DataError", "Dataset", "Splits", "class_counts", "load_dataset", "make_dataset", "make_splits",
    "stratified_indices",
]
