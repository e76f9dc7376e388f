"""python -m lr_jax.labels (export, issues, kfold, compare) on a tiny image folder, and what --train_labels reads
back: an export's soft (or hard) labels covering one run's training images, and -1 rows left out of training."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cli_runs import REPO_ROOT, RUN_FLAGS, run_cli, subprocess_env, write_image_folder
from lr_jax.config import Config, RunOptions
from lr_jax.data import DataError, make_dataset, make_splits
from lr_jax.data.label_files import (
    EXCLUDED, NO_ROW, ImageOrder, LabelFileError, label_source_record, load_train_labels, official_order,
)
from lr_jax.labels import cli, compare, export_format, kfold
from lr_jax.labels.checks import LabelsError

C = 4
SOURCE_FLAGS = (*RUN_FLAGS, "--generations", "1")  # 40 training images (10 a class), 8 validation images
RETRAIN_FLAGS = (*SOURCE_FLAGS, "--epochs", "1")


def labels_cli(*args, devices: int = 4, timeout: float = 600):
    """`python -m lr_jax.labels ARGS` in a subprocess on `devices` CPU devices."""
    return subprocess.run([sys.executable, "-m", "lr_jax.labels", *map(str, args)], env=subprocess_env(devices),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def one_line_error(done, *expected):
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(text in lines[0] for text in expected), lines[0]


def in_process(argv, capsys):
    """cli.main(argv) here: (exit status, stdout, stderr)."""
    try:
        cli.main([str(a) for a in argv])
        status = 0
    except SystemExit as stop:
        status = stop.code
    out = capsys.readouterr()
    return status, out.out, out.err


def reload_splits(data_dir, **config):
    """The splits a run with these settings trains on (the runner's own path), without training."""
    from lr_jax.experiments import runner

    config = Config(model="tiny_cnn", batch_size=8, val_size=8, **config)
    return runner.read_splits(config, RunOptions(data_dir=str(data_dir)), lambda line: None)[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 1-generation run on labels with every 4th image's label changed (known errors): (root, data_dir, run)."""
    root = tmp_path_factory.mktemp("labels_cli")
    data_dir = write_image_folder(root / "data")
    from lr_jax.data import load_dataset

    data = load_dataset("cifar10", str(data_dir))
    noisy = root / "noisy.csv"
    with open(noisy, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows((p, (y + 1) % C if i % 4 == 0 else y)
                         for i, (p, y) in enumerate(zip(data.train_ids, data.train_labels.tolist())))
    run = root / "run"
    done = run_cli(["--data_dir", data_dir, "--workdir", run, *SOURCE_FLAGS, "--train_labels", noisy], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, data_dir, run, noisy


# --- what --train_labels reads back: exclusion and an export's coverage (no training) -------------------------


def toy(count=40):
    images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, 2, 2, 1)).copy()
    ids = np.asarray([f"train/c{i % C}/{i:04d}.png" for i in range(count)])
    return make_dataset("toy", [f"c{c}" for c in range(C)], (images, np.arange(count) % C), train_ids=ids)


def test_minus_one_leaves_images_out_of_training_and_validation_unchanged():
    data = toy()
    plain = make_splits(data, val_size=8, train_size=None, seed=3)
    labels = data.train_labels.astype(np.int64)
    dropped = plain.train_index[:5]
    labels[dropped] = EXCLUDED
    labels[plain.val_index[:2]] = EXCLUDED  # on validation images: no effect
    splits = make_splits(data, val_size=8, train_size=None, seed=3, train_labels=labels)
    np.testing.assert_array_equal(splits.val_index, plain.val_index)
    np.testing.assert_array_equal(splits.val_labels, plain.val_labels)
    np.testing.assert_array_equal(splits.train_index, np.setdiff1d(plain.train_index, dropped))
    np.testing.assert_array_equal(splits.train_images[:, 0, 0, 0], splits.train_index)  # the images follow
    assert splits.train_ids.tolist() == data.train_ids[splits.train_index].tolist()
    with pytest.raises(DataError, match=r"--train_labels leaves every training image out \(label -1\)"):
        make_splits(data, 8, None, 3, train_labels=np.full(40, EXCLUDED))


@pytest.mark.parametrize("soft", [False, True])
def test_rows_missing_only_for_images_not_trained_on_are_accepted(soft):
    """An export's missing rows (NO_ROW, NaN soft rows) may be validation images, never training images."""
    data = toy()
    plain = make_splits(data, val_size=8, train_size=None, seed=3)
    labels = np.eye(C, dtype=np.float32)[data.train_labels] if soft else data.train_labels.astype(np.int64)
    labels[plain.val_index] = np.nan if soft else NO_ROW
    splits = make_splits(data, 8, None, 3, train_labels=labels)
    np.testing.assert_array_equal(splits.train_index, plain.train_index)
    labels[plain.train_index[3]] = np.nan if soft else NO_ROW
    with pytest.raises(DataError, match=rf"--train_labels has no rows for 1 of this run's training images "
                                        rf"\({data.train_ids[plain.train_index[3]]}\).*--seed") as error:
        make_splits(data, 8, None, 3, train_labels=labels)
    assert "\n" not in str(error.value)


def test_csv_minus_one_is_read_and_other_negatives_refused(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("index,label\n0,1\n1,-1\n2,3\n")
    np.testing.assert_array_equal(load_train_labels(str(path), official_order(3), C), [1, EXCLUDED, 3])
    path.write_text("index,label\n0,1\n1,-2\n2,3\n")
    with pytest.raises(LabelFileError, match=r"outside \[0, 4\) \(-1: leave the image out of training\)"):
        load_train_labels(str(path), official_order(3), C)
    np.save(tmp_path / "labels.npy", np.array([0, -1, 2]))  # only a CSV says -1
    with pytest.raises(LabelFileError, match="outside"):
        load_train_labels(str(tmp_path / "labels.npy"), official_order(3), C)


@pytest.mark.parametrize("extension", [".csv", ".npz"])
@pytest.mark.parametrize("kind", ["path", "index"])
def test_an_export_covers_some_images_and_others_get_markers(tmp_path, extension, kind):
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(C), 6).astype(np.float32)
    given = rng.integers(0, C, 6)
    all_ids = [f"train/c{i % C}/{i:04d}.png" for i in range(9)] if kind == "path" else list(range(9))
    rows = [7, 0, 3, 4, 8, 1]  # images 2, 5, 6 (say validation) have no row
    path = str(tmp_path / f"export{extension}")
    export_format.write_labels(path, [all_ids[r] for r in rows], given, soft, list("abcd"), {"run": "r"})
    order = ImageOrder(paths=tuple(all_ids)) if kind == "path" else official_order(9)
    got = load_train_labels(path, order, C)
    expected = np.full((9, C), np.nan, np.float32)
    expected[rows] = soft
    np.testing.assert_array_equal(got, expected)
    record = label_source_record(path, None, "x", got, np.zeros(9, np.int64))
    assert record["noise_rate"] == pytest.approx(np.mean(soft.argmax(1) != 0))  # over the rows it has
    if extension == ".npz":
        hard = load_train_labels(path, order, C, "label")
        assert hard.tolist() == [soft[rows.index(i)].argmax() if i in rows else NO_ROW for i in range(9)]
        with pytest.raises(LabelFileError, match="no key 'nope'; it holds given_label, label, soft_labels"):
            load_train_labels(path, order, C, "nope")
    stranger = ImageOrder(paths=tuple(all_ids[:5])) if kind == "path" else official_order(5)
    with pytest.raises(LabelFileError, match=r"2 (path\(s\)|index\(es\)) are not training images"):
        load_train_labels(path, stranger, C)


# --- pure pieces of the commands ---------------------------------------------------------------------------------


def test_issue_rows_rank_by_suspicion():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], np.float32)
    rows = cli.issue_rows(["a", "b", "c", "d"], np.array([0, 0, 1, 1]), probs, ["cat", "dog"])
    assert [row[:2] for row in rows] == [[1, "b"], [2, "c"], [3, "d"], [4, "a"]]
    assert rows[0][2:6] == [0, "cat", 1, "dog"]
    assert [float(v) for v in rows[0][6:]] == pytest.approx([0.8, 0.2, 0.8])


