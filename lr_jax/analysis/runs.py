"""Runs: reading run folders and label summaries, grouping runs into configurations, describing their settings."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Optional, Sequence

import numpy as np

from lr_jax import config as config_lib
from lr_jax import results

# Runs whose configs differ only in the seed are seeds of one configuration (run options, config.RunOptions, were
# never part of a configuration; older results.json files that hold them in "config" are read without them).
# `refinery_workdir` counts only as "a refinery was reused or not", since each seed usually reuses its own.
NOT_SETTINGS = ("seed", *config_lib.RUN_OPTION_FIELDS)

ACCURACIES = (("val_accuracy", "validation"), ("test_accuracy", "test"))
LABEL_SUMMARY_KEYS = ("images", "labels", "class_names", "probs", "entropies", "generations")


@dataclasses.dataclass
class Run:
    workdir: str
    payload: dict  # the run's results.json


@dataclasses.dataclass
class Configuration:
    label: str  # readable name for tables and legends
    settings: dict  # the run config without NOT_SETTINGS
    runs: list[Run]  # sorted by seed
    rows: list[dict]  # per generation: {"generation": g, "seeds": n, <metric>: stats.Stat or None}
    # Paired differences per generation, one dict per stats.BASELINES name: held-out accuracy (held_out_key) minus
    # generation 1's of the same run ("own_gen1"), minus generation 1's and generation k's of the reference
    # configuration's run with the same seed and data ("reference_gen1", "reference_genk"), and the ensemble of
    # generations 1..k minus the reference run's ("reference_ensemble"); the reference itself has only "own_gen1".
    paired: dict = dataclasses.field(default_factory=dict)  # {baseline name: {generation: stats.Difference}}


@dataclasses.dataclass
class Report:
    dataset: str
    configurations: list[Configuration]
    reference: int = 0  # index of the configuration whose generation 1 the "reference" differences subtract


# Reading runs.


def load_run(workdir: str) -> Run:
    """Reads and checks `workdir/results.json`; errors name the folder or file."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"{workdir}: no such run folder")
    payload = results.load_results(workdir)
    return Run(workdir=workdir, payload=results.check_payload(payload, os.path.join(workdir, results.RESULTS_FILE)))


def seed_of(run: Run) -> int:
    return run.payload["config"]["seed"]


def load_label_summary(workdir: str) -> dict:
    """Reads `workdir/labels_summary.npz` (see results.write_label_summary); errors name the file."""
    path = os.path.join(workdir, results.LABELS_SUMMARY)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no {results.LABELS_SUMMARY} (written by runs of lr_jax with this report)")
    try:
        with np.load(path, allow_pickle=False) as data:
            summary = {key: data[key] for key in data.files}
    except Exception as error:  # zip and format errors come in several types
        raise ValueError(f"{path}: cannot read ({error})") from None
    missing = [key for key in LABEL_SUMMARY_KEYS if key not in summary]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    probs, entropies = summary["probs"], summary["entropies"]
    count, classes = len(summary["labels"]), len(summary["class_names"])
    num_generations = len(summary["generations"])
    if probs.shape != (num_generations, count, classes) or len(summary["images"]) != count:
        raise ValueError(
            f"{path}: probs has shape {probs.shape}, expected (generations, examples, classes) = "
            f"({num_generations}, {count}, {classes}); images {summary['images'].shape}"
        )
    if "dataset_labels" in summary and summary["dataset_labels"].shape != (count,):
        raise ValueError(f"{path}: dataset_labels has shape {summary['dataset_labels'].shape}, expected ({count},)")
    if entropies.ndim != 2 or len(entropies) != num_generations:
        raise ValueError(f"{path}: entropies has shape {entropies.shape}, expected ({num_generations}, train images)")
    return summary


def design_folder(root: str, folder: str, prefix: str) -> str:
    """ROOT/<prefix><folder> (a collected copy) if it exists, else ROOT/<folder> (the runs root's own)."""
    path = os.path.join(root, f"{prefix}{folder}")
    return path if os.path.isdir(path) else os.path.join(root, folder)


def load_named_runs(root: str, folders: Sequence[str], prefix: str) -> dict[tuple[str, int], Run]:
    """{('folder/name', seed): Run} for every run folder <name>_seed<S> with a results.json in each of `folders`
    under ROOT (design_folder: the collected copy if there is one)."""
    runs = {}
    for folder in folders:
        path = design_folder(root, folder, prefix)
        if not os.path.isdir(path):
            continue
        for entry in sorted(os.listdir(path)):
            match = re.fullmatch(r"(.+)_seed(\d+)", entry)
            if match and os.path.exists(os.path.join(path, entry, results.RESULTS_FILE)):
                runs[(f"{folder}/{match.group(1)}", int(match.group(2)))] = load_run(os.path.join(path, entry))
    if not runs:
        raise FileNotFoundError(f"{root}: no run folders <name>_seed<S> with results.json under "
                                f"{', '.join(folders)} or {prefix}<design>")
    return runs


def runs_named(runs: dict[tuple[str, int], Run], name: str) -> list[Run]:
    """The runs of load_named_runs called `name` ('folder/name'), sorted by seed."""
    return [run for (other, _), run in sorted(runs.items(), key=lambda item: item[0][1]) if other == name]


# Configurations and their names.


# Config fields added after runs were committed: at their defaults they are left out, so a run made before they
# existed and one made after, with the same settings, are one configuration.
LATER_FIELDS = ("crop", "crop_scale", "crop_ratio", "train_labels", "train_label_key")


