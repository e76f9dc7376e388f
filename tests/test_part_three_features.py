"""Part three's training features end to end: random-resized crops in the pmapped step (1 device = 4 devices, online
labels on the student's own crop) and --train_labels through the CLI (labels replaced for training only, the
label source and label-repair metrics recorded, every bad file refused before anything is written)."""

from __future__ import annotations

import csv
import json
import pickle
import zipfile

import chex
import jax
import numpy as np
import pytest

import test_train_step
import test_variants
from test_train_step import setup  # noqa: F401  (fixture)
from cli_runs import RUN_FLAGS, run_cli, write_image_folder
from lr_jax import augment
from lr_jax.config import build_config
from test_variants import first_batch, softmax_of, splits, teacher, tiny_config  # noqa: F401  (fixtures)


def test_random_resized_crops_train_the_same_on_one_and_four_devices(setup):  # noqa: F811
    """The step's random-resized crop depends only on each example's position in the global batch."""
    crops = dict(crop="random_resized", crop_scale=(0.2, 1.0))
    one, one_metrics = test_train_step.run_steps(setup, 1, **crops)
    four, four_metrics = test_train_step.run_steps(setup, 4, **crops)
    pad, _ = test_train_step.run_steps(setup, 1)
    first = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)
    leaves = jax.tree_util.tree_leaves
    assert max(np.max(np.abs(a - b)) for a, b in zip(leaves(first(one.params)), leaves(first(pad.params)))) > 1e-4
    chex.assert_trees_all_close(first(four.params), first(one.params), rtol=1e-4, atol=1e-5)
    for m1, m4 in zip(one_metrics, four_metrics):
        np.testing.assert_allclose(m4["loss"], m1["loss"][0], rtol=1e-5)


def test_online_labels_are_the_refinerys_softmax_on_the_students_random_resized_crop(splits, teacher):  # noqa: F811
    """Each example is the random-resized crop its key gives of its own image, and the refinery labels that crop."""
    config = tiny_config(label_mode="online", crop="random_resized", crop_scale="0.2,0.6")
    batch = first_batch(splits, teacher, config)
    options = batch["options"]
    assert options.crop == "random_resized" and options.crop_scale == (0.2, 0.6)
    # The step's per-example keys, rebuilt: fold_in(fold_in(rng, step 0), position in the global batch).
    step_key = jax.random.fold_in(jax.random.PRNGKey(8), 0)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(step_key, np.arange(config.batch_size))
    expected = augment.random_resized_crop(test_variants.unit_pixels(splits, batch["indices"]), keys, (0.2, 0.6),
                                           options.crop_ratio, options.flip)
    np.testing.assert_allclose(batch["pixels"], np.asarray(expected), atol=1e-5)
    on_crops = softmax_of(teacher.model_name, teacher.variables, splits, batch["pixels"])
    np.testing.assert_allclose(batch["targets"], on_crops, atol=1e-5)
    assert not np.allclose(batch["targets"], teacher.soft_labels[batch["indices"]], atol=1e-3)


@pytest.mark.parametrize("flags, message", [
    (["--crop_scale", "0.5,1"], "--crop_scale applies to --crop random_resized only"),
    (["--crop", "random_resized", "--crop_scale", "0.5"], "--crop_scale '0.5': expected two numbers MIN,MAX"),
    (["--crop", "random_resized", "--crop_scale", "0.5,1.5"], "MAX <= 1"),
    (["--crop", "random_resized", "--crop_ratio", "2,1"], "expected 0 < MIN <= MAX"),
    (["--train_label_key", "worse_label"], "--train_label_key needs --train_labels"),
])
def test_crop_and_label_flags_are_checked(flags, message):
    args = {flag.lstrip("-"): value for flag, value in zip(flags[::2], flags[1::2])}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config("cifar10", args)


# --train_labels through the CLI, on a tiny image folder (4 classes x 12 images, 8 held out).


def folder_rows(data_dir):
    """(relative path, dataset label) of every training image of the tiny image folder, in reading order."""
    from lr_jax.data import load_dataset

    data = load_dataset("cifar10", str(data_dir))
    return list(zip(data.train_ids, data.train_labels.tolist()))


