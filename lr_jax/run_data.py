"""A finished run reloaded for analysis tools: its settings, its data split exactly as it trained, a generation's model."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Optional

import jax
import numpy as np

from lr_jax import augment, checkpoints, devices, results, workdir
from lr_jax.config import CONFIG_FIELDS, DEFAULTS, RUN_OPTION_FIELDS, Config, RunOptions, parse_range
from lr_jax.data import Splits
from lr_jax.models import get_model


class RunDataError(checkpoints.CheckpointError):
    """A run folder that cannot be reloaded; the one-line message names the folder or file."""


@dataclasses.dataclass
class ReloadedRun:
    """A run's results.json sections and its train/validation split, checked against the run's data fingerprint."""

    run_dir: str
    config: dict
    run: dict
    splits: Splits


def read_payload(run_dir: str) -> dict:
    """results.json of `run_dir`; errors name the file."""
    path = os.path.join(run_dir, results.RESULTS_FILE)
    try:
        with open(path) as f:
            payload = json.load(f)
        payload["config"], payload["run"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunDataError(f"{path}: cannot read the run's config and run options ({error})") from None
    return payload


def reload_run(run_dir: str, log: Callable[[str], None] = lambda line: None) -> ReloadedRun:
    """The run's data, read from where it trained (its --data_dir / --cache_dir / TFDS folder) and split as it was;
    refuses a split whose pixels or labels differ from what the run recorded."""
    from lr_jax.experiments import runner  # the runner owns how flags become data: one path for runs and tools

    payload = read_payload(run_dir)
    config = Config(**{k: v for k, v in payload["config"].items() if k in CONFIG_FIELDS})
    options = RunOptions(**{k: v for k, v in payload["run"].items() if k in RUN_OPTION_FIELDS})
    splits = runner.read_splits(config, options, log)[1]
    workdir.check_same_data(run_dir, splits)
    return ReloadedRun(run_dir, payload["config"], payload["run"], splits)


def generation_predictor(run_dir: str, generation: Optional[int], num_classes: int):
    """(predict(images uint8 (N, H, W, C), mean, std, batch_size) -> softmax (N, C), info) for a finished
    generation of `run_dir` (None: its newest), on every local device."""
    arrays, info = checkpoints.load_generation(run_dir, generation)
    predict_fn = devices.make_predict(get_model(info["model_name"], num_classes))
    variables = devices.replicate(arrays["variables"])

    def predict(images: np.ndarray, mean, std, batch_size: int = 256) -> np.ndarray:
        return devices.predict_probs(predict_fn, variables, images, mean, std, batch_size)

    return predict, {**info, "arrays": arrays}


def training_crops(images: np.ndarray, chosen: np.ndarray, keys, config: dict, batch_size: int = 256) -> np.ndarray:
    """uint8 crops of `images[chosen]` as the run's train step augments them (its --crop, padding, scale, ratio and
    flips; one key per crop), rounded back to uint8 pixels (exact for pad-and-crop)."""
    options = (config.get("crop", DEFAULTS["crop"]), config["crop_padding"],
               parse_range(config.get("crop_scale", DEFAULTS["crop_scale"]), "crop_scale"),
               parse_range(config.get("crop_ratio", DEFAULTS["crop_ratio"]), "crop_ratio"), config["flip"])
    crop = jax.jit(lambda pixels, keys: augment.training_augmentation(augment.to_unit_float(pixels), keys, *options))
    batches = [np.asarray(crop(images[chosen[i:i + batch_size]], keys[i:i + batch_size]))
               for i in range(0, len(chosen), batch_size)]
    return np.round(np.concatenate(batches) * 255.0).astype(np.uint8)
