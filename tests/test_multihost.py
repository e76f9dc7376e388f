"""Two processes x 2 CPU devices over 127.0.0.1 (gloo) train the same chain as one process x 4 devices, and stop
together, at one step, when one of them gets SIGTERM."""

import json
import socket
import subprocess

import chex
import pytest

from cli_runs import (
    REPO_ROOT, RUN_FLAGS, STEPS_PER_GENERATION, cli_command, run_cli, saved_generation, subprocess_env,
    write_image_folder,
)
from lr_jax import interrupt

TIMEOUT_SECONDS = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(args, logs, at_call=None, action=None, target_process=None):
    """Starts processes 0 and 1 of a 2-process run (with `action` before step `at_call` in `target_process`, see
    cli_runs.STEP_HOOK_WRAPPER); returns their (exit code, stdout and stderr) once both end.

    Each is bounded by TIMEOUT_SECONDS; whatever still runs on the way out (failure or timeout) is killed."""
    port = free_port()
    env = dict(subprocess_env(devices=2), TARGET_PROCESS=str(target_process))
    processes = []
    try:
        for index in range(2):
            out = open(logs / f"process_{index}.txt", "w")
            command = cli_command([*args, "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
                                   "--process_id", index], at_call, action)
            processes.append((subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=out,
                                               stderr=subprocess.STDOUT, text=True), out))
        for process, _ in processes:
            process.wait(timeout=TIMEOUT_SECONDS)
    finally:
        for process, out in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            out.close()
    return [(process.returncode, (logs / f"process_{i}.txt").read_text()) for i, (process, _) in enumerate(processes)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def single(tmp_path_factory, images):
    """The chain on one process x 4 devices."""
    workdir = tmp_path_factory.mktemp("single")
    done = run_cli(["--data_dir", images, "--workdir", workdir, *RUN_FLAGS])
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def assert_matches_single(multi, single):
    got = json.loads((multi / "results.json").read_text())
    want = json.loads((single / "results.json").read_text())
    assert got["dataset"]["devices"] == 4 and got["dataset"]["processes"] == 2 and got["complete"]
    for a, b in zip(got["generations"], want["generations"], strict=True):
        for key in ("val_accuracy", "train_accuracy", "label_entropy"):
            assert abs(a[key] - b[key]) < 1e-4, (key, a[key], b[key])
    # Cross-process all-reduce may add in another order than in-process: equal up to float rounding.
    for generation in (1, 2):
        chex.assert_trees_all_close(saved_generation(multi, generation), saved_generation(single, generation),
                                    rtol=1e-4, atol=1e-5)


def test_two_processes_match_one_process(tmp_path, images, single):
    multi = tmp_path / "multi"
    (main_code, main_out), (other_code, other_out) = run_two_processes(
        ["--data_dir", images, "--workdir", multi, *RUN_FLAGS], tmp_path
    )
    assert main_code == 0, main_out[-3000:]
    assert other_code == 0, other_out[-3000:]
    assert "devices: 4 x cpu in 2 process(es)" in main_out
    assert "generation 1/2" in main_out and "generation 1/2" not in other_out  # only process 0 logs
    assert_matches_single(multi, single)
    # Checkpoints were written once, the orbax multi-host way, and are complete.
    steps = sorted(p.name for p in (multi / "checkpoints" / "training" / "generation_2").iterdir())
    assert steps == ["10", "9"]
    assert json.loads((multi / "config.json").read_text())["model"] == "tiny_cnn"


def test_sigterm_to_one_process_stops_both_at_one_step_and_the_rerun_resumes(tmp_path, images, single):
    multi = tmp_path / "multi"
    args = ["--data_dir", images, "--workdir", multi, *RUN_FLAGS]
    # Process 1 (not the one that writes results) gets SIGTERM before generation 2's 2nd step and then waits a
    # little, so that JAX's preemption service tells process 0 before the generation is over.
    (main_code, main_out), (other_code, other_out) = run_two_processes(
        args, tmp_path, at_call=STEPS_PER_GENERATION + 2, action="SIGTERM+sleep:3", target_process=1)
    assert main_code == other_code == interrupt.EXIT_STATUS, (main_out[-3000:], other_out[-3000:])
    lines = [next(line for line in out.splitlines() if line.startswith("stopped by ")) for out in (main_out, other_out)]
    assert lines[0] == lines[1]  # the same generation and step on both
    assert lines[0].startswith(f"stopped by {interrupt.AGREED} in generation 2 at step ")
    step = int(lines[0].split(" at step ")[1].split()[0])
    assert 2 <= step < STEPS_PER_GENERATION
    saved = sorted(int(p.name) for p in (multi / "checkpoints" / "training" / "generation_2").iterdir())
    assert saved[-1] == step
    assert not json.loads((multi / "results.json").read_text())["complete"]

    (main_code, main_out), (other_code, other_out) = run_two_processes(args, tmp_path)
    assert main_code == 0 and other_code == 0, (main_out[-3000:], other_out[-3000:])
    assert f"resuming from the checkpoint at step {step} of {STEPS_PER_GENERATION}" in main_out
    assert_matches_single(multi, single)
