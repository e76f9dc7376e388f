"""Run results on disk: the results.json document (its per-generation metrics with their registry, older formats
upgraded on reading), the results.md table and labels_summary.npz, and the names of the files a run writes."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from typing import Optional, Sequence

from lr_jax import files, provenance

# 1: files without "results_format" (label_agreement was the train accuracy, train_test_gap fell back to
# validation, CIFAR ResNets had 1x1 projection shortcuts, no code or library versions); 2: this format.
RESULTS_FORMAT = 2
# The files a run writes into its workdir beside config.json and checkpoints/ (see workdir.py).
RESULTS_FILE = "results.json"
RESULTS_TABLE = "results.md"
LABELS_SUMMARY = "labels_summary.npz"
LOG_FILE = "log.txt"
# The CIFAR ResNets with He et al.'s parameter-free (option A) shortcuts, `resnet<depth>`: results format 1 and
# older workdirs had 1x1 projections under these names (now `resnet<depth>_proj`).
OPTION_A_RESNET = re.compile(r"resnet\d+")

# Every per-generation metric of results.json, for results.md and the report: (key, title, kind).
METRICS = (
    ("val_accuracy", "val acc %", "percent"),
    ("test_accuracy", "test acc %", "percent"),
    ("val_accuracy_no_flip", "val acc % without flip averaging", "percent"),  # --eval_flip runs only
    ("test_accuracy_no_flip", "test acc % without flip averaging", "percent"),
    ("train_accuracy", "train acc %", "percent"),
    ("train_val_gap", "train-val gap (points)", "points"),
    ("train_test_gap", "train-test gap (points)", "points"),
    ("label_entropy", "label entropy (nats)", "nats"),
    ("label_agreement", "label agreement %", "percent"),
    ("ensemble_val_accuracy", "ensemble val acc %", "percent"),
    ("ensemble_test_accuracy", "ensemble test acc %", "percent"),
    ("train_accuracy_dataset_labels", "train acc % vs the dataset's labels", "percent"),  # --train_labels runs only:
    ("labels_repaired", "given labels repaired", "count"),  # how the labels handed on compare with the dataset's
    ("labels_broken", "given labels broken", "count"),  # (refinery.label_repair)
    ("train_seconds", "train s", "seconds"),
    ("images_per_second", "images/s", "rate"),
)
KIND_FORMATS = {"percent": (100.0, 2), "points": (100.0, 2), "nats": (1.0, 4), "seconds": (1.0, 1), "rate": (1.0, 0),
                "count": (1.0, 0)}


def format_metric(value, kind: str, signed: Optional[bool] = None) -> str:
    """A metric value as the tables show it: accuracies in %, gaps in signed percentage points; '-' if missing."""
    if value is None:
        return "-"
    scale, digits = KIND_FORMATS[kind]
    sign = "+" if (kind == "points" if signed is None else signed) else ""
    return f"{value * scale:{sign}.{digits}f}"


def present_metrics(rows: Sequence[dict]) -> list[tuple[str, str, str]]:
    """The METRICS that at least one row has (not None), in METRICS order."""
    return [metric for metric in METRICS if any(row.get(metric[0]) is not None for row in rows)]


def markdown_table(rows: list[dict]) -> str:
    """One row per generation: its number, model and labels, then every metric some generation has."""
    columns = present_metrics(rows)
    header = "| gen | model | trained on | " + " | ".join(title for _, title, _ in columns) + " |"
    lines = [header, "|---|---|---|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row.get("generation")), str(row.get("model")), str(row.get("trained_on"))]
        cells += [format_metric(row.get(key), kind) for key, _, kind in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_payload(config, run_options, dataset_info: dict, generations: list[dict], complete: bool,
                    wall_seconds: float, session_wall_seconds: Optional[float] = None,
                    timing: Optional[dict] = None, code: Optional[dict] = None):
    """The results.json document: `config` (what defines the results), `run` (where and how it ran), the data,
    per-generation rows, and (when given) `timing` (see `timing_summary`). `wall_seconds` sums every invocation
    of a resumed run (see `previous_wall_seconds`); `session_wall_seconds` is this invocation's share. `code`:
    provenance.run_provenance() taken when the invocation started (the code it imported; default: now)."""
    payload = {
        "results_format": RESULTS_FORMAT,
        "config": dataclasses.asdict(config),
        "run": dataclasses.asdict(run_options),
        "dataset": dataset_info,
        "code": provenance.run_provenance() if code is None else code,
        "versions": provenance.library_versions(),
        "complete": complete,
        "wall_seconds": wall_seconds,
        "session_wall_seconds": wall_seconds if session_wall_seconds is None else session_wall_seconds,
        "generations": generations,
    }
    if timing is not None:
        payload["timing"] = timing
    return payload


def timing_summary(trained: list[dict], data_seconds: float, session_wall_seconds: float) -> dict:
    """Where this invocation's wall time went: reading the data, steady training (compute only), the overhead of
    the generations it trained (`trained`: their metrics rows; compilation, syncs, checkpoints, prediction
    passes, saving), and the rest (start-up, results writing); `wall_over_train` is the chain's overhead ratio."""
    train_seconds = sum(row.get("train_seconds") or 0.0 for row in trained)
    overhead: dict = {}
    for row in trained:
        for kind, seconds in (row.get("overhead_seconds") or {}).items():
            overhead[kind] = overhead.get(kind, 0.0) + seconds
    other = session_wall_seconds - data_seconds - train_seconds - sum(overhead.values())
    return {"data_seconds": data_seconds, "train_seconds": train_seconds, "overhead_seconds": overhead,
            "other_seconds": other, "session_wall_seconds": session_wall_seconds,
            "wall_over_train": session_wall_seconds / train_seconds if train_seconds else None}


