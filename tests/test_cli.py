"""The real command line, on a tiny generated image folder: a 2-generation run writes valid results."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lr_jax.experiments import runner

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ("airplane", "cat", "dog", "ship")  # sorted, so class id = position
GENERATION_KEYS = ("generation", "val_accuracy", "test_accuracy", "train_accuracy", "train_val_gap",
                   "train_test_gap", "label_entropy", "label_agreement", "train_seconds", "images_per_second")
TINY_RUN = ["--model", "tiny_cnn", "--generations", "2", "--epochs", "1", "--batch_size", "16",
            "--val_size", "16", "--eval_batch_size", "64", "--seed", "3", "--no_progress"]


def write_image_folder(root: pathlib.Path, per_class: int, splits=("train",)) -> pathlib.Path:
    """root/<split>/<class>/NNN.png: 8x8 RGB images, a class-dependent colour plus noise."""
    rng = np.random.default_rng(0)
    for split in splits:
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            colour = np.array([60 + 60 * label, 200 - 40 * label, 120], np.float64)
            for i in range(per_class):
                pixels = np.clip(colour + rng.normal(0, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def check_results(workdir: pathlib.Path, has_test: bool, num_train: int) -> dict:
    """results.json parses, holds the config and one complete row per generation; results.md has the table."""
    with open(workdir / "results.json") as f:
        results = json.load(f)
    assert results["complete"] is True
    assert results["config"]["generations"] == 2 and results["config"]["model"] == "tiny_cnn"
    assert results["dataset"]["class_names"] == list(CLASSES)
    assert results["dataset"]["num_train"] == num_train and results["dataset"]["num_val"] == 16
    rows = results["generations"]
    assert [row["generation"] for row in rows] == [1, 2]
    for row in rows:
        assert set(GENERATION_KEYS) <= set(row), f"missing {set(GENERATION_KEYS) - set(row)}"
        for key in ("val_accuracy", "train_accuracy", "label_agreement"):
            assert 0.0 <= row[key] <= 1.0, (key, row[key])
        assert row["train_val_gap"] == pytest.approx(row["train_accuracy"] - row["val_accuracy"])
        if has_test:
            assert 0.0 <= row["test_accuracy"] <= 1.0
            assert row["train_test_gap"] == pytest.approx(row["train_accuracy"] - row["test_accuracy"])
        else:
            assert row["test_accuracy"] is None and row["train_test_gap"] is None
        assert 0.0 <= row["label_entropy"] <= math.log(len(CLASSES)) + 1e-6
        assert row["train_seconds"] > 0 and row["images_per_second"] > 0
    assert rows[0]["trained_on"] == "ground truth" and rows[1]["trained_on"] == "generation 1"
    table = (workdir / "results.md").read_text()
    table_rows = [line for line in table.splitlines() if line.startswith("| ") and "gen" not in line.split("|")[1]]
    assert len(table_rows) == 2 and table_rows[0].startswith("| 1 |") and table_rows[1].startswith("| 2 |")
    assert "tiny_cnn" in table
    return results


def test_runner_writes_results_for_a_two_generation_chain(tmp_path):
    data_dir = write_image_folder(tmp_path / "data", per_class=20)
    workdir = tmp_path / "run"
    returned = runner.run("cifar10", ["--data_dir", str(data_dir), "--workdir", str(workdir), *TINY_RUN])
    results = check_results(workdir, has_test=False, num_train=4 * 20 - 16)
    assert returned == results
    assert results["run"]["data_dir"] == str(data_dir) and results["config"]["seed"] == 3
    # What defines the results and where/how the run executed are recorded apart.
    from lr_jax import config as config_lib

    assert set(results["config"]) == set(config_lib.CONFIG_FIELDS)
    assert set(results["run"]) == set(config_lib.RUN_OPTION_FIELDS)
    assert json.loads((workdir / "config.json").read_text()).keys() == {*config_lib.CONFIG_FIELDS, "data"}
    # Where the wall time went: data, training compute, each overhead; they add up to no more than the wall time.
    timing = results["timing"]
    rows = results["generations"]
    assert timing["train_seconds"] == pytest.approx(sum(row["train_seconds"] for row in rows))
    assert set(timing["overhead_seconds"]) == {"compile", "sync", "checkpoint", "predict", "save_generation",
                                               "summaries"}  # summaries: the live TensorBoard curves
    assert timing["overhead_seconds"]["predict"] == pytest.approx(
        sum(row["overhead_seconds"]["predict"] for row in rows))
    assert timing["other_seconds"] >= 0 and timing["data_seconds"] > 0
    assert timing["wall_over_train"] == pytest.approx(timing["session_wall_seconds"] / timing["train_seconds"])
    from lr_jax import xla_cpu

    assert results["dataset"]["xla_cpu_path"] == xla_cpu.EIGEN  # the tests run with lr_jax's default path
    assert results["dataset"]["platform"] == "cpu" and results["dataset"]["device_kind"] == "cpu"
    from lr_jax import xla_gpu

    assert results["dataset"]["xla_gpu_kernels"] == f"{xla_gpu.DEFAULT}: no GPU plugin installed"
    assert (workdir / "labels_summary.npz").exists() and (workdir / "log.txt").exists()


def test_results_record_the_code_the_run_started_with(tmp_path, monkeypatch):
    """The runner takes code_version() once, when it starts: a commit made while it trains is not its code. Here
    the code "changes" as soon as training begins; the run's results and every row still name the start's."""
    from lr_jax import loop, provenance

    at_start, later = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}
    current = [at_start]
    monkeypatch.setattr(provenance, "code_version", lambda *args: dict(current[-1]))
    real = loop.train_generation

    def committing_meanwhile(*args, **kwargs):
        current.append(later)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_generation", committing_meanwhile)
    data_dir = write_image_folder(tmp_path / "data", per_class=20)
    written = runner.run("cifar10", ["--data_dir", str(data_dir), "--workdir", str(tmp_path / "run"), *TINY_RUN])
    assert len(current) == 3  # both generations trained after the change
    host = provenance.host()  # beside the code, each row names the CPU that trained it
    assert host["cpus"] >= 1 and (host["isa"] is None or set(host["isa"]) <= set(provenance.ISA_FLAGS))
    assert written["code"] == dict(at_start, host=host)
    assert [row["code"] for row in written["generations"]] == [dict(at_start, host=host)] * 2


def test_runner_rejects_a_batch_that_does_not_divide_by_the_devices(tmp_path, capsys):
    import jax

    if jax.local_device_count() < 2:
        pytest.skip("needs several (simulated) devices")
    data_dir = write_image_folder(tmp_path / "data", per_class=8)
    workdir = tmp_path / "run"
    batch = str(4 * jax.local_device_count() + 1)
    argv = ["--data_dir", str(data_dir), "--workdir", str(workdir), *TINY_RUN, "--batch_size", batch]
    with pytest.raises(SystemExit) as exit_info:  # argparse's error: usage line, message, exit status 2
        runner.run("cifar10", argv)
    assert exit_info.value.code == 2
    assert f"--batch_size={batch} does not divide" in capsys.readouterr().err
    assert not workdir.exists()  # refused before the data are read or anything is written


def test_module_entry_point_runs_as_a_subprocess(tmp_path):
    data_dir = write_image_folder(tmp_path / "data", per_class=20, splits=("train", "test"))
    workdir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "lr_jax.experiments.cifar10", "--data_dir", str(data_dir),
               "--workdir", str(workdir), *TINY_RUN, "--train_size", "48"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = check_results(workdir, has_test=True, num_train=48)
    assert results["dataset"]["num_test"] == 4 * 20
    assert "| 2 |" in done.stdout  # the per-generation table printed at the end


def test_help_documents_the_flags():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "lr_jax.experiments.cifar10", "--help"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for flag in ("--data_dir", "--workdir", "--generations", "--epochs", "--model", "--batch_size",
                 "--learning_rate", "--seed", "--train_size", "--val_size", "--preset"):
        assert flag in done.stdout, flag


def test_boolean_flags_are_spelled_with_underscores_like_every_other_flag(capsys):
    parser = runner.build_parser("cifar10")
    for name in ("augment", "flip", "svhn_extra"):
        assert getattr(parser.parse_args([]), name) is None  # unset: the preset or dataset default applies
        assert getattr(parser.parse_args([f"--{name}"]), name) is True
        assert getattr(parser.parse_args([f"--no_{name}"]), name) is False
        for refused in ([f"--no-{name}"], [f"--{name}", f"--no_{name}"]):
            with pytest.raises(SystemExit):
                parser.parse_args(refused)
    assert "not allowed with argument --augment" in capsys.readouterr().err
    long_flags = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    assert "--no_progress" in long_flags and "--no_augment" in long_flags
    assert [flag for flag in long_flags if "-" in flag[2:]] == []
