"""One generation's training: the TrainState, the pmapped soft-label train step, prediction, and the epoch loop."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from lr_jax import augment, checkpoints, interrupt, losses
from lr_jax.config import Config
from lr_jax.models import AXIS  # the pmap axis name; BatchNorm statistics and gradients are averaged over it


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
    """The static knobs of a train step (hashable): they fix what one compiled step computes."""

    global_batch: int
    num_devices: int
    steps_per_epoch: int  # the step's position in its epoch's order is state.step modulo this
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

    @property
    def num_jittered(self) -> int:
        """How many examples of each global batch are jittered: the first ones of the global batch."""
        return int(round(self.adversarial_jitter * self.global_batch))

    @property
    def uses_refinery(self) -> bool:
        """Whether the step calls the refinery (online labels or adversarial jittering)."""
        return self.label_mode == "online" or self.num_jittered > 0


def compute_dtype(name: str):
    """The jnp dtype of a `--dtype` name (float32 or bfloat16)."""
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def check_batch_divides(global_batch: int, num_devices: int, flag: str = "--batch_size") -> None:
    """A global batch must split evenly over the devices: never drop examples silently."""
    if global_batch % num_devices:
        raise ValueError(
            f"{flag}={global_batch} does not divide by the {num_devices} devices taking part; "
            f"use a multiple of {num_devices}"
        )


def steps_per_epoch(num_train: int, global_batch: int) -> int:
    """Full global batches per epoch (the remainder of each epoch's order is left out)."""
    if num_train < global_batch:
        raise ValueError(f"--batch_size={global_batch} is larger than the {num_train} training images; lower it")
    return num_train // global_batch


def step_options(config: Config, num_devices: int, num_train: int, refined: bool) -> StepOptions:
    """The static step settings of a generation; the refinery's settings apply only when `refined`."""
    check_batch_divides(config.batch_size, num_devices)
    return StepOptions(
        global_batch=config.batch_size,
        num_devices=num_devices,
        steps_per_epoch=steps_per_epoch(num_train, config.batch_size),
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


def learning_rate_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up from 0, then cosine decay to 0, or piecewise constant: /10 at 50% and at 75% of all
    steps, counted from the start of training (warm-up included)."""
    total = config.epochs * steps_per_epoch
    warmup = min(int(config.warmup_epochs * steps_per_epoch), max(total - 1, 0))
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(total, warmup + 1))
    # join_schedules restarts the second schedule's step count at `warmup`: shift its boundaries back by it.
    drops = {max(int(total * fraction) - warmup, 1): 0.1 for fraction in (0.5, 0.75)}
    decay = optax.piecewise_constant_schedule(config.learning_rate, drops)
    if not warmup:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), decay], [warmup])


def make_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with Nesterov momentum and coupled L2 weight decay on kernels (added to the gradient before the
    momentum), following `learning_rate_schedule`.

    Build it once per chain and reuse it: the optimizer is static data of the TrainState, and a new (unequal)
    one per generation would make the pmapped step retrace and recompile."""
    kernels_only = lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=kernels_only),
        optax.sgd(learning_rate_schedule(config, steps_per_epoch), momentum=config.momentum, nesterov=True),
    )


def make_init(model: nn.Module, image_shape, tx: optax.GradientTransformation) -> Callable[[jax.Array], TrainState]:
    """key -> a fresh model's TrainState (not replicated); model.init is compiled once per returned function
    (op-by-op initialisation costs seconds per layer on CPU)."""
    init = jax.jit(lambda key: model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False))

    def create(key: jax.Array) -> TrainState:
        variables = init(key)
        return TrainState.create(apply_fn=model.apply, params=variables["params"],
                                 batch_stats=variables["batch_stats"], tx=tx)

    return create


