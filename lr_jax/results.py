"""Run results on disk: the results.json document (its per-generation metrics, the code and library versions
that made it, older formats upgraded on reading), atomic writes, the results.md table, labels_summary.npz, and
portable copies without the absolute paths of the machine that made them (`python -m lr_jax.results`)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Callable, Optional, Sequence

# 1: files without "results_format" (label_agreement was the train accuracy, train_test_gap fell back to
# validation, CIFAR ResNets had 1x1 projection shortcuts, no code or library versions); 2: this format.
RESULTS_FORMAT = 2

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
    ("train_seconds", "train s", "seconds"),
    ("images_per_second", "images/s", "rate"),
)
KIND_FORMATS = {"percent": (100.0, 2), "points": (100.0, 2), "nats": (1.0, 4), "seconds": (1.0, 1), "rate": (1.0, 0)}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy")  # versions in results.json
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder that holds lr_jax/
PATH_FIELDS = ("data_dir", "tfds_data_dir", "workdir", "cache_dir", "refinery_workdir")  # config fields naming the machine's folders
# An absolute path of two or more components that does not continue a word, a number or a placeholder; paths
# under /usr (e.g. Debian's /usr/share/datasets/fashion-mnist) are the same on every machine and are kept.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/<>)\]+-])/(?!usr/)[\w.+-]+(?:/[\w.+-]+)+/?")


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


class WriteError(OSError):
    """A file or checkpoint of the run could not be written (full disk, quota, read-only or failing file system);
    the message names the path and what was kept."""


def write_failure(error: BaseException) -> Optional[str]:
    """'<strerror> (errno N)' when `error`, or an error it was raised from, is an operating-system error: from
    Python (OSError) or from TensorStore, orbax's array writer (its message ends with [os_error_code='N']); None
    for any other error."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        code = error.errno if isinstance(error, OSError) else None
        match = re.search(r"os_error_code='?(\d+)", str(error))
        code = code or (int(match.group(1)) if match else None)
        if code:
            return f"{os.strerror(code)} (errno {code})"
        error = error.__cause__ or error.__context__
    return None


def umask_mode() -> int:
    """The mode a plain `open(path, "w")` gives a new file: 0o666 less the process's umask (0644 by default)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str, write: Callable[[Any], None], binary: bool = False) -> None:
    """Calls `write(file)` on a temporary file in `path`'s folder, then renames it over `path`; on any error
    the temporary file is removed and `path` is left as it was. A failed write (disk full, ...) raises
    WriteError naming `path`. The file gets the umask's mode, like any file the user writes (mkstemp's
    temporary files are 0600, which would hide results from collaborators on a shared workdir)."""
    folder, tmp = os.path.dirname(os.path.abspath(path)), None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        reason = None if isinstance(error, WriteError) else write_failure(error)
        if reason is None:
            raise
        kept = "the previous file is kept" if os.path.exists(path) else "it did not exist before"
        raise WriteError(f"cannot write {path}: {reason}; {kept}") from None


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes JSON atomically (temporary file in the same folder, then rename)."""
    write_atomic(path, lambda f: json.dump(payload, f, indent=2, sort_keys=False))


def write_text_atomic(path: str, text: str) -> None:
    """Writes text atomically (temporary file in the same folder, then rename)."""
    write_atomic(path, lambda f: f.write(text))


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


