"""A run's workdir over its life: one run at a time (an OS lock on run.lock naming its holder), the configuration
it was made with (config.json, with a fingerprint of the data; compared when the workdir is resumed, discarded by
--overwrite), and the check that another run trained on the same data.

Layout of a workdir:
  run.lock       locked by the run that uses the workdir (host, pid, start, command)
  config.json    the configuration (and a data fingerprint) the workdir was made with
  results.json, results.md, labels_summary.npz, log.txt   the run's results (results.py)
  checkpoints/   training state and finished generations (checkpoints.py)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from typing import Callable, Optional

import numpy as np

from lr_jax import checkpoints, distributed, files, results, summaries

CONFIG_FILE = "config.json"
# May differ between invocations of one run: the number of generations (a longer chain continues a shorter one).
# Run options (config.RunOptions: folders, cadence, hosts) are not recorded; older records that hold them are read
# without them. Every other Config value must match to resume.
GROWABLE = ("generations",)
# What a run writes into its workdir: removed by --overwrite (nothing else in the folder is touched).
RUN_FILES = (CONFIG_FILE, results.RESULTS_FILE, results.RESULTS_TABLE, results.LABELS_SUMMARY, results.LOG_FILE,
             summaries.FOLDER)
# Held (flock) by the run writing into a workdir; names its host and pid for a second run that finds it held.
LOCK_FILE = "run.lock"


class WorkdirError(checkpoints.CheckpointError):
    """A workdir this run cannot use (another configuration, other data, unreadable record, no lock); the message
    names the folder and what to do."""


class WorkdirInUse(WorkdirError):
    """Another run holds the workdir's lock; the message names its host and process id."""


def _data_fingerprint(splits) -> dict:
    """Sizes, shapes, class names and a hash of the train/validation pixels and labels."""
    digest = hashlib.sha256()
    for array in (splits.train_images, splits.train_labels, splits.val_images, splits.val_labels):
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return {
        "num_train": int(len(splits.train_labels)),
        "num_val": int(len(splits.val_labels)),
        "num_test": None if splits.test_labels is None else int(len(splits.test_labels)),
        "image_shape": list(splits.train_images.shape[1:]),
        "class_names": list(splits.class_names),
        "sha256": digest.hexdigest(),
    }


def run_record(config_dict: dict, splits) -> dict:
    """What config.json holds: the configuration, under 'data' a fingerprint of the data it ran on, and for the
    CIFAR ResNets 'resnet_shortcuts' (they had 1x1 projections before, now He et al.'s option A, so a workdir
    saved by the older code is refused instead of failing to restore)."""
    resnets = [config_dict.get(key) for key in ("model", "refinery_model")]
    option_a = {"resnet_shortcuts": "A"} if any(results.OPTION_A_RESNET.fullmatch(str(m)) for m in resnets) else {}
    return json.loads(json.dumps({**config_dict, **option_a, "data": _data_fingerprint(splits)}))


def _recorded(workdir: str) -> Optional[dict]:
    """The record a workdir was made with: config.json, else (a run from before checkpoints) results.json's."""
    for name, key in ((CONFIG_FILE, None), (results.RESULTS_FILE, "config")):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            try:
                with open(path) as f:
                    payload = json.load(f)
            except (OSError, json.JSONDecodeError) as error:
                raise WorkdirError(f"{path}: unreadable ({error}); rerun with --overwrite to start over") from None
            return payload if key is None else payload.get(key)
    return None


def check_same_data(workdir: str, splits) -> None:
    """Raises WorkdirError unless the run in `workdir` trained on the same train/validation data as `splits`
    (a refinery's labels are per training image, so they only transfer to the very same split)."""
    recorded = _recorded(workdir)
    if recorded is None:
        raise WorkdirError(f"{workdir}: no {CONFIG_FILE} or {results.RESULTS_FILE}; is this a run's --workdir?")
    theirs, ours = recorded.get("data"), _data_fingerprint(splits)
    if theirs is None:
        raise WorkdirError(f"{workdir}: {CONFIG_FILE} has no data fingerprint; cannot check it used this data")
    if theirs != ours:
        differing = sorted(k for k in ours if theirs.get(k) != ours.get(k))
        raise WorkdirError(
            f"{workdir}: that run's data differ from this run's ({', '.join(differing)}: it had "
            f"{_show(theirs)}, now {_show(ours)}); use the same --data_dir, --val_size, --train_size and --seed"
        )


