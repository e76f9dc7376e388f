"""Portable copies of a run's result files, without the absolute paths of the machine that made them:

    python -m lr_jax.portable RUN_DIR DEST_DIR
    python -m lr_jax.portable TEXT_FILE DEST_FILE [--runs_root DIR]

copies results.json (in the current format), results.md (written anew), log.txt and labels_summary.npz, never
checkpoints, with each folder named in the run's config replaced by a placeholder (`<data_dir>`, `<workdir>`, ...;
`<train_labels_dir>/FILE` for a label file) and any other absolute path outside /usr by `<path>`; or one text file
(a label tool's JSON, Markdown or CSV) or .npz archive (its single strings, e.g. kfold_probs.npz's source: the
arrays are copied as they are) with DIR replaced by `<runs_root>` and any other absolute path by `<path>`."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from typing import Callable, Optional, Sequence

import numpy as np

from lr_jax import files, results

# The config and run fields that name the machine's folders.
PATH_FIELDS = ("data_dir", "tfds_data_dir", "workdir", "cache_dir", "refinery_workdir")
# An absolute path of two or more components that does not continue a word, a number or a placeholder; paths
# under /usr (e.g. Debian's /usr/share/datasets/fashion-mnist) are the same on every machine and are kept.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/<>)\]+-])/(?!usr/)[\w.+-]+(?:/[\w.+-]+)+/?")


# The config fields that name a file: its folder is replaced, its name kept (two runs on different label files of
# one folder stay two configurations).
FILE_FIELDS = ("train_labels",)


def path_placeholders(config: dict) -> list[tuple[str, str]]:
    """(path, "<field>") for each PATH_FIELDS value of `config` that is an absolute path, and (folder,
    "<field_dir>") for each FILE_FIELDS value's folder, longest path first."""
    pairs = {}
    for field in PATH_FIELDS + FILE_FIELDS:
        value = config.get(field)
        if isinstance(value, str) and os.path.isabs(value) and value.rstrip("/"):
            if field in FILE_FIELDS:
                pairs.setdefault(os.path.dirname(value.rstrip("/")), f"<{field}_dir>")
            else:
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
    payload = results.check_payload(results.load_results(run_dir), os.path.join(run_dir, results.RESULTS_FILE))
    placeholders = path_placeholders({**(payload.get("config") or {}), **(payload.get("run") or {})})
    payload = _map_strings(payload, lambda text: strip_paths(text, placeholders))
    log_path = os.path.join(run_dir, results.LOG_FILE)
    log = None
    if os.path.exists(log_path):
        with open(log_path) as f:
            log = f.read()
    results.write_results(dest_dir, payload)
    written = [os.path.join(dest_dir, name) for name in (results.RESULTS_FILE, results.RESULTS_TABLE)]
    if log is not None:
        written.append(os.path.join(dest_dir, results.LOG_FILE))
        files.write_text_atomic(written[-1], strip_paths(log, placeholders))
    summary = os.path.join(run_dir, results.LABELS_SUMMARY)
    if os.path.exists(summary):
        written.append(os.path.join(dest_dir, results.LABELS_SUMMARY))
        if not os.path.exists(written[-1]) or not os.path.samefile(summary, written[-1]):
            shutil.copyfile(summary, written[-1])
    return written


def copy_text_portable(source: str, dest: str, runs_root: Optional[str] = None) -> str:
    """Copies the text file `source` to `dest` with `runs_root` (where given) replaced by "<runs_root>" and every
    other absolute path outside /usr by "<path>" (strip_paths); an .npz archive likewise, in its single strings
    (0-d string arrays; its other arrays as they are). Returns `dest`."""
    root = os.path.abspath(runs_root).rstrip("/") if runs_root else None
    strip = lambda text: strip_paths(text, [(root, "<runs_root>")] if root else [])
    if source.endswith(".npz"):
        with np.load(source, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        arrays = {name: np.asarray(strip(str(value))) if value.ndim == 0 and value.dtype.kind == "U" else value
                  for name, value in arrays.items()}
        files.write_atomic(dest, lambda f: np.savez_compressed(f, **arrays), binary=True)
        return dest
    with open(source) as f:
        text = f.read()
    files.write_text_atomic(dest, strip(text))
    return dest


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python -m lr_jax.portable RUN_DIR DEST_DIR` (copy_portable) or `TEXT_FILE DEST_FILE [--runs_root DIR]`
    (copy_text_portable), with one-line errors."""
    parser = argparse.ArgumentParser(
        prog="python -m lr_jax.portable",
        description="Copies a run's result files (results.json in the current format, results.md, log.txt, "
        "labels_summary.npz; never checkpoints) into DEST_DIR with absolute paths replaced by placeholders "
        "(<data_dir>, <workdir>, <cache_dir>, <refinery_workdir>, else <path>). DEST_DIR may be RUN_DIR. Given a "
        "text file instead, copies it to DEST_DIR (a file) with --runs_root named <runs_root>, other absolute paths "
        "<path>.",
    )
    parser.add_argument("run_dir", help="a run's --workdir (or a copy of its result files), or one text file")
    parser.add_argument("dest_dir", help="folder to write the copies into (created if absent); for a text file, "
                        "the file to write")
    parser.add_argument("--runs_root", help="for a text file: the folder to name <runs_root> in its copy")
    args = parser.parse_args(argv)
    try:
        if os.path.isfile(args.run_dir):
            print(copy_text_portable(args.run_dir, args.dest_dir, args.runs_root))
            return
        for path in copy_portable(args.run_dir, args.dest_dir):
            print(path)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
