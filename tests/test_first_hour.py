"""A newcomer's mistakes through the real CLI: each is one line on stderr with exit status 2, no traceback, the
workdir exactly as it was, and the corrected command then runs; --config reruns a run from its own files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cli_runs import RUN_FLAGS, run_cli, write_image_folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("first_hour") / "data")


def snapshot(folder):
    """Every file under `folder` with its bytes (an absent folder: None)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


MISTAKES = [
    (["--model", "resnet99"], "--model 'resnet99' is not a known model"),
    (["--refinery_model", "resnet99"], "--refinery_model 'resnet99' is not a known model"),
    (["--batch_size", "1000", "--train_size", "5"], "--batch_size=1000 is larger than --train_size=5"),
    (["--batch_size", "64"], "--batch_size=64 is larger than the 40 training images"),  # known once data are read
    (["--batch_size", "6"], "--batch_size=6 does not divide by the 4 devices"),
    (["--train_labels", "no_such.csv"], "--train_labels no_such.csv: no such file"),
    (["--refinery_workdir", "no_such_run"], "--refinery_workdir no_such_run: not a run folder"),
    (["--preset", "fast"], "argument --preset: invalid choice: 'fast'"),
    (["--config", "no_such.json"], "--config no_such.json: cannot read it"),
    (["--crop_scale", "0.5,1"], "--crop_scale applies to --crop random_resized only"),
]


@pytest.mark.parametrize("mistake, message", MISTAKES, ids=[m[0][0] + "_" + m[0][1] for m in MISTAKES])
@pytest.mark.parametrize("fresh", [True, False], ids=["new_workdir", "existing_workdir"])
def test_a_mistake_is_one_line_and_leaves_the_workdir_as_it_was(tmp_path, data_dir, mistake, message, fresh,
                                                               request):
    workdir = tmp_path / "run"
    if not fresh:  # a finished run that the mistaken command must not touch
        finished = request.getfixturevalue("finished_run")
        shutil.copytree(finished, workdir)
    before = snapshot(workdir)
    done = run_cli(["--data_dir", data_dir, "--workdir", workdir, *RUN_FLAGS, *mistake], devices=4)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert snapshot(workdir) == before


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("finished") / "run"
    done = run_cli(["--data_dir", data_dir, "--workdir", workdir, *RUN_FLAGS])
    assert done.returncode == 0, done.stderr[-2000:]
    return workdir


def test_the_corrected_command_then_runs(tmp_path, data_dir):
    workdir = tmp_path / "run"
    bad = run_cli(["--data_dir", data_dir, "--workdir", workdir, *RUN_FLAGS, "--model", "resnet99"])
    assert bad.returncode == 2
    good = run_cli(["--data_dir", data_dir, "--workdir", workdir, *RUN_FLAGS])
    assert good.returncode == 0, good.stderr[-2000:]
    assert len(json.loads((workdir / "results.json").read_text())["generations"]) == 2


@pytest.mark.parametrize("source", ["config.json", "results.json", "portable results.json"])
def test_config_file_reruns_a_run(tmp_path, data_dir, finished_run, source):
    """--config with a run's own config.json or results.json (or a portable copy's, whose folders are
    placeholders that flags then give) reproduces its metrics exactly; flags given with it override it."""
    path = finished_run / source.split()[-1]
    if source.startswith("portable"):
        from lr_jax import portable

        portable.copy_portable(str(finished_run), str(tmp_path / "copy"))
        path = tmp_path / "copy" / "results.json"
    rerun = tmp_path / "rerun"
    done = run_cli(["--config", path, "--data_dir", data_dir, "--workdir", rerun, "--no_progress"])
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = lambda run: [{k: v for k, v in row.items() if k in ("val_accuracy", "train_accuracy", "label_entropy")}
                           for row in json.loads((run / "results.json").read_text())["generations"]]
    assert metrics(rerun) == metrics(finished_run)
    shorter = run_cli(["--config", path, "--data_dir", data_dir, "--workdir", tmp_path / "one", "--generations", "1",
                       "--no_progress"])
    assert shorter.returncode == 0 and len(metrics(tmp_path / "one")) == 1


def test_config_file_mistakes_name_the_file(tmp_path, data_dir):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    other = tmp_path / "svhn.json"
    other.write_text(json.dumps({"dataset": "svhn", "epochs": 1}))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"epochz": 1}))
    placeholder = tmp_path / "placeholder.json"
    placeholder.write_text(json.dumps({"config": {"refinery_workdir": "<workdir>/../teacher"}}))
    for path, message in ((bad_json, "not valid JSON"), (other, "made for dataset 'svhn'"),
                          (unknown, "unknown settings epochz"), (placeholder, "a placeholder")):
        done = run_cli(["--config", path, "--data_dir", data_dir, "--workdir", tmp_path / "run", *RUN_FLAGS])
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and str(path) in lines[0] and message in lines[0], done.stderr


def test_live_curves_are_tensorboard_event_files(tmp_path, data_dir):
    """Per step loss, accuracy and learning rate, per epoch images/s and validation accuracy, per generation its
    results on the chain's curve; read back from the event files; --no_tensorboard writes none."""
    from lr_jax import summaries

    workdir = tmp_path / "run"
    done = run_cli(["--data_dir", data_dir, "--workdir", workdir, *RUN_FLAGS])
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads((workdir / "results.json").read_text())
    generation = summaries.read_scalars(str(workdir / "tensorboard" / "generation_2"))
    steps = [step for step, _ in generation["train/loss"]]
    assert steps == list(range(1, 11))  # 2 epochs x 5 steps
    history = payload["generations"][1]["epochs"]
    first_epoch_losses = [value for step, value in generation["train/loss"] if step <= 5]
    assert np.mean(first_epoch_losses) == pytest.approx(history[0]["loss"], rel=1e-5)
    assert generation["train/learning_rate"][0][1] == pytest.approx(0.0)  # warm-up starts at 0
    assert [step for step, _ in generation["epoch/val_accuracy"]] == [5, 10]
    final_val = generation["epoch/val_accuracy"][-1][1]
    assert final_val == pytest.approx(payload["generations"][1]["val_accuracy_no_flip"]
                                      if payload["generations"][1].get("val_accuracy_no_flip") is not None
                                      else payload["generations"][1]["val_accuracy"])
    chain = summaries.read_scalars(str(workdir / "tensorboard" / "chain"))
    assert [step for step, _ in chain["generation/val_accuracy"]] == [1, 2]
    assert chain["generation/label_entropy"][1][1] == pytest.approx(payload["generations"][1]["label_entropy"])
    assert "summaries" in payload["generations"][1]["overhead_seconds"]
    quiet = tmp_path / "quiet"
    done = run_cli(["--data_dir", data_dir, "--workdir", quiet, *RUN_FLAGS, "--no_tensorboard"])
    assert done.returncode == 0 and not (quiet / "tensorboard").exists()
