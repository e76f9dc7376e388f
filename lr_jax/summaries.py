"""Live training curves: TensorBoard event files in the workdir, one run folder per generation (tensorboardX).

Layout: `<workdir>/tensorboard/generation_K/` holds generation K's per-step training loss, accuracy on augmented
batches and learning rate (`train/...`) and per-epoch images/s and validation accuracy (`epoch/...`);
`<workdir>/tensorboard/chain/` holds each finished generation's accuracies, label entropy and agreement
(`generation/...`) at step = its generation number, so the chain reads as one curve per metric. Open with `tensorboard --logdir <workdir>/tensorboard`.

tensorboardX rather than clu's metric writers (which flax's examples use): clu writes through TensorFlow's
`tf.summary`, and importing TensorFlow costs seconds and hundreds of MB in every training process, which lr_jax
otherwise never imports (TensorFlow only prepares TFDS datasets once); tensorboardX writes the same event files
with protobuf alone. Its event-file writer is used directly, in the training thread, rather than its
SummaryWriter's background thread, so that a full disk is one clear WriteError like any other result file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
from typing import Callable, Mapping, Optional

from lr_jax import files

FOLDER = "tensorboard"
_SERIAL = itertools.count()


def log_dir(workdir: str, run: str) -> str:
    """`<workdir>/tensorboard/<run>`: `generation_K` or `chain`."""
    return os.path.join(workdir, FOLDER, run)


@dataclasses.dataclass
class EventFile:
    """One open TensorBoard event file in `logdir` (written synchronously: a failed write is raised here, in the
    training thread, not lost in a background one)."""

    logdir: str
    events: object  # tensorboardX.event_file_writer.EventsWriter


@contextlib.contextmanager
def _writing(directory: str):
    """A failed event-file write (full disk, ...) becomes files.WriteError naming the folder, as results' do."""
    try:
        yield
    except OSError as error:
        raise files.WriteError(f"cannot write TensorBoard events into {directory}: "
                               f"{files.write_failure(error) or error}") from None


def open_writer(workdir: Optional[str], run: str, resume_step: Optional[int] = None) -> Optional[EventFile]:
    """A new event file in `log_dir(workdir, run)`, or None without a workdir.

    `resume_step`: where a resumed generation continues; TensorBoard then drops what an interrupted earlier
    invocation wrote at later steps (a SessionLog START at that step, as tensorboardX's `purge_step`), so a
    resumed curve has no doubled points."""
    if not workdir:
        return None
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    directory = log_dir(workdir, run)
    with _writing(directory):
        os.makedirs(directory, exist_ok=True)
        # The pid and a serial number keep two files opened within one second (a quick resume, two generations'
        # chain entries) from sharing a name: the second would overwrite the first.
        events = EventsWriter(os.path.join(directory, "events"), f".{os.getpid()}.{next(_SERIAL)}.lr_jax")
        if resume_step:
            events.write_event(Event(step=resume_step, wall_time=time.time(),
                                     session_log=SessionLog(status=SessionLog.START)))
    return EventFile(directory, events)


def write_scalars(writer: Optional[EventFile], step: int, scalars: Mapping[str, Optional[float]]) -> None:
    """Adds each non-None scalar at `step`; a None writer writes nothing."""
    if writer is None:
        return
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import scalar

    with _writing(writer.logdir):
        for tag, value in scalars.items():
            if value is not None:
                writer.events.write_event(Event(wall_time=time.time(), step=int(step),
                                                summary=scalar(tag, float(value))))


def flush(writer: Optional[EventFile]) -> None:
    if writer is not None:
        with _writing(writer.logdir):
            writer.events.flush()


def close(writer: Optional[EventFile]) -> None:
    if writer is not None:
        with _writing(writer.logdir):
            writer.events.close()


class GenerationCurves:
    """One generation's live curves, fed by the training loop (lr_jax.loop): per step the training loss, accuracy
    on augmented batches and learning rate, per epoch images/s and, with `evaluate` (variables -> validation
    accuracy, without flip averaging), the validation accuracy. Its writer opens when training starts (at the
    step a checkpoint resumes from)."""

    def __init__(self, workdir: str, generation: int, learning_rate: Callable[[int], float],
                 evaluate: Optional[Callable[[dict], Optional[float]]] = None):
        self.workdir, self.run = workdir, f"generation_{generation}"
        self.learning_rate, self.evaluate = learning_rate, evaluate
        self.writer = None

    def start(self, step: int) -> None:
        self.writer = open_writer(self.workdir, self.run, resume_step=step)

    def steps(self, first_step: int, values: list[tuple[float, float]]) -> None:
        """`values`: (loss, accuracy) of the steps first_step + 1, first_step + 2, ..."""
        for offset, (loss, accuracy) in enumerate(values):
            step = first_step + offset + 1
            write_scalars(self.writer, step, {"train/loss": loss, "train/accuracy": accuracy,
                                              "train/learning_rate": self.learning_rate(step - 1)})

    def epoch(self, step: int, entry: Mapping, variables: dict) -> None:
        """A finished epoch (its history entry) at `step`, with the model's variables on the host."""
        val = self.evaluate(variables) if self.evaluate is not None else None
        write_scalars(self.writer, step, {"epoch/images_per_second": entry["images_per_second"],
                                          "epoch/val_accuracy": val})
        flush(self.writer)

    def close(self) -> None:
        close(self.writer)


GENERATION_SCALARS = ("val_accuracy", "val_accuracy_no_flip", "test_accuracy", "train_accuracy", "label_entropy",
                      "label_agreement", "ensemble_val_accuracy", "train_accuracy_dataset_labels", "labels_repaired",
                      "labels_broken")


def write_generation(workdir: str, metrics: Mapping) -> None:
    """A finished generation's results (GENERATION_SCALARS) as `generation/...` in the `chain` run, at step = its
    generation number, so the chain reads as one curve per metric."""
    writer = open_writer(workdir, "chain")
    write_scalars(writer, int(metrics["generation"]), {f"generation/{key}": metrics.get(key)
                                                       for key in GENERATION_SCALARS})
    close(writer)


def read_scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every event file under `directory` (as TensorBoard shows them); for tests
    and scripts."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(directory, size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}