def create_train_state(key: jax.Array, model: nn.Module, image_shape, tx) -> TrainState:
    """A fresh model's state, initialised from `key` (not replicated)."""
    return make_init(model, image_shape, tx)(key)


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
    rng: jax.Array,
    refinery_variables: Any,
    *,
    model: nn.Module,
    refinery: Optional[nn.Module],
    options: StepOptions,
):
    """One SGD step on this device's share of the global batch; run under pmap with axis `AXIS`.

    `order` is the current epoch's permutation of the training indices (the same on every device); the step
    number `state.step` places the global batch in it, and this device takes positions [device * B/D, ...)
    of that batch. Each example's augmentation key depends only on its position in the global batch, so 1
    device and D devices see the same inputs. Between the steps of an epoch only `state` changes.
    """
    local = options.local_batch
    positions = jax.lax.axis_index(AXIS) * local + jnp.arange(local)  # in the global batch
    offset = (state.step % options.steps_per_epoch) * options.global_batch
    indices = jnp.take(order, offset + positions)
    pixels = augment.to_unit_float(data.images[indices])
    labels = data.labels[indices]
    step_key = jax.random.fold_in(rng, state.step)
    if options.augment:
        example_keys = jax.vmap(jax.random.fold_in, (None, 0))(step_key, offset + positions)
        pixels = augment.random_crop_flip(pixels, example_keys, options.crop_padding, options.flip)
    prep = lambda p: augment.normalize(p, data.mean, data.std)

    if options.uses_refinery and refinery is None:
        raise ValueError("online labels and adversarial jittering need a refinery model")
    label_of = lambda p: _softmax_of(refinery, refinery_variables, prep(p), options.refinery_train_bn)
    targets = label_of(pixels) if options.label_mode == "online" else data.targets[indices]
    loss_of = functools.partial(
        losses.refinery_loss,
        temperature=options.temperature,
        gt_weight=options.gt_weight,
        label_smoothing=options.label_smoothing,
    )
    if options.num_jittered:
        # The first examples of the global batch move one step up the student's loss (its BatchNorm on the
        # whole global batch, as in the update below), then the refinery relabels them.
        jittered = positions < options.num_jittered

        def student_loss(p):
            logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats}, prep(p),
                                    train=True, mutable=["batch_stats"])
            return jnp.sum(jnp.where(jittered, loss_of(logits, targets, labels), 0.0))

        moved = adversarial_jitter(student_loss, pixels, options.jitter_epsilon)
        pixels = jnp.where(jittered[:, None, None, None], moved, pixels)
        targets = jnp.where(jittered[:, None], label_of(pixels), targets)

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


def make_train_step(model: nn.Module, refinery: Optional[nn.Module], options: StepOptions) -> Callable:
    """The pmapped train step for these settings: (state, data, order, rng, refinery_variables) -> (state,
    metrics). Build it once per chain and architecture and reuse it: each new one compiles again."""
    step = functools.partial(train_step, model=model, refinery=refinery if options.uses_refinery else None,
                             options=options)
    return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,))


def make_predict(model: nn.Module) -> Callable:
    """The pmapped softmax of un-augmented uint8 images: (variables, images, mean, std) -> probabilities."""

    def predict(variables, images, mean, std):
        inputs = augment.normalize(augment.to_unit_float(images), mean, std)
        return jax.nn.softmax(model.apply(variables, inputs, train=False).astype(jnp.float32), axis=-1)

    return jax.pmap(predict, axis_name=AXIS)


def predict_probs(predict: Callable, variables, images: np.ndarray, mean, std, batch_size: int) -> np.ndarray:
    """softmax(model(images)) for un-augmented uint8 images, in batches split over the local devices.

    `predict` comes from `make_predict`; `variables` are replicated over the local devices. Returns float32
    (N, num_classes) on the host."""
    devices = jax.local_device_count()
    per_device = max(1, -(-batch_size // devices))
    chunk = per_device * devices
    rep_mean, rep_std = replicate(np.asarray(mean, np.float32)), replicate(np.asarray(std, np.float32))
    queued = []
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk]
        valid = len(batch)
        if valid < chunk:  # pad the last batch so every device gets the same shape; trimmed below
            batch = np.concatenate([batch, np.zeros((chunk - valid, *batch.shape[1:]), batch.dtype)])
        batch = batch.reshape(devices, per_device, *batch.shape[1:])
        queued.append((predict(variables, batch, rep_mean, rep_std), valid))
    # Fetched after every batch is queued, so the devices never wait for the host between batches.
    outputs = [np.asarray(probs).reshape(chunk, -1)[:valid] for probs, valid in queued]
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


def device_data(images, labels, targets, mean, std, devices=None) -> DeviceData:
    """A training split copied once onto every local device (or `devices`); swap its targets per generation
    with `data.replace(targets=replicate(...))`."""
    return replicate(DeviceData(images=np.asarray(images, np.uint8), labels=np.asarray(labels, np.int32),
                                targets=np.asarray(targets, np.float32), mean=np.asarray(mean, np.float32),
                                std=np.asarray(std, np.float32)), devices)


def epoch_order(key: jax.Array, epoch: int, num_examples: int) -> np.ndarray:
    """The deterministic permutation of training indices for `epoch`."""
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), num_examples), np.int32)


