"""What one generation of the chain trains on: its GenerationPlan (model, label source, teacher, step options),
built once per generation, from which its targets, its compiled step's key and its results.json labels derive."""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np

from lr_jax import losses, step
from lr_jax.config import Config
from lr_jax.data import Splits


class LabelSource(enum.Enum):
    """Where a generation's training labels come from. The value is the text results.json records as its
    `label_mode`; a new source is one more member here and one more case in `training_labels`."""

    GROUND_TRUTH = "ground truth"  # the given labels (the dataset's or --train_labels'), one-hot (smoothed by
    # --label_smoothing), or a label file's soft rows
    PRECOMPUTED = "precomputed"  # the teacher's softmax on the un-augmented training images, predicted once
    ONLINE = "online"  # the frozen teacher's softmax on each augmented crop, computed in the train step


# --label_mode: the source of every generation after the first; "ground_truth" makes every generation learn it.
REFINED_SOURCES = {"precomputed": LabelSource.PRECOMPUTED, "online": LabelSource.ONLINE}


@dataclasses.dataclass(frozen=True)
class Teacher:
    """The generation whose predictions a generation learns (the refinery), and its architecture."""

    generation: int
    model_name: str


@dataclasses.dataclass(frozen=True)
class GenerationPlan:
    """What generation `generation` trains: architecture `model_name` on labels from `source` (made by `teacher`,
    None for the dataset's labels), with the train step `step_options`."""

    generation: int
    model_name: str
    source: LabelSource
    teacher: Optional[Teacher]
    step_options: step.StepOptions
    label_file: Optional[str] = None  # --train_labels: the given labels are that file's, not the dataset's

    @property
    def trained_on(self) -> str:
        """results.json's `trained_on`: "ground truth" (the dataset's labels), "given labels (FILE NAME)" (a
        --train_labels file's) or "generation k" (the refinery that made the labels)."""
        if self.teacher is not None:
            return f"generation {self.teacher.generation}"
        return self.source.value if self.label_file is None else f"given labels ({os.path.basename(self.label_file)})"

    @property
    def label_mode(self) -> str:
        """results.json's `label_mode`: "ground truth", "precomputed" or "online"."""
        return self.source.value

    @property
    def describe_labels(self) -> str:
        """The labels as the log names them: as `trained_on`, "labels of generation k" for a refinery's."""
        return self.trained_on if self.teacher is None else f"labels of generation {self.teacher.generation}"

    @property
    def refinery_model(self) -> Optional[str]:
        """The architecture the train step calls (online labels, adversarial jittering), None where it calls none."""
        return self.teacher.model_name if self.step_options.uses_refinery else None

    @property
    def step_key(self) -> tuple:
        """What its compiled train step depends on: equal for generations that share one compiled step."""
        return ("step", self.model_name, self.step_options, self.refinery_model)


def model_for_generation(config: Config, generation: int) -> str:
    """With `--refinery_model`, generation 1 is that architecture (the refinery); the rest are `--model`."""
    if config.refinery_model and generation == 1:
        return config.refinery_model
    return config.model


def plan_generation(config: Config, generation: int, previous: Sequence, num_devices: int,
                    num_train: int) -> GenerationPlan:
    """The plan of `generation` after the finished generations `previous` (each with `generation` and
    `model_name`): generation 1 learns the ground truth, each later one its predecessor's labels (in
    `--label_mode ground_truth`, the ground truth again)."""
    teacher = None
    if previous and config.label_mode in REFINED_SOURCES:
        teacher = Teacher(previous[-1].generation, previous[-1].model_name)
    source = LabelSource.GROUND_TRUTH if teacher is None else REFINED_SOURCES[config.label_mode]
    options = step.step_options(config, num_devices, num_train, refined=teacher is not None,
                                online=source is LabelSource.ONLINE)
    label_file = config.train_labels if source is LabelSource.GROUND_TRUTH else None
    return GenerationPlan(generation, model_for_generation(config, generation), source, teacher, options, label_file)


def ground_truth_targets(splits: Splits, config: Config) -> np.ndarray:
    """The given labels as targets: one-hot (smoothed if `--label_smoothing`), or the soft rows of a
    `--train_labels` file that holds soft labels (an exported refinery's: the blog's variant from a file)."""
    if splits.train_targets is not None:
        return np.asarray(splits.train_targets, np.float32)
    return np.asarray(losses.one_hot(jnp.asarray(splits.train_labels), splits.num_classes, config.label_smoothing))


def training_labels(plan: GenerationPlan, splits: Splits, config: Config, previous: Sequence
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(targets: the label distributions of the training images that the step is given, (N, C); the class each
    image is taught, (N,), which `label_agreement` compares with). A teacher's targets are its soft labels (online
    steps ignore them and label each crop themselves)."""
    if plan.source is LabelSource.GROUND_TRUTH:
        return ground_truth_targets(splits, config), splits.train_labels
    teacher = previous[-1]
    assert teacher.generation == plan.teacher.generation, "the plan names another teacher than the chain's last"
    return teacher.soft_labels, np.argmax(teacher.soft_labels, -1)
