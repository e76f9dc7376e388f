"""One generation's training: the TrainState, the pmapped soft-label train step, prediction, and the epoch loop."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from lr_jax import augment, checkpoints, losses
from lr_jax.config import Config

AXIS = "batch"  # the pmap axis name; BatchNorm statistics and gradients are averaged over it


class TrainState(train_state.TrainState):
    """Parameters, optimizer state and step, plus BatchNorm running statistics."""

    batch_stats: Any = None


@flax.struct.dataclass
class DeviceData:
    """A training split held on every local device: uint8 images, int32 labels, float32 label targets."""

    images: jax.Array  # (N, H, W, C) uint8
    labels: jax.Array  # (N,) int32 ground truth
    targets: jax.Array  # (N, num_classes) float32 label distributions to train on
    mean: jax.Array  # (C,) float32 per-channel pixel mean in [0, 1]
    std: jax.Array  # (C,) float32


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """The static knobs of a train step (hashable, so they select a compiled step)."""

    global_batch: int
    num_devices: int
    augment: bool = True
    flip: bool = True
    crop_padding: int = 4
    label_mode: str = "precomputed"
    refinery_train_bn: bool = False
    temperature: float = 1.0
    gt_weight: float = 0.0
    label_smoothing: float = 0.0
    adversarial_jitter: float = 0.0
    jitter_epsilon: float = 0.0

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.num_devices


def check_batch_divides(global_batch: int, num_devices: int, flag: str = "--batch_size") -> None:
    """A global batch must split evenly over the devices: never drop examples silently."""
    if global_batch % num_devices:
        raise ValueError(
            f"{flag}={global_batch} does not divide by the {num_devices} devices taking part; "
            f"use a multiple of {num_devices}"
        )


def make_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with Nesterov momentum, decoupled-from-schedule L2 weight decay on kernels, and the LR schedule.

    Equal settings give the same object: the optimizer is static data of the TrainState, so a new but equal
    one per generation would make the pmapped step retrace and recompile every generation."""
    return _optimizer(config.epochs, config.warmup_epochs, config.schedule, config.learning_rate,
                      config.momentum, config.weight_decay, steps_per_epoch)


@functools.lru_cache(maxsize=None)
def _optimizer(epochs, warmup_epochs, schedule_name, learning_rate, momentum, weight_decay, steps_per_epoch):
    config = Config(epochs=epochs, warmup_epochs=warmup_epochs, schedule=schedule_name,
                    learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)
    total = config.epochs * steps_per_epoch
    warmup = min(int(config.warmup_epochs * steps_per_epoch), max(total - 1, 0))
    if config.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(total, warmup + 1))
    else:
        boundaries = {int(total * 0.5): 0.1, int(total * 0.75): 0.1}
        decay = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
        warm = optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1))
        schedule = optax.join_schedules([warm, decay], [warmup]) if warmup else decay
    kernels_only = lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=kernels_only),
        optax.sgd(schedule, momentum=config.momentum, nesterov=True),
    )


def create_train_state(key: jax.Array, model: nn.Module, image_shape, tx) -> TrainState:
    """A fresh model's state, initialised from `key` (not replicated)."""
    variables = _compiled_init(model, tuple(image_shape))(key)
    return TrainState.create(
        apply_fn=model.apply, params=variables["params"], batch_stats=variables["batch_stats"], tx=tx
    )


@functools.lru_cache(maxsize=None)
def _compiled_init(model: nn.Module, image_shape: tuple) -> Callable:
    """model.init as one compiled program (op-by-op initialisation costs seconds per layer on CPU)."""
    return jax.jit(lambda key: model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False))


def _softmax_of(model: nn.Module, variables, inputs, train_bn: bool) -> jax.Array:
    """A frozen model's label distributions for normalised inputs (its statistics are never updated)."""
    if train_bn:
        logits, _ = model.apply(variables, inputs, train=True, mutable=["batch_stats"])
    else:
        logits = model.apply(variables, inputs, train=False)
    return jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)


def adversarial_jitter(loss_of_pixels: Callable, pixels: jax.Array, epsilon: float) -> jax.Array:
    """One gradient-sign step of size `epsilon` that raises `loss_of_pixels`, kept inside [0, 1] pixels."""
    grad_pixels = jax.grad(loss_of_pixels)(pixels)
    return jnp.clip(pixels + epsilon * jnp.sign(grad_pixels), 0.0, 1.0)


