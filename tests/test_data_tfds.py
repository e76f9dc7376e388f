"""TFDS for real, offline: TFDS's own builders prepare `cifar10` from a CIFAR-10 binary archive of real pixels and
`svhn_cropped` from SVHN .mat files of generated pixels, and `cifar10_n` from that archive and generated CIFAR-10N
files, all put in TFDS's manual-download folder, and lr_jax reads back the same pixels, labels, ids and label sets
in the official order; and the one-line error where nothing is prepared and no source can be reached.

These files' checksums differ from the published ones that TFDS verifies, so preparation runs in a subprocess that
imports a temporary copy of tensorflow_datasets (symlinks to the installed files) whose two checksum files name
them; the installed package is never written to. The subprocesses see a dead proxy: any download attempt fails."""

import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_fixtures import CIFAR_CLASSES, pack, write_cifar_binary, write_svhn_mat
from lr_jax.data import DataError, load_dataset
from lr_jax.data.label_files import image_order, labels_for_images
from lr_jax.data.tfds_source import record_position, tfds_label_sets, tfds_label_table

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, every request fails at once
OFFLINE = {"HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "http_proxy": DEAD_PROXY,
           "https_proxy": DEAD_PROXY, "NO_PROXY": "", "no_proxy": ""}
# Where each builder's expected checksums live inside tensorflow_datasets/.
LABEL_SETS = ("clean_label", "aggre_label", "worse_label", "random_label1", "random_label2", "random_label3")
CHECKSUM_FILES = {"cifar10": "url_checksums/cifar10.txt", "svhn_cropped": "datasets/svhn_cropped/checksums.tsv"}
# Prepended to every subprocess's code: with "--no-tensorflow" as its first argument, TensorFlow looks uninstalled
# (the path finder answers None for it, as where it is absent).
NO_TENSORFLOW = """
import importlib.machinery, sys
class PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return super().find_spec(name, path, target)
if sys.argv[1] == "--no-tensorflow":
    sys.meta_path = [PathFinderWithoutTensorFlow if finder is importlib.machinery.PathFinder else finder
                     for finder in sys.meta_path]
"""
# Loads both datasets and CIFAR-10N's label sets (TFDS cifar10_n) through lr_jax from one TFDS data dir (argv[2];
# "": TFDS's default) and saves what came back (argv[3]).
READ_BOTH = """
import json
import numpy as np
import tensorflow_datasets
from lr_jax.data import load_dataset
from lr_jax.data.tfds_source import tfds_label_sets
cifar = load_dataset("cifar10", tfds_data_dir=sys.argv[2] or None)
svhn = load_dataset("svhn", tfds_data_dir=sys.argv[2] or None, svhn_extra=True)
label_sets = tfds_label_sets("cifar10", tfds_data_dir=sys.argv[2] or None)
np.savez(sys.argv[3], **{f"{d.name}_{k}": getattr(d, k) for d in (cifar, svhn)
                         for k in ("train_images", "train_labels", "test_images", "test_labels", "train_ids")},
         **{f"cifar10_n_{key}": labels for key, labels in label_sets.items()})
print(json.dumps({"tfds": tensorflow_datasets.__file__, "tensorflow": "tensorflow" in sys.modules,
                  "sources": [cifar.source, svhn.source], "classes": [cifar.class_names, svhn.class_names]}))
"""
# Prints the DataError that loading CIFAR-10 from the TFDS data dir argv[2] raises.
LOAD_ERROR = """
from lr_jax.data import DataError, load_dataset
try:
    load_dataset("cifar10", tfds_data_dir=sys.argv[2])
except DataError as error:
    print(error)
"""
# Prepares cifar10 the way `tfds.load` does (tfrecord), in the TFDS data dir argv[2].
PREPARE_TFRECORD = """
import tensorflow_datasets as tfds
builder = tfds.builder("cifar10", data_dir=sys.argv[2])
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
print(builder.info.file_format.value)
"""