def settings_of(config: dict) -> dict:
    """The settings that make a configuration: the config without run options and seed (and LATER_FIELDS at
    their defaults); a label file counts by its name, not the folder it was read from."""
    defaults = config_lib.DEFAULTS
    settings = {k: v for k, v in config.items()
                if k not in NOT_SETTINGS and not (k in LATER_FIELDS and v == defaults[k])}
    if settings.get("train_labels"):
        settings["train_labels"] = os.path.basename(str(settings["train_labels"]))
    if "refinery_workdir" in settings:
        settings["refinery_workdir"] = settings["refinery_workdir"] is not None
    return settings


def format_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(settings: dict) -> list[str]:
    """Readable parts of a configuration's name: the model, the label mode, and every non-default label knob."""
    defaults = dataclasses.asdict(config_lib.Config())
    model = settings.get("model", "?")
    if settings.get("refinery_model"):
        model = f"{settings['refinery_model']} refinery, {model}"
    mode = str(settings.get("label_mode", "precomputed"))
    given = bool(settings.get("train_labels"))  # trained on other labels than the dataset's (--train_labels)
    if settings.get("generations") == 1 and not settings.get("refinery_workdir"):
        mode = f"{'given labels' if given else 'ground truth'} only, {settings.get('epochs', '?')} epochs"
    elif mode == "ground_truth":
        mode = "independent models on the given labels" if given else "independent ground-truth models"
    parts = [model, mode]
    knobs = (
        ("label_smoothing", "label smoothing {}"),
        ("temperature", "temperature {}"),
        ("gt_weight", f"{'given-label' if given else 'ground-truth'} weight {{}}"),
        ("adversarial_jitter", "adversarial jitter {}"),
        ("dtype", "{}"),
        ("refinery_generation", "refinery = its generation {}"),
    )
    for key, text in knobs:
        if key in settings and settings[key] != defaults.get(key):
            parts.append(text.format(format_value(settings[key])))
    if settings.get("label_mode") == "online" and settings.get("refinery_bn") == "train":
        parts.append("refinery BatchNorm in train mode")
    if settings.get("refinery_workdir"):
        parts.append("reused refinery")
    if settings.get("crop", "pad") != "pad":
        scale = str(settings.get("crop_scale", config_lib.DEFAULTS["crop_scale"])).replace(",", "-")
        parts.append(f"random-resized crops {scale}")
    if settings.get("train_labels"):
        key = settings.get("train_label_key")
        parts.append(f"labels {os.path.basename(str(settings['train_labels']))}{'' if key is None else ' ' + key}")
    if settings.get("eval_flip"):
        parts.append("flip-averaged evaluation")
    return parts


def configuration_labels(all_settings: list[dict]) -> list[str]:
    """describe() for each configuration; where two names collide, the settings that tell them apart are added."""
    labels = [", ".join(describe(s)) for s in all_settings]
    for label in set(labels):
        clash = [i for i, other in enumerate(labels) if other == label]
        if len(clash) < 2:
            continue
        keys = sorted({k for i in clash for k in all_settings[i]})
        differing = [k for k in keys if len({json.dumps(all_settings[i].get(k)) for i in clash}) > 1]
        for i in clash:
            extra = ", ".join(f"{k}={format_value(all_settings[i].get(k))}" for k in differing)
            labels[i] = f"{label}, {extra}"
    return labels


def settings_line(settings: dict) -> str:
    keys = ("model", "refinery_model", "generations", "epochs", "batch_size", "learning_rate", "weight_decay",
            "schedule", "augment", "train_size", "val_size", "label_mode", "temperature", "gt_weight",
            "label_smoothing", "adversarial_jitter", "dtype", "eval_flip", "crop", "crop_scale", "train_labels",
            "train_label_key")
    return ", ".join(f"{k}={format_value(settings[k])}" for k in keys if settings.get(k) is not None)


def group_runs(runs: Sequence[Run]) -> tuple[str, list[tuple[str, dict, list[Run]]]]:
    """The runs' dataset and their configurations (label, settings, runs sorted by seed), in order of first
    appearance: runs that differ only by seed (settings_of) are one. All runs must be of one dataset, and no
    configuration may hold a seed twice."""
    datasets = {run.payload["config"]["dataset"] for run in runs}
    if len(datasets) > 1:
        listing = "; ".join(f"{run.workdir}: {run.payload['config']['dataset']}" for run in runs)
        raise ValueError(f"runs of different datasets cannot share one report ({listing})")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        group = groups.setdefault(json.dumps(settings_of(run.payload["config"]), sort_keys=True), [])
        twin = next((other for other in group if seed_of(other) == seed_of(run)), None)
        if twin is not None:
            raise ValueError(
                f"{twin.workdir} and {run.workdir}: the same configuration and seed {seed_of(run)} twice "
                "(a copied run would count twice in the mean)"
            )
        group.append(run)
    all_settings = [json.loads(key) for key in groups]
    configurations = [(label, settings, sorted(group, key=seed_of))
                      for label, settings, group in zip(configuration_labels(all_settings), all_settings,
                                                        groups.values())]
    return datasets.pop(), configurations


def reference_index(configurations: list[Configuration], reference: Optional[str]) -> int:
    """Index of the configuration that holds run folder `reference` (default: the first configuration)."""
    if reference is None:
        return 0
    for index, configuration in enumerate(configurations):
        if any(os.path.realpath(run.workdir) == os.path.realpath(reference) for run in configuration.runs):
            return index
    raise ValueError(f"--reference {reference}: not one of the run folders given")


def held_out_key(configuration: Configuration) -> str:
    """test_accuracy where the runs have a test split, else val_accuracy."""
    has_test = any(row["test_accuracy"] is not None for row in configuration.rows)
    return "test_accuracy" if has_test else "val_accuracy"