def train_step(
    state: TrainState,
    data: DeviceData,
    order: jax.Array,
    step_in_epoch: jax.Array,
    rng: jax.Array,
    refinery_variables: Any,
    *,
    model: nn.Module,
    refinery: Optional[nn.Module],
    options: StepOptions,
):
    """One SGD step on this device's share of the global batch; run under pmap with axis `AXIS`.

    `order` is the epoch's permutation of the training indices (the same on every device); this device
    takes positions [step * B + device * B/D, ... + B/D) of it. Each example's augmentation key depends
    only on its position in the global batch, so 1 device and D devices see the same inputs.
    """
    local = options.local_batch
    device = jax.lax.axis_index(AXIS)
    offset = step_in_epoch * options.global_batch + device * local
    positions = offset + jnp.arange(local)
    indices = jax.lax.dynamic_slice(order, (offset,), (local,))
    pixels = augment.to_unit_float(data.images[indices])
    labels = data.labels[indices]
    step_key = jax.random.fold_in(rng, state.step)
    if options.augment:
        example_keys = jax.vmap(jax.random.fold_in, (None, 0))(step_key, positions)
        pixels = augment.random_crop_flip(pixels, example_keys, options.crop_padding, options.flip)
    prep = lambda p: augment.normalize(p, data.mean, data.std)

    uses_refinery = options.label_mode == "online" or options.adversarial_jitter > 0
    if uses_refinery and refinery is None:
        raise ValueError("online labels and adversarial jittering need a refinery model")
    label_of = lambda p: _softmax_of(refinery, refinery_variables, prep(p), options.refinery_train_bn)
    targets = label_of(pixels) if options.label_mode == "online" else data.targets[indices]

    loss_of = functools.partial(
        losses.refinery_loss,
        temperature=options.temperature,
        gt_weight=options.gt_weight,
        label_smoothing=options.label_smoothing,
    )
    student_vars = {"params": state.params, "batch_stats": state.batch_stats}

    num_jittered = int(round(options.adversarial_jitter * local)) if uses_refinery else 0
    if num_jittered:
        # Perturb the first examples against the student, then let the refinery relabel them.
        def student_loss(p):
            logits, _ = model.apply(student_vars, prep(p), train=True, mutable=["batch_stats"])
            return jnp.sum(loss_of(logits, targets[:num_jittered], labels[:num_jittered]))

        jittered = adversarial_jitter(student_loss, pixels[:num_jittered], options.jitter_epsilon)
        pixels = jnp.concatenate([jittered, pixels[num_jittered:]])
        targets = jnp.concatenate([label_of(jittered), targets[num_jittered:]])

    inputs = prep(pixels)

    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, inputs, train=True, mutable=["batch_stats"]
        )
        return jnp.mean(loss_of(logits, targets, labels)), (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, AXIS)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = {
        "loss": jax.lax.pmean(loss, AXIS),
        "accuracy": jax.lax.pmean(jnp.mean(jnp.argmax(logits, -1) == labels), AXIS),
    }
    return state, metrics


@functools.lru_cache(maxsize=None)
def compiled_train_step(model: nn.Module, refinery: Optional[nn.Module], options: StepOptions) -> Callable:
    """The pmapped train step for these static settings (compiled once per setting)."""
    step = functools.partial(train_step, model=model, refinery=refinery, options=options)
    return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,))


@functools.lru_cache(maxsize=None)
def _compiled_predict(model: nn.Module) -> Callable:
    def predict(variables, images, mean, std):
        inputs = augment.normalize(augment.to_unit_float(images), mean, std)
        return jax.nn.softmax(model.apply(variables, inputs, train=False).astype(jnp.float32), axis=-1)

    return jax.pmap(predict, axis_name=AXIS)


def predict_probs(model: nn.Module, variables, images: np.ndarray, mean, std, batch_size: int) -> np.ndarray:
    """softmax(model(images)) for un-augmented uint8 images, in batches split over the local devices.

    `variables` are replicated over the local devices. Returns float32 (N, num_classes) on the host."""
    devices = jax.local_device_count()
    per_device = max(1, -(-batch_size // devices))
    chunk = per_device * devices
    predict = _compiled_predict(model)
    rep_mean, rep_std = replicate(np.asarray(mean, np.float32)), replicate(np.asarray(std, np.float32))
    outputs = []
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk]
        valid = len(batch)
        if valid < chunk:  # pad the last batch so every device gets the same shape; trimmed below
            batch = np.concatenate([batch, np.zeros((chunk - valid, *batch.shape[1:]), batch.dtype)])
        probs = predict(variables, batch.reshape(devices, per_device, *batch.shape[1:]), rep_mean, rep_std)
        outputs.append(np.asarray(probs).reshape(chunk, -1)[:valid])
    return np.concatenate(outputs).astype(np.float32)


def replicate(tree, devices=None):
    """Copies a pytree onto every local device (or `devices`), as pmap expects (leading axis = device)."""
    devices = devices or jax.local_devices()
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), (AXIS,)), jax.P(AXIS))

    def one(x):
        x = x if isinstance(x, jax.Array) else np.asarray(x)
        shards = [jax.device_put(x[None], device) for device in devices]
        return jax.make_array_from_single_device_arrays((len(devices), *x.shape), sharding, shards)

    return jax.tree_util.tree_map(one, tree)


