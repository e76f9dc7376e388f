"""Which dataset format `--data_dir` holds: the known layouts, `find_layout`, and `read_source`, which reads it."""

from __future__ import annotations

import dataclasses
import importlib

from lr_jax.data.dataset import DataError, Dataset, check_every_class
from lr_jax.data.source_tree import ARCHIVE_EXTENSIONS, open_tree


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
IMAGE_FOLDER = Layout("image-folder tree", "train/<class>/<image>.png|jpg, optional test/<class>/...", ("train",),
                      True, "image_folder:read_image_tree")
LAYOUTS = (
    Layout("CIFAR-10 python version", "data_batch_1..5, test_batch, batches.meta", ("data_batch_1",), False,
           "cifar_archive:read_cifar_python"),
    Layout("CIFAR-10 binary version", "data_batch_1..5.bin, test_batch.bin, batches.meta.txt", ("data_batch_1.bin",),
           False, "cifar_archive:read_cifar_binary"),
    SVHN_MAT,
    Layout("IDX files", "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...",
           ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"), False, "idx:read_idx"),
    IMAGE_FOLDER,
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


def find_image_folder(path: str, flag: str = ""):
    """(tree, prefix) of the image-folder tree `path` (folder or archive); a DataError naming `flag` (e.g.
    '--image_folder') and `path` if it holds another layout."""
    tree = open_tree(path)
    layout, prefix = find_layout(tree)
    if layout is not IMAGE_FOLDER:
        raise DataError(f"{flag + ' ' if flag else ''}{path}: holds {layout.kind}, not an image-folder tree")
    return tree, prefix


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
