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
# Kills the process (SIGKILL, as a preempted machine would) just before the Nth train step runs.
KILLING_WRAPPER = """
import os, signal, sys
from lr_jax import train
from lr_jax.experiments import runner
kill_before_call = int(sys.argv[1])
make_train_step = train.make_train_step
calls = [0]
def counting(*key):
    step = make_train_step(*key)
    def run_step(*args):
        calls[0] += 1
        if calls[0] == kill_before_call:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(*args)
    return run_step
train.make_train_step = counting
runner.main("cifar10", sys.argv[2:])
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


def run_cli(args, timeout: float = 240, kill_before_call: int | None = None, devices: int = 4):
    """Runs `python -m lr_jax.experiments.cifar10 args` (or the killing wrapper); returns the CompletedProcess."""
    if kill_before_call is None:
        command = [sys.executable, "-m", "lr_jax.experiments.cifar10", *map(str, args)]
    else:
        command = [sys.executable, "-c", KILLING_WRAPPER, str(kill_before_call), *map(str, args)]
    return subprocess.run(command, env=subprocess_env(devices), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def saved_generation(workdir, generation: int) -> dict:
    """The arrays of a finished generation (variables, soft labels, probabilities) as saved in `workdir`."""
    from lr_jax import checkpoints

    return checkpoints.load_generation(str(workdir), generation)[0]


def truncate_largest_file(folder: pathlib.Path) -> pathlib.Path:
    """Cuts the largest file under `folder` to half its size (a partly written checkpoint); returns it."""
    return truncate(max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size))
