"""XLA:GPU determinism: asked for where a GPU plugin is installed, before the backend starts, never over the user's
flags (the GPU itself is not here: its effect was measured on an H200, README Determinism)."""

import pytest

from lr_jax import xla_cpu, xla_gpu


@pytest.fixture
def with_a_gpu_plugin(monkeypatch):
    """configure() as it runs at lr_jax's import on a machine with jax_cuda12_plugin, before the backend starts."""
    monkeypatch.setattr(xla_cpu, "_backend_started", lambda: False)
    monkeypatch.setattr(xla_cpu, "installed", lambda plugins: "jax_cuda12_plugin" in plugins)


def test_deterministic_kernels_are_asked_for_where_a_gpu_plugin_is_installed(with_a_gpu_plugin):
    environ = {"XLA_FLAGS": "--xla_gpu_autotune_level=2"}
    assert xla_gpu.configure(environ) == xla_gpu.DETERMINISTIC
    assert environ["XLA_FLAGS"] == f"--xla_gpu_autotune_level=2 {xla_gpu.FLAG}=true"


def test_the_users_choice_and_the_switch_win(with_a_gpu_plugin):
    users = {"XLA_FLAGS": f"{xla_gpu.FLAG}=false"}
    assert xla_gpu.configure(users) == f"set by the user's XLA_FLAGS ({xla_gpu.FLAG}=false)"
    assert users["XLA_FLAGS"] == f"{xla_gpu.FLAG}=false"  # untouched
    same = {"XLA_FLAGS": f"{xla_gpu.FLAG}=true"}
    assert xla_gpu.configure(same) == xla_gpu.DETERMINISTIC and same["XLA_FLAGS"] == f"{xla_gpu.FLAG}=true"
    off = {xla_gpu.SWITCH: "0"}
    assert xla_gpu.configure(off) == f"{xla_gpu.DEFAULT}: {xla_gpu.SWITCH}=0" and "XLA_FLAGS" not in off


def test_nothing_is_set_without_a_gpu_plugin(monkeypatch):
    monkeypatch.setattr(xla_cpu, "_backend_started", lambda: False)
    environ = {}
    assert xla_gpu.configure(environ) == f"{xla_gpu.DEFAULT}: no GPU plugin installed" and "XLA_FLAGS" not in environ


def test_too_late_once_the_backend_has_started(monkeypatch):
    import jax

    jax.devices()  # the test session's backend is up
    monkeypatch.setattr(xla_cpu, "installed", lambda plugins: True)
    environ = {}
    assert "had started" in xla_gpu.configure(environ) and "XLA_FLAGS" not in environ


def test_runs_record_the_setting_and_the_cpu_path_is_unchanged(monkeypatch):
    monkeypatch.setattr(xla_cpu, "_backend_started", lambda: False)
    environ = {}
    assert xla_cpu.configure(environ) == xla_cpu.EIGEN  # no accelerator plugin in the test environment
    assert environ["XLA_FLAGS"] == f"{xla_cpu.FLAG}={xla_cpu.FAST_VALUE}"
    assert xla_gpu.state() == f"{xla_gpu.DEFAULT}: no GPU plugin installed"  # what this test process's runs record
