"""Run settings: `Config` (what defines a run's results), `RunOptions` (where and how it runs), presets."""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass
class Config:
    """What defines a run and its results (model, schedule, labels, data selection, seed); saved into
    results.json and config.json, and compared when a workdir is resumed."""

    dataset: str = "cifar10"
    # The chain.
    generations: int = 3  # may grow between invocations of one run: the chain continues
    model: str = "resnet20"
    # Optimisation (SGD + Nesterov momentum, warmup then cosine or piecewise decay).
    epochs: int = 30
    batch_size: int = 128  # global, across all devices
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # or "piecewise": /10 at 50% and 75% of training
    dtype: str = "float32"  # compute dtype of the convolutions: float32 or bfloat16
    # Data.
    seed: int = 0
    train_size: Optional[int] = None  # None: every training image left after the validation split
    val_size: int = 5000
    augment: bool = True
    flip: bool = True
    crop_padding: int = 4
    crop: str = "pad"  # "pad": zero-pad by crop_padding, random crop; "random_resized": the paper's crops
    crop_scale: str = "0.08,1"  # random_resized: the crop's area fraction MIN,MAX (torchvision's default)
    crop_ratio: str = "0.75,1.333333"  # random_resized: the crop's aspect ratio MIN,MAX (3/4, 4/3)
    svhn_extra: bool = False  # SVHN: add the 531k-image `extra` split to training
    # Labels.
    train_labels: Optional[str] = None  # a file of labels that replaces the training images' (validation keeps its own)
    train_label_key: Optional[str] = None  # which label set of a file that holds several (e.g. worse_label)
    label_mode: str = "precomputed"  # or "online": the frozen refinery labels every augmented crop; or
    # "ground_truth": every generation a fresh model on ground truth (the control: independent models, their ensemble)
    refinery_bn: str = "eval"  # "train": the official code's quirk, refinery BatchNorm on batch statistics
    refinery_model: Optional[str] = None  # an architecture other than `model` for the first refinery
    refinery_workdir: Optional[str] = None  # reuse that run's final generation as the first refinery
    refinery_generation: Optional[int] = None  # which generation of --refinery_workdir (None: its newest)
    temperature: float = 1.0
    gt_weight: float = 0.0
    label_smoothing: float = 0.0
    adversarial_jitter: float = 0.0  # fraction of each global batch perturbed
    jitter_epsilon: float = 2.0 / 255.0  # L-infinity size of the perturbation, in [0, 1] pixel units
    # Evaluation.
    eval_flip: bool = False  # validation/test probabilities averaged over each image and its mirror (not labels)


@dataclasses.dataclass
class RunOptions:
    """Where and how a run executes: folders, checkpoint cadence, batching of predictions, hosts. None of it
    changes the results, so a resumed run may change any of it."""

    workdir: str = "runs/default"
    data_dir: Optional[str] = None  # None: TFDS (Fashion-MNIST: Debian's /usr/share/datasets/fashion-mnist)
    tfds_data_dir: Optional[str] = None  # where TFDS keeps prepared data; None: TFDS_DATA_DIR or ~/tensorflow_datasets
    cache_dir: Optional[str] = None  # keep decoded --data_dir arrays here for faster re-reads; None: no cache
    preset: Optional[str] = None  # where the defaults came from (the resolved values are in Config)
    eval_batch_size: int = 256  # prediction batch: on CPU 256 predicted 1.05-1.4x faster than 1000 (cache)
    checkpoint_every: int = 500  # steps between mid-generation checkpoints (0: only at epoch ends)
    tensorboard: bool = True  # live curves as TensorBoard event files in <workdir>/tensorboard (lr_jax.summaries)
    coordinator_address: Optional[str] = None  # host:port of process 0, for a multi-process run
    num_processes: Optional[int] = None
    process_id: Optional[int] = None


CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(Config))
RUN_OPTION_FIELDS = tuple(field.name for field in dataclasses.fields(RunOptions))


DATASET_DEFAULTS = {
    "cifar10": dict(flip=True),
    "svhn": dict(flip=False),
    "fashion_mnist": dict(flip=True),
}