def write_results(workdir: str, payload: dict, title: Optional[str] = None) -> None:
    """Writes results.json and results.md into `workdir`, each atomically."""
    files.write_json_atomic(os.path.join(workdir, RESULTS_FILE), payload)
    config = payload["config"]
    heading = title or f"Label Refinery: {config['dataset']}, {config['model']}, seed {config['seed']}"
    text = (
        f"# {heading}\n\n{(payload.get('dataset') or {}).get('description', '')}\n\n"
        f"{markdown_table(payload['generations'])}\n\n"
        f"Wall time: {payload.get('wall_seconds') or 0.0:.1f} s; complete: {payload.get('complete')}.\n"
    )
    files.write_text_atomic(os.path.join(workdir, RESULTS_TABLE), text)


NUM_EXAMPLES = 16  # training images whose refined labels are shown per generation (paper's Figure 4)


def write_label_summary(workdir: str, splits, chain) -> None:
    """`labels_summary.npz`: per generation, the labels of NUM_EXAMPLES fixed training images and the entropy
    of every training label; keys images, labels (the labels trained with), class_names, probs (G, n, C),
    entropies (G, N) float16, and dataset_labels (the dataset's own labels of the same images) where --train_labels
    replaced any training label."""
    import numpy as np

    from lr_jax.losses import label_entropy  # imports JAX, which the report does not need otherwise

    count = min(NUM_EXAMPLES, len(splits.train_labels))
    picks = np.random.default_rng(0).choice(len(splits.train_labels), count, replace=False)
    probs = np.stack([g.soft_labels[picks] for g in chain]).astype(np.float32)
    entropies = np.stack([np.asarray(label_entropy(g.soft_labels)) for g in chain]).astype(np.float16)
    arrays = dict(images=splits.train_images[picks], labels=splits.train_labels[picks],
                  class_names=np.array(splits.class_names), probs=probs, entropies=entropies,
                  generations=np.array([g.generation for g in chain]))
    dataset_labels = getattr(splits, "dataset_train_labels", None)
    if dataset_labels is not None and not np.array_equal(dataset_labels, splits.train_labels):
        arrays["dataset_labels"] = np.asarray(dataset_labels)[picks]
    files.write_atomic(os.path.join(workdir, LABELS_SUMMARY), lambda f: np.savez_compressed(f, **arrays),
                       binary=True)


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_payload(payload, path: str) -> dict:
    """Raises ValueError naming `path` unless `payload` has the results.json fields the report and copies read."""
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    config = payload.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("dataset"), str) or "seed" not in config:
        raise ValueError(f"{path}: no 'config' object with 'dataset' and 'seed' (not written by lr_jax?)")
    generations = payload.get("generations")
    if not isinstance(generations, list) or not generations:
        raise ValueError(f"{path}: no finished generation in 'generations'")
    seen = set()
    for index, row in enumerate(generations):
        if not isinstance(row, dict) or not isinstance(row.get("generation"), int):
            raise ValueError(f"{path}: generations[{index}] has no integer 'generation'")
        if row["generation"] in seen:
            raise ValueError(f"{path}: generation {row['generation']} appears twice")
        seen.add(row["generation"])
        for key, _, _ in METRICS:
            if not _is_number(row.get(key)):
                raise ValueError(f"{path}: generation {row['generation']}: {key}={row[key]!r} is not a number")
    return payload