Interrupted = interrupt.Interrupted  # raised by train_generation when asked to stop
# Steps left unfinished on the devices while the host dispatches more (see run_steps).
IN_FLIGHT_STEPS = 3


class NonFiniteLossError(FloatingPointError):
    """Training diverged; the message names the step, the loss, and the last good checkpoint kept."""


@dataclasses.dataclass
class Progress:
    """Where one generation's training stands: what a training checkpoint saves beside the arrays.

    Seconds are split into training compute (steps, from dispatch until their results are ready) and
    overhead (first-step compilation, host syncs and checks, checkpoint saves), so images/s means one thing."""

    steps_per_epoch: int
    step: int = 0
    history: list = dataclasses.field(default_factory=list)  # one dict per finished epoch
    epoch_loss_sum: float = 0.0
    epoch_accuracy_sum: float = 0.0
    epoch_seconds: float = 0.0  # training compute of the current epoch so far
    epoch_images: int = 0  # images trained in the current epoch within epoch_seconds
    train_seconds: float = 0.0  # training compute of every step so far
    overhead_seconds: dict = dataclasses.field(
        default_factory=lambda: {"compile": 0.0, "sync": 0.0, "checkpoint": 0.0})

    @classmethod
    def from_record(cls, record: dict) -> "Progress":
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})

    def to_record(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LoopPlan:
    """The shape of one generation's step loop: epochs x steps of a global batch, and where it syncs and saves."""

    epochs: int
    steps_per_epoch: int
    global_batch: int
    checkpoint_every: int = 0  # 0: sync and save only at epoch ends

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def next_sync(self, step: int) -> int:
        """The first step after `step` at which the loop syncs: an epoch end or a checkpoint_every multiple."""
        epoch_end = (step // self.steps_per_epoch + 1) * self.steps_per_epoch
        if not self.checkpoint_every:
            return epoch_end
        return min(epoch_end, (step // self.checkpoint_every + 1) * self.checkpoint_every)


def _all_finite(tree) -> bool:
    return all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)
               if np.issubdtype(np.asarray(leaf).dtype, np.floating))


def _restore(state: TrainState, key: jax.Array, plan: LoopPlan, manager, log) -> tuple:
    """(state, key, progress): from the newest readable training checkpoint, or fresh when there is none."""
    restored = checkpoints.restore_training(manager, log) if manager is not None else None
    if restored is None:
        return state, key, Progress(plan.steps_per_epoch)
    arrays, record = restored
    progress = Progress.from_record(record)
    if progress.steps_per_epoch != plan.steps_per_epoch:
        raise checkpoints.CheckpointError(f"{manager.directory}: saved with {progress.steps_per_epoch} steps per "
                                          f"epoch, now {plan.steps_per_epoch}")
    epoch, batch = divmod(progress.step, plan.steps_per_epoch)
    log(f"  resuming from the checkpoint at step {progress.step} of {plan.total_steps} (epoch "
        f"{min(epoch + 1, plan.epochs)}, batch {batch} of {plan.steps_per_epoch}) in {manager.directory}")
    state = flax.serialization.from_state_dict(state, arrays["state"])
    return state, jnp.asarray(arrays["rng"], jnp.uint32), progress


def _diverged(step: int, what: str, plan: LoopPlan, last_saved: int, manager) -> NonFiniteLossError:
    epoch, batch = divmod(step - 1, plan.steps_per_epoch)
    kept = (f"the last good checkpoint (step {last_saved}) is kept in {manager.directory}" if last_saved
            else "no checkpoint of this generation was written" if manager is not None else "checkpoints were off")
    return NonFiniteLossError(
        f"{what} at step {step} (epoch {epoch + 1}, batch {batch + 1} of {plan.steps_per_epoch}); training "
        f"stopped and {kept}. Lower --learning_rate or check the data"
    )


def _account(progress: Progress, fetched: list, first_step: int, plan: LoopPlan, last_saved: int, manager) -> None:
    """Adds fetched per-step metrics to the epoch's sums; raises NonFiniteLossError at the first bad loss."""
    for offset, values in enumerate(fetched):
        loss, accuracy = float(values["loss"][0]), float(values["accuracy"][0])
        if not np.isfinite(loss):
            raise _diverged(first_step + offset + 1, f"non-finite training loss {loss}", plan, last_saved, manager)
        progress.epoch_loss_sum += loss
        progress.epoch_accuracy_sum += accuracy


def _close_epoch(progress: Progress, plan: LoopPlan, log) -> None:
    """Moves the finished epoch's sums into its history entry and logs it."""
    epoch = progress.step // plan.steps_per_epoch
    entry = {"epoch": epoch, "loss": progress.epoch_loss_sum / plan.steps_per_epoch,
             "accuracy": progress.epoch_accuracy_sum / plan.steps_per_epoch, "seconds": progress.epoch_seconds,
             "images_per_second": progress.epoch_images / max(progress.epoch_seconds, 1e-9)}
    progress.history.append(entry)
    progress.epoch_loss_sum = progress.epoch_accuracy_sum = progress.epoch_seconds = 0.0
    progress.epoch_images = 0
    log(f"  epoch {epoch}/{plan.epochs}: loss {entry['loss']:.4f}, accuracy on augmented batches "
        f"{entry['accuracy']:.4f}, {entry['images_per_second']:.0f} images/s")


def run_steps(step_fn: Callable, args: list, count: int, bar, should_stop: Callable[[], bool]) -> tuple[list, bool]:
    """Dispatches up to `count` steps (args[0], the replicated state, is threaded through); returns their
    metrics, fetched to the host (which waits until the last step has finished), and whether it stopped early
    because `should_stop()` said so before a step.

    At most IN_FLIGHT_STEPS steps are left unfinished while more are dispatched: enough to keep the devices
    busy, few enough that the host, and so a stop request, is never more than a few steps ahead of them."""
    pending = []
    for _ in range(count):
        if should_stop():
            return jax.device_get(pending), True
        with jax.transfer_guard_host_to_device("disallow"):  # every argument already lives on the devices
            args[0], metrics = step_fn(*args)
        pending.append(metrics)
        if len(pending) > IN_FLIGHT_STEPS:
            jax.block_until_ready(pending[-IN_FLIGHT_STEPS - 1])
        bar.update(1)
    return jax.device_get(pending), False


def _timed_steps(step_fn: Callable, args: list, count: int, bar, should_stop, progress: Progress, plan: LoopPlan,
                 first_call: bool) -> tuple[list, bool]:
    """`run_steps` with its time booked in `progress`: a first call's first step (which compiles the step, or
    finds it compiled) as overhead, the others as training compute of the current epoch."""
    fetched, stopped = [], False
    if first_call:
        start = time.perf_counter()
        fetched, stopped = run_steps(step_fn, args, 1, bar, should_stop)
        progress.overhead_seconds["compile"] += time.perf_counter() - start
    if stopped:
        return fetched, stopped
    start = time.perf_counter()
    timed, stopped = run_steps(step_fn, args, count - len(fetched), bar, should_stop)
    seconds = time.perf_counter() - start
    progress.train_seconds += seconds
    progress.epoch_seconds += seconds
    progress.epoch_images += len(timed) * plan.global_batch
    return fetched + timed, stopped


def _sync(args: list, fetched: list, first_step: int, key, plan: LoopPlan, progress: Progress, last_saved: int,
          manager, log, bar) -> int:
    """After the steps `fetched` (from first_step on): checks their losses and the state, closes a finished
    epoch and saves a training checkpoint; returns the step last saved."""
    end = first_step + len(fetched)
    sync_start = time.perf_counter()
    _account(progress, fetched, first_step, plan, last_saved, manager)
    host_state = unreplicate(args[0])
    if not _all_finite(variables_of(host_state)) or not _all_finite(host_state.opt_state):
        raise _diverged(end, "non-finite parameters after a finite loss", plan, last_saved, manager)
    progress.step = end
    if end % plan.steps_per_epoch == 0:
        bar.close()
        _close_epoch(progress, plan, log)
    save_start = time.perf_counter()
    progress.overhead_seconds["sync"] += save_start - sync_start
    if manager is None:
        return last_saved
    checkpoints.save_training(manager, end, flax.serialization.to_state_dict(host_state), key, progress.to_record())
    progress.overhead_seconds["checkpoint"] += time.perf_counter() - save_start
    return end


def train_generation(
    state: TrainState,
    step_fn: Callable,
    data: DeviceData,
    key: jax.Array,
    plan: LoopPlan,
    refinery_variables: Any = None,
    checkpoint_dir: Optional[str] = None,
    log: Callable[[str], None] = print,
    progress_bar: bool = True,
    devices: Optional[Sequence] = None,
    should_stop: Callable[[], bool] = interrupt.should_stop,
) -> tuple[TrainState, dict]:
    """Trains `state` for `plan.epochs` epochs with `step_fn` (from `make_train_step`) on `data` (from
    `device_data`, already on the local devices, or on `devices`); returns the unreplicated state and its
    training statistics.

    Per step nothing crosses from the host but the call itself: the step number lives in the state and the
    epoch's order is copied once per epoch. With several processes each feeds its own devices' shards. With
    `checkpoint_dir`, the full training state is saved every `plan.checkpoint_every` steps and at each epoch
    end, and training resumes from the newest readable checkpoint: the data order derives from (key, epoch)
    and augmentation from (key, step), so the step number is all the data-order state there is. A non-finite
    loss (or state) stops training with NonFiniteLossError before anything non-finite is saved. When
    `should_stop()` (asked before every step) says so, the steps dispatched are finished, the state is saved
    there and `interrupt.Interrupted` is raised.
    """
    manager = (checkpoints.open_manager(checkpoint_dir, checkpoints.KEEP_TRAINING_CHECKPOINTS)
               if checkpoint_dir else None)
    try:
        state, key, progress = _restore(state, key, plan, manager, log)
        last_saved, bar, first_call = progress.step, None, True
        data_key, step_key = jax.random.split(key)
        # [state, data, order, step key, refinery]: the step's arguments; only the state and the order change.
        rep = functools.partial(replicate, devices=devices)
        args = [rep(state), data, None, rep(step_key), None if refinery_variables is None else rep(refinery_variables)]
        while progress.step < plan.total_steps:
            epoch, batch = divmod(progress.step, plan.steps_per_epoch)
            if bar is None or batch == 0:
                args[2] = rep(epoch_order(data_key, epoch, data.images.shape[1]))
                bar = _progress_bar(plan, epoch, batch, progress_bar)
            first_step = progress.step
            fetched, stopped = _timed_steps(step_fn, args, plan.next_sync(first_step) - first_step, bar,
                                            should_stop, progress, plan, first_call)
            first_call = False
            if fetched:
                last_saved = _sync(args, fetched, first_step, key, plan, progress, last_saved, manager, log, bar)
            if stopped:
                bar.close()
                where = os.path.join(str(manager.directory), str(last_saved)) if manager and last_saved else None
                raise interrupt.Interrupted(interrupt.requested() or interrupt.AGREED, progress.step,
                                            plan.total_steps, where if last_saved == progress.step else None)
        final_state = unreplicate(args[0])
    finally:
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    return final_state, training_stats(progress)


def training_stats(progress: Progress) -> dict:
    """A finished generation's training time, steady images/s and per-epoch history."""
    images = sum(h["images_per_second"] * h["seconds"] for h in progress.history)
    return {"train_seconds": progress.train_seconds,
            "images_per_second": images / max(sum(h["seconds"] for h in progress.history), 1e-9),
            "overhead_seconds": dict(progress.overhead_seconds), "epochs": progress.history}


def _progress_bar(plan: LoopPlan, epoch: int, batch: int, enabled: bool):
    """A per-epoch bar counting steps, scaled to images so its rate reads in images/s."""
    from tqdm.auto import tqdm

    return tqdm(total=plan.steps_per_epoch, initial=batch, desc=f"epoch {epoch + 1}/{plan.epochs}", unit="img",
                unit_scale=plan.global_batch, leave=False, dynamic_ncols=True, disable=not enabled)