PRESETS = {
    # About 5.5 minutes per generation on a 2-core CPU, 85% (JPEG-75 CIFAR-10 copy, held-out validation, seed 0):
    # small_cnn with 16 channels in its first stage and two convolutions in its last, 12 epochs, batch 128, held-out
    # predictions averaged over mirror images (experiments/README.md, "A stronger cpu preset", measures each part).
    "cpu": dict(model="small_cnn_c2_16", epochs=12, batch_size=128, learning_rate=0.2, weight_decay=5e-4,
                warmup_epochs=1.0, schedule="cosine", generations=3, label_smoothing=0.0, eval_flip=True),
    # The `cpu` preset of experiments/README.md's Results 1-6 (81% in 3.5 minutes per generation today).
    "cpu_v1": dict(model="small_cnn", epochs=8, batch_size=256, learning_rate=0.4, weight_decay=5e-4,
                   warmup_epochs=1.0, schedule="cosine", generations=3, label_smoothing=0.0),
    # A few seconds end to end: for smoke tests and notebooks' CPU check.
    "tiny": dict(model="tiny_cnn", epochs=1, batch_size=64, learning_rate=0.1, generations=2,
                 train_size=256, val_size=64, eval_batch_size=256),
    # He et al. 2016's CIFAR schedule (164 epochs, /10 at 50% and 75%), five generations as in the paper.
    "paper": dict(model="resnet56", epochs=164, batch_size=128, learning_rate=0.1, weight_decay=1e-4,
                  warmup_epochs=1.0, schedule="piecewise", generations=5),
}

CHOICES = {
    "schedule": ("cosine", "piecewise"),
    "dtype": ("float32", "bfloat16"),
    "label_mode": ("precomputed", "online", "ground_truth"),
    "refinery_bn": ("eval", "train"),
    "crop": ("pad", "random_resized"),
}
DEFAULTS = {field.name: field.default for field in dataclasses.fields(Config)}


def parse_range(text: str, flag: str) -> tuple[float, float]:
    """'MIN,MAX' -> (MIN, MAX), with 0 < MIN <= MAX; a ValueError naming the flag otherwise."""
    try:
        low, high = (float(part) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected two numbers MIN,MAX") from None
    if not 0 < low <= high:
        raise ValueError(f"{flag} {text!r}: expected 0 < MIN <= MAX")
    return low, high


def _check_names_and_files(config: Config) -> None:
    """Model names, the batch against --train_size, and the files and folders flags name: checked before any data
    are read, so a typo costs no decoding and leaves no workdir behind."""
    import os

    from lr_jax.models import MODEL_BUILDERS

    for flag in ("model", "refinery_model"):
        name = getattr(config, flag)
        if name is not None and name not in MODEL_BUILDERS:
            raise ValueError(f"--{flag} {name!r} is not a known model; known models: "
                             f"{', '.join(sorted(MODEL_BUILDERS))}")
    if config.train_size is not None and config.batch_size > config.train_size:
        raise ValueError(f"--batch_size={config.batch_size} is larger than --train_size={config.train_size}; "
                         f"lower it")
    if config.train_label_key is not None and config.train_labels is None:
        raise ValueError("--train_label_key needs --train_labels (the file that holds that label set)")
    if config.train_labels == TFDS_LABELS and config.train_label_key is None:
        raise ValueError(f"--train_labels {TFDS_LABELS} needs --train_label_key (e.g. worse_label, aggre_label)")
    if config.train_labels not in (None, TFDS_LABELS) and not os.path.isfile(config.train_labels):
        raise ValueError(f"--train_labels {config.train_labels}: no such file")
    from lr_jax.results import RESULTS_FILE
    from lr_jax.workdir import CONFIG_FILE

    if config.refinery_workdir is not None and not any(
            os.path.isfile(os.path.join(config.refinery_workdir, name)) for name in (CONFIG_FILE, RESULTS_FILE)):
        raise ValueError(f"--refinery_workdir {config.refinery_workdir}: not a run folder (no config.json or "
                         f"results.json there)")


def _check_crop(config: Config) -> None:
    scale = parse_range(config.crop_scale, "--crop_scale")
    parse_range(config.crop_ratio, "--crop_ratio")
    if scale[1] > 1:
        raise ValueError(f"--crop_scale {config.crop_scale!r}: a crop cannot be larger than the image (MAX <= 1)")
    changed = [flag for flag in ("crop_scale", "crop_ratio") if getattr(config, flag) != DEFAULTS[flag]]
    if config.crop != "random_resized" and changed:
        raise ValueError(f"--{changed[0]} applies to --crop random_resized only (--crop is {config.crop!r})")


def validate(config: Config) -> Config:
    """Raises ValueError naming the flag for any out-of-range value; returns `config` unchanged."""
    for name, allowed in CHOICES.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"--{name}={getattr(config, name)!r} is not one of {', '.join(allowed)}")
    positive = ("generations", "epochs", "batch_size")
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(config, name)}")
    if config.train_size is not None and config.train_size < 1:
        raise ValueError(f"--train_size must be at least 1, got {config.train_size}")
    if config.val_size < 0:
        raise ValueError(f"--val_size must be >= 0, got {config.val_size}")
    if config.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be > 0, got {config.learning_rate}")
    if config.temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {config.temperature}")
    for name in ("gt_weight", "label_smoothing", "adversarial_jitter"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ValueError(f"--{name} must lie in [0, 1], got {getattr(config, name)}")
    if config.label_mode == "ground_truth" and config.refinery_workdir is not None:
        raise ValueError("--label_mode ground_truth trains every generation on ground truth: it takes no "
                         "--refinery_workdir")
    if config.refinery_generation is not None:
        if config.refinery_workdir is None:
            raise ValueError("--refinery_generation needs --refinery_workdir")
        if config.refinery_generation < 1:
            raise ValueError(f"--refinery_generation must be at least 1, got {config.refinery_generation}")
    _check_crop(config)
    _check_names_and_files(config)
    if config.dataset not in DATASET_DEFAULTS:
        raise ValueError(f"--dataset={config.dataset!r} is not one of {', '.join(DATASET_DEFAULTS)}")
    return config


def validate_run_options(options: RunOptions) -> RunOptions:
    """Raises ValueError naming the flag for any out-of-range value; returns `options` unchanged."""
    if options.eval_batch_size < 1:
        raise ValueError(f"--eval_batch_size must be at least 1, got {options.eval_batch_size}")
    if options.checkpoint_every < 0:
        raise ValueError(f"--checkpoint_every must be >= 0 (0: only at epoch ends), got {options.checkpoint_every}")
    return options


TFDS_LABELS = "tfds"  # --train_labels tfds: TFDS's label-set builder of the dataset (cifar10: cifar10_n)
RECORD_ONLY = ("data", "resnet_shortcuts")  # what config.json records beside the Config's fields


def read_config_file(path: str, dataset: str) -> dict:
    """The settings of `--config FILE`: a run's config.json or results.json (its "config" section), or a preset
    file (a JSON object of Config and RunOptions fields). ValueErrors name the file and what is wrong."""
    import json

    try:
        with open(path) as f:
            payload = json.load(f)
    except OSError as error:
        raise ValueError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--config {path}: not valid JSON ({error})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"--config {path}: expected a JSON object of settings, got {type(payload).__name__}")
    values = dict(payload["config"]) if isinstance(payload.get("config"), dict) else dict(payload)
    for key in RECORD_ONLY:
        values.pop(key, None)
    if values.pop("dataset", dataset) != dataset:
        raise ValueError(f"--config {path}: made for dataset {payload.get('config', payload)['dataset']!r}, "
                         f"not {dataset!r}; use python -m lr_jax.experiments.<that dataset>")
    unknown = sorted(set(values) - set(CONFIG_FIELDS) - set(RUN_OPTION_FIELDS))
    if unknown:
        raise ValueError(f"--config {path}: unknown settings {', '.join(unknown)}")
    return values