def python(code: str, *args, pythonpath=(REPO_ROOT,), tensorflow: bool = True, env=None) -> str:
    """Runs `code` in a fresh offline interpreter; its stdout (the exit status must be 0)."""
    env = {**os.environ, **OFFLINE, "PYTHONPATH": os.pathsep.join(map(str, pythonpath)), **(env or {})}
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW + code, "--tensorflow" if tensorflow else
                           "--no-tensorflow", *map(str, args)], env=env, capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def sha256_and_size(path: pathlib.Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size


def tfds_copy_registering(site: pathlib.Path, manual: pathlib.Path) -> pathlib.Path:
    """`site/tensorflow_datasets`: the installed package as symlinks, except the two checksum files, which are
    rewritten to expect the files in `manual` (same URLs and file names, their sizes and SHA-256)."""
    installed = pathlib.Path(importlib.util.find_spec("tensorflow_datasets").origin).parent
    copy = site / "tensorflow_datasets"
    shutil.copytree(installed, copy, copy_function=os.symlink)
    for relative in CHECKSUM_FILES.values():
        lines = []
        for line in (installed / relative).read_text().splitlines():
            url, size, checksum, filename = line.split("\t")
            if (manual / filename).is_file():
                checksum, size = sha256_and_size(manual / filename)
            lines.append("\t".join((url, str(size), checksum, filename)))
        (copy / relative).unlink()  # a symlink to the installed file: replaced, never written through
        (copy / relative).write_text("\n".join(lines) + "\n")
    return site


def write_cifar_archive(manual: pathlib.Path, work: pathlib.Path, cifar: dict, count: int) -> pathlib.Path:
    """cifar-10-binary.tar.gz of the first `count` train and test images, in `manual`."""
    train, test = ((images[:count], labels[:count]) for images, labels in (cifar["train"], cifar["test"]))
    return pack(write_cifar_binary(work, train, test), manual / "cifar-10-binary.tar.gz", top="cifar-10-batches-bin")


def read_both(tfds_data_dir, out, pythonpath, tensorflow: bool, env=None) -> dict:
    stdout = python(READ_BOTH, tfds_data_dir, out, pythonpath=pythonpath, tensorflow=tensorflow, env=env)
    return dict(json.loads(stdout.strip().splitlines()[-1]), arrays=dict(np.load(out)))


@pytest.fixture(scope="module")
def generated():
    """{split: (images, labels)} of generated 32x32 pixels, every label 0..9 in a shuffled order."""
    rng = np.random.default_rng(0)

    def split(count):
        return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.permutation(np.arange(count) % 10)

    return {"train": split(300), "test": split(100), "extra": split(200)}


@pytest.fixture(scope="module")
def originals(lossless_cifar, generated):
    """{dataset: {split: (images, labels)}}: CIFAR-10 from real pixels (TFDS's builder takes train batches of
    fewer than 10,000 images), SVHN from generated pixels; and CIFAR-10N-like label sets of the CIFAR-10 train
    images ({set: labels in the official order}, clean_label being CIFAR-10's own)."""
    x, y = lossless_cifar
    rng = np.random.default_rng(1)
    sets = {key: rng.integers(0, 10, 1500) for key in LABEL_SETS[1:]}
    return {"cifar10": {"train": (x[:1500], y[:1500]), "test": (x[1500:2000], y[1500:2000])}, "svhn": generated,
            "cifar10_n": dict(sets, clean_label=y[:1500])}


def write_cifar10n_files(manual: pathlib.Path, sets: dict, tfds_order: np.ndarray) -> None:
    """TFDS cifar10_n's three manual-download files for the images of `sets`: the annotations CSV in TFDS's cifar10
    order (`tfds_order[j]`: official index of TFDS's j-th image) as the builder's MANUAL_DOWNLOAD_INSTRUCTIONS make
    it, that order (image_order_c10.npy), and workers' ids and times per 10 images (side_info_cifar10N.csv)."""
    rows = [",".join(LABEL_SETS)] + [",".join(str(sets[key][i]) for key in LABEL_SETS) for i in tfds_order]
    (manual / "CIFAR-10_human_annotations.csv").write_text("\n".join(rows) + "\n")
    np.save(manual / "image_order_c10.npy", tfds_order)
    side = ["Image-batch,Worker1-id,Work-time-in-seconds-1,Worker2-id,Work-time-in-seconds-2,Worker3-id,"
            "Work-time-in-seconds-3"] + [f"{b}--{b + 9},1,20,2,30,3,40" for b in range(0, len(tfds_order), 10)]
    (manual / "side_info_cifar10N.csv").write_text("\n".join(side) + "\n")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, originals):
    """TFDS data dir prepared offline from the manual-download folder, and what lr_jax read back while preparing."""
    root = tmp_path_factory.mktemp("tfds")
    tfds_data_dir, manual = root / "data", root / "data" / "downloads" / "manual"
    write_cifar_archive(manual, root / "cifar", originals["cifar10"], len(originals["cifar10"]["train"][1]))
    write_svhn_mat(manual, originals["svhn"])
    write_cifar10n_files(manual, originals["cifar10_n"], np.random.default_rng(2).permutation(1500))
    site = tfds_copy_registering(root / "site", manual)
    first_read = read_both(tfds_data_dir, root / "first.npz", [site, REPO_ROOT], tensorflow=True)
    return tfds_data_dir, site, first_read


