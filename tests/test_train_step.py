"""The pmapped train step: 4 devices give what 1 device gives on the same global batch; it compiles once."""

import types

import chex
import jax
import numpy as np
import pytest

from lr_jax import loop, models, step
from lr_jax.config import Config
from lr_jax.devices import device_data, replicate

CLASSES, SIZE, NUM_TRAIN, GLOBAL_BATCH, STEPS = 4, 8, 48, 16, 3

pytestmark = pytest.mark.skipif(
    jax.local_device_count() < 4, reason="needs 4 (simulated) devices; tests/conftest.py sets XLA_FLAGS"
)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    model = models.get_model("tiny_cnn", CLASSES)
    config = Config(model="tiny_cnn", epochs=1, batch_size=GLOBAL_BATCH, learning_rate=0.2, warmup_epochs=0.0)
    tx = step.make_optimizer(config, steps_per_epoch=STEPS)
    state = step.create_train_state(jax.random.PRNGKey(0), model, (SIZE, SIZE, 3), tx)
    logits = rng.normal(size=(NUM_TRAIN, CLASSES)) * 2
    data = step.DeviceData(
        images=rng.integers(0, 256, (NUM_TRAIN, SIZE, SIZE, 3), dtype=np.uint8),
        labels=rng.integers(0, CLASSES, NUM_TRAIN).astype(np.int32),
        targets=(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32),  # soft labels
        mean=np.array([0.5, 0.4, 0.3], np.float32),
        std=np.array([0.25, 0.2, 0.3], np.float32),
    )
    order = rng.permutation(NUM_TRAIN).astype(np.int32)
    return model, state, data, order


def run_steps(setup, num_devices, **options_given):
    """STEPS train steps on the first `num_devices` devices (step options `options_given` besides the batch
    shape; default: pad-and-crop by 2); returns per-device states and metrics."""
    model, state, data, order = setup
    devices = jax.local_devices()[:num_devices]
    options = step.StepOptions(global_batch=GLOBAL_BATCH, num_devices=num_devices, steps_per_epoch=STEPS,
                               **(options_given or dict(crop_padding=2)))
    step_fn = step.make_train_step(model, None, options)
    rep = lambda tree: replicate(tree, devices=devices)
    rep_state, rep_data, rep_order, rep_key = rep(state), rep(data), rep(order), rep(jax.random.PRNGKey(7))
    history = []
    for _ in range(STEPS):  # the step number lives in the state: nothing else changes between calls
        rep_state, metrics = step_fn(rep_state, rep_data, rep_order, rep_key, None)
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
            jax.tree_util.tree_map(lambda x: x[d], step.variables_of(four)), first(step.variables_of(four))
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


def test_batch_that_does_not_divide_by_the_devices_is_an_error():
    step.check_batch_divides(GLOBAL_BATCH, 4)  # divides: no error
    with pytest.raises(ValueError, match=r"--batch_size=18 does not divide by the 4 devices"):
        step.check_batch_divides(18, 4)
    with pytest.raises(ValueError, match=r"--batch_size=18 .*multiple of 4"):
        step.step_options(Config(model="tiny_cnn", epochs=1, batch_size=18), 4, NUM_TRAIN, refined=False)
    with pytest.raises(ValueError, match=r"--batch_size=64 is larger than the 48 training images"):
        step.step_options(Config(model="tiny_cnn", epochs=1, batch_size=64), 4, NUM_TRAIN, refined=False)


def train_two_epochs(setup, checkpoint_every=0, log=None, checkpoint_dir=None):
    model, state, data, _ = setup
    config = Config(model="tiny_cnn", epochs=2, batch_size=GLOBAL_BATCH, crop_padding=1, flip=False)
    options = step.step_options(config, 4, NUM_TRAIN, refined=False)
    plan = loop.LoopPlan(config.epochs, options.steps_per_epoch, GLOBAL_BATCH, checkpoint_every)
    replicated = device_data(data.images, data.labels, data.targets, data.mean, data.std)
    return loop.train_generation(state, step.make_train_step(model, None, options), replicated,
                                  jax.random.PRNGKey(1), plan, log=log or (lambda line: None), progress_bar=False,
                                  checkpoint_dir=checkpoint_dir)


