"""The paper's variants: per-crop online labels, cross-architecture refineries, adversarial jittering, knobs."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr_jax import augment, generation, loop, losses, refinery, step
from lr_jax.config import Config, RunOptions
from lr_jax.data import make_dataset, make_splits
from lr_jax.devices import device_data, make_predict, predict_probs, replicate
from lr_jax.models import AXIS, get_model

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(NUM_CLASSES), 24)
    images = rng.integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8)
    images[..., 0] = (labels[:, None, None] * 60).astype(np.uint8)  # a learnable class signal
    data = make_dataset("synthetic", [f"c{i}" for i in range(NUM_CLASSES)], (images, labels))
    return make_splits(data, val_size=16, train_size=None, seed=0)


RUN = RunOptions(eval_batch_size=64)


def tiny_config(**overrides) -> Config:
    base = dict(model="tiny_cnn", epochs=1, batch_size=16, learning_rate=0.05, generations=2, val_size=16,
                warmup_epochs=0.0)
    base.update(overrides)
    return Config(**base)


def run_chain(config, splits):
    return list(refinery.run_chain(config, splits, log=lambda _: None, progress=False, run=RUN))


@pytest.fixture(scope="module")
def teacher(splits):
    """A generation-1 model trained on ground truth: the refinery for the tests below."""
    return run_chain(tiny_config(generations=1), splits)[0]


def student_after_one_epoch(splits, config, targets, teacher, devices=None):
    """A student trained for one epoch (as generation 2) on `targets` with `teacher` as its refinery, on the
    first `devices` local devices (default: all)."""
    devices = jax.local_devices()[:devices]
    model = get_model(config.model, NUM_CLASSES)
    options = step.step_options(config, len(devices), len(splits.train_images), refined=True,
                                online=config.label_mode == "online")
    state = step.create_train_state(jax.random.PRNGKey(7), model, splits.train_images.shape[1:],
                                    step.make_optimizer(config, options.steps_per_epoch))
    step_fn = step.make_train_step(model, get_model(teacher.model_name, NUM_CLASSES), options)
    data = device_data(splits.train_images, splits.train_labels, targets, splits.mean, splits.std, devices)
    plan = loop.LoopPlan(config.epochs, options.steps_per_epoch, config.batch_size)
    state, _ = loop.train_generation(state, step_fn, data, jax.random.PRNGKey(8), plan,
                                     refinery_variables=teacher.variables, log=lambda _: None,
                                     progress_bar=False, devices=devices)
    return state


def first_batch(splits, teacher, config):
    """The first global batch of generation 2 (refined by `teacher`) on four devices, as its train step builds it:
    {pixels, targets, labels (in global-batch order), indices (of the training images), state (the student's,
    before the step), options, step_fn (the compiled step), args (its arguments)}."""
    options = generation.plan_generation(config, 2, [teacher], 4, len(splits.train_images)).step_options
    student, teacher_model = get_model(config.model, NUM_CLASSES), get_model(teacher.model_name, NUM_CLASSES)
    state = step.create_train_state(jax.random.PRNGKey(7), student, splits.train_images.shape[1:],
                                    step.make_optimizer(config, options.steps_per_epoch))
    order = loop.epoch_order(jax.random.PRNGKey(3), 0, len(splits.train_images))
    data = device_data(splits.train_images, splits.train_labels, teacher.soft_labels, splits.mean, splits.std)
    args = loop.StepArgs(replicate(state), data, replicate(order), replicate(jax.random.PRNGKey(8)),
                         replicate(teacher.variables))
    batch_fn = jax.pmap(functools.partial(step.training_batch, model=student, refinery=teacher_model,
                                          options=options), axis_name=AXIS)
    pixels, targets, labels = (np.asarray(x).reshape(-1, *x.shape[2:]) for x in batch_fn(*args))
    return dict(pixels=pixels, targets=targets, labels=labels, indices=order[:config.batch_size], state=state,
                options=options, step_fn=step.make_train_step(student, teacher_model, options), args=args)


def unit_pixels(splits, indices):
    return splits.train_images[indices].astype(np.float32) / 255.0


def softmax_of(model_name, variables, splits, pixels, train_bn=False):
    """A model's softmax on [0, 1] pixels, outside pmap (BatchNorm in train mode: statistics of all of them)."""
    model = get_model(model_name, NUM_CLASSES).clone(axis_name=None)
    inputs = (pixels - splits.mean) / splits.std
    if train_bn:
        return jax.nn.softmax(model.apply(variables, inputs, train=True, mutable=["batch_stats"])[0], -1)
    return jax.nn.softmax(model.apply(variables, inputs, train=False), -1)


