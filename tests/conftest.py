"""Test setup: 4 simulated CPU devices (set before jax is imported) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled steps are reused across test processes and runs (subprocess CLIs, notebooks, reruns).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/lr_jax_test_jax_cache")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data beside the repository; tests that need real data skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only present beside the project's own checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def lossless_cifar(shared_data):
    """The first 4000 CIFAR-10 training images, lossless: (x uint8 (4000, 32, 32, 3), y int64 (4000,))."""
    import numpy as np

    path = shared_data / "cifar10-train-first4000-lossless.npz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with np.load(path) as data:
        return data["x"], data["y"]