def build_config(dataset: str, overrides: dict, config_file: Optional[str] = None) -> tuple[Config, RunOptions]:
    """Dataset defaults, then the preset named in `overrides` (if any), then `config_file`'s settings (--config),
    then the other overrides (flags); split into the run's Config and its RunOptions. Unknown keys, and folders a
    portable copy replaced by placeholders (<workdir>, ...) that no flag sets, raise ValueError."""
    values = dict(DATASET_DEFAULTS.get(dataset, {}))
    from_file = read_config_file(config_file, dataset) if config_file else {}
    preset = overrides.get("preset") or from_file.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"--preset={preset!r} is not one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update(from_file)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if overrides.get("eval_flip") is None and "eval_flip" not in from_file and not values.get("flip", True):
        values["eval_flip"] = False  # a preset's flip averaging follows the augmentation (SVHN: no flips)
    unknown = sorted(set(values) - set(CONFIG_FIELDS) - set(RUN_OPTION_FIELDS) - {"dataset"})
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")
    placeholders = [k for k, v in values.items() if isinstance(v, str) and v.startswith("<") and ">" in v]
    if placeholders:
        raise ValueError(f"--config {config_file}: {placeholders[0]} is {values[placeholders[0]]!r}, a placeholder "
                         f"of a portable copy; give --{placeholders[0]} with the folder on this machine")
    config = Config(dataset=dataset, **{k: v for k, v in values.items() if k in CONFIG_FIELDS and k != "dataset"})
    options = RunOptions(**{k: v for k, v in values.items() if k in RUN_OPTION_FIELDS})
    return validate(config), validate_run_options(options)


def describe_presets() -> str:
    """Each preset's settings, one line each, for --help."""
    return "\n".join(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in settings.items())
                     for name, settings in PRESETS.items())