def write_csv(path, rows, header=("path", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    data_dir = write_image_folder(root / "data")
    rows = folder_rows(data_dir)
    noisy = [(path, (label + 1) % 4 if i % 4 == 0 else label) for i, (path, label) in enumerate(rows)]
    return root, data_dir, rows, noisy


def test_a_run_on_replaced_labels_records_their_source_and_repairs(folder):
    root, data_dir, rows, noisy = folder
    labels = write_csv(root / "noisy.csv", noisy)
    clean_run, noisy_run = root / "clean_run", root / "noisy_run"
    for workdir, extra in ((clean_run, []), (noisy_run, ["--train_labels", labels])):
        done = run_cli(["--data_dir", data_dir, "--workdir", workdir, *RUN_FLAGS, *map(str, extra)])
        assert done.returncode == 0, done.stderr[-3000:]
    clean, result = (json.loads((w / "results.json").read_text()) for w in (clean_run, noisy_run))
    source = result["dataset"]["label_source"]
    assert source["file"] == str(labels) and source["key"] is None and len(source["sha256"]) == 64
    assert source["noise_rate"] == pytest.approx(12 / 48)  # every 4th of the 48 images relabelled
    assert 0 < source["noise_rate_train"] < 1 and clean["dataset"]["label_source"] is None
    assert "of the training images' labels differ from the dataset's" in (noisy_run / "log.txt").read_text()
    assert [row["trained_on"] for row in result["generations"]] == ["given labels (noisy.csv)", "generation 1"]
    assert "training tiny_cnn on given labels (noisy.csv)" in (noisy_run / "log.txt").read_text()
    for row in result["generations"]:
        assert {"train_accuracy_dataset_labels", "labels_repaired", "labels_broken"} <= set(row)
        assert row["labels_repaired"] >= 0 and row["labels_broken"] >= 0
    assert "labels_repaired" not in clean["generations"][0]
    # Validation keeps the dataset's labels and the same images: the fingerprints differ only by training labels.
    from lr_jax import workdir as workdir_lib

    record = lambda run: json.loads((run / workdir_lib.CONFIG_FILE).read_text())["data"]
    assert record(clean_run)["num_val"] == record(noisy_run)["num_val"] == 8
    assert record(clean_run)["sha256"] != record(noisy_run)["sha256"]
    # The report draws the label-repair plot for the run on replaced labels, and names its label file.
    from lr_jax import report

    paths = report.main([str(noisy_run), str(clean_run), "--out", str(root / "report")])
    assert paths["label_repair"].endswith("label_repair.png")
    assert "labels noisy.csv" in (root / "report" / "summary.md").read_text()


def malicious_pt(path, marker):
    """A torch-style zip whose pickle would create `marker` if it were ever run."""

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"clean_label": Exploit()}, protocol=2))
    return path


@pytest.mark.parametrize("case", ["short", "outside", "missing_key", "unknown_path", "duplicate", "missing_row",
                                  "pickle"])
def test_bad_label_files_are_refused_before_anything_is_written(folder, case):
    root, data_dir, rows, _ = folder
    where = root / case
    where.mkdir(exist_ok=True)
    key = []
    if case == "short":
        path = write_csv(where / "labels.csv", [(i, 0) for i in range(40)], ("index", "label"))
        expected = "labels.csv"
    elif case == "outside":
        path = write_csv(where / "labels.csv", [(p, 7 if i == 3 else label) for i, (p, label) in enumerate(rows)])
        expected = "labels.csv"
    elif case == "missing_key":
        path, key = where / "labels.npz", ["--train_label_key", "worse_label"]
        np.savez(path, aggre_label=np.zeros(len(rows), np.int64))
        expected = "aggre_label"
    elif case == "unknown_path":
        path = write_csv(where / "labels.csv", [*rows[:-1], ("train/c0/nothing.png", 0)])
        expected = "nothing.png"
    elif case == "duplicate":
        path = write_csv(where / "labels.csv", [*rows, rows[0]])
        expected = "duplicate"
    elif case == "missing_row":
        path = write_csv(where / "labels.csv", rows[1:])
        expected = "labels.csv"
    else:
        path, key = malicious_pt(where / "labels.pt", where / "pwned"), ["--train_label_key", "clean_label"]
        expected = "labels.pt"
    workdir = where / "run"
    done = run_cli(["--data_dir", data_dir, "--workdir", workdir, *RUN_FLAGS, "--train_labels", path, *key])
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not workdir.exists()
    assert not (where / "pwned").exists()
