"""One generation's step loop: epochs of pmapped train steps, syncs and checks, training checkpoints and resuming,
stop requests, and the Chrono that every timed part of a generation reports to."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import time
import types
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from lr_jax import checkpoints, interrupt
from lr_jax.devices import replicate, unreplicate
from lr_jax.step import DeviceData, TrainState, variables_of

# Steps left unfinished on the devices while the host dispatches more (see run_steps).
IN_FLIGHT_STEPS = 3


class NonFiniteLossError(FloatingPointError):
    """Training diverged; the message names the step, the loss, and the last good checkpoint kept."""


def _known_fields(cls, record: dict) -> dict:
    """The entries of a saved record that are fields of the dataclass `cls` (older records may hold others)."""
    known = {field.name for field in dataclasses.fields(cls)}
    return {k: v for k, v in record.items() if k in known}


@dataclasses.dataclass
class Chrono:
    """Where one generation's seconds went; every timed part reports here. Training compute (`train`: steps from
    dispatch until their results are ready, per generation and per epoch) is kept apart from overheads (`overhead`:
    the loop's first-step compilation, syncs and checks, checkpoint saves; then the chain's prediction passes and
    generation save), so images/s means one thing. Saved with each training checkpoint; a generation's metrics row
    holds its `overhead_seconds` dict itself, so what is timed after the row is made (saving) shows there too."""

    epoch_seconds: float = 0.0  # training compute of the current epoch so far
    epoch_images: int = 0  # images trained in the current epoch within epoch_seconds
    train_seconds: float = 0.0  # training compute of every step so far
    overhead_seconds: dict = dataclasses.field(
        default_factory=lambda: {"compile": 0.0, "sync": 0.0, "checkpoint": 0.0})

    def load(self, record: dict) -> None:
        """Takes the times of a training checkpoint's record (see `checkpoint_record`)."""
        for name, value in _known_fields(Chrono, record).items():
            setattr(self, name, value)

    @contextlib.contextmanager
    def overhead(self, kind: str):
        """Books the seconds spent inside (when it finishes without an error) as overhead of `kind`."""
        start = time.perf_counter()
        yield
        self.overhead_seconds[kind] = self.overhead_seconds.get(kind, 0.0) + time.perf_counter() - start

    @contextlib.contextmanager
    def train(self):
        """Books the seconds spent inside as training compute of the current epoch; the block adds the images it
        trained to the yielded lap's `images`."""
        lap = types.SimpleNamespace(images=0)
        start = time.perf_counter()
        yield lap
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        self.epoch_seconds += seconds
        self.epoch_images += lap.images

    def close_epoch(self) -> tuple[float, float]:
        """(seconds, images/s) of the epoch that just finished; the next one starts from zero."""
        seconds, images = self.epoch_seconds, self.epoch_images
        self.epoch_seconds, self.epoch_images = 0.0, 0
        return seconds, images / max(seconds, 1e-9)


@dataclasses.dataclass
class Progress:
    """Where one generation's training stands: the step, the finished epochs, the current epoch's sums. Saved with
    each training checkpoint, beside the arrays and the generation's Chrono."""

    steps_per_epoch: int
    step: int = 0
    history: list = dataclasses.field(default_factory=list)  # one dict per finished epoch
    epoch_loss_sum: float = 0.0
    epoch_accuracy_sum: float = 0.0

    @classmethod
    def from_record(cls, record: dict) -> "Progress":
        return cls(**_known_fields(cls, record))

    def to_record(self) -> dict:
        return dataclasses.asdict(self)


def checkpoint_record(progress: Progress, chrono: Chrono) -> dict:
    """The JSON a training checkpoint saves beside the arrays: one flat dict, as the loop has always written it."""
    return {**progress.to_record(), **dataclasses.asdict(chrono)}


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


class StepArgs(NamedTuple):
    """The train step's arguments, all on the devices: between steps only `state` changes, between epochs `order`."""

    state: Any  # the replicated TrainState
    data: DeviceData
    order: Any  # the epoch's permutation of the training indices
    step_key: Any
    refinery_variables: Any  # None where the step does not call the refinery