def code_version(root: str = SOURCE_ROOT) -> dict:
    """{"commit": HEAD's hash, "dirty": whether tracked files differ from it} where `root` is the top of a git work
    tree; both None elsewhere (an installed copy, no git on PATH, git failing), never an error."""
    def git(*args) -> str:
        done = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.strip()

    try:
        if os.path.realpath(git("rev-parse", "--show-toplevel")) != os.path.realpath(root):
            return {"commit": None, "dirty": None}  # e.g. an installed copy inside some other repository
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def library_versions(packages: Sequence[str] = PACKAGES) -> dict:
    """{distribution name: installed version, or None where it is not installed}."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def results_payload(config, run_options, dataset_info: dict, generations: list[dict], complete: bool,
                    wall_seconds: float, session_wall_seconds: Optional[float] = None,
                    timing: Optional[dict] = None, code: Optional[dict] = None):
    """The results.json document: `config` (what defines the results), `run` (where and how it ran), the data,
    per-generation rows, and (when given) `timing` (see `timing_summary`). `wall_seconds` sums every invocation
    of a resumed run (see `previous_wall_seconds`); `session_wall_seconds` is this invocation's share. `code`:
    code_version() taken when the invocation started (the code it imported; default: now)."""
    payload = {
        "results_format": RESULTS_FORMAT,
        "config": dataclasses.asdict(config),
        "run": dataclasses.asdict(run_options),
        "dataset": dataset_info,
        "code": code_version() if code is None else code,
        "versions": library_versions(),
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
    write_json_atomic(os.path.join(workdir, "results.json"), payload)
    config = payload["config"]
    heading = title or f"Label Refinery: {config['dataset']}, {config['model']}, seed {config['seed']}"
    text = (
        f"# {heading}\n\n{(payload.get('dataset') or {}).get('description', '')}\n\n"
        f"{markdown_table(payload['generations'])}\n\n"
        f"Wall time: {payload.get('wall_seconds') or 0.0:.1f} s; complete: {payload.get('complete')}.\n"
    )
    write_text_atomic(os.path.join(workdir, "results.md"), text)


NUM_EXAMPLES = 16  # training images whose refined labels are shown per generation (paper's Figure 4)


def write_label_summary(workdir: str, splits, chain) -> None:
    """`labels_summary.npz`: per generation, the labels of NUM_EXAMPLES fixed training images and the entropy
    of every training label; keys images, labels, class_names, probs (G, n, C), entropies (G, N) float16."""
    import numpy as np

    from lr_jax.losses import label_entropy  # imports JAX, which the report does not need otherwise

    count = min(NUM_EXAMPLES, len(splits.train_labels))
    picks = np.random.default_rng(0).choice(len(splits.train_labels), count, replace=False)
    probs = np.stack([g.soft_labels[picks] for g in chain]).astype(np.float32)
    entropies = np.stack([np.asarray(label_entropy(g.soft_labels)) for g in chain]).astype(np.float16)
    arrays = dict(images=splits.train_images[picks], labels=splits.train_labels[picks],
                  class_names=np.array(splits.class_names), probs=probs, entropies=entropies,
                  generations=np.array([g.generation for g in chain]))
    write_atomic(os.path.join(workdir, "labels_summary.npz"), lambda f: np.savez_compressed(f, **arrays),
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
    path = os.path.join(workdir, "results.json")
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
    return f"{model}_proj" if isinstance(model, str) and re.fullmatch(r"resnet\d+", model) else model


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


# Portable copies: result files without the absolute paths of the machine that made them.


def path_placeholders(config: dict) -> list[tuple[str, str]]:
    """(path, "<field>") for each PATH_FIELDS value of `config` that is an absolute path, longest path first."""
    pairs = {}
    for field in PATH_FIELDS:
        value = config.get(field)
        if isinstance(value, str) and os.path.isabs(value) and value.rstrip("/"):
            pairs[value.rstrip("/")] = f"<{field}>"
    return sorted(pairs.items(), key=lambda pair: -len(pair[0]))


def strip_paths(text: str, placeholders: Sequence[tuple[str, str]]) -> str:
    """`text` with each placeholder's path (where it is a whole path, or a folder of a longer one) replaced by its
    placeholder, then every other absolute path outside /usr by "<path>"."""
    for path, placeholder in placeholders:
        text = re.sub(re.escape(path) + r"(?![\w.+-])", lambda _: placeholder, text)
    return ABSOLUTE_PATH.sub("<path>", text)


def _map_strings(value, function: Callable[[str], str]):
    if isinstance(value, str):
        return function(value)
    if isinstance(value, dict):
        return {key: _map_strings(item, function) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_strings(item, function) for item in value]
    return value


def copy_portable(run_dir: str, dest_dir: str) -> list[str]:
    """Copies a run's result files into `dest_dir` (which may be `run_dir`, to rewrite them in place), with no
    absolute path of the machine left (see strip_paths): results.json in the current format, results.md written
    anew from it, log.txt, and labels_summary.npz as it is. Never checkpoints. Returns the files written."""
    payload = check_payload(load_results(run_dir), os.path.join(run_dir, "results.json"))
    placeholders = path_placeholders({**(payload.get("config") or {}), **(payload.get("run") or {})})
    payload = _map_strings(payload, lambda text: strip_paths(text, placeholders))
    log_path = os.path.join(run_dir, "log.txt")
    log = None
    if os.path.exists(log_path):
        with open(log_path) as f:
            log = f.read()
    write_results(dest_dir, payload)
    written = [os.path.join(dest_dir, name) for name in ("results.json", "results.md")]
    if log is not None:
        written.append(os.path.join(dest_dir, "log.txt"))
        write_text_atomic(written[-1], strip_paths(log, placeholders))
    summary = os.path.join(run_dir, "labels_summary.npz")
    if os.path.exists(summary):
        written.append(os.path.join(dest_dir, "labels_summary.npz"))
        if not os.path.exists(written[-1]) or not os.path.samefile(summary, written[-1]):
            shutil.copyfile(summary, written[-1])
    return written


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python -m lr_jax.results RUN_DIR DEST_DIR`: copy_portable, with one-line errors."""
    parser = argparse.ArgumentParser(
        prog="python -m lr_jax.results",
        description="Copies a run's result files (results.json in the current format, results.md, log.txt, "
        "labels_summary.npz; never checkpoints) into DEST_DIR with absolute paths replaced by placeholders "
        "(<data_dir>, <workdir>, <cache_dir>, <refinery_workdir>, else <path>). DEST_DIR may be RUN_DIR.",
    )
    parser.add_argument("run_dir", help="a run's --workdir (or a copy of its result files)")
    parser.add_argument("dest_dir", help="folder to write the copies into (created if absent)")
    args = parser.parse_args(argv)
    try:
        for path in copy_portable(args.run_dir, args.dest_dir):
            print(path)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
