"""Reader for image-folder trees `train/<class>/*.png|jpg` (+ `test/`), folder or archive, decoded in parallel."""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image

from lr_jax.data.dataset import DataError, Dataset, make_dataset
from lr_jax.data.source_tree import SourceTree

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
IMAGES_PER_WORKER = 4000  # below this many images per process, starting processes costs more than it saves
_TO_RGB = ("RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
_JPEG_FRAME_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_DIGIT_RUNS = re.compile(r"(\d+)")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def decode_image(data_or_path, where: str, expected_shape: Optional[tuple] = None) -> np.ndarray:
    """Decodes one PNG/JPEG into (H, W, C) uint8 (grey images keep C = 1); errors name the file."""
    try:
        with Image.open(data_or_path) as image:
            image.load()
            if image.mode in ("1", "LA", "La"):
                image = image.convert("L")
            elif image.mode in _TO_RGB:
                image = image.convert("RGB")
            if image.mode not in ("L", "RGB"):
                raise DataError(f"{where}: {image.mode} images are not supported (only 8-bit grey or colour)")
            array = np.asarray(image, dtype=np.uint8)
    except DataError:
        raise
    except Exception as error:  # PIL raises many types for bad files
        raise DataError(f"{where}: cannot read image: {error}") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if expected_shape is not None and array.shape != tuple(expected_shape):
        raise DataError(
            f"{where}: image is {array.shape} (H, W, C) but the first image is {tuple(expected_shape)}"
        )
    return array


def jpeg_frame(data: bytes) -> Optional[tuple[int, int, int, int]]:
    """(bits per sample, height, width, components) from a JPEG's frame header, or None if not a plain JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _JPEG_FRAME_MARKERS:
            return struct.unpack_from(">BHHB", data, pos + 4) if pos + 10 <= end else None
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
        else:
            pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def _read_bytes(item: Union[str, bytes], where: str) -> bytes:
    if not isinstance(item, str):
        return item
    try:
        with open(item, "rb") as f:
            return f.read()
    except OSError as error:
        raise DataError(f"{where}: cannot read image: {error.strerror or error}") from None


def _decode_jpeg_tile(canvas: Image.Image, row: int, height: int, data: bytes) -> bool:
    """Decodes a JPEG of the tile size into tile `row` of a tall canvas; False if libjpeg reports an error.

    The same decoder and arguments that `Image.open(...).load()` and `Image.frombytes` use, pointed at a
    region of one image, so there is no per-image Image object or copy."""
    width = canvas.size[0]
    decoder = Image._getdecoder(canvas.mode, "jpeg", (canvas.mode, ""))
    try:
        decoder.setimage(canvas.im, (0, row * height, width, (row + 1) * height))
        consumed, error = decoder.decode(data)
    finally:
        decoder.cleanup()
    return consumed < 0 and error == 0


def decode_into(out: np.ndarray, items: Sequence, wheres: Sequence[str], chunk: int = 512) -> None:
    """Decodes items (paths or file bytes) into `out` (N, H, W, C); every image must have that shape.

    JPEGs of the expected size and channel count go straight to libjpeg, chunk by chunk into one tall canvas,
    skipping PIL's per-file parsing (same decoder and arguments as `Image.open`, so the same pixels, about 5x
    faster on 32x32 images); anything else, or any failure, goes through `decode_image`, which names the
    file and the problem."""
    height, width, channels = shape = out.shape[1:]
    mode = {1: "L", 3: "RGB"}.get(channels)
    for start in range(0, len(items), chunk):
        stop = min(start + chunk, len(items))
        canvas, slow = None, []
        for i in range(start, stop):
            data = _read_bytes(items[i], wheres[i])
            if mode is not None and jpeg_frame(data) == (8, height, width, channels):
                if canvas is None:
                    canvas = Image.new(mode, (width, height * (stop - start)))
                if _decode_jpeg_tile(canvas, i - start, height, data):
                    continue
            slow.append((i, data))
        if canvas is not None:
            out[start:stop] = np.frombuffer(canvas.tobytes(), np.uint8).reshape(stop - start, *shape)
        for i, data in slow:
            out[i] = decode_image(io.BytesIO(data), wheres[i], shape)


def available_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_count(num_images: int) -> int:
    """Processes worth starting for `num_images` images on this machine's CPUs (1: decode in this process)."""
    return max(1, min(available_cpus(), 16, num_images // IMAGES_PER_WORKER))


def decode_all(items, where_of, workers: Optional[int] = None) -> np.ndarray:
    """Decodes images (paths or bytes) into one (N, H, W, C) uint8 array, in `workers` processes.

    All images must share the first image's shape. `workers=None` picks `worker_count(N)`. Worker processes
    are fresh interpreters that import only numpy, PIL and this package (never JAX), fed over pipes."""
    items = list(items)
    if not items:
        return np.zeros((0, 0, 0, 0), np.uint8)
    first = decode_image(io.BytesIO(items[0]) if isinstance(items[0], bytes) else items[0], where_of(0))
    out = np.empty((len(items), *first.shape), np.uint8)
    out[0] = first
    wheres = [where_of(i) for i in range(len(items))]
    workers = worker_count(len(items)) if workers is None else workers
    if workers <= 1 or len(items) < 2 * workers:
        decode_into(out[1:], items[1:], wheres[1:])
        return out
    bounds = np.linspace(1, len(items), workers + 1).astype(int)
    chunks = list(zip(bounds[:-1], bounds[1:]))
    # The worker keeps its stdout pipe for pixels and sends anything printed (by imports, say) to stderr.
    command = [sys.executable, "-c", f"import os, sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
               "pixels = os.fdopen(os.dup(1), 'wb'); os.dup2(2, 1); "
               "from lr_jax.data.image_folder import decode_worker; decode_worker(pixels)"]
    processes = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in chunks]
    try:
        with ThreadPoolExecutor(len(chunks)) as pool:
            errors = list(pool.map(
                lambda job: _run_worker(job[0], out[job[1][0] : job[1][1]], items, wheres, job[1]),
                zip(processes, chunks),
            ))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    for error in errors:  # the first bad image in file order
        if error is not None:
            raise DataError(error)
    return out


def _run_worker(process, out: np.ndarray, items, wheres, chunk) -> Optional[str]:
    """Sends one chunk to a worker and reads its pixels into `out`; returns the worker's DataError message."""
    start, stop = chunk
    with process.stdin:
        pickle.dump((items[start:stop], wheres[start:stop], out.shape), process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    status = process.stdout.read(1)
    if status == b"E":
        return pickle.load(process.stdout)
    view = memoryview(out).cast("B")
    filled = 0
    while status == b"K" and filled < len(view):
        count = process.stdout.readinto(view[filled:])
        if not count:
            break
        filled += count
    if status != b"K" or filled != len(view):
        raise RuntimeError(f"image decoding worker for {wheres[start]}..{wheres[stop - 1]} died "
                           f"(exit code {process.wait()})")
    return None


def decode_worker(pixels) -> None:
    """Body of a worker process: (items, wheres, shape) on stdin -> b'K' + pixels, or b'E' + error message."""
    items, wheres, shape = pickle.load(sys.stdin.buffer)
    out = np.empty(shape, np.uint8)
    try:
        decode_into(out, items, wheres)
    except DataError as error:
        pixels.write(b"E" + pickle.dumps(str(error)))
    else:
        pixels.write(b"K")
        pixels.write(memoryview(out).cast("B"))
    pixels.flush()


def natural_key(name: str) -> tuple:
    """Sort key that orders numbered files by number: 'img2' before 'img10'."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGIT_RUNS.split(name))


def list_class_tree(tree: SourceTree, split: str) -> dict[str, list[str]]:
    """{class: image paths in natural order} for `split/<class>/<image>`; errors name the folder."""
    classes = tree.subdirs.get(split, [])
    if not classes:
        raise DataError(f"{tree.where(split)}: no class folders found (expected {tree.where(split)}/<class>/<image>)")
    class_tree = {}
    for name in classes:
        folder = f"{split}/{name}"
        files = sorted((f for f in tree.files.get(folder, ()) if f.lower().endswith(IMAGE_EXTENSIONS)), key=natural_key)
        if not files:
            raise DataError(f"{tree.where(folder)}: class {name!r} has no .png/.jpg images")
        class_tree[name] = [f"{folder}/{f}" for f in files]
    return class_tree


def class_major_files(class_tree: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    """(files, int32 labels) of a {class: [files]} tree in reading order: classes in order, each class's files in
    order; label = the class's position."""
    files = [rel for rels in class_tree.values() for rel in rels]
    labels = np.repeat(np.arange(len(class_tree), dtype=np.int32), [len(rels) for rels in class_tree.values()])
    return files, labels


def list_train_images(tree: SourceTree, prefix: str) -> tuple[dict[str, list[str]], np.ndarray]:
    """({class: image paths} of `prefix/train/`, each training image's id in reading order): the id is the path
    relative to the layout root ('train/cat/0001.jpg'). The reader and label files both take their order from here."""
    train_dir = f"{prefix}train"
    if not tree.has_dir(train_dir):
        raise DataError(f"{tree.where(prefix.rstrip('/'))}: no train/ folder "
                        f"(expected {tree.where(train_dir)}/<class>/<image>)")
    train_tree = list_class_tree(tree, train_dir)
    files, _ = class_major_files(train_tree)
    return train_tree, np.asarray([rel[len(prefix):] for rel in files], dtype=str)


def check_same_classes(train_classes, test_classes, where: str) -> None:
    if list(train_classes) != list(test_classes):
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"{where}: class folders differ between train and test "
            f"(only in train: {only_train}, only in test: {only_test})"
        )


def decode_tree(tree: SourceTree, class_tree: dict[str, list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Decodes a {class: [files]} tree into (images, int32 labels) in `class_major_files` order."""
    files, labels = class_major_files(class_tree)
    return decode_all([tree.item(rel) for rel in files], lambda i: tree.where(files[i])), labels


def read_image_tree(tree: SourceTree, prefix: str, name: str) -> Dataset:
    """Reads `prefix/train/<class>/*` and, if present, `prefix/test/<class>/*`; class ids = sorted folder names,
    image ids = paths relative to the layout root."""
    root = prefix.rstrip("/")
    train_tree, train_ids = list_train_images(tree, prefix)
    test_tree = None
    if tree.has_dir(f"{prefix}test"):  # check both listings before decoding anything
        test_tree = list_class_tree(tree, f"{prefix}test")
        check_same_classes(list(train_tree), list(test_tree), tree.where(root))
    train = decode_tree(tree, train_tree)
    test = None if test_tree is None else decode_tree(tree, test_tree)
    return make_dataset(name, list(train_tree), train, test, source=f"image folder tree {tree.where(root)}",
                        train_ids=train_ids)