def unreplicate(tree):
    """The first device's copy of a replicated pytree, on the host."""
    return jax.device_get(jax.tree_util.tree_map(lambda x: x.addressable_shards[0].data[0], tree))


def variables_of(state: TrainState) -> dict:
    """The model variables ({'params', 'batch_stats'}) of a (replicated or not) TrainState."""
    return {"params": state.params, "batch_stats": state.batch_stats}


def epoch_order(key: jax.Array, epoch: int, num_examples: int) -> np.ndarray:
    """The deterministic permutation of training indices for `epoch`."""
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), num_examples), np.int32)


class NonFiniteLossError(FloatingPointError):
    """Training diverged; the message names the step, the loss, and the last good checkpoint kept."""


def _step_options(config: Config, num_devices: int, refined: bool) -> StepOptions:
    """The static step settings of a generation; the refinery's settings apply only when `refined`."""
    return StepOptions(
        global_batch=config.batch_size,
        num_devices=num_devices,
        augment=config.augment,
        flip=config.flip,
        crop_padding=config.crop_padding,
        label_mode=config.label_mode if refined else "precomputed",
        refinery_train_bn=config.refinery_bn == "train",
        temperature=config.temperature if refined else 1.0,
        gt_weight=config.gt_weight if refined else 0.0,
        label_smoothing=config.label_smoothing,
        adversarial_jitter=config.adversarial_jitter if refined else 0.0,
        jitter_epsilon=config.jitter_epsilon,
    )


def _all_finite(tree) -> bool:
    return all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)
               if np.issubdtype(np.asarray(leaf).dtype, np.floating))


def _resumed(state: TrainState, arrays: dict, record: dict, steps_per_epoch: int, checkpoint_dir: str):
    """(state, PRNG key, record) continued from a training checkpoint's arrays and record."""
    if record["steps_per_epoch"] != steps_per_epoch:
        raise checkpoints.CheckpointError(
            f"{checkpoint_dir}: saved with {record['steps_per_epoch']} steps per epoch, now {steps_per_epoch}"
        )
    state = flax.serialization.from_state_dict(state, arrays["state"])
    return state, jnp.asarray(arrays["rng"], jnp.uint32), record