def expected_arrays(originals) -> dict:
    svhn = originals["svhn"]
    parts = {"cifar10": originals["cifar10"],
             "svhn": {"train": tuple(np.concatenate([a, b]) for a, b in zip(svhn["train"], svhn["extra"])),
                      "test": svhn["test"]}}
    arrays = {f"{name}_{split}_{kind}": pair[i] for name, splits in parts.items() for split, pair in splits.items()
              for i, kind in enumerate(("images", "labels"))}
    arrays.update({f"{name}_train_ids": np.arange(len(parts[name]["train"][1])) for name in parts})
    arrays.update({f"cifar10_n_{key}": labels for key, labels in originals["cifar10_n"].items()})
    return arrays


def assert_same_as_originals(read, originals):
    """Pixels, labels and ids (the official index: SVHN's extra continuing after train) in the original order, and
    the label sets keyed by official index although TFDS's annotations file lists them in TFDS's order."""
    expected = expected_arrays(originals)
    assert sorted(read["arrays"]) == sorted(expected)
    for key, value in expected.items():
        dtype = np.uint8 if key.endswith("images") else np.int32 if key.endswith("labels") else np.int64
        assert read["arrays"][key].dtype == dtype, key
        np.testing.assert_array_equal(read["arrays"][key], value, err_msg=key)


def test_tfds_prepares_the_original_files_offline_and_lr_jax_reads_them_back_in_order(prepared, originals):
    tfds_data_dir, site, read = prepared
    assert read["tfds"].startswith(str(site))  # the copy with the registered checksums did the preparing
    assert read["tensorflow"]  # TFDS's preparation used TensorFlow
    assert_same_as_originals(read, originals)
    assert read["classes"] == [CIFAR_CLASSES, [str(d) for d in range(10)]]
    assert read["sources"] == [f"TFDS cifar10 (train, test) in {tfds_data_dir}/cifar10/3.0.2",
                               f"TFDS svhn_cropped (train + extra, test) in {tfds_data_dir}/svhn_cropped/3.1.0"]
    for variant in ("cifar10/3.0.2", "svhn_cropped/3.1.0", "cifar10_n/1.0.4"):
        assert list((tfds_data_dir / variant).glob("*-train.array_record-*")), variant


def test_a_copy_found_through_TFDS_DATA_DIR_is_read_without_tensorflow(prepared, originals, tmp_path):
    tfds_data_dir, site, _ = prepared
    read = read_both("", tmp_path / "again.npz", [REPO_ROOT], tensorflow=False,
                     env={"TFDS_DATA_DIR": str(tfds_data_dir)})
    assert not read["tfds"].startswith(str(site)) and not read["tensorflow"]
    assert read["sources"][0] == f"TFDS cifar10 (train, test) in {tfds_data_dir}/cifar10/3.0.2"
    assert_same_as_originals(read, originals)


