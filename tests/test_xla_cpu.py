"""The XLA:CPU convolution path: set before the backend starts, never over the user's flags, and the same results."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lr_jax import xla_cpu

from cli_runs import REPO_ROOT


@pytest.fixture
def before_the_backend(monkeypatch):
    """configure() as it runs at lr_jax's import, before any JAX backend has started."""
    monkeypatch.setattr(xla_cpu, "_backend_started", lambda: False)


def test_the_fast_path_is_appended_to_the_users_flags(before_the_backend):
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert xla_cpu.configure(environ) == xla_cpu.EIGEN
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {xla_cpu.FLAG}={xla_cpu.FAST_VALUE}"
    empty = {}
    assert xla_cpu.configure(empty) == xla_cpu.EIGEN and empty["XLA_FLAGS"] == f"{xla_cpu.FLAG}={xla_cpu.FAST_VALUE}"


def test_the_users_own_setting_wins_and_the_switch_turns_it_off(before_the_backend):
    users = {"XLA_FLAGS": f"{xla_cpu.FLAG}=individual_dot --xla_cpu_enable_fast_math=false"}
    assert xla_cpu.configure(users) == f"set by the user's XLA_FLAGS ({xla_cpu.FLAG}=individual_dot)"
    assert users["XLA_FLAGS"] == f"{xla_cpu.FLAG}=individual_dot --xla_cpu_enable_fast_math=false"  # untouched
    off = {xla_cpu.SWITCH: "0", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert xla_cpu.configure(off).startswith(xla_cpu.DEFAULT) and xla_cpu.SWITCH in xla_cpu.configure(off)
    assert off["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"


def test_too_late_once_the_backend_has_started():
    import jax

    jax.devices()  # the test session's backend is up
    environ = {}
    assert "had started" in xla_cpu.configure(environ) and "XLA_FLAGS" not in environ


ONE_STEP = """
import json, sys
import jax, numpy as np
from lr_jax import step, xla_cpu
from lr_jax.config import Config
from lr_jax.devices import device_data, replicate, unreplicate
from lr_jax.models import get_model
model = get_model("resnet8", 10)
config = Config(model="resnet8", batch_size=16, epochs=1, crop_padding=2)
options = step.step_options(config, 1, 32, refined=False)
state = step.create_train_state(jax.random.PRNGKey(0), model, (16, 16, 3), step.make_optimizer(config, 2))
rng = np.random.default_rng(0)
data = device_data(rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8), rng.integers(0, 10, 32),
                   np.full((32, 10), 0.1, np.float32), np.full(3, 0.5), np.full(3, 0.25))
state, metrics = step.make_train_step(model, None, options)(
    replicate(state), data, replicate(np.arange(32, dtype=np.int32)), replicate(jax.random.PRNGKey(1)),
    None)
leaves = [np.asarray(x).ravel().tolist() for x in jax.tree_util.tree_leaves(unreplicate(state).params)]
print(json.dumps({"path": xla_cpu.path(), "loss": float(metrics["loss"][0]), "params": leaves}))
"""


def one_step(fast: bool) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    env[xla_cpu.SWITCH] = "1" if fast else "0"
    done = subprocess.run([sys.executable, "-c", ONE_STEP], env=env, capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_train_step_gives_the_same_result_on_both_paths():
    fast, default = one_step(True), one_step(False)
    assert fast["path"] == xla_cpu.EIGEN and default["path"].startswith(xla_cpu.DEFAULT)
    assert fast["loss"] == pytest.approx(default["loss"], rel=1e-6)
    assert len(fast["params"]) == len(default["params"])
    for a, b in zip(fast["params"], default["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