def test_online_labels_equal_precomputed_without_augmentation(splits, teacher):
    config = tiny_config(augment=False)
    precomputed = student_after_one_epoch(splits, config, teacher.soft_labels, teacher)
    online_config = dataclasses.replace(config, label_mode="online")
    unused_targets = np.zeros_like(teacher.soft_labels)  # online mode must not read them
    online = student_after_one_epoch(splits, online_config, unused_targets, teacher)
    chex.assert_trees_all_close(online.params, precomputed.params, atol=2e-5, rtol=2e-5)
    chex.assert_trees_all_close(online.batch_stats, precomputed.batch_stats, atol=2e-5, rtol=2e-5)


def test_online_labels_are_the_refinerys_softmax_on_each_exact_crop(splits, teacher):
    """Each example is a pad-and-crop (and maybe mirror) of its own training image, and its online label is the
    refinery's softmax on that very crop, not on the un-augmented image (the precomputed label)."""
    config = tiny_config(label_mode="online", crop_padding=2)
    batch = first_batch(splits, teacher, config)
    pad = config.crop_padding
    padded = np.pad(unit_pixels(splits, batch["indices"]), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    shifts = []
    for crop, image in zip(batch["pixels"], padded):
        candidates = [(dy, dx, mirror) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for mirror in (0, 1)
                      if np.allclose(crop, (lambda c: c[:, ::-1] if mirror else c)(image[dy:dy + 8, dx:dx + 8]),
                                     atol=1e-6)]
        assert candidates, "an example is no crop of its own training image"
        shifts.append(candidates[0])
    assert len(set(shifts)) > 1 and set(shifts) != {(pad, pad, 0)}  # augmented: crops differ
    np.testing.assert_array_equal(batch["labels"], splits.train_labels[batch["indices"]])
    on_crops = softmax_of(teacher.model_name, teacher.variables, splits, batch["pixels"])
    np.testing.assert_allclose(batch["targets"], on_crops, atol=1e-6)
    assert not np.allclose(batch["targets"], teacher.soft_labels[batch["indices"]], atol=1e-3)


def test_refinery_is_frozen_during_student_training(splits, teacher):
    before = jax.tree_util.tree_map(np.array, teacher.variables)
    config = tiny_config(label_mode="online", refinery_bn="train", adversarial_jitter=0.5)
    student_after_one_epoch(splits, config, teacher.soft_labels, teacher)
    chex.assert_trees_all_equal(teacher.variables, before)


@pytest.mark.parametrize("label_mode", ["precomputed", "online"])
def test_adversarial_jitter_gives_the_same_student_on_one_and_four_devices(splits, teacher, label_mode):
    """Jittering is defined on the global batch: which examples move, and the student's BatchNorm statistics
    in the jitter pass, do not depend on the device count (a global batch of 16 jitters 5 of them: on 4
    devices that is all of device 0's and one of device 1's)."""
    config = tiny_config(adversarial_jitter=0.3, jitter_epsilon=8 / 255, label_mode=label_mode)
    assert step.step_options(config, 4, len(splits.train_images), refined=True).num_jittered == 5
    one = student_after_one_epoch(splits, config, teacher.soft_labels, teacher, devices=1)
    four = student_after_one_epoch(splits, config, teacher.soft_labels, teacher, devices=4)
    chex.assert_trees_all_close(four.params, one.params, atol=2e-5, rtol=2e-4)
    chex.assert_trees_all_close(four.batch_stats, one.batch_stats, atol=2e-5, rtol=2e-4)


def test_cross_architecture_chain_threads_labels(splits):
    from test_chain import run_recorded

    config = tiny_config(model="tiny_cnn", refinery_model="small_cnn", generations=3)
    chain, calls = run_recorded(config, splits, RUN)
    assert [g.model_name for g in chain] == ["small_cnn", "tiny_cnn", "tiny_cnn"]
    assert [g.metrics["trained_on"] for g in chain] == ["ground truth", "generation 1", "generation 2"]
    assert [g.metrics["model"] for g in chain] == ["small_cnn", "tiny_cnn", "tiny_cnn"]
    np.testing.assert_array_equal(calls[0]["targets"], np.eye(NUM_CLASSES, dtype=np.float32)[splits.train_labels])
    for previous, current in zip(chain, calls[1:]):
        np.testing.assert_array_equal(current["targets"], previous.soft_labels)
    # The refinery's labels come from the refinery's own architecture.
    small = get_model("small_cnn", NUM_CLASSES)
    recomputed = predict_probs(make_predict(small), replicate(chain[0].variables), splits.train_images, splits.mean,
                               splits.std, 64)
    np.testing.assert_allclose(calls[1]["targets"], recomputed, atol=1e-6)


def test_adversarial_jitter_bounded_and_raises_loss():
    model = get_model("tiny_cnn", NUM_CLASSES).clone(axis_name=None)
    pixels = jax.random.uniform(jax.random.PRNGKey(0), (8, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(1), pixels, train=False)
    targets = jax.nn.one_hot(jnp.arange(8) % NUM_CLASSES, NUM_CLASSES)

    def loss_of(p):
        return jnp.sum(losses.soft_cross_entropy(model.apply(variables, p, train=False), targets))

    epsilon = 4.0 / 255.0
    jittered = step.adversarial_jitter(loss_of, pixels, epsilon)
    chex.assert_equal_shape((jittered, pixels))
    chex.assert_trees_all_close(jittered, jnp.clip(pixels + epsilon * jnp.sign(jax.grad(loss_of)(pixels)), 0, 1))
    assert float(jnp.max(jnp.abs(jittered - pixels))) <= epsilon + 1e-7
    assert float(jnp.min(jittered)) >= 0.0 and float(jnp.max(jittered)) <= 1.0
    assert float(loss_of(jittered)) > float(loss_of(pixels))


def test_temperature_scales_loss_and_gradient_by_formula():
    logits = jax.random.normal(jax.random.PRNGKey(0), (5, NUM_CLASSES))
    teacher_logits = jax.random.normal(jax.random.PRNGKey(1), (5, NUM_CLASSES))
    probs = jax.nn.softmax(teacher_logits)
    temperature = 3.0
    expected = -jnp.sum(jax.nn.softmax(teacher_logits / temperature)
                        * jax.nn.log_softmax(logits / temperature), -1) * temperature**2
    got = losses.refinery_loss(logits, probs, jnp.zeros(5, jnp.int32), temperature=temperature)
    chex.assert_trees_all_close(got, expected, rtol=1e-5)
    # Gradient w.r.t. logits: T * (softmax(s/T) - softmax(t/T)) per example.
    grad = jax.grad(lambda s: jnp.sum(losses.refinery_loss(s, probs, jnp.zeros(5, jnp.int32), temperature)))(logits)
    chex.assert_trees_all_close(
        grad, temperature * (jax.nn.softmax(logits / temperature) - jax.nn.softmax(teacher_logits / temperature)),
        rtol=1e-4, atol=1e-6)


def test_gt_weight_and_label_smoothing_mix_by_formula():
    logits = jax.random.normal(jax.random.PRNGKey(2), (6, NUM_CLASSES))
    probs = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(3), (6, NUM_CLASSES)))
    labels = jnp.arange(6) % NUM_CLASSES
    weight, smoothing = 0.3, 0.1
    smoothed = jax.nn.one_hot(labels, NUM_CLASSES) * (1 - smoothing) + smoothing / NUM_CLASSES
    expected = ((1 - weight) * losses.soft_cross_entropy(logits, probs)
                + weight * losses.soft_cross_entropy(logits, smoothed))
    got = losses.refinery_loss(logits, probs, labels, gt_weight=weight, label_smoothing=smoothing)
    chex.assert_trees_all_close(got, expected, rtol=1e-6)
    only_gt = losses.refinery_loss(logits, probs, labels, gt_weight=1.0)
    chex.assert_trees_all_close(only_gt, optax_ce(logits, labels), rtol=1e-6)


