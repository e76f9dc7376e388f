"""Provenance of a run: the git commit of the checkout that ran (and whether tracked files differed from it), the
CPU it ran on, and the versions of the libraries that shape its numbers, as results.json records them."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from typing import Optional, Sequence

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy")  # versions in results.json
# The vector extensions that change XLA:CPU's (and its kernels') order of floating-point operations: two machines
# that differ in them can train different models from one seed (seen here: an AVX-512 machine's generation 1 differed
# from an earlier machine's of the same seed by 0.64 points).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder that holds lr_jax/


def code_version(root: str = SOURCE_ROOT) -> dict:
    """{"commit": HEAD's hash, "dirty": whether tracked files differ from it} where `root` is the top of a git work
    tree; both None elsewhere (an installed copy, no git on PATH, git failing), never an error."""
    def git(*args) -> str:
        done = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.strip()

    try:
        if os.path.realpath(git("rev-parse", "--show-toplevel")) != os.path.realpath(root):
            return {"commit": None, "dirty": None}  # e.g. an installed copy inside some other repository
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def host(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """{"cpu": the processor's model name, "isa": which of ISA_FLAGS it has, "cpus": the logical CPUs}: where the
    same seed may train a different model (see ISA_FLAGS). Fields it cannot read are None, never an error."""
    model: Optional[str] = None
    flags: Optional[set] = None
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and flags is None:
                    flags = set(value.split())
                if model is not None and flags is not None:
                    break  # the first processor's; the file repeats them for every logical CPU
    except OSError:
        pass
    return {"cpu": model or platform.processor() or None,
            "isa": None if flags is None else [name for name in ISA_FLAGS if name in flags],
            "cpus": os.cpu_count()}


def run_provenance(root: str = SOURCE_ROOT) -> dict:
    """code_version(root) with the host() it runs on: what each generation's row records as its "code"."""
    return {**code_version(root), "host": host()}


def library_versions(packages: Sequence[str] = PACKAGES) -> dict:
    """{distribution name: installed version, or None where it is not installed}."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