def test_detect_on_known_flips():
    """8 images, the last 3 mislabelled; the refinery flags images 5, 6 (argmax != given) and 0 (a false alarm)."""
    given = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    is_error = np.arange(8) >= 5
    p_given = np.array([0.4, 0.9, 0.8, 0.7, 0.95, 0.1, 0.2, 0.6])
    probs = np.zeros((8, 2), np.float32)
    probs[np.arange(8), given] = p_given
    probs[np.arange(8), 1 - given] = 1 - p_given
    rows, flags = compare.detect({"in-sample": probs}, given, is_error)
    refinery = rows[0]
    assert refinery["method"] == "refinery" and flags["refinery", "in-sample"].tolist() == [
        True, False, False, False, False, True, True, False]
    assert (refinery["flagged"], refinery["errors"]) == (3, 3)
    assert refinery["precision"] == pytest.approx(2 / 3) and refinery["recall"] == pytest.approx(2 / 3)
    # suspicion ranks 5 > 6 > 0 > 7 > 3 > 2 > 1 > 4: the errors 5, 6, 7 against 5 correct labels
    assert refinery["auroc"] == pytest.approx((5 + 5 + 4) / 15)
    assert rows[1]["method"] == "cleanlab" and rows[1]["auroc"] == pytest.approx(refinery["auroc"])
    table = compare.markdown(rows, "t")
    assert "| method | probabilities | flagged | precision | recall | F1 | AUROC | AP |" in table