def epoch_order(key: jax.Array, epoch: int, num_examples: int) -> np.ndarray:
    """The deterministic permutation of training indices for `epoch`."""
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), num_examples), np.int32)


def _all_finite(tree) -> bool:
    return all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)
               if np.issubdtype(np.asarray(leaf).dtype, np.floating))


@dataclasses.dataclass
class _Loop:
    """One train_generation call: its plan, where it saves (manager None: nowhere), how far it is, its Chrono."""

    plan: LoopPlan
    key: jax.Array  # the generation's key, saved with each checkpoint
    manager: Any
    log: Callable[[str], None]
    progress: Progress
    chrono: Chrono
    last_saved: int = 0  # the step of the newest checkpoint of this generation (0: none)
    curves: Any = None  # summaries.GenerationCurves (live TensorBoard curves), or None

    def diverged(self, step: int, what: str) -> NonFiniteLossError:
        epoch, batch = divmod(step - 1, self.plan.steps_per_epoch)
        kept = (f"the last good checkpoint (step {self.last_saved}) is kept in {self.manager.directory}"
                if self.last_saved else "no checkpoint of this generation was written" if self.manager is not None
                else "checkpoints were off")
        return NonFiniteLossError(
            f"{what} at step {step} (epoch {epoch + 1}, batch {batch + 1} of {self.plan.steps_per_epoch}); training "
            f"stopped and {kept}. Lower --learning_rate or check the data"
        )

    def account(self, fetched: list, first_step: int) -> list[tuple[float, float]]:
        """Adds fetched per-step metrics to the epoch's sums and returns them as (loss, accuracy) pairs; raises
        NonFiniteLossError at the first bad loss."""
        values = [(float(v["loss"][0]), float(v["accuracy"][0])) for v in fetched]
        for offset, (loss, accuracy) in enumerate(values):
            if not np.isfinite(loss):
                raise self.diverged(first_step + offset + 1, f"non-finite training loss {loss}")
            self.progress.epoch_loss_sum += loss
            self.progress.epoch_accuracy_sum += accuracy
        return values

    def close_epoch(self) -> None:
        """Moves the finished epoch's sums and times into its history entry and logs it."""
        progress, plan = self.progress, self.plan
        epoch = progress.step // plan.steps_per_epoch
        seconds, rate = self.chrono.close_epoch()
        entry = {"epoch": epoch, "loss": progress.epoch_loss_sum / plan.steps_per_epoch,
                 "accuracy": progress.epoch_accuracy_sum / plan.steps_per_epoch, "seconds": seconds,
                 "images_per_second": rate}
        progress.history.append(entry)
        progress.epoch_loss_sum = progress.epoch_accuracy_sum = 0.0
        self.log(f"  epoch {epoch}/{plan.epochs}: loss {entry['loss']:.4f}, accuracy on augmented batches "
                 f"{entry['accuracy']:.4f}, {entry['images_per_second']:.0f} images/s")

    def sync(self, state, fetched: list, first_step: int, bar) -> None:
        """After the steps `fetched` (from first_step on): checks their losses and the state, closes a finished
        epoch and saves a training checkpoint."""
        end = first_step + len(fetched)
        with self.chrono.overhead("sync"):
            values = self.account(fetched, first_step)
            host_state = unreplicate(state)
            if not _all_finite(variables_of(host_state)) or not _all_finite(host_state.opt_state):
                raise self.diverged(end, "non-finite parameters after a finite loss")
            self.progress.step = end
            if end % self.plan.steps_per_epoch == 0:
                bar.close()
                self.close_epoch()
        if self.manager is not None:
            with self.chrono.overhead("checkpoint"):
                checkpoints.save_training(self.manager, end, flax.serialization.to_state_dict(host_state), self.key,
                                          checkpoint_record(self.progress, self.chrono))
            self.last_saved = end
        if self.curves is not None:  # after the checkpoint: the state matters more than its curves
            with self.chrono.overhead("summaries"):
                self.curves.steps(first_step, values)
                if end % self.plan.steps_per_epoch == 0:
                    self.curves.epoch(end, self.progress.history[-1], variables_of(host_state))

    def interrupted(self) -> interrupt.Interrupted:
        """The stop at the current step, naming the checkpoint saved there (if any)."""
        saved_here = self.manager is not None and self.last_saved and self.last_saved == self.progress.step
        where = os.path.join(str(self.manager.directory), str(self.last_saved)) if saved_here else None
        return interrupt.Interrupted(interrupt.requested() or interrupt.AGREED, self.progress.step,
                                     self.plan.total_steps, where)