def differing_keys(recorded: dict, record: dict) -> list[str]:
    """Config keys (but GROWABLE ones) whose values differ; 'data' only where both record it. A setting that a
    workdir made by older code does not record counts as its default (e.g. --crop pad), so such workdirs resume."""
    from lr_jax.config import DEFAULTS, RUN_OPTION_FIELDS

    keys = (set(recorded) | set(record)) - set(RUN_OPTION_FIELDS) - set(GROWABLE)
    if "data" not in recorded or "data" not in record:
        keys.discard("data")
    return sorted(k for k in keys if recorded.get(k, DEFAULTS.get(k)) != record.get(k))


def _show(value) -> str:
    if isinstance(value, dict):  # the data fingerprint: name what differs inside it
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items() if k != "sha256") + "}"
    return json.dumps(value)


def prepare_workdir(workdir: str, record: dict, overwrite: bool, log: Callable[[str], None]) -> bool:
    """Checks that `workdir` was made with the same configuration (else raises WorkdirError naming the
    differing keys), or with `overwrite` removes what an earlier run wrote there; then records `record`.

    Returns True if the workdir holds an earlier run to resume. Process 0 writes; all processes wait for it."""
    recorded = _recorded(workdir)
    existing = [name for name in (*RUN_FILES, checkpoints.CHECKPOINTS) if os.path.exists(os.path.join(workdir, name))]
    if recorded is not None and not overwrite:
        differing = differing_keys(recorded, record)
        if differing:
            details = "; ".join(
                f"{k}: workdir has {_show(recorded.get(k))}, now {_show(record.get(k))}" for k in differing
            )
            raise WorkdirError(
                f"--workdir {workdir} was made with a different configuration ({', '.join(differing)} differ: "
                f"{details}). Use the same settings to resume it, another --workdir, or --overwrite to discard it"
            )
    resuming = bool(existing) and not overwrite
    if distributed.is_main_process():
        if overwrite and existing:
            import shutil

            for name in existing:
                path = os.path.join(workdir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            log(f"--overwrite: removed {', '.join(existing)} from {workdir}")
        os.makedirs(workdir, exist_ok=True)
        files.write_json_atomic(os.path.join(workdir, CONFIG_FILE), record)
    distributed.barrier("prepare_workdir")
    return resuming


def _lock_holder(fd: int) -> str:
    """The holder a lock file records ('process 123 on host h (since ..., command ...)'), as well as it can."""
    try:
        holder = json.loads(os.pread(fd, 1 << 16, 0).decode() or "null")
        return (f"process {holder['pid']} on host {holder['host']} (since {holder['started']}; command: "
                f"{holder['command']})")
    except (OSError, ValueError, TypeError, KeyError):
        return "a process that has not recorded its host and pid yet"


def _acquire(path: str) -> int:
    """An open descriptor of `path` holding its exclusive flock (the kernel drops it when the process ends, also
    on SIGKILL), with this process's host and pid written into it; WorkdirInUse if another process holds it."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise WorkdirInUse(
                f"--workdir {os.path.dirname(path)} is in use by another run: {holder}. Wait for it to end or stop "
                f"it, or use another --workdir (lock file {path})"
            ) from None
        opened = os.fstat(fd)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            break
        os.close(fd)  # its holder removed the file after we opened it: lock the file now at `path`
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "command": " ".join([os.path.basename(sys.executable), *sys.argv])}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
    except OSError:  # e.g. a full disk: the lock holds all the same; a second run cannot name this one
        pass
    return fd


def _created_folders(workdir: str) -> list[str]:
    """The folders os.makedirs(workdir) would create, deepest first."""
    created, folder = [], os.path.abspath(workdir)
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    return created


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Within: this run alone uses `workdir` (created if needed). Process 0 takes an OS lock on workdir/run.lock
    that no other run, with or without --overwrite, can take while this one lives and that ends with the process
    (a crash or SIGKILL leaves no stale lock); every process learns whether it got it. A second run meets
    WorkdirInUse naming this one's host and pid. On the way out the lock file is removed, and so is the workdir
    if this run created it and wrote nothing else into it (e.g. its data were refused)."""
    import jax

    created, fd, refused = _created_folders(workdir), None, None
    path = os.path.join(workdir, LOCK_FILE)
    if distributed.is_main_process():
        try:
            os.makedirs(workdir, exist_ok=True)
            fd = _acquire(path)
        except WorkdirInUse as error:
            refused = error
        except OSError as error:
            refused = WorkdirError(f"--workdir {workdir}: cannot create its lock file {path} ({error})")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        locked = int(multihost_utils.broadcast_one_to_all(np.int32(refused is None)))
        refused = refused or (None if locked else WorkdirError(
            f"--workdir {workdir}: process 0 could not lock it (see its error); another run may be using it"))
    if refused is not None:
        raise refused
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)  # while still locked: a run that opened the file meanwhile sees it is gone
            os.close(fd)
            for folder in created:
                if os.path.isdir(folder) and not os.listdir(folder):
                    os.rmdir(folder)