def train_generation(
    state: TrainState,
    model: nn.Module,
    config: Config,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    targets: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    key: jax.Array,
    refinery: Optional[nn.Module] = None,
    refinery_variables: Any = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    checkpoint_dir: Optional[str] = None,
) -> tuple[TrainState, dict]:
    """Trains `state` for `config.epochs` epochs on (images, targets); returns the unreplicated state and stats.

    The whole split is copied to every local device once; per step only the step number crosses over. With
    several processes, the step splits each global batch over all processes' devices, so every process feeds
    its own devices' shards. With `checkpoint_dir`, the full training state is saved there every
    `config.checkpoint_every` steps and at each epoch end, and training resumes from the newest readable
    checkpoint: the data order derives from (key, epoch) and augmentation from (key, step), so the step
    number is all the data-order state there is. A non-finite loss (or state) stops training with
    NonFiniteLossError before anything non-finite is saved.
    """
    devices = jax.device_count()  # global: with several processes each computes its own slice of a batch
    check_batch_divides(config.batch_size, devices)
    num_train = len(train_images)
    steps_per_epoch = num_train // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"--batch_size={config.batch_size} is larger than the {num_train} training images; lower it"
        )
    total_steps = config.epochs * steps_per_epoch
    manager = (
        checkpoints.open_manager(checkpoint_dir, checkpoints.KEEP_TRAINING_CHECKPOINTS) if checkpoint_dir else None
    )
    try:
        # `record` is the JSON part of a checkpoint: everything but arrays needed to continue exactly.
        record = {"steps_per_epoch": steps_per_epoch, "history": [], "epoch_loss_sum": 0.0,
                  "epoch_accuracy_sum": 0.0, "train_seconds": 0.0}
        restored = checkpoints.restore_training(manager, log) if manager is not None else None
        if restored is not None:
            state, key, record = _resumed(state, *restored, steps_per_epoch, checkpoint_dir)
            epoch, batch = divmod(record["step"], steps_per_epoch)
            log(f"  resuming from the checkpoint at step {record['step']} of {total_steps} (epoch "
                f"{min(epoch + 1, config.epochs)}, batch {batch} of {steps_per_epoch}) in {checkpoint_dir}")
        start_step = last_saved = record.get("step", 0)

        def diverged(step: int, what: str) -> NonFiniteLossError:
            epoch, batch = divmod(step - 1, steps_per_epoch)
            kept = (f"the last good checkpoint (step {last_saved}) is kept in {checkpoint_dir}" if last_saved
                    else "no checkpoint of this generation was written" if manager is not None
                    else "checkpoints were off")
            return NonFiniteLossError(
                f"{what} at step {step} (epoch {epoch + 1}, batch {batch + 1} of {steps_per_epoch}); training "
                f"stopped and {kept}. Lower --learning_rate or check the data"
            )

        options = _step_options(config, devices, refinery is not None)
        # Precomputed labels never call the refinery inside the step: leave it out, so every generation of a
        # chain reuses generation 1's compiled step.
        uses_refinery = options.label_mode == "online" or options.adversarial_jitter > 0
        step_fn = compiled_train_step(model, refinery if uses_refinery else None, options)
        data = replicate(
            DeviceData(
                images=np.asarray(train_images, np.uint8),
                labels=np.asarray(train_labels, np.int32),
                targets=np.asarray(targets, np.float32),
                mean=np.asarray(mean, np.float32),
                std=np.asarray(std, np.float32),
            )
        )
        rep_state = replicate(state)
        rep_refinery = replicate(refinery_variables) if uses_refinery else None
        data_key, step_key = jax.random.split(key)
        rep_step_key = replicate(step_key)
        session_start = time.perf_counter()
        for epoch in range(start_step // steps_per_epoch, config.epochs):
            first = start_step - epoch * steps_per_epoch if epoch == start_step // steps_per_epoch else 0
            rep_order = replicate(epoch_order(data_key, epoch, num_train))
            epoch_start = time.perf_counter()
            pending = []  # per-step metrics still on device, fetched together at the next sync point
            bar = _progress_bar(steps_per_epoch * config.batch_size, f"epoch {epoch + 1}/{config.epochs}", progress,
                                initial=first * config.batch_size)
            for batch in range(first, steps_per_epoch):
                rep_state, metrics = step_fn(
                    rep_state, data, rep_order, replicate(np.int32(batch)), rep_step_key, rep_refinery
                )
                pending.append(metrics)
                bar.update(config.batch_size)
                step = epoch * steps_per_epoch + batch + 1
                epoch_done = batch == steps_per_epoch - 1
                if not (epoch_done or (config.checkpoint_every and step % config.checkpoint_every == 0)):
                    continue
                # Sync point: check every step's loss since the last one, then the state, then save.
                fetched = jax.device_get(pending)
                for offset, values in enumerate(fetched):
                    loss, accuracy = float(values["loss"][0]), float(values["accuracy"][0])
                    if not np.isfinite(loss):
                        raise diverged(step - len(fetched) + offset + 1, f"non-finite training loss {loss}")
                    record["epoch_loss_sum"] += loss
                    record["epoch_accuracy_sum"] += accuracy
                pending = []
                host_state = unreplicate(rep_state)
                if not _all_finite(variables_of(host_state)) or not _all_finite(host_state.opt_state):
                    raise diverged(step, f"non-finite parameters after a finite loss {loss}")
                if epoch_done:
                    seconds = time.perf_counter() - epoch_start
                    rate = (steps_per_epoch - first) * config.batch_size / seconds
                    means = {"loss": record["epoch_loss_sum"] / steps_per_epoch,
                             "accuracy": record["epoch_accuracy_sum"] / steps_per_epoch}
                    record["history"].append({"epoch": epoch + 1, **means, "seconds": seconds,
                                              "images_per_second": rate})
                    record["epoch_loss_sum"] = record["epoch_accuracy_sum"] = 0.0
                record["train_seconds"] += time.perf_counter() - session_start
                session_start = time.perf_counter()
                if manager is not None:
                    checkpoints.save_training(manager, step, flax.serialization.to_state_dict(host_state), key, record)
                    last_saved = step
            bar.close()
            last = record["history"][-1]
            log(f"  epoch {epoch + 1}/{config.epochs}: loss {last['loss']:.4f}, "
                f"accuracy on augmented batches {last['accuracy']:.4f}, {last['images_per_second']:.0f} images/s")
        final_state = unreplicate(rep_state)
    finally:
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    history = record["history"]
    # Throughput after the first epoch, which also pays for compilation.
    steady = history[1:] or history
    stats = {
        "train_seconds": record["train_seconds"],
        "images_per_second": sum(h["images_per_second"] * h["seconds"] for h in steady)
        / sum(h["seconds"] for h in steady),
        "epochs": history,
    }
    return final_state, stats


def _progress_bar(total_images: int, description: str, enabled: bool, initial: int = 0):
    """A per-epoch bar counting images, so its rate reads in images/s."""
    from tqdm.auto import tqdm

    return tqdm(total=total_images, initial=initial, desc=description, unit="img", unit_scale=True, leave=False,
                dynamic_ncols=True, disable=not enabled)
