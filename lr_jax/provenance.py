"""Provenance of a run: the git commit of the checkout that ran (and whether tracked files differed from it) and the
versions of the libraries that shape its numbers, as results.json records them."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from typing import Sequence

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy")  # versions in results.json
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


def library_versions(packages: Sequence[str] = PACKAGES) -> dict:
    """{distribution name: installed version, or None where it is not installed}."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