def _start(state: TrainState, key: jax.Array, plan: LoopPlan, manager, log, chrono: Chrono, curves) -> tuple:
    """(state, loop): from the newest readable training checkpoint, or fresh when there is none."""
    restored = checkpoints.restore_training(manager, log) if manager is not None else None
    if restored is None:
        return state, _Loop(plan, key, manager, log, Progress(plan.steps_per_epoch), chrono, curves=curves)
    arrays, record = restored
    progress = Progress.from_record(record)
    if progress.steps_per_epoch != plan.steps_per_epoch:
        raise checkpoints.CheckpointError(f"{manager.directory}: saved with {progress.steps_per_epoch} steps per "
                                          f"epoch, now {plan.steps_per_epoch}")
    chrono.load(record)
    epoch, batch = divmod(progress.step, plan.steps_per_epoch)
    log(f"  resuming from the checkpoint at step {progress.step} of {plan.total_steps} (epoch "
        f"{min(epoch + 1, plan.epochs)}, batch {batch} of {plan.steps_per_epoch}) in {manager.directory}")
    state = flax.serialization.from_state_dict(state, arrays["state"])
    key = jnp.asarray(arrays["rng"], jnp.uint32)
    return state, _Loop(plan, key, manager, log, progress, chrono, last_saved=progress.step, curves=curves)


def run_steps(step_fn: Callable, args: StepArgs, count: int, bar, should_stop: Callable[[], bool]
              ) -> tuple[StepArgs, list, bool]:
    """Dispatches up to `count` steps; returns the arguments after them (the state threaded through), their
    metrics, fetched to the host (which waits until the last step has finished), and whether it stopped early
    because `should_stop()` said so before a step.

    At most IN_FLIGHT_STEPS steps are left unfinished while more are dispatched: enough to keep the devices
    busy, few enough that the host, and so a stop request, is never more than a few steps ahead of them."""
    pending = []
    for _ in range(count):
        if should_stop():
            return args, jax.device_get(pending), True
        with jax.transfer_guard_host_to_device("disallow"):  # every argument already lives on the devices
            state, metrics = step_fn(*args)
        args = args._replace(state=state)
        pending.append(metrics)
        if len(pending) > IN_FLIGHT_STEPS:
            jax.block_until_ready(pending[-IN_FLIGHT_STEPS - 1])
        bar.update(1)
    return args, jax.device_get(pending), False


def _timed_steps(loop: _Loop, step_fn: Callable, args: StepArgs, count: int, bar, should_stop,
                 first_call: bool) -> tuple[StepArgs, list, bool]:
    """`run_steps` timed by the loop's Chrono: a first call's first step (which compiles the step, or finds it
    compiled) as overhead, the others as training compute of the current epoch."""
    fetched, stopped = [], False
    if first_call:
        with loop.chrono.overhead("compile"):
            args, fetched, stopped = run_steps(step_fn, args, 1, bar, should_stop)
    if stopped:
        return args, fetched, stopped
    with loop.chrono.train() as lap:
        args, timed, stopped = run_steps(step_fn, args, count - len(fetched), bar, should_stop)
        lap.images = len(timed) * loop.plan.global_batch
    return args, fetched + timed, stopped


