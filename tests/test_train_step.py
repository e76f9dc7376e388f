"""The pmapped train step: 4 devices give what 1 device gives on the same global batch; it compiles once."""

import chex
import jax
import numpy as np
import pytest

from lr_jax import models, train
from lr_jax.config import Config

CLASSES, SIZE, NUM_TRAIN, GLOBAL_BATCH, STEPS = 4, 8, 48, 16, 3

pytestmark = pytest.mark.skipif(
    jax.local_device_count() < 4, reason="needs 4 (simulated) devices; tests/conftest.py sets XLA_FLAGS"
)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    model = models.get_model("tiny_cnn", CLASSES)
    config = Config(model="tiny_cnn", epochs=1, batch_size=GLOBAL_BATCH, learning_rate=0.2, warmup_epochs=0.0)
    tx = train.make_optimizer(config, steps_per_epoch=STEPS)
    state = train.create_train_state(jax.random.PRNGKey(0), model, (SIZE, SIZE, 3), tx)
    logits = rng.normal(size=(NUM_TRAIN, CLASSES)) * 2
    data = train.DeviceData(
        images=rng.integers(0, 256, (NUM_TRAIN, SIZE, SIZE, 3), dtype=np.uint8),
        labels=rng.integers(0, CLASSES, NUM_TRAIN).astype(np.int32),
        targets=(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32),  # soft labels
        mean=np.array([0.5, 0.4, 0.3], np.float32),
        std=np.array([0.25, 0.2, 0.3], np.float32),
    )
    order = rng.permutation(NUM_TRAIN).astype(np.int32)
    return model, state, data, order


def run_steps(setup, num_devices):
    """STEPS train steps on the first `num_devices` devices; returns per-device states and metrics."""
    model, state, data, order = setup
    devices = jax.local_devices()[:num_devices]
    options = train.StepOptions(global_batch=GLOBAL_BATCH, num_devices=num_devices, crop_padding=2)
    step_fn = train.compiled_train_step(model, None, options)
    rep = lambda tree: train.replicate(tree, devices=devices)
    rep_state, rep_data, rep_order, rep_key = rep(state), rep(data), rep(order), rep(jax.random.PRNGKey(7))
    history = []
    for step in range(STEPS):
        rep_state, metrics = step_fn(rep_state, rep_data, rep_order, rep(np.int32(step)), rep_key, None)
        history.append(jax.device_get(metrics))
    return jax.device_get(rep_state), history


def test_four_devices_match_one_device_on_the_same_global_batch(setup):
    _, initial, _, _ = setup
    one, one_metrics = run_steps(setup, 1)
    four, four_metrics = run_steps(setup, 4)
    first = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)
    # Every device holds the same parameters and statistics after the pmean'd updates.
    for d in range(1, 4):
        chex.assert_trees_all_equal(
            jax.tree_util.tree_map(lambda x: x[d], train.variables_of(four)), first(train.variables_of(four))
        )
    chex.assert_trees_all_close(first(four.params), first(one.params), rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(first(four.batch_stats), first(one.batch_stats), rtol=1e-4, atol=1e-5)
    assert int(first(four.step)) == int(first(one.step)) == STEPS
    for m1, m4 in zip(one_metrics, four_metrics):
        np.testing.assert_allclose(m4["loss"], m1["loss"][0], rtol=1e-5)
        np.testing.assert_allclose(m4["accuracy"], m1["accuracy"][0], atol=1e-6)
    # The steps really trained: both the parameters and the BatchNorm statistics moved.
    leaves = jax.tree_util.tree_leaves
    moved = lambda a, b: max(np.max(np.abs(x - y)) for x, y in zip(leaves(a), leaves(b)))
    assert moved(first(one.params), initial.params) > 1e-3
    assert moved(first(one.batch_stats), initial.batch_stats) > 1e-3


def test_batch_that_does_not_divide_by_the_devices_is_an_error(setup):
    model, state, data, _ = setup
    train.check_batch_divides(GLOBAL_BATCH, 4)  # divides: no error
    with pytest.raises(ValueError, match=r"--batch_size=18 does not divide by the 4 devices"):
        train.check_batch_divides(18, 4)
    config = Config(model="tiny_cnn", epochs=1, batch_size=18)
    with pytest.raises(ValueError, match=r"--batch_size=18 .*multiple of 4"):
        train.train_generation(state, model, config, data.images, data.labels, data.targets, data.mean,
                               data.std, jax.random.PRNGKey(0), log=lambda line: None, progress=False)


def test_train_generation_compiles_the_step_once(setup, monkeypatch):
    """Two epochs of several steps each trace the step function exactly once (no per-step retracing)."""
    model, state, data, _ = setup
    train.compiled_train_step.cache_clear()
    monkeypatch.setattr(train, "train_step", chex.assert_max_traces(train.train_step, n=1))
    config = Config(model="tiny_cnn", epochs=2, batch_size=GLOBAL_BATCH, crop_padding=1, flip=False)
    lines = []
    try:
        final, stats = train.train_generation(state, model, config, data.images, data.labels, data.targets,
                                              data.mean, data.std, jax.random.PRNGKey(1), log=lines.append,
                                              progress=False)
    finally:
        train.compiled_train_step.cache_clear()  # drop the step built on the counting wrapper
    assert int(final.step) == 2 * (NUM_TRAIN // GLOBAL_BATCH)
    chex.assert_trees_all_equal_shapes(final.params, state.params)
    assert [h["epoch"] for h in stats["epochs"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in stats["epochs"]) and stats["images_per_second"] > 0
    assert len(lines) == 2 and "epoch 2/2" in lines[1]