def test_read_kfold_reorders_and_checks(tmp_path):
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]], np.float32)
    path = str(tmp_path / "k.npz")
    np.savez(path, ids=np.array(["b", "c", "a"]), given=np.array([1, 0, 0]), probs=probs)
    got = compare.read_kfold(path, np.array(["a", "b", "c"]), np.array([0, 1, 0]))
    np.testing.assert_array_equal(got, probs[[2, 0, 1]])
    with pytest.raises(LabelsError, match="its 3 images are not the run's 3 training images .e.g. 'c'"):
        compare.read_kfold(path, np.array(["a", "b", "d"]), np.array([0, 1, 0]))
    with pytest.raises(LabelsError, match="given labels differ"):
        compare.read_kfold(path, np.array(["a", "b", "c"]), np.array([1, 1, 0]))


def test_fold_plans_hold_out_each_fold_once():
    splits = make_splits(toy(), val_size=8, train_size=None, seed=0)
    assignment, plans = kfold.fold_plans(splits, 3, seed=5)
    held = np.concatenate([plan.held_out for plan in plans])
    assert sorted(held.tolist()) == list(range(len(splits.train_labels)))
    for plan in plans:
        assert not set(plan.splits.train_ids.tolist()) & set(plan.held_out_ids.tolist())
        np.testing.assert_array_equal(plan.splits.test_images, splits.train_images[plan.held_out])
        np.testing.assert_array_equal(plan.splits.val_images, splits.val_images)
        assert (assignment[plan.held_out] == plan.fold).all()
    with pytest.raises(LabelsError, match="--folds 9 is larger than class"):
        kfold.fold_plans(splits, 9, seed=0)


# --- the commands on a tiny run --------------------------------------------------------------------------------