def _run_epochs(loop: _Loop, step_fn: Callable, args: StepArgs, data_key, should_stop, progress_bar: bool,
                rep: Callable) -> StepArgs:
    """Steps from where `loop` stands to the end of its plan, syncing at the plan's sync points; raises
    interrupt.Interrupted (after syncing) when `should_stop()` says so."""
    plan, progress = loop.plan, loop.progress
    bar, first_call = None, True
    while progress.step < plan.total_steps:
        epoch, batch = divmod(progress.step, plan.steps_per_epoch)
        if bar is None or batch == 0:
            args = args._replace(order=rep(epoch_order(data_key, epoch, args.data.images.shape[1])))
            bar = _progress_bar(plan, epoch, batch, progress_bar)
        first_step = progress.step
        args, fetched, stopped = _timed_steps(loop, step_fn, args, plan.next_sync(first_step) - first_step, bar,
                                              should_stop, first_call)
        first_call = False
        if fetched:
            loop.sync(args.state, fetched, first_step, bar)
        if stopped:
            bar.close()
            raise loop.interrupted()
    return args


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
    chrono: Optional[Chrono] = None,
    curves: Any = None,
) -> tuple[TrainState, dict]:
    """Trains `state` for `plan.epochs` epochs with `step_fn` (from `step.make_train_step`) on `data` (from
    `devices.device_data`, already on the local devices, or on `devices`); returns the unreplicated state and its
    training statistics. Its times go to `chrono` (default: a new one), restored with a checkpoint.

    Per step nothing crosses from the host but the call itself: the step number lives in the state and the
    epoch's order is copied once per epoch. With several processes each feeds its own devices' shards. With
    `checkpoint_dir`, the full training state is saved every `plan.checkpoint_every` steps and at each epoch
    end, and training resumes from the newest readable checkpoint: the data order derives from (key, epoch)
    and augmentation from (key, step), so the step number is all the data-order state there is. A non-finite
    loss (or state) stops training with NonFiniteLossError before anything non-finite is saved. When
    `should_stop()` (asked before every step) says so, the steps dispatched are finished, the state is saved
    there and `interrupt.Interrupted` is raised. `curves` (a summaries.GenerationCurves) receives every step's
    loss and accuracy and each finished epoch, its time booked as the "summaries" overhead.
    """
    chrono = Chrono() if chrono is None else chrono
    manager = (checkpoints.open_manager(checkpoint_dir, checkpoints.KEEP_TRAINING_CHECKPOINTS)
               if checkpoint_dir else None)
    try:
        state, loop = _start(state, key, plan, manager, log, chrono, curves)
        if curves is not None:
            curves.start(loop.progress.step)
        data_key, step_key = jax.random.split(loop.key)
        rep = functools.partial(replicate, devices=devices)
        args = StepArgs(rep(state), data, None, rep(step_key),
                        None if refinery_variables is None else rep(refinery_variables))
        args = _run_epochs(loop, step_fn, args, data_key, should_stop, progress_bar, rep)
        final_state = unreplicate(args.state)
    finally:
        if curves is not None:
            with contextlib.suppress(*((Exception,) if sys.exc_info()[1] is not None else ())):
                curves.close()  # where training already failed, that error is the one to report
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    return final_state, training_stats(loop.progress, chrono)


def training_stats(progress: Progress, chrono: Chrono) -> dict:
    """A generation's training time, steady images/s, overheads (the Chrono's own dict) and per-epoch history."""
    images = sum(h["images_per_second"] * h["seconds"] for h in progress.history)
    return {"train_seconds": chrono.train_seconds,
            "images_per_second": images / max(sum(h["seconds"] for h in progress.history), 1e-9),
            "overhead_seconds": chrono.overhead_seconds, "epochs": progress.history}


def _progress_bar(plan: LoopPlan, epoch: int, batch: int, enabled: bool):
    """A per-epoch bar counting steps, scaled to images so its rate reads in images/s."""
    from tqdm.auto import tqdm

    return tqdm(total=plan.steps_per_epoch, initial=batch, desc=f"epoch {epoch + 1}/{plan.epochs}", unit="img",
                unit_scale=plan.global_batch, leave=False, dynamic_ncols=True, disable=not enabled)
