"""XLA:GPU determinism: where a GPU plugin is installed, lr_jax asks XLA for deterministic GPU kernels through
XLA_FLAGS, before the backend starts, without overriding flags the user set."""

from __future__ import annotations

import functools
import os
from typing import MutableMapping

from lr_jax import xla_cpu

FLAG = "--xla_gpu_deterministic_ops"
SWITCH = "LR_JAX_XLA_GPU_DETERMINISTIC"  # set to 0 to keep XLA's default kernels (faster, maybe non-deterministic)
GPU_PLUGINS = tuple(name for name in xla_cpu.ACCELERATOR_PLUGINS if name != "libtpu")  # CUDA and ROCm

DETERMINISTIC = f"deterministic kernels ({FLAG}=true, lr_jax's default on GPUs)"
DEFAULT = "XLA's default GPU kernels (not guaranteed deterministic)"


def configure(environ: MutableMapping[str, str] = os.environ) -> str:
    """Appends FLAG=true to XLA_FLAGS (xla_cpu.append_flag) where a GPU plugin is installed. Measured on one H200
    (2026-12-04): a generation retrained on a second machine gave the same results.json row. Returns the state."""
    not_here = None if xla_cpu.installed(GPU_PLUGINS) else "no GPU plugin installed"
    return xla_cpu.append_flag(environ, FLAG, "true", SWITCH, DETERMINISTIC, DEFAULT, not_here)


@functools.cache
def state() -> str:
    """The XLA:GPU kernels' determinism setting of this process (configuring it now if lr_jax's import did not)."""
    return configure()
