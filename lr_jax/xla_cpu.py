"""XLA:CPU's convolution path: lr_jax routes CPU convolutions to Eigen (measured faster than YNNPACK here)
through XLA_FLAGS, before the backend starts, without overriding flags the user set."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from typing import MutableMapping

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# jaxlib 0.10.2's effective default is "individual_dot,reduce,individual_convolution" (the flag's help text is
# stale); the leading "-" removes one entry and keeps YNNPACK's dots and reductions (BatchNorm statistics).
FAST_VALUE = "-individual_convolution"
SWITCH = "LR_JAX_XLA_CPU_FAST"  # set to 0 to keep XLA's default path
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "libtpu")

EIGEN = f"eigen convolutions ({FLAG}={FAST_VALUE}, lr_jax's default on CPU)"
DEFAULT = "XLA's default (YNNPACK convolutions)"

_path = None  # what configure() decided in this process


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def configure(environ: MutableMapping[str, str] = os.environ) -> str:
    """Appends FLAG=FAST_VALUE to XLA_FLAGS in `environ`, unless XLA_FLAGS already names FLAG (the user's
    choice wins), SWITCH is 0, an accelerator plugin is installed (the CPU is then not where training runs),
    or the JAX backend has already started (too late: the flags are read once). Returns the path in use."""
    flags = environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        value = re.search(rf"{FLAG}=?(\S*)", flags).group(1)
        return EIGEN if value == FAST_VALUE else f"set by the user's XLA_FLAGS ({FLAG}={value})"
    if environ.get(SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{DEFAULT}: {SWITCH}=0"
    if any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_PLUGINS):
        return f"{DEFAULT}: an accelerator plugin is installed"
    if _backend_started():
        return f"{DEFAULT}: the JAX backend had started before lr_jax was imported"
    environ["XLA_FLAGS"] = f"{flags} {FLAG}={FAST_VALUE}".strip()
    return EIGEN


def path() -> str:
    """The XLA:CPU convolution path of this process (configuring it now if lr_jax's import did not)."""
    global _path
    if _path is None:
        _path = configure()
    return _path