def test_label_sets_map_onto_the_datasets_images_by_their_ids(prepared, originals):
    """In this process (no preparing): a TFDS label set becomes a LabelTable keyed by official index, and through the
    dataset's ids it labels each training image; a key not in cifar10_n is an error listing the sets."""
    tfds_data_dir = str(prepared[0])
    dataset = load_dataset("cifar10", tfds_data_dir=tfds_data_dir)
    table = tfds_label_table("cifar10", "worse_label", 10, tfds_data_dir)
    assert table.where == "TFDS cifar10_n [worse_label]" and table.paths is None
    order = image_order(dataset)
    np.testing.assert_array_equal(order.indices, np.arange(1500))
    np.testing.assert_array_equal(labels_for_images(table, order), originals["cifar10_n"]["worse_label"])
    with pytest.raises(DataError, match="TFDS cifar10_n: no key 'worst_label'; it holds aggre_label, clean_label, "):
        tfds_label_table("cifar10", "worst_label", 10, tfds_data_dir)


def test_tfds_cifar10_ids_are_the_official_indices_image_order_c10_describes(prepared, shared_data):
    """CIFAR-10N's image_order_c10.npy lists the official index of each image in TFDS's cifar10 (shuffled) order;
    the records TFDS stored here, read in storage order, carry ids in that same relative order (TFDS shuffles by
    each record's key, its official index), so a record's id is the official index that file means."""
    import tensorflow_datasets as tfds

    order_file = shared_data / "cifar10n" / "image_order_c10.npy"
    if not order_file.exists():
        pytest.skip(f"{order_file} is absent")
    source = tfds.builder("cifar10", data_dir=str(prepared[0])).as_data_source(
        "train", file_format="array_record", decoders={"image": tfds.decode.SkipDecoding()})
    stored = [record_position(source[i]) for i in range(len(source))]
    official = np.load(order_file)
    np.testing.assert_array_equal(stored, official[official < len(source)])


def test_label_sets_without_their_manual_files_name_them_and_write_nothing(tmp_path, monkeypatch):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "image_order_c10.npy").write_bytes(b"")
    with pytest.raises(DataError) as error:
        tfds_label_sets("cifar10", str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"TFDS cifar10_n is not prepared in {tmp_path}, and preparing it needs "
                              f"CIFAR-10_human_annotations.csv, side_info_cifar10N.csv in {manual} "), message
    assert message.endswith("or pass CIFAR-10N's CIFAR-10_human.pt as the label file") and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]
    with pytest.raises(DataError, match="svhn: lr_jax reads TFDS label sets only for cifar10"):
        tfds_label_sets("svhn", str(tmp_path))


def test_offline_with_nothing_prepared_is_one_line_exit_2_and_writes_nothing(tmp_path):
    tfds_data_dir, workdir = tmp_path / "tfds", tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "lr_jax.experiments.cifar10", "--preset", "tiny", "--tfds_data_dir", str(tfds_data_dir),
         "--workdir", str(workdir), "--no_progress"],
        env={**os.environ, **OFFLINE, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.endswith("\n") and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: TFDS cifar10 is not prepared in {tfds_data_dir} and its source "
                                  "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (")
    for way_out in ("pass --data_dir with cifar-10-binary.tar.gz", "--tfds_data_dir with a folder where TFDS has "
                    "prepared cifar10", f"put cifar-10-binary.tar.gz into {tfds_data_dir}/downloads/manual"):
        assert way_out in done.stderr
    assert not workdir.exists() and not tfds_data_dir.exists()


def test_svhn_offline_names_all_three_files_it_needs(tmp_path, monkeypatch):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DataError) as error:
        load_dataset("svhn", tfds_data_dir=str(tmp_path))
    message = str(error.value)
    assert "TFDS svhn_cropped is not prepared" in message and "http://ufldl.stanford.edu/housenumbers/" in message
    assert "--data_dir with a folder of train_32x32.mat, test_32x32.mat" in message
    assert f"put extra_32x32.mat, test_32x32.mat, train_32x32.mat into {tmp_path}/downloads/manual" in message
    assert list(tmp_path.iterdir()) == []


