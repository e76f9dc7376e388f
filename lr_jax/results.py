"""Run results on disk: results.json (atomic writes), the results.md table, and the printed summary."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Callable, Optional

TABLE_COLUMNS = (
    ("generation", "gen", "{}"),
    ("model", "model", "{}"),
    ("trained_on", "trained on", "{}"),
    ("val_accuracy", "val acc", "{:.4f}"),
    ("test_accuracy", "test acc", "{:.4f}"),
    ("train_accuracy", "train acc", "{:.4f}"),
    ("train_test_gap", "train-test gap", "{:+.4f}"),
    ("label_entropy", "label entropy", "{:.4f}"),
    ("label_agreement", "label agreement", "{:.4f}"),
    ("ensemble_val_accuracy", "ensemble val acc", "{:.4f}"),
    ("train_seconds", "train s", "{:.1f}"),
    ("images_per_second", "images/s", "{:.0f}"),
)


def write_atomic(path: str, write: Callable[[Any], None], binary: bool = False) -> None:
    """Calls `write(file)` on a temporary file in `path`'s folder, then renames it over `path`; on any error
    the temporary file is removed and `path` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes JSON atomically (temporary file in the same folder, then rename)."""
    write_atomic(path, lambda f: json.dump(payload, f, indent=2, sort_keys=False))


def write_text_atomic(path: str, text: str) -> None:
    """Writes text atomically (temporary file in the same folder, then rename)."""
    write_atomic(path, lambda f: f.write(text))


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def markdown_table(rows: list[dict]) -> str:
    """One row per generation, the columns of TABLE_COLUMNS."""
    header = "| " + " | ".join(title for _, title, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key), fmt) for key, _, fmt in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def results_payload(config, run_options, dataset_info: dict, generations: list[dict], complete: bool,
                    wall_seconds: float, session_wall_seconds: Optional[float] = None):
    """The results.json document: `config` (what defines the results), `run` (where and how it ran), the data,
    per-generation rows. `wall_seconds` sums every invocation of a resumed run (see `previous_wall_seconds`);
    `session_wall_seconds` is this invocation's share."""
    return {
        "config": dataclasses.asdict(config),
        "run": dataclasses.asdict(run_options),
        "dataset": dataset_info,
        "complete": complete,
        "wall_seconds": wall_seconds,
        "session_wall_seconds": wall_seconds if session_wall_seconds is None else session_wall_seconds,
        "generations": generations,
    }


def write_results(workdir: str, payload: dict, title: Optional[str] = None) -> None:
    """Writes results.json and results.md into `workdir`, each atomically."""
    write_json_atomic(os.path.join(workdir, "results.json"), payload)
    config = payload["config"]
    heading = title or f"Label Refinery: {config['dataset']}, {config['model']}, seed {config['seed']}"
    text = (
        f"# {heading}\n\n{payload['dataset'].get('description', '')}\n\n"
        f"{markdown_table(payload['generations'])}\n\n"
        f"Wall time: {payload['wall_seconds']:.1f} s; complete: {payload['complete']}.\n"
    )
    write_text_atomic(os.path.join(workdir, "results.md"), text)


NUM_EXAMPLES = 16  # training images whose refined labels are shown per generation (paper's Figure 4)


def write_label_summary(workdir: str, splits, chain) -> None:
    """`labels_summary.npz`: per generation, the labels of NUM_EXAMPLES fixed training images and the entropy
    of every training label; keys images, labels, class_names, probs (G, n, C), entropies (G, N) float16."""
    import numpy as np

    count = min(NUM_EXAMPLES, len(splits.train_labels))
    picks = np.random.default_rng(0).choice(len(splits.train_labels), count, replace=False)
    probs = np.stack([g.soft_labels[picks] for g in chain]).astype(np.float32)
    entropies = np.stack([
        -(g.soft_labels * np.log(np.clip(g.soft_labels, 1e-30, 1.0))).sum(-1) for g in chain
    ]).astype(np.float16)
    arrays = dict(images=splits.train_images[picks], labels=splits.train_labels[picks],
                  class_names=np.array(splits.class_names), probs=probs, entropies=entropies,
                  generations=np.array([g.generation for g in chain]))
    write_atomic(os.path.join(workdir, "labels_summary.npz"), lambda f: np.savez_compressed(f, **arrays),
                 binary=True)


def load_results(workdir: str) -> dict:
    """Reads `workdir/results.json`; errors name the file."""
    path = os.path.join(workdir, "results.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no results.json (is this a run's --workdir?)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def previous_wall_seconds(workdir: str) -> float:
    """The wall time earlier invocations of a resumed run recorded in its results.json (0 if none or unreadable).

    Each invocation rewrites results.json after every finished generation, so a killed invocation's time after
    its last finished generation is not counted; its training time still is, in the generations' train_seconds."""
    try:
        return float(load_results(workdir).get("wall_seconds") or 0.0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0
