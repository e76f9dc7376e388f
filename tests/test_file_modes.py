"""Files that runs, reports, caches and portable copies write get the user's umask, like log.txt (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from cli_runs import REPO_ROOT, RUN_FLAGS, subprocess_env, write_image_folder


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    from lr_jax import files

    previous = os.umask(umask)
    try:
        files.write_json_atomic(str(tmp_path / "a.json"), {"x": 1})
        files.write_text_atomic(str(tmp_path / "b.md"), "text")
        with open(tmp_path / "plain.txt", "w") as f:  # what log.txt gets
            f.write("line\n")
    finally:
        os.umask(previous)
    assert mode_of(tmp_path / "plain.txt") == 0o666 & ~umask
    assert mode_of(tmp_path / "a.json") == 0o666 & ~umask
    assert mode_of(tmp_path / "b.md") == 0o666 & ~umask


def test_a_run_its_cache_and_its_portable_copy_are_readable_by_others(tmp_path):
    """A whole CLI run under umask 022: every file it writes outside checkpoints is 0644, as log.txt is."""
    data = write_image_folder(tmp_path / "data")
    workdir, cache, copy = tmp_path / "run", tmp_path / "cache", tmp_path / "copy"
    command = [sys.executable, "-m", "lr_jax.experiments.cifar10", "--data_dir", str(data), "--cache_dir", str(cache),
               "--workdir", str(workdir), *RUN_FLAGS]
    run = subprocess.run(command, env=subprocess_env(1), capture_output=True, text=True, timeout=240, cwd=REPO_ROOT,
                         preexec_fn=lambda: os.umask(0o022))
    assert run.returncode == 0, run.stderr[-2000:]
    written = [workdir / name for name in ("results.json", "results.md", "config.json", "labels_summary.npz",
                                           "log.txt")]
    written += list(cache.rglob("*.npz"))
    assert len(written) == 6, written
    assert {path.name: oct(mode_of(path)) for path in written} == {path.name: oct(0o644) for path in written}
    copied = subprocess.run([sys.executable, "-m", "lr_jax.portable", str(workdir), str(copy)], env=subprocess_env(1),
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                            preexec_fn=lambda: os.umask(0o022))
    assert copied.returncode == 0, copied.stderr[-2000:]
    copies = [path for path in copy.rglob("*") if path.is_file()]
    assert copies and all(mode_of(path) == 0o644 for path in copies), {p.name: oct(mode_of(p)) for p in copies}


def test_a_fresh_clone_after_the_readme_install_records_clean_code(tmp_path):
    """pip install -e . writes lr_jax.egg-info/ (and Python writes __pycache__/): neither is tracked, so the code
    version of a fresh clone after the README's install says dirty: false."""
    from lr_jax import provenance

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    # What `pip install -e . --no-deps` writes into the checkout: setuptools' egg_info step.
    built = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "egg_info"], cwd=clone,
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    assert (clone / "lr_jax.egg-info" / "PKG-INFO").exists()
    (clone / "lr_jax" / "__pycache__").mkdir(exist_ok=True)
    (clone / "lr_jax" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    version = provenance.code_version(str(clone))
    assert version["dirty"] is False and len(version["commit"]) == 40
    (clone / "lr_jax" / "losses.py").write_text("# edited\n")  # a tracked source file changed: dirty
    assert provenance.code_version(str(clone))["dirty"] is True