def test_train_generation_compiles_the_step_once(setup, monkeypatch):
    """Two epochs of several steps each trace the step function exactly once (no per-step retracing)."""
    _, state, _, _ = setup
    monkeypatch.setattr(step, "train_step", chex.assert_max_traces(step.train_step, n=1))
    lines = []
    final, stats = train_two_epochs(setup, log=lines.append)
    assert int(final.step) == 2 * (NUM_TRAIN // GLOBAL_BATCH)
    chex.assert_trees_all_equal_shapes(final.params, state.params)
    assert [h["epoch"] for h in stats["epochs"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in stats["epochs"]) and stats["images_per_second"] > 0
    assert len(lines) == 2 and "epoch 2/2" in lines[1]
    assert set(stats["overhead_seconds"]) == {"compile", "sync", "checkpoint"}
    assert stats["overhead_seconds"]["compile"] > 0 and stats["overhead_seconds"]["checkpoint"] == 0


def test_sync_points_change_no_result(setup, tmp_path):
    """Syncing and saving every step (checkpoint_every=1) trains exactly what syncing once per epoch does, and
    the per-epoch images/s counts only the timed training steps."""
    once, stats = train_two_epochs(setup)
    every, every_stats = train_two_epochs(setup, checkpoint_every=1, checkpoint_dir=str(tmp_path / "ckpt"))
    chex.assert_trees_all_equal(step.variables_of(every), step.variables_of(once))
    assert [h["loss"] for h in every_stats["epochs"]] == [h["loss"] for h in stats["epochs"]]
    assert every_stats["overhead_seconds"]["checkpoint"] > 0
    for history in (stats["epochs"], every_stats["epochs"]):
        for entry in history:
            assert entry["images_per_second"] * entry["seconds"] == pytest.approx(
                GLOBAL_BATCH * (NUM_TRAIN // GLOBAL_BATCH - (entry["epoch"] == 1)))


def test_loop_plan_syncs_at_epoch_ends_and_checkpoint_multiples():
    plan = loop.LoopPlan(epochs=2, steps_per_epoch=5, global_batch=8, checkpoint_every=3)
    syncs, step = [], 0
    while step < plan.total_steps:
        step = plan.next_sync(step)
        syncs.append(step)
    assert syncs == [3, 5, 6, 9, 10]
    assert loop.LoopPlan(2, 5, 8).next_sync(0) == 5 and loop.LoopPlan(2, 5, 8).next_sync(5) == 10


@pytest.mark.parametrize("warmup_epochs", [0.0, 2.0])
def test_piecewise_schedule_drops_at_half_and_three_quarters_of_training(warmup_epochs):
    config = Config(epochs=8, learning_rate=0.1, schedule="piecewise", warmup_epochs=warmup_epochs)
    schedule = step.learning_rate_schedule(config, steps_per_epoch=10)  # 80 steps: drops at 40 and 60
    assert float(schedule(39)) == pytest.approx(0.1)
    assert float(schedule(40)) == pytest.approx(0.01)
    assert float(schedule(59)) == pytest.approx(0.01)
    assert float(schedule(60)) == pytest.approx(0.001)
    assert float(schedule(0)) == pytest.approx(0.0 if warmup_epochs else 0.1)
    if warmup_epochs:
        assert float(schedule(10)) == pytest.approx(0.05)


def test_the_step_loop_refuses_host_to_device_copies():
    """Per step only the call crosses from the host: an argument still on the host is an error, not a copy."""
    add_one = jax.pmap(lambda x: x + 1)
    on_devices = replicate(np.zeros(2, np.float32), devices=jax.local_devices()[:1])
    bar = types.SimpleNamespace(update=lambda n: None)
    never = lambda: False
    args = loop.StepArgs(on_devices, None, None, None, None)
    args, fetched, stopped = loop.run_steps(lambda state, *rest: (add_one(state), {"loss": state}), args, 2, bar,
                                            never)
    np.testing.assert_array_equal(np.asarray(args.state), [[2.0, 2.0]])
    assert [np.asarray(m["loss"]).tolist() for m in fetched] == [[[0.0, 0.0]], [[1.0, 1.0]]] and not stopped
    on_host = loop.StepArgs(np.zeros((1, 2), np.float32), None, None, None, None)
    with pytest.raises(Exception, match="host-to-device"):
        loop.run_steps(lambda state, *rest: (add_one(np.asarray(state)), {}), on_host, 1, bar, never)


def test_a_stop_request_ends_the_steps_before_the_next_one():
    add_one = jax.pmap(lambda x: x + 1)
    args = loop.StepArgs(replicate(np.zeros(1, np.float32), devices=jax.local_devices()[:1]), None, None, None, None)
    asked = []
    stop_before_third = lambda: asked.append(1) or len(asked) == 3
    args, fetched, stopped = loop.run_steps(lambda state, *rest: (add_one(state), {}), args, 5,
                                            types.SimpleNamespace(update=lambda n: None), stop_before_third)
    assert stopped and len(fetched) == 2 and np.asarray(args.state).tolist() == [[2.0]]


def test_checkpoint_records_written_before_the_split_still_resume():
    """A training checkpoint's record as the loop wrote it when Progress held the times too: both halves read."""
    old = {"steps_per_epoch": 3, "step": 4, "history": [{"epoch": 1, "loss": 1.5, "accuracy": 0.25, "seconds": 2.0,
                                                          "images_per_second": 24.0}],
           "epoch_loss_sum": 1.25, "epoch_accuracy_sum": 0.5, "epoch_seconds": 0.5, "epoch_images": 16,
           "train_seconds": 2.5, "overhead_seconds": {"compile": 3.0, "sync": 0.25, "checkpoint": 0.125}}
    progress, chrono = loop.Progress.from_record(old), loop.Chrono()
    chrono.load(old)
    assert (progress.step, progress.history, progress.epoch_loss_sum) == (4, old["history"], 1.25)
    assert (chrono.train_seconds, chrono.epoch_images, chrono.overhead_seconds) == (2.5, 16, old["overhead_seconds"])
    assert loop.checkpoint_record(progress, chrono) == old  # and it is what the loop writes now, key for key
    assert list(loop.checkpoint_record(progress, chrono)) == list(old)
