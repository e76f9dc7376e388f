"""The pure train step: TrainState, the step's static options, its batch (augmentation, labels, jittering), the
optimizer and its learning-rate schedule."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from lr_jax import augment, losses
from lr_jax.config import Config, parse_range
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
    crop: str = "pad"  # or "random_resized" (see augment.training_augmentation)
    crop_scale: tuple = (0.08, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    online_labels: bool = False  # the refinery labels each augmented crop (else the targets of `DeviceData`)
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
        return self.online_labels or self.num_jittered > 0


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


def step_options(config: Config, num_devices: int, num_train: int, refined: bool, online: bool = False
                 ) -> StepOptions:
    """The static step settings of a generation; the refinery's settings apply only when `refined` (a generation
    that learns a refinery's labels), per-crop labels when `online` too."""
    check_batch_divides(config.batch_size, num_devices)
    return StepOptions(
        global_batch=config.batch_size,
        num_devices=num_devices,
        steps_per_epoch=steps_per_epoch(num_train, config.batch_size),
        augment=config.augment,
        flip=config.flip,
        crop_padding=config.crop_padding,
        crop=config.crop,
        crop_scale=parse_range(config.crop_scale, "--crop_scale"),
        crop_ratio=parse_range(config.crop_ratio, "--crop_ratio"),
        online_labels=refined and online,
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


def variables_of(state: TrainState) -> dict:
    """The model variables ({'params', 'batch_stats'}) of a (replicated or not) TrainState."""
    return {"params": state.params, "batch_stats": state.batch_stats}


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


def loss_function(options: StepOptions) -> Callable:
    """(logits, targets, labels) -> the per-example loss these options train with."""
    return functools.partial(losses.refinery_loss, temperature=options.temperature, gt_weight=options.gt_weight,
                             label_smoothing=options.label_smoothing)


def training_batch(state: TrainState, data: DeviceData, order: jax.Array, rng: jax.Array, refinery_variables: Any,
                   *, model: nn.Module, refinery: Optional[nn.Module], options: StepOptions) -> tuple:
    """This device's share of the step's global batch, under pmap with axis `AXIS`: (pixels in [0, 1], augmented
    and jittered; the label distributions to learn; the ground-truth labels).

    `order` is the current epoch's permutation of the training indices (the same on every device); the step
    number `state.step` places the global batch in it, and this device takes positions [device * B/D, ...)
    of that batch. Each example's augmentation key depends only on its position in the global batch, so 1
    device and D devices see the same inputs."""
    local = options.local_batch
    positions = jax.lax.axis_index(AXIS) * local + jnp.arange(local)  # in the global batch
    offset = (state.step % options.steps_per_epoch) * options.global_batch
    indices = jnp.take(order, offset + positions)
    pixels = augment.to_unit_float(data.images[indices])
    labels = data.labels[indices]
    step_key = jax.random.fold_in(rng, state.step)
    if options.augment:
        example_keys = jax.vmap(jax.random.fold_in, (None, 0))(step_key, offset + positions)
        pixels = augment.training_augmentation(pixels, example_keys, options.crop, options.crop_padding,
                                               options.crop_scale, options.crop_ratio, options.flip)
    prep = lambda p: augment.normalize(p, data.mean, data.std)

    if options.uses_refinery and refinery is None:
        raise ValueError("online labels and adversarial jittering need a refinery model")
    label_of = lambda p: _softmax_of(refinery, refinery_variables, prep(p), options.refinery_train_bn)
    targets = label_of(pixels) if options.online_labels else data.targets[indices]
    if options.num_jittered:
        # The first examples of the global batch move one step up the student's loss (its BatchNorm on the
        # whole global batch, as in the update), then the refinery relabels them.
        jittered = positions < options.num_jittered
        loss_of = loss_function(options)

        def student_loss(p):
            logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats}, prep(p),
                                    train=True, mutable=["batch_stats"])
            return jnp.sum(jnp.where(jittered, loss_of(logits, targets, labels), 0.0))

        moved = adversarial_jitter(student_loss, pixels, options.jitter_epsilon)
        pixels = jnp.where(jittered[:, None, None, None], moved, pixels)
        targets = jnp.where(jittered[:, None], label_of(pixels), targets)
    return pixels, targets, labels


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
    """One SGD step on this device's share of the global batch (see `training_batch`); run under pmap with axis
    `AXIS`. Between the steps of an epoch only `state` changes."""
    pixels, targets, labels = training_batch(state, data, order, rng, refinery_variables, model=model,
                                             refinery=refinery, options=options)
    inputs = augment.normalize(pixels, data.mean, data.std)
    loss_of = loss_function(options)

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