def test_without_tensorflow_nothing_is_prepared_and_the_error_says_how_to_install_it(tmp_path, generated):
    write_cifar_archive(tmp_path / "downloads" / "manual", tmp_path / "src", generated, 20)
    message = python(LOAD_ERROR, tmp_path, tensorflow=False).strip()
    assert message.startswith(f"TFDS cifar10 is not prepared in {tmp_path}, and preparing it needs TensorFlow, "
                              "which is not installed (`pip install -r requirements.txt` installs tensorflow-cpu); "
                              "or pass --data_dir"), message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads", "src"]


def test_a_manual_file_that_is_not_the_published_one_is_refused_by_its_checksum(tmp_path, generated):
    manual = tmp_path / "downloads" / "manual"
    write_cifar_archive(manual, tmp_path / "src", generated, 50)
    message = python(LOAD_ERROR, tmp_path).strip().splitlines()[-1]  # after TFDS's own "Downloading and ..."
    assert message.startswith("TFDS cifar10: a source file is not the published one (") and "\n" not in message
    assert message.endswith(f"); replace it in {manual}, or pass --data_dir with cifar-10-binary.tar.gz / "
                            "cifar-10-python.tar.gz or its folder"), message
    assert not (tmp_path / "cifar10" / "3.0.2").exists()


def test_tfds_data_dir_beside_a_data_dir_is_refused(tmp_path):
    with pytest.raises(DataError, match=rf"--tfds_data_dir applies only where the data come from TFDS, but cifar10 "
                                        rf"reads {tmp_path}"):
        load_dataset("cifar10", str(tmp_path), tfds_data_dir=str(tmp_path / "tfds"))


def test_a_copy_prepared_as_tfrecord_is_refused_with_the_ways_out(tmp_path, generated):
    tfds_data_dir, manual = tmp_path / "data", tmp_path / "data" / "downloads" / "manual"
    write_cifar_archive(manual, tmp_path / "src", generated, 20)
    site = tfds_copy_registering(tmp_path / "site", manual)
    assert python(PREPARE_TFRECORD, tfds_data_dir, pythonpath=[site, REPO_ROOT]).strip().endswith("tfrecord")
    with pytest.raises(DataError, match=r"TFDS cifar10 in .*/cifar10/3.0.2 is prepared as tfrecord, which lr_jax "
                                        r"cannot read \(it reads array_record, which it prepares itself\); pass "
                                        r"another --tfds_data_dir, or --data_dir"):
        load_dataset("cifar10", tfds_data_dir=str(tfds_data_dir))


def test_train_labels_tfds_relabels_the_training_images_from_cifar10_n(prepared, originals):
    """--train_labels tfds --train_label_key worse_label: TFDS's cifar10_n labels the training images of TFDS's
    cifar10 by official index; validation keeps the dataset's labels; the source names the builder and set."""
    from lr_jax.config import build_config
    from lr_jax.experiments.runner import read_splits

    config, options = build_config("cifar10", {"train_labels": "tfds", "train_label_key": "worse_label",
                                               "tfds_data_dir": str(prepared[0]), "val_size": 100})
    data, splits, source = read_splits(config, options, log=lambda line: None)
    worse = originals["cifar10_n"]["worse_label"]
    np.testing.assert_array_equal(splits.train_labels, worse[splits.train_ids])
    np.testing.assert_array_equal(splits.val_labels, data.train_labels[splits.val_index])
    assert source["file"] == "TFDS cifar10_n [worse_label]" and source["sha256"] is None
    assert source["noise_rate"] == pytest.approx(np.mean(worse != data.train_labels))
    with pytest.raises(ValueError, match="--train_labels tfds needs --train_label_key"):
        build_config("cifar10", {"train_labels": "tfds"})
