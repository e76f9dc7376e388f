"""TensorFlow Datasets (`cifar10`, `svhn_cropped`; CIFAR-10N's label sets, `cifar10_n`): prepared once by TFDS,
then read in the original files' order, each image's id being its official index.

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
SOURCE_BUILDERS = {"cifar10_n": "cifar10"}  # builders that download another builder's registered source files
REACH_TIMEOUT_SECONDS = 10
# Label sets of a dataset's train split that TFDS prepares as their own builder, keyed like CIFAR-10N's
# CIFAR-10_human.pt: the builder's `label` is the dataset's own (clean) label.
LABEL_SETS = {"cifar10": "cifar10_n"}
LABEL_SET_FILES = {"cifar10_n": ("CIFAR-10_human_annotations.csv", "side_info_cifar10N.csv", "image_order_c10.npy")}
LABEL_SET_INSTEAD = {"cifar10_n": "CIFAR-10N's CIFAR-10_human.pt as the label file"}
CLEAN_KEY = "clean_label"  # one request per source host before a download is attempted


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


def source_url_infos(builder) -> dict:
    """{url: UrlInfo} of the files `builder` downloads: its own checksums file, or that of the builder whose source
    files it reuses (cifar10_n downloads cifar10's archive and registers no checksums of its own)."""
    import tensorflow_datasets as tfds

    own = builder.url_infos
    if own is None and builder.name in SOURCE_BUILDERS:
        own = tfds.builder_cls(SOURCE_BUILDERS[builder.name]).url_infos
    return own or {}


def unreachable_source(builder) -> Optional[str]:
    """'URL (reason)' for the first source file that is not in the manual-download folder and whose host does
    not answer; None when every file is there or reachable. TFDS itself would retry for minutes."""
    import requests

    answered = set()
    for url, url_info in sorted(source_url_infos(builder).items()):
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


def way_out(instead: str, builder) -> str:
    """The ways out where `builder` cannot be prepared; `instead` names what may be passed in its place."""
    files = ", ".join(sorted(info.filename for info in source_url_infos(builder).values() if info.filename))
    return (f"pass {instead}, or --tfds_data_dir with a folder where TFDS has prepared {builder.name}, or put {files} "
            f"into {manual_dir(builder)} (TFDS's manual-download folder)")


def prepare(instead: str, builder) -> None:
    """Runs TFDS's preparation of `builder` in array_record format; DataError where it cannot succeed. `instead`
    names what the user may pass in its place ('--data_dir with ...')."""
    where = f"TFDS {builder.name} is not prepared in {builder.data_dir_root}"
    unreachable = unreachable_source(builder)
    if unreachable:
        raise DataError(f"{where} and its source {unreachable} cannot be reached; {way_out(instead, builder)}")
    try:
        import tensorflow as tf
    except ImportError:
        raise DataError(f"{where}, and preparing it needs TensorFlow, which is not installed "
                        f"(`pip install -r requirements.txt` installs tensorflow-cpu); or {way_out(instead, builder)}"
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
                        f"in {manual_dir(builder)}, or pass {instead}") from None
    except requests.RequestException as error:
        raise DataError(f"TFDS {builder.name}: the download failed ({type(error).__name__}); "
                        f"{way_out(instead, builder)}") from None


def record_position(record) -> int:
    """The position in the original files that a TFDS record's `id` ("train_00042") keeps."""
    record_id = record["id"]
    return int((record_id.decode() if isinstance(record_id, bytes) else record_id).rsplit("_", 1)[1])


def read_split(source, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All records of a TFDS data source as (images uint8, int32 labels, int64 ids), in the original files' order.

    TFDS stores records shuffled; their `id` keeps each one's position in the original file, which is the id."""
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
        positions[i] = record_position(record)
    order = np.argsort(positions, kind="stable")
    return images[order], labels[order], positions[order]


def open_prepared(builder_name: str, tfds_data_dir: Optional[str], instead: str, before_preparing=None):
    """The TFDS builder `builder_name`, checked to hold an array_record copy (read with `builder.as_data_source`),
    preparing it first where `tfds_data_dir` (None: TFDS_DATA_DIR or
    ~/tensorflow_datasets) does not hold it yet; `before_preparing(builder)` may raise a DataError first."""
    import tensorflow_datasets as tfds

    with absl_errors_only():  # whether a copy is there is said below, in a DataError where it matters
        builder = tfds.builder(builder_name, data_dir=tfds_data_dir)
        prepared = builder.is_prepared()
    if not prepared:
        if before_preparing is not None:
            before_preparing(builder)
        prepare(instead, builder)
    formats = sorted(str(getattr(f, "value", f)) for f in builder.info.available_file_formats())
    if "array_record" not in formats:  # e.g. a copy that `tfds.load` prepared (tfrecord)
        raise DataError(f"TFDS {builder.name} in {builder.data_dir} is prepared as {', '.join(formats)}, which lr_jax "
                        "cannot read (it reads array_record, which it prepares itself); pass another "
                        f"--tfds_data_dir, or {instead}")
    return builder


def load_tfds(name: str, tfds_data_dir: Optional[str] = None, extra: bool = False) -> Dataset:
    """Reads the train (+ SVHN's `extra` when asked, its ids continuing after train's) and test splits into uint8
    arrays, preparing them first where `tfds_data_dir` (None: TFDS_DATA_DIR or ~/tensorflow_datasets) does not
    hold them yet. Ids are the official index (the record's position in the original files)."""
    if name not in TFDS_NAMES:
        raise DataError(f"{name}: no TFDS reader; pass --data_dir (TFDS is used for {', '.join(TFDS_NAMES)})")
    if extra and name != "svhn":
        raise DataError(f"--svhn_extra adds SVHN's extra split; it does not apply to {name}")
    builder = open_prepared(TFDS_NAMES[name], tfds_data_dir, f"--data_dir with {ORIGINALS[name]}")
    sources = builder.as_data_source(file_format="array_record")
    where = f"TFDS {builder.name} in {builder.data_dir}"

    def split(split_name):
        with absl_errors_only():  # TFDS's "OpenCV is not installed ... Defaulting to PIL" on the first image
            return read_split(sources[split_name], f"{where} ({split_name} split)")

    images, labels, ids = split("train")
    if extra:
        more = split("extra")
        ids = np.concatenate([ids, more[2] + len(labels)])  # extra's ids continue after train's
        images, labels = concatenate_splits([(images, labels), more[:2]])
    source = f"TFDS {builder.name} (train{' + extra' if extra else ''}, test) in {builder.data_dir}"
    return make_dataset(name, builder.info.features["label"].names, (images, labels), split("test")[:2],
                        source=source, train_ids=ids)


def check_label_set_files(builder) -> None:
    """Before preparing a label-set builder: its manual-download files are there (TFDS cannot download them)."""
    missing = [f for f in LABEL_SET_FILES[builder.name] if not (manual_dir(builder) / f).is_file()]
    if missing:
        raise DataError(f"TFDS {builder.name} is not prepared in {builder.data_dir_root}, and preparing it needs "
                        f"{', '.join(missing)} in {manual_dir(builder)} (TFDS's manual-download folder; how to make "
                        f"them: `tfds.builder_cls('{builder.name}').MANUAL_DOWNLOAD_INSTRUCTIONS`); or pass "
                        f"{LABEL_SET_INSTEAD[builder.name]}")


def read_label_sets(source, keys: list, where: str) -> dict[str, np.ndarray]:
    """{key: (N,) int64 labels} of every record of a data source, row i = the record of official index i."""
    count = len(source)
    if count == 0:
        raise DataError(f"{where}: the split is empty")
    labels = {key: np.empty(count, np.int64) for key in keys}
    positions = np.empty(count, np.int64)
    for i in range(count):
        record = source[i]
        positions[i] = record_position(record)
        for key in keys:
            labels[key][i] = record[key]
    order = np.argsort(positions, kind="stable")
    if not np.array_equal(positions[order], np.arange(count)):
        raise DataError(f"{where}: the records' ids are not the official indices 0..{count - 1}")
    return {(CLEAN_KEY if key == "label" else key): values[order] for key, values in labels.items()}


def tfds_label_sets(name: str, tfds_data_dir: Optional[str] = None) -> dict[str, np.ndarray]:
    """{label set: (N,) int64 labels, row i = official index i} of `name`'s train split from TFDS's label-set
    builder (cifar10: `cifar10_n`, CIFAR-10N's human labels: aggre_label, worse_label, random_label1..3, and
    clean_label, the builder's `label`). Prepared first where `tfds_data_dir` does not hold it and its manual files
    (LABEL_SET_FILES, plus the dataset's archive unless it can be downloaded) are in TFDS's manual folder."""
    import tensorflow_datasets as tfds

    if name not in LABEL_SETS:
        raise DataError(f"{name}: lr_jax reads TFDS label sets only for {', '.join(LABEL_SETS)}")
    builder_name = LABEL_SETS[name]
    builder = open_prepared(builder_name, tfds_data_dir, LABEL_SET_INSTEAD[builder_name], check_label_set_files)
    keys = [key for key, feature in builder.info.features.items() if isinstance(feature, tfds.features.ClassLabel)]
    with absl_errors_only():
        source = builder.as_data_source("train", file_format="array_record",
                                        decoders={"image": tfds.decode.SkipDecoding()})
        return read_label_sets(source, keys, f"TFDS {builder.name} in {builder.data_dir} (train split)")


def tfds_label_table(name: str, key: Optional[str], num_classes: int, tfds_data_dir: Optional[str] = None):
    """One of `tfds_label_sets` as a `label_files.LabelTable` keyed by official index (for `labels_for_images`)."""
    from lr_jax.data.label_files import LabelTable, check_labels, select_array

    sets = tfds_label_sets(name, tfds_data_dir)
    labels, where = select_array(sets, key, f"TFDS {LABEL_SETS[name]}")
    return LabelTable(check_labels(labels, num_classes, where), where)