def optax_ce(logits, labels):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def hand_loss(logits, targets, labels, temperature, gt_weight, smoothing):
    """The step's loss written out: (1 - w) T^2 CE(softmax(log(targets) / T), logits / T) + w CE(smoothed, logits)."""
    tempered = np.exp(np.log(targets) / temperature)
    tempered /= tempered.sum(-1, keepdims=True)
    log_softmax = lambda z: z - np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1, keepdims=True)) - z.max(
        -1, keepdims=True)
    refined = -np.sum(tempered * log_softmax(logits / temperature), -1) * temperature**2
    smoothed = np.eye(NUM_CLASSES)[labels] * (1 - smoothing) + smoothing / NUM_CLASSES
    return np.mean((1 - gt_weight) * refined + gt_weight * -np.sum(smoothed * log_softmax(logits), -1))


@pytest.mark.parametrize("variant", [
    dict(label_mode="online", refinery_bn="train", adversarial_jitter=0.5),
    dict(adversarial_jitter=0.25, temperature=2.0, gt_weight=0.5, label_smoothing=0.1),
])
def test_variant_steps_jitter_relabel_and_weigh_the_loss_as_specified(splits, teacher, variant):
    """On four devices: the first examples of the global batch move exactly epsilon along the sign of the student's
    loss gradient and are relabelled by the refinery on the moved pixels, the others keep their crops and labels,
    and the step's loss is the hand-computed temperature / ground-truth / smoothing mix of these labels."""
    assert jax.local_device_count() == 4
    config = tiny_config(**variant, jitter_epsilon=8 / 255)
    batch = first_batch(splits, teacher, config)
    plain = first_batch(splits, teacher, dataclasses.replace(config, adversarial_jitter=0.0))  # the same crops
    moved, options = batch["options"].num_jittered, batch["options"]
    assert moved == config.adversarial_jitter * config.batch_size and options.online_labels is (
        config.label_mode == "online")
    np.testing.assert_array_equal(batch["pixels"][moved:], plain["pixels"][moved:])
    np.testing.assert_allclose(batch["targets"][moved:], plain["targets"][moved:], atol=1e-6)
    if config.label_mode == "precomputed":
        np.testing.assert_array_equal(plain["targets"], teacher.soft_labels[batch["indices"]])

    student = get_model(config.model, NUM_CLASSES).clone(axis_name=None)
    loss_of = step.loss_function(options)

    def student_loss(pixels):  # its BatchNorm on the whole global batch, as in the step
        logits = student.apply(step.variables_of(batch["state"]), (pixels - splits.mean) / splits.std, train=True,
                               mutable=["batch_stats"])[0]
        return jnp.sum(jnp.where(jnp.arange(len(pixels)) < moved, loss_of(logits, plain["targets"], plain["labels"]),
                                 0.0))

    gradient = np.asarray(jax.grad(student_loss)(plain["pixels"]))[:moved]
    clear = np.abs(gradient) > 1e-3 * np.abs(gradient).max()  # signs that float rounding cannot flip
    assert clear.mean() > 0.9
    expected = np.clip(plain["pixels"][:moved] + config.jitter_epsilon * np.sign(gradient), 0.0, 1.0)
    np.testing.assert_allclose(batch["pixels"][:moved][clear], expected[clear], atol=1e-6)
    relabelled = softmax_of(teacher.model_name, teacher.variables, splits, batch["pixels"], config.refinery_bn == "train")
    np.testing.assert_allclose(batch["targets"][:moved], relabelled[:moved], atol=1e-5)

    _, metrics = batch["step_fn"](*batch["args"])
    logits = student.apply(step.variables_of(batch["state"]), (batch["pixels"] - splits.mean) / splits.std,
                           train=True, mutable=["batch_stats"])[0]
    expected_loss = hand_loss(np.asarray(logits, np.float64), np.asarray(batch["targets"], np.float64),
                              batch["labels"], config.temperature, config.gt_weight, config.label_smoothing)
    np.testing.assert_allclose(np.asarray(metrics["loss"]), expected_loss, rtol=1e-5)


