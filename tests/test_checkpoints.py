"""lr_jax.checkpoints and lr_jax.distributed in-process: round trips, damage detection, results written atomically."""

import json
import os

import chex
import numpy as np
import pytest

from cli_runs import truncate_largest_file
from lr_jax import checkpoints, distributed, results


def fake_state(scale: float) -> dict:
    """A TrainState-like state dict of host arrays."""
    return {
        "params": {"dense": {"kernel": np.arange(12, dtype=np.float32).reshape(3, 4) * scale,
                             "bias": np.full(4, scale, np.float32)}},
        "batch_stats": {"norm": {"mean": np.linspace(0, 1, 4, dtype=np.float32)}},
        "opt_state": {"0": {}, "1": {"trace": np.ones(4, np.float32) * scale, "count": np.int32(7)}},
        "step": np.int32(int(scale)),
    }


def saved_steps(tmp_path, steps=(3, 6)):
    manager = checkpoints.open_manager(str(tmp_path / "training"), checkpoints.KEEP_TRAINING_CHECKPOINTS)
    for step in steps:
        checkpoints.save_training(manager, step, fake_state(step), np.array([0, step], np.uint32),
                                  {"history": [{"epoch": 1, "loss": 0.5}], "epoch_loss_sum": 1.25})
    return manager


def test_training_checkpoint_round_trip_keeps_the_newest_two(tmp_path):
    manager = saved_steps(tmp_path, steps=(3, 6, 9))
    assert manager.all_steps() == [6, 9]  # the newest, and one to fall back to
    log = []
    arrays, record = checkpoints.restore_training(manager, log.append)
    manager.close()
    chex.assert_trees_all_equal(arrays["state"], fake_state(9))
    np.testing.assert_array_equal(arrays["rng"], [0, 9])
    assert record["step"] == 9 and record["epoch_loss_sum"] == 1.25 and record["history"][0]["loss"] == 0.5
    assert log == []
    assert os.path.exists(tmp_path / "training" / "9" / checkpoints.MANIFEST)


def test_no_checkpoint_restores_nothing(tmp_path):
    manager = checkpoints.open_manager(str(tmp_path / "empty"))
    assert checkpoints.restore_training(manager, print) is None


@pytest.mark.parametrize("damage", ["truncate", "flip_a_byte", "drop_manifest_and_forge_digest"])
def test_damaged_newest_checkpoint_falls_back_and_says_so(tmp_path, damage):
    manager = saved_steps(tmp_path)
    step_dir = tmp_path / "training" / "6"
    if damage == "truncate":
        truncate_largest_file(step_dir)
    elif damage == "flip_a_byte":
        manifest = json.loads((step_dir / checkpoints.MANIFEST).read_text())
        victim = step_dir / max(manifest, key=lambda name: manifest[name][0])
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    else:  # no manifest (died right after saving): the arrays' digest still catches a mismatch
        (step_dir / checkpoints.MANIFEST).unlink()
        record_file = step_dir / "record" / "metadata"
        record = json.loads(record_file.read_text())
        record_file.write_text(json.dumps(dict(record, digest="0" * 64)))
    log = []
    arrays, record = checkpoints.restore_training(manager, log.append)
    assert record["step"] == 3
    chex.assert_trees_all_equal(arrays["state"], fake_state(3))
    assert len(log) == 1 and "step 6" in log[0] and "damaged" in log[0]
    assert "fell back to the previous good checkpoint, step 3" in log[0]
    assert manager.all_steps() == [3]
    assert (tmp_path / "damaged" / "training_step_6").is_dir()
    checkpoints.save_training(manager, 6, fake_state(6), np.zeros(2, np.uint32), {})  # the step can be redone
    manager.close()


def test_every_checkpoint_damaged_raises_and_changes_nothing(tmp_path):
    manager = saved_steps(tmp_path)
    for step in (3, 6):
        truncate_largest_file(tmp_path / "training" / str(step))
    with pytest.raises(checkpoints.CheckpointError, match=r"every checkpoint in .* is damaged .*--overwrite"):
        checkpoints.restore_training(manager, print)
    assert manager.all_steps() == [3, 6]
    assert not (tmp_path / "damaged").exists()


def test_results_json_is_replaced_atomically(tmp_path):
    payload = {"config": {"dataset": "cifar10", "model": "m", "seed": 0}, "dataset": {}, "complete": False,
               "wall_seconds": 1.0, "generations": []}
    results.write_results(str(tmp_path), payload)
    before = (tmp_path / "results.json").read_bytes()
    broken = dict(payload, generations=[{"generation": 1, "not_json": object()}])
    with pytest.raises(TypeError):
        results.write_results(str(tmp_path), broken)  # fails halfway through serialising
    assert (tmp_path / "results.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["results.json", "results.md"]  # no temporary file left behind


def test_load_generation_errors_name_the_workdir_and_saved_generations(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="no saved generations"):
        checkpoints.load_generation(str(tmp_path))
    manager = checkpoints.open_manager(checkpoints.finished_dir(str(tmp_path)))
    checkpoints.save_generation(manager, 1, {"soft_labels": np.eye(2, dtype=np.float32)}, {"model_name": "m"})
    manager.close()
    arrays, info = checkpoints.load_generation(str(tmp_path))
    np.testing.assert_array_equal(arrays["soft_labels"], np.eye(2))
    assert info["generation"] == 1 and info["model_name"] == "m"
    with pytest.raises(checkpoints.CheckpointError, match="generation 3 was not saved; saved generations: 1"):
        checkpoints.load_generation(str(tmp_path), 3)


def test_distributed_settings_from_flags_and_environment():
    assert distributed.settings(environ={}) is None
    assert distributed.settings(num_processes=1, environ={}) is None
    flags = distributed.settings("10.0.0.1:1234", 2, 1, environ={})
    assert flags == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}
    environ = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed.settings(environ=environ) == {"coordinator_address": "h:1", "num_processes": 4,
                                                      "process_id": 3}
    assert distributed.settings(process_id=0, environ=environ)["process_id"] == 0  # flags win
    with pytest.raises(ValueError, match="missing --process_id"):
        distributed.settings("h:1", 2, environ={})
    with pytest.raises(ValueError, match=r"--process_id=2 must lie in \[0, --num_processes=2\)"):
        distributed.settings("h:1", 2, 2, environ={})
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two' is not an integer"):
        distributed.settings(environ={"JAX_NUM_PROCESSES": "two"})
    # Slurm with several tasks: JAX detects the values itself.
    assert distributed.settings(environ={"SLURM_NTASKS": "2"}) == {
        "coordinator_address": None, "num_processes": None, "process_id": None}
