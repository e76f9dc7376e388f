"""Kill-and-resume of real CLI runs: SIGKILL mid-generation, damaged checkpoints, config checks, --overwrite."""

import json
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from cli_runs import (
    REPO_ROOT, RUN_FLAGS, STEPS_PER_GENERATION, run_cli, saved_generation, subprocess_env,
    truncate_largest_file, write_image_folder,
)
from test_chain import without_timings  # results.json fragments minus wall-clock fields
from lr_jax import checkpoints

# Killed just before generation 2's 8th step: its checkpoints at steps 3, 5 (epoch end) and 6 were due.
KILL_BEFORE_CALL = STEPS_PER_GENERATION + 8


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"))


def flags(images, workdir, *extra):
    return ["--data_dir", images, "--workdir", workdir, *RUN_FLAGS, *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, images):
    """An uninterrupted run."""
    workdir = tmp_path_factory.mktemp("reference")
    done = run_cli(flags(images, workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def killed(tmp_path_factory, images, reference):
    """The same run, SIGKILLed in the middle of generation 2 (kept pristine: tests work on copies)."""
    workdir = tmp_path_factory.mktemp("killed")
    done = run_cli(flags(images, workdir), kill_before_call=KILL_BEFORE_CALL)
    assert done.returncode == -9, (done.returncode, done.stderr[-3000:])
    return workdir


def copy_of(workdir, tmp_path):
    target = tmp_path / "workdir"
    shutil.copytree(workdir, target)
    return target


def training_steps(workdir, generation):
    folder = workdir / "checkpoints" / "training" / f"generation_{generation}"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def assert_same_result(workdir, reference):
    """Same metrics (timings aside) and bit-identical saved parameters, statistics and labels."""
    got = json.loads((workdir / "results.json").read_text())
    want = json.loads((reference / "results.json").read_text())
    assert got["complete"] and want["complete"]
    assert without_timings(got["generations"]) == without_timings(want["generations"])
    for generation in (1, 2):
        chex.assert_trees_all_equal(saved_generation(workdir, generation), saved_generation(reference, generation))


def test_killed_run_was_stopped_mid_generation(killed):
    assert (killed / "checkpoints" / "finished" / "1").is_dir()
    assert not (killed / "checkpoints" / "finished" / "2").exists()
    steps = training_steps(killed, 2)
    assert steps and 0 < max(steps) < STEPS_PER_GENERATION
    results = json.loads((killed / "results.json").read_text())
    assert not results["complete"] and len(results["generations"]) == 1


def test_rerun_after_sigkill_equals_uninterrupted_run(killed, reference, images, tmp_path):
    workdir = copy_of(killed, tmp_path)
    newest = max(training_steps(workdir, 2))
    earlier = json.loads((workdir / "results.json").read_text())
    done = run_cli(flags(images, workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generation 1/2: reloaded" in done.stdout  # not retrained
    assert "generation 1/2: training" not in done.stdout
    assert f"resuming from the checkpoint at step {newest} of {STEPS_PER_GENERATION}" in done.stdout
    assert_same_result(workdir, reference)
    # The wall time of a resumed run counts the killed invocation too, not just the last one.
    resumed = json.loads((workdir / "results.json").read_text())
    assert earlier["wall_seconds"] > 0 and resumed["session_wall_seconds"] > 0
    assert resumed["wall_seconds"] == pytest.approx(earlier["wall_seconds"] + resumed["session_wall_seconds"])


def test_rerun_of_a_finished_run_keeps_its_results_as_they_were(reference, images, tmp_path):
    """Every generation reloaded, nothing trained: results.json and labels_summary.npz stay byte for byte (the
    timing and code of the invocation that trained them); one that lacks a generation is written again."""
    workdir = copy_of(reference, tmp_path)
    kept = {name: (workdir / name).read_bytes() for name in ("results.json", "labels_summary.npz")}
    done = run_cli(flags(images, workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generation 2/2: reloaded" in done.stdout and "already records them: kept as it was" in done.stdout
    assert {name: (workdir / name).read_bytes() for name in kept} == kept

    stale = json.loads(kept["results.json"])
    (workdir / "results.json").write_text(json.dumps(dict(stale, complete=False,
                                                          generations=stale["generations"][:1])))
    again = run_cli(flags(images, workdir))
    assert again.returncode == 0 and "kept as it was" not in again.stdout, again.stderr[-3000:]
    rewritten = json.loads((workdir / "results.json").read_text())
    assert rewritten["complete"] and without_timings(rewritten["generations"]) == without_timings(
        stale["generations"])


def test_truncated_checkpoint_falls_back_to_previous_good_one(killed, reference, images, tmp_path):
    workdir = copy_of(killed, tmp_path)
    previous, newest = training_steps(workdir, 2)[-2:]
    truncate_largest_file(workdir / "checkpoints" / "training" / "generation_2" / str(newest))
    done = run_cli(flags(images, workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"the checkpoint at step {newest}" in done.stdout and "is damaged" in done.stdout
    assert f"fell back to the previous good checkpoint, step {previous}" in done.stdout
    assert f"resuming from the checkpoint at step {previous} of" in done.stdout
    assert (workdir / "checkpoints" / "damaged" / f"training_generation_2_step_{newest}").is_dir()
    assert_same_result(workdir, reference)


def test_every_checkpoint_damaged_is_a_clear_error_not_a_restart(killed, images, tmp_path):
    workdir = copy_of(killed, tmp_path)
    steps = training_steps(workdir, 2)
    for step in steps:
        truncate_largest_file(workdir / "checkpoints" / "training" / "generation_2" / str(step))
    done = run_cli(flags(images, workdir))
    assert done.returncode == 2
    assert "every checkpoint in" in done.stderr and "is damaged" in done.stderr
    assert "Traceback" not in done.stderr
    assert training_steps(workdir, 2) == steps  # nothing was moved or deleted
    assert "epoch 1/2" not in done.stdout.split("generation 2/2")[-1]  # generation 2 did not start over


def test_damaged_finished_generation_is_recomputed_from_its_training_checkpoint(reference, images,
                                                                               tmp_path):
    workdir = copy_of(reference, tmp_path)
    truncate_largest_file(workdir / "checkpoints" / "finished" / "1")
    done = run_cli(flags(images, workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "saved result of generation 1" in done.stdout and "recomputed" in done.stdout
    assert f"resuming from the checkpoint at step {STEPS_PER_GENERATION} of" in done.stdout  # no retraining
    assert "generation 2/2: reloaded" in done.stdout
    assert_same_result(workdir, reference)


def test_workdir_of_another_configuration_is_refused_naming_the_keys(reference, images):
    before = (reference / "results.json").read_bytes()
    done = run_cli(flags(images, reference, "--epochs", "3", "--seed", "1"))
    assert done.returncode == 2
    assert "different configuration" in done.stderr and "epochs, seed differ" in done.stderr
    assert "Traceback" not in done.stderr
    assert (reference / "results.json").read_bytes() == before


def test_overwrite_discards_the_old_run(reference, images, tmp_path):
    workdir = copy_of(reference, tmp_path)
    (workdir / "notes.txt").write_text("not written by lr_jax")
    done = run_cli(flags(images, workdir, "--generations", "1", "--epochs", "1", "--overwrite"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--overwrite: removed" in done.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["config"]["epochs"] == 1 and len(results["generations"]) == 1
    assert not (workdir / "checkpoints" / "finished" / "2").exists()
    assert (workdir / "notes.txt").read_text() == "not written by lr_jax"
    recorded = json.loads((workdir / "config.json").read_text())
    assert recorded["epochs"] == 1


def test_non_finite_loss_stops_with_step_and_loss_and_keeps_last_good_checkpoint(images, tmp_path):
    workdir = tmp_path / "diverged"
    done = run_cli(flags(images, workdir, "--learning_rate", "1e30", "--checkpoint_every", "1"))
    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    message = next(line for line in done.stderr.splitlines() if "non-finite" in line)
    assert "generation 1: non-finite training loss" in message and " at step " in message
    bad_step = int(message.split(" at step ")[1].split()[0])
    kept = training_steps(workdir, 1)
    assert kept and max(kept) == bad_step - 1
    assert f"the last good checkpoint (step {bad_step - 1}) is kept" in message
    manager = checkpoints.open_manager(str(workdir / "checkpoints" / "training" / "generation_1"), read_only=True)
    arrays, record = checkpoints.restore_training(manager, print)
    manager.close()
    assert record["step"] == bad_step - 1
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(arrays["state"]["params"]))
    assert message in (workdir / "log.txt").read_text()


def test_predict_cli_on_the_trained_run(reference, images):
    """Prediction on training images reproduces the soft labels generation 2 saved for them."""
    from PIL import Image

    from lr_jax.data import load_dataset, make_splits

    splits = make_splits(load_dataset("cifar10", str(images)), 8, None, 0)  # as the run made them
    rows = {}
    for path in sorted((images / "train").rglob("*.png")):
        pixels = np.asarray(Image.open(path))
        matches = [i for i, x in enumerate(splits.train_images) if np.array_equal(x, pixels)]
        if matches:
            rows[path] = matches[0]
        if len(rows) == 3:
            break
    done = subprocess.run(
        [sys.executable, "-m", "lr_jax.predict", "--workdir", str(reference), "--generation", "2", *map(str, rows)],
        env=subprocess_env(), capture_output=True, text=True, timeout=240, cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"generation 2 of {reference}: top-3 classes of 3 image(s)"
    soft_labels = saved_generation(reference, 2)["soft_labels"]
    for line, (path, row) in zip(lines[1:], rows.items()):
        printed_path, ranked = line.rsplit(": ", 1)
        names = [item.split(" ")[0] for item in ranked.split(", ")]
        probs = [float(item.split(" ")[1]) for item in ranked.split(", ")]
        best = np.argsort(-soft_labels[row])[:3]
        assert printed_path == str(path)
        assert names == [splits.class_names[i] for i in best]
        np.testing.assert_allclose(probs, soft_labels[row][best], atol=6e-4)