def test_refinery_workdir_reuses_a_trained_refinery(tmp_path):
    from cli_runs import RUN_FLAGS, write_image_folder

    from lr_jax import checkpoints
    from lr_jax.data import load_dataset
    from lr_jax.experiments import runner

    data_dir = write_image_folder(tmp_path / "data")
    flags = [*RUN_FLAGS, "--data_dir", str(data_dir), "--seed", "3"]
    refinery_dir = tmp_path / "refinery"
    runner.run("cifar10", [*flags, "--generations", "1", "--workdir", str(refinery_dir)])
    saved, _ = checkpoints.load_generation(str(refinery_dir))

    config = Config(**{**dataclasses.asdict(tiny_config()), "batch_size": 8, "val_size": 8, "seed": 3,
                       "model": "tiny_cnn", "refinery_workdir": str(refinery_dir), "generations": 2})
    splits = make_splits(load_dataset("cifar10", str(data_dir)), config.val_size, None, config.seed)
    from test_chain import run_recorded

    chain, calls = run_recorded(config, splits, RUN)
    assert len(chain) == 2 and len(calls) == 1
    assert "reused" in chain[0].metrics["trained_on"]
    assert chain[0].metrics["train_seconds"] == 0.0
    np.testing.assert_array_equal(calls[0]["targets"], saved["soft_labels"])

    # The CLI records the reuse, and refuses a refinery trained on another split.
    student_dir = tmp_path / "student"
    result = runner.run("cifar10", [*flags, "--refinery_workdir", str(refinery_dir), "--workdir", str(student_dir)])
    assert [row["generation"] for row in result["generations"]] == [1, 2]
    assert "reused" in result["generations"][0]["trained_on"]
    with pytest.raises(checkpoints.CheckpointError, match="num_train"):
        runner.run("cifar10", [*flags, "--train_size", "20", "--refinery_workdir", str(refinery_dir),
                               "--workdir", str(tmp_path / "other")])
