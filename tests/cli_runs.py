"""Helpers for tests that run the real CLI in subprocesses: a tiny PNG image folder, the run flags, results."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np

from data_fixtures import truncate, write_image_tree

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_CLASSES = 4
IMAGES_PER_CLASS = 12
# 48 images of 8x8: 40 train / 8 validation; batch 8 -> 5 steps per epoch, 10 per generation.
RUN_FLAGS = (
    "--model", "tiny_cnn", "--generations", "2", "--epochs", "2", "--batch_size", "8", "--val_size", "8",
    "--eval_batch_size", "16", "--checkpoint_every", "3", "--no_progress",
)
STEPS_PER_GENERATION = 10
# Runs the CLI with `act(action)` called just before the Nth train step: the step loop is then exactly there.
#   SIGKILL / SIGTERM / SIGINT: sends itself that signal (SIGKILL: as a preempted machine would end it);
#   pause:FILE: writes FILE, then waits (at most 120 s) until a stop is requested, e.g. by the test's signal;
#   hold:FILE: writes FILE, then waits (at most 120 s) whatever happens, until a signal ends the process;
#   sleep:S: sleeps S seconds (lets a preemption notice reach every process);
#   no_space: from now on every write that extends a file fails (RLIMIT_FSIZE 0: EFBIG), as on a full disk;
#   fill:FILE: fills FILE's file system (a small tmpfs) with FILE until a write fails: ENOSPC from now on.
# Several actions may be given as A+B. With --process_id set, acts only in the process named by TARGET_PROCESS.
STEP_HOOK_WRAPPER = """
import os, resource, signal, sys, time
from lr_jax import interrupt, step
from lr_jax.experiments import runner
at_call, actions, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
target = os.environ.get("TARGET_PROCESS")
process = argv[argv.index("--process_id") + 1] if "--process_id" in argv else None

def wait(path, until):
    open(path, "w").close()
    deadline = time.time() + 120
    while time.time() < deadline and not until():
        time.sleep(0.02)

def act(action):
    name, _, arg = action.partition(":")
    if name.startswith("SIG"):
        os.kill(os.getpid(), getattr(signal, name))
    elif name in ("pause", "hold"):
        wait(arg, (lambda: interrupt.requested() is not None) if name == "pause" else (lambda: False))
    elif name == "sleep":
        time.sleep(float(arg))
    elif name == "no_space":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
    elif name == "fill":
        try:
            with open(arg, "wb") as f:
                while True:
                    f.write(bytes(1 << 16))
                    f.flush()
        except OSError:
            pass

make_train_step = step.make_train_step
calls = [0]
def counting(*key):
    compiled = make_train_step(*key)
    def run_step(*args):
        calls[0] += 1
        if calls[0] == at_call and (target is None or process is None or process == target):
            for action in actions.split("+"):
                act(action)
        return compiled(*args)
    return run_step
step.make_train_step = counting
runner.main("cifar10", argv)
"""


def write_image_folder(root: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """root/train/<class>/NNNN.png: 8x8 RGB images of NUM_CLASSES classes whose dominant colour is the class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), IMAGES_PER_CLASS)
    pixels = np.full((len(labels), 8, 8, 3), 60.0)
    for i, label in enumerate(labels):
        pixels[i, ..., label % 3] = 150 + 60 * (label // 3)
    pixels += rng.normal(0, 30, pixels.shape)
    return write_image_tree(root, {"train": (np.clip(pixels, 0, 255).astype(np.uint8), labels)})


def subprocess_env(devices: int = 4) -> dict:
    """The environment of a CLI subprocess: this checkout on the path, `devices` CPU devices, and the test
    compilation cache (tests/conftest.py) for every compile, so repeated runs of one configuration skip XLA."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return env


def cli_command(args, at_call: int | None = None, action: str | None = None) -> list:
    """`python -m lr_jax.experiments.cifar10 args`, or the step-hook wrapper acting before the `at_call`th step."""
    if at_call is None:
        return [sys.executable, "-m", "lr_jax.experiments.cifar10", *map(str, args)]
    return [sys.executable, "-c", STEP_HOOK_WRAPPER, str(at_call), action, *map(str, args)]


def run_cli(args, timeout: float = 240, kill_before_call: int | None = None, devices: int = 4,
            at_call: int | None = None, action: str | None = None):
    """Runs the CLI (SIGKILLed before step `kill_before_call`, or with `action` before step `at_call`); returns
    the CompletedProcess."""
    if kill_before_call is not None:
        at_call, action = kill_before_call, "SIGKILL"
    return subprocess.run(cli_command(args, at_call, action), env=subprocess_env(devices), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT)


def saved_generation(workdir, generation: int) -> dict:
    """The arrays of a finished generation (variables, soft labels, probabilities) as saved in `workdir`."""
    from lr_jax import checkpoints

    return checkpoints.load_generation(str(workdir), generation)[0]


def truncate_largest_file(folder: pathlib.Path) -> pathlib.Path:
    """Cuts the largest file under `folder` to half its size (a partly written checkpoint); returns it."""
    return truncate(max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size))
