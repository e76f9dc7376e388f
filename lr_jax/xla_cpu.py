"""XLA:CPU's convolution path: lr_jax routes CPU convolutions to Eigen (measured faster than YNNPACK here)
through XLA_FLAGS, before the backend starts, without overriding flags the user set."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from typing import MutableMapping, Optional

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


def installed(plugins) -> bool:
    """Whether any of these JAX plugin packages is installed."""
    return any(importlib.util.find_spec(name) is not None for name in plugins)


def append_flag(environ: MutableMapping[str, str], flag: str, value: str, switch: str, applied: str, default: str,
                not_here: Optional[str] = None) -> str:
    """Appends FLAG=VALUE to XLA_FLAGS in `environ` and returns `applied` (also where the user's XLA_FLAGS already set
    that value); otherwise leaves XLA_FLAGS as it is and says why: the user's XLA_FLAGS names FLAG with another value
    (their choice wins), `switch` is 0, `not_here` (a reason the flag does not apply on this machine), or the JAX
    backend has already started (too late: the flags are read once)."""
    flags = environ.get("XLA_FLAGS", "")
    if flag in flags:
        users = re.search(rf"{flag}=?(\S*)", flags).group(1)
        return applied if users == value else f"set by the user's XLA_FLAGS ({flag}={users})"
    if environ.get(switch, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{default}: {switch}=0"
    if not_here:
        return f"{default}: {not_here}"
    if _backend_started():
        return f"{default}: the JAX backend had started before lr_jax was imported"
    environ["XLA_FLAGS"] = f"{flags} {flag}={value}".strip()
    return applied


def configure(environ: MutableMapping[str, str] = os.environ) -> str:
    """Appends FLAG=FAST_VALUE to XLA_FLAGS (append_flag) unless an accelerator plugin is installed (the CPU is then
    not where training runs). Returns the path in use."""
    not_here = "an accelerator plugin is installed" if installed(ACCELERATOR_PLUGINS) else None
    return append_flag(environ, FLAG, FAST_VALUE, SWITCH, EIGEN, DEFAULT, not_here)


def path() -> str:
    """The XLA:CPU convolution path of this process (configuring it now if lr_jax's import did not)."""
    global _path
    if _path is None:
        _path = configure()
    return _path
