"""Two processes x 2 CPU devices over 127.0.0.1 (gloo) train the same chain as one process x 4 devices."""

import json
import socket
import subprocess
import sys

import chex

from cli_runs import REPO_ROOT, RUN_FLAGS, run_cli, saved_generation, subprocess_env, write_image_folder

TIMEOUT_SECONDS = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(args, logs):
    """Starts processes 0 and 1 of a 2-process run; returns their (exit code, stdout) once both end.

    Each is bounded by TIMEOUT_SECONDS; whatever still runs on the way out (failure or timeout) is killed."""
    port = free_port()
    env = subprocess_env(devices=2)
    processes = []
    try:
        for index in range(2):
            out = open(logs / f"process_{index}.txt", "w")
            command = [sys.executable, "-m", "lr_jax.experiments.cifar10", *map(str, args),
                       "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(index)]
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


def test_two_processes_match_one_process(tmp_path):
    images = write_image_folder(tmp_path / "images")
    single, multi = tmp_path / "single", tmp_path / "multi"
    done = run_cli(["--data_dir", images, "--workdir", single, *RUN_FLAGS])
    assert done.returncode == 0, done.stderr[-3000:]

    (main_code, main_out), (other_code, other_out) = run_two_processes(
        ["--data_dir", images, "--workdir", multi, *RUN_FLAGS], tmp_path
    )
    assert main_code == 0, main_out[-3000:]
    assert other_code == 0, other_out[-3000:]
    assert "devices: 4 x cpu in 2 process(es)" in main_out
    assert "generation 1/2" in main_out and "generation 1/2" not in other_out  # only process 0 logs

    got = json.loads((multi / "results.json").read_text())
    want = json.loads((single / "results.json").read_text())
    assert got["dataset"]["devices"] == 4 and got["dataset"]["processes"] == 2
    for a, b in zip(got["generations"], want["generations"]):
        for key in ("val_accuracy", "train_accuracy", "label_entropy"):
            assert abs(a[key] - b[key]) < 1e-4, (key, a[key], b[key])
    # Cross-process all-reduce may add in another order than in-process: equal up to float rounding.
    for generation in (1, 2):
        chex.assert_trees_all_close(saved_generation(multi, generation), saved_generation(single, generation),
                                    rtol=1e-4, atol=1e-5)
    # Checkpoints were written once, the orbax multi-host way, and are complete.
    steps = sorted(p.name for p in (multi / "checkpoints" / "training" / "generation_2").iterdir())
    assert steps == ["10", "9"]
    assert json.loads((multi / "config.json").read_text())["model"] == "tiny_cnn"