def test_export_round_trips_through_train_labels(source, tmp_path):
    root, data_dir, run, noisy = source
    csv_path, npz_path = tmp_path / "g1.csv", tmp_path / "g1.npz"
    done = labels_cli("export", run, "--out", csv_path)
    assert done.returncode == 0 and "wrote" in done.stdout, done.stderr[-3000:]
    assert cli.main(["export", str(run), "--generation", "1", "--out", str(npz_path)]) is None
    from lr_jax import checkpoints, run_data

    saved = checkpoints.load_generation(str(run), 1)[0]["soft_labels"]
    splits = run_data.reload_run(str(run)).splits
    exported = export_format.read_labels(str(npz_path))
    assert exported["ids"].tolist() == splits.train_ids.tolist()
    assert exported["given_label"].tolist() == splits.train_labels.tolist()
    np.testing.assert_array_equal(exported["soft_labels"], saved)
    assert exported["source"]["run"] == "run" and exported["source"]["generation"] == 1
    assert exported["source"]["model"] == "tiny_cnn" and "code_commit" in exported["source"]
    with open(run / "results.json") as f:
        payload = json.load(f)
    row = payload["generations"][0]  # the generation's accuracy and machine tell a retrained one apart
    assert exported["source"]["val_accuracy"] == row["val_accuracy"]
    assert exported["source"]["host"] == row["code"]["host"]
    assert (exported["source"]["platform"], exported["source"]["device_kind"]) == ("cpu", "cpu")
    assert payload["dataset"]["platform"] == "cpu"
    assert export_format.read_labels(str(csv_path))["source"] == exported["source"]
    for path, key in ((csv_path, None), (npz_path, "label")):  # soft labels; the hard argmax
        new = tmp_path / f"new_{path.suffix[1:]}"
        flags = ["--train_labels", path] + (["--train_label_key", key] if key else [])
        done = run_cli(["--data_dir", data_dir, "--workdir", new, *RETRAIN_FLAGS, *flags], timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        source_record = json.loads((new / "results.json").read_text())["dataset"]["label_source"]
        assert source_record["file"] == str(path) and source_record["key"] == key
        reloaded = run_data.reload_run(str(new)).splits
        assert reloaded.train_ids.tolist() == splits.train_ids.tolist()
        np.testing.assert_array_equal(reloaded.train_labels, saved.argmax(1))
        if key is None:
            np.testing.assert_allclose(reloaded.train_targets, saved, atol=1e-6)
        else:
            assert reloaded.train_targets is None
        changed = saved.argmax(1) != splits.dataset_train_labels
        assert source_record["noise_rate_train"] == pytest.approx(np.mean(changed))
    soft_back = reload_splits(data_dir, train_labels=str(npz_path))  # the .npz's soft labels, without training
    np.testing.assert_allclose(soft_back.train_targets, saved, atol=1e-6)
    with pytest.raises(DataError, match="no rows for .* of this run's training images"):  # another split
        reload_splits(data_dir, train_labels=str(npz_path), seed=1)


def test_issues_ranks_every_training_image(source, tmp_path, capsys):
    root, data_dir, run, noisy = source
    status, out, err = in_process(["issues", run, "--out", tmp_path / "issues", "--top", 6], capsys)
    assert status == 0, err
    with open(tmp_path / "issues" / cli.ISSUES_CSV, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == cli.ISSUE_COLUMNS and len(rows) == 41
    assert [int(row[0]) for row in rows[1:]] == list(range(1, 41))
    suspicion = [float(row[-1]) for row in rows[1:]]
    assert suspicion == sorted(suspicion, reverse=True)
    assert all(float(row[-1]) == pytest.approx(1 - float(row[-2])) for row in rows[1:])
    from PIL import Image

    with Image.open(tmp_path / "issues" / cli.ISSUES_PNG) as image:
        assert image.format == "PNG" and image.size[0] == 900  # 6 suspects: 6 cells of 150 px across
    status, _, err = in_process(["issues", run, "--generation", 3], capsys)
    assert status == 2 and "generation 3 was not saved; saved generations: 1" in err and str(run) in err
    assert len(err.strip().splitlines()) == 1


def test_errors_are_one_line(source, tmp_path, capsys):
    root, data_dir, run, noisy = source
    for argv, expected in ((["export", run, "--out", tmp_path / "x.txt"], "unknown label export type '.txt'"),
                           (["export", tmp_path / "nowhere", "--out", tmp_path / "x.csv"], "nowhere"),
                           (["issues", run, "--top", 0], "--top: must be at least 1"),
                           (["compare", run], "--out")):
        status, _, err = in_process(argv, capsys)
        assert status == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.csv").exists()
    done = labels_cli("kfold", tmp_path / "k", "--folds", 11, "--data_dir", data_dir, *SOURCE_FLAGS)
    one_line_error(done, "--folds 11 is larger than class")
    np.savez(tmp_path / "sets.npz", worse_label=np.zeros(48, np.int64))
    done = labels_cli("kfold", tmp_path / "k", "--folds", 2, "--data_dir", data_dir, *SOURCE_FLAGS,
                      "--train_labels", tmp_path / "sets.npz", "--train_label_key", "worse")
    one_line_error(done, "sets.npz: no key 'worse'; it holds worse_label")
    assert not (tmp_path / "k").exists()


def test_kfold_out_of_fold_resumes_and_is_the_same_on_one_device(source, tmp_path, capsys):
    root, data_dir, run, noisy = source
    flags = ["--folds", 2, "--data_dir", data_dir, *SOURCE_FLAGS, "--train_labels", noisy]
    four, one = tmp_path / "four", tmp_path / "one"
    done = labels_cli("kfold", four, *flags)
    assert done.returncode == 0 and "2 trained now, 0 reloaded" in done.stdout, done.stderr[-3000:]
    finished = four / "fold_0" / "checkpoints" / "finished"
    stamp = os.stat(finished).st_mtime_ns
    again = labels_cli("kfold", four, *flags)
    assert again.returncode == 0 and "0 trained now, 2 reloaded" in again.stdout, again.stderr[-3000:]
    assert "fold 1: generation 1/1: reloaded from" in (four / "log.txt").read_text()
    assert os.stat(finished).st_mtime_ns == stamp
    done = labels_cli("kfold", one, *flags, devices=1)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(four / kfold.KFOLD_FILE) as a, np.load(one / kfold.KFOLD_FILE) as b:
        np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-5)
        np.testing.assert_array_equal(a["folds"], b["folds"])
        ids, folds, given = a["ids"], a["folds"], a["given"]
    for fold in range(2):
        with np.load(four / f"fold_{fold}" / kfold.FOLD_IDS) as fold_ids:
            train, held = set(fold_ids["train_ids"].tolist()), set(fold_ids["held_out_ids"].tolist())
        assert not train & held and train | held == set(ids.tolist())
        assert held == set(ids[folds == fold].tolist())
    from lr_jax import run_data

    splits = run_data.reload_run(str(run)).splits
    assert ids.tolist() == splits.train_ids.tolist() and given.tolist() == splits.train_labels.tolist()
    # compare, in-sample and on these out-of-fold probabilities
    out = tmp_path / "compare"
    status, _, err = in_process(["compare", run, "--kfold", four / kfold.KFOLD_FILE, "--out", out], capsys)
    assert status == 0, err
    check_compare(out, data_dir, splits)


def check_compare(out: pathlib.Path, data_dir, splits):
    """detection.json's rows, and the two label files read back by a run on the same split."""
    result = json.loads((out / compare.DETECTION_JSON).read_text())
    is_error = splits.train_labels != splits.dataset_train_labels
    assert result["errors"] == int(is_error.sum()) > 0 and result["images"] == 40
    assert [(r["method"], r["probabilities"]) for r in result["rows"]] == [
        ("refinery", "in-sample"), ("cleanlab", "in-sample"), ("refinery", "k-fold"), ("cleanlab", "k-fold")]
    assert "| refinery | k-fold |" in (out / compare.DETECTION_MD).read_text()
    dropped = reload_splits(data_dir, train_labels=str(out / compare.DROP_FILE))
    np.testing.assert_array_equal(dropped.val_ids, splits.val_ids)
    assert set(dropped.train_ids.tolist()) <= set(splits.train_ids.tolist())
    kept = len(dropped.train_ids)
    assert kept == 40 - result["rows"][3]["flagged"]
    relabelled = reload_splits(data_dir, train_labels=str(out / compare.RELABEL_FILE))
    assert relabelled.train_ids.tolist() == splits.train_ids.tolist()
    from lr_jax import checkpoints

    soft = checkpoints.load_generation(result["source"]["run_dir"], 1)[0]["soft_labels"]
    np.testing.assert_array_equal(relabelled.train_labels, soft.argmax(1))


# --- experiments/label_issues.sh: its arguments (DRY_RUN prints the commands; nothing heavy runs) ----------------


def label_issues_sh(*args, **env):
    return subprocess.run(["bash", str(REPO_ROOT / "experiments" / "label_issues.sh"), *map(str, args)],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


def test_label_issues_script_arguments(tmp_path):
    root = tmp_path / "runs"
    (root / "labels").mkdir(parents=True)
    for design in ("worst", "aggre"):
        (root / design / "online_seed0" / "checkpoints" / "finished" / "1").mkdir(parents=True)
        (root / design / "online_seed0" / "results.json").write_text("{}")
    done = label_issues_sh(root, "--data_dir", "/d", "--cache_dir", "/c", DRY_RUN="1", SEEDS="0")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 12 and not (root / "label_issues").exists()  # no clean retrain: Part two's is the ceiling
    worst = f"{root}/label_issues/worst/seed0"
    assert lines[0] == (f"python -m lr_jax.labels export {root}/worst/online_seed0 --generation 1 --out "
                        f"{worst}/export_g1.npz")
    assert lines[2].startswith(f"python -m lr_jax.labels kfold {worst}/kfold --folds 5 --preset cpu --seed 0 ")
    assert f"--train_labels {root}/labels/worse_label.csv --data_dir /d --cache_dir /c" in lines[2]
    assert f"--kfold {worst}/kfold/kfold_probs.npz --out {worst}" in lines[3]
    assert f"--train_labels {worst}/drop_cleanlab.csv" in lines[5] and "--generations 1 --workdir" in lines[5]
    assert "aggre_label.csv" in lines[8] and lines[11].endswith(f"--workdir {root}/label_issues/aggre/drop_cleanlab_seed0")
    for args, env, message in (((), {}, "usage: label_issues.sh RUNS_ROOT"),
                               ((root,), {}, "give --data_dir"),
                               ((root, "--data_dir", "/d"), {"DESIGNS": "crops"}, "unknown design 'crops'"),
                               ((root, "--data_dir", "/d"), {"SEEDS": "0 1"}, "online_seed1/results.json is missing"),
                               ((root, "--data_dir", "/d"), {"FOLDS": "1"}, "FOLDS must be a whole number >= 2"),
                               ((root, "--data_dir", "/d", "--seed", "3"), {}, "--seed is set by the script"),
                               ((tmp_path, "--data_dir", "/d"), {}, "labels is missing")):
        done = label_issues_sh(*args, **env)
        assert done.returncode == 2 and message in done.stderr, (args, env, done.stderr)


def test_label_issues_script_on_a_fresh_machine(tmp_path):
    """With COLLECTED_ROOT and the chains' checkpoints gone: a seed collected in full is not run again; otherwise
    part_three.sh retrains the chain's generation 1 (NEED_CHAIN=1) before the steps that read it, and a collected
    kfold_probs.npz is restored instead of training the folds; a chain neither here nor collected is an error."""
    root, collected = tmp_path / "runs", tmp_path / "results"
    (root / "labels").mkdir(parents=True)
    for design in ("worst", "aggre"):
        (collected / f"part_three_{design}" / "online_seed0").mkdir(parents=True)
        (collected / f"part_three_{design}" / "online_seed0" / "results.json").write_text("{}")
    issues = collected / "part_three_label_issues"
    (issues / "worst" / "seed0").mkdir(parents=True)
    (issues / "worst" / "seed0" / "detection.json").write_text("{}")
    for arm in ("relabel_refinery", "drop_cleanlab"):
        (issues / "worst" / f"{arm}_seed0").mkdir()
        (issues / "worst" / f"{arm}_seed0" / "results.json").write_text(json.dumps({"generations": [{}]}))
    (issues / "aggre" / "seed0").mkdir(parents=True)
    (issues / "aggre" / "seed0" / "kfold_probs.npz").write_bytes(b"")
    done = label_issues_sh(root, "--data_dir", "/d", DRY_RUN="1", SEEDS="0", COLLECTED_ROOT=str(collected))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"{root}/label_issues/worst/seed0: collected in {issues}/worst, not run again" in lines[0]
    aggre = f"{root}/label_issues/aggre/seed0"
    assert lines[1] == (f"env NEED_CHAIN=1 DESIGNS=aggre SEEDS=0 bash {REPO_ROOT}/experiments/part_three.sh {root} "
                        "--data_dir /d")
    assert lines[2].startswith(f"python -m lr_jax.labels export {root}/aggre/online_seed0 --generation 1")
    assert lines[5] == f"cp {issues}/aggre/seed0/kfold_probs.npz {aggre}/kfold/kfold_probs.npz"
    assert lines[6].startswith("python -m lr_jax.labels compare") and len(lines) == 9
    assert not any(" kfold " in line for line in lines) and "drop_cleanlab.csv" in lines[8]
    shutil.rmtree(collected / "part_three_aggre")
    done = label_issues_sh(root, "--data_dir", "/d", DRY_RUN="1", SEEDS="0", COLLECTED_ROOT=str(collected))
    assert done.returncode == 2 and f"{root}/aggre/online_seed0/results.json is missing" in done.stderr
