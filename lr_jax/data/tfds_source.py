"""TensorFlow Datasets (`cifar10`, `svhn_cropped`): prepared once by TFDS, then read in the original files' order.

Preparing (downloading, or taking the original files from TFDS's manual-download folder, and writing the
array_record copy) runs TFDS's own builder, which needs TensorFlow (tensorflow-cpu in requirements.txt). Reading a
prepared copy goes through `tfds` data sources and needs no TensorFlow. Where nothing is prepared and a source file
can be neither found in the manual-download folder nor reached, a one-line DataError says the ways out before
anything is written."""

from __future__ import annotations

import contextlib
import logging
import pathlib
import urllib.parse
from typing import Optional

import numpy as np

from lr_jax.data.dataset import DataError, Dataset, concatenate_splits, make_dataset

TFDS_NAMES = {"cifar10": "cifar10", "svhn": "svhn_cropped"}
ORIGINALS = {  # what --data_dir takes instead, for messages
    "cifar10": "cifar-10-binary.tar.gz / cifar-10-python.tar.gz or its folder",
    "svhn": "a folder of train_32x32.mat, test_32x32.mat (extra_32x32.mat)",
}
REACH_TIMEOUT_SECONDS = 10  # one request per source host before a download is attempted


@contextlib.contextmanager
def absl_errors_only():
    """Mutes TFDS's absl warnings (e.g. 'Variant folder ... has no dataset_info.json' while looking for a copy)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def manual_dir(builder) -> pathlib.Path:
    """TFDS's manual-download folder for `builder`: <data dir>/downloads/manual (the download config's default)."""
    return pathlib.Path(builder.data_dir_root) / "downloads" / "manual"


def unreachable_source(builder) -> Optional[str]:
    """'URL (reason)' for the first source file that is not in the manual-download folder and whose host does
    not answer; None when every file is there or reachable. TFDS itself would retry for minutes."""
    import requests

    answered = set()
    for url, url_info in sorted(builder.url_infos.items()):
        if url_info.filename and (manual_dir(builder) / url_info.filename).is_file():
            continue
        host = urllib.parse.urlsplit(url).netloc
        if host in answered:
            continue
        try:
            requests.head(url, timeout=REACH_TIMEOUT_SECONDS, allow_redirects=True)
        except requests.RequestException as error:
            return f"{url} ({type(error).__name__})"
        answered.add(host)
    return None


def way_out(name: str, builder) -> str:
    files = ", ".join(sorted(info.filename for info in builder.url_infos.values() if info.filename))
    return (f"pass --data_dir with {ORIGINALS[name]}, or --tfds_data_dir with a folder where TFDS has prepared "
            f"{builder.name}, or put {files} into {manual_dir(builder)} (TFDS's manual-download folder)")


def prepare(name: str, builder) -> None:
    """Runs TFDS's preparation of `builder` in array_record format; DataError where it cannot succeed."""
    where = f"TFDS {builder.name} is not prepared in {builder.data_dir_root}"
    unreachable = unreachable_source(builder)
    if unreachable:
        raise DataError(f"{where} and its source {unreachable} cannot be reached; {way_out(name, builder)}")
    try:
        import tensorflow as tf
    except ImportError:
        raise DataError(f"{where}, and preparing it needs TensorFlow, which is not installed "
                        f"(`pip install -r requirements.txt` installs tensorflow-cpu); or {way_out(name, builder)}"
                        ) from None
    import requests
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    try:  # TensorFlow only writes files here; the accelerators stay JAX's
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's devices were set up earlier in this process
        pass
    try:
        builder.download_and_prepare(file_format="array_record",
                                     download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    except NonMatchingChecksumError as error:
        first_line = str(error).strip().splitlines()[0]
        raise DataError(f"TFDS {builder.name}: a source file is not the published one ({first_line}); replace it "
                        f"in {manual_dir(builder)}, or pass --data_dir with it") from None
    except requests.RequestException as error:
        raise DataError(f"TFDS {builder.name}: the download failed ({type(error).__name__}); "
                        f"{way_out(name, builder)}") from None


def read_split(source, where: str) -> tuple[np.ndarray, np.ndarray]:
    """All records of a TFDS data source as (images uint8, int32 labels), in the original files' order.

    TFDS stores records shuffled; their `id` ("train_00042") keeps each one's position in the original file."""
    count = len(source)
    if count == 0:
        raise DataError(f"{where}: the split is empty")
    first = np.asarray(source[0]["image"], np.uint8)
    images = np.empty((count, *first.shape), np.uint8)
    labels = np.empty(count, np.int32)
    positions = np.empty(count, np.int64)
    for i in range(count):
        record = source[i]
        images[i] = record["image"]
        labels[i] = record["label"]
        record_id = record["id"]
        positions[i] = int((record_id.decode() if isinstance(record_id, bytes) else record_id).rsplit("_", 1)[1])
    order = np.argsort(positions, kind="stable")
    return images[order], labels[order]


def load_tfds(name: str, tfds_data_dir: Optional[str] = None, extra: bool = False) -> Dataset:
    """Reads the train (+ SVHN's `extra` when asked) and test splits into uint8 arrays, preparing them first where
    `tfds_data_dir` (None: TFDS_DATA_DIR or ~/tensorflow_datasets) does not hold them yet."""
    if name not in TFDS_NAMES:
        raise DataError(f"{name}: no TFDS reader; pass --data_dir (TFDS is used for {', '.join(TFDS_NAMES)})")
    if extra and name != "svhn":
        raise DataError(f"--svhn_extra adds SVHN's extra split; it does not apply to {name}")
    import tensorflow_datasets as tfds

    with absl_errors_only():  # whether a copy is there is said below, in a DataError where it matters
        builder = tfds.builder(TFDS_NAMES[name], data_dir=tfds_data_dir)
        prepared = builder.is_prepared()
    if not prepared:
        prepare(name, builder)
    where = f"TFDS {builder.name} in {builder.data_dir}"
    formats = sorted(str(getattr(f, "value", f)) for f in builder.info.available_file_formats())
    if "array_record" not in formats:  # e.g. a copy that `tfds.load` prepared (tfrecord)
        raise DataError(f"{where} is prepared as {', '.join(formats)}, which lr_jax cannot read (it reads "
                        "array_record, which it prepares itself); pass another --tfds_data_dir, or --data_dir")
    sources = builder.as_data_source(file_format="array_record")

    def split(split_name):
        with absl_errors_only():  # TFDS's "OpenCV is not installed ... Defaulting to PIL" on the first image
            return read_split(sources[split_name], f"{where} ({split_name} split)")

    train = concatenate_splits([split("train"), split("extra")]) if extra else split("train")
    source = f"TFDS {builder.name} (train{' + extra' if extra else ''}, test) in {builder.data_dir}"
    return make_dataset(name, builder.info.features["label"].names, train, split("test"), source=source)