def load_results(workdir: str) -> dict:
    """Reads `workdir/results.json`, in the current format (see upgrade_payload); errors name the file."""
    path = os.path.join(workdir, RESULTS_FILE)
    try:
        with open(path) as f:
            return upgrade_payload(json.load(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no results.json (is this a run's --workdir?)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _difference(a, b) -> Optional[float]:
    return a - b if all(v is not None and _is_number(v) for v in (a, b)) else None


def _projection_name(model):
    """Format 1's CIFAR ResNets had 1x1 projection shortcuts: they are now `resnet<depth>_proj`."""
    return f"{model}_proj" if isinstance(model, str) and OPTION_A_RESNET.fullmatch(model) else model


def upgrade_payload(payload):
    """A results.json document in the current format (a copy; documents already current, and anything that is no
    results.json object, are returned as they are). From format 1: `train_val_gap` = train - validation accuracy
    and `train_test_gap` = train - test accuracy (None without a test split, where format 1 had used validation);
    `label_agreement` kept where the generation trained on ground truth (there it equalled the train accuracy, as
    now), else None (format 1 did not measure it); ResNet names get `_proj`; `code` and `versions` are None."""
    if not isinstance(payload, dict):
        return payload
    if payload.get("results_format", 1) != 1:
        return _split_run_options(payload)
    payload = _split_run_options(copy.deepcopy(payload))
    config = payload.get("config")
    if isinstance(config, dict):
        for key in ("model", "refinery_model"):
            if key in config:
                config[key] = _projection_name(config[key])
    rows = payload.get("generations")
    for index, row in enumerate(rows if isinstance(rows, list) else ()):
        if not isinstance(row, dict):
            continue  # check_payload names it
        gaps = {"train_val_gap": _difference(row.get("train_accuracy"), row.get("val_accuracy")),
                "train_test_gap": _difference(row.get("train_accuracy"), row.get("test_accuracy"))}
        order = [key for key in row if key not in gaps]
        at = order.index("label_entropy") if "label_entropy" in order else len(order)
        rows[index] = {key: gaps[key] if key in gaps else row[key] for key in order[:at] + list(gaps) + order[at:]}
        if "model" in row:
            rows[index]["model"] = _projection_name(row["model"])
        if row.get("trained_on") != "ground truth":
            rows[index]["label_agreement"] = None
    head = {"results_format": RESULTS_FORMAT, "config": config, "run": payload.get("run"),
            "dataset": payload.get("dataset"), "code": None, "versions": None}
    return {**head, **{key: value for key, value in payload.items() if key not in head}}


def _split_run_options(payload: dict) -> dict:
    """Older documents kept the run options (config.RunOptions) inside `config`: move them to `run`."""
    from lr_jax.config import RUN_OPTION_FIELDS

    config = payload.get("config")
    if "run" in payload or not isinstance(config, dict):
        return payload
    run = {key: config[key] for key in RUN_OPTION_FIELDS if key in config}
    config = {key: value for key, value in config.items() if key not in run}
    items = list(payload.items())
    at = [key for key, _ in items].index("config") + 1
    return dict(items[:at] + [("config", config), ("run", run)] + items[at:])


def previous_wall_seconds(workdir: str) -> float:
    """The wall time earlier invocations of a resumed run recorded in its results.json (0 if none or unreadable).

    Each invocation rewrites results.json after every finished generation, so a killed invocation's time after
    its last finished generation is not counted; its training time still is, in the generations' train_seconds."""
    try:
        return float(load_results(workdir).get("wall_seconds") or 0.0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0
