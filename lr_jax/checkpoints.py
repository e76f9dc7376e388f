"""Checkpoints on disk (orbax): mid-generation training state, finished generations; the workdir's recorded config
and its lock (one run at a time).

Layout of a workdir:
  run.lock                                  locked by the run that uses the workdir (host, pid, start, command)
  config.json                               the configuration (and a data fingerprint) the workdir was made with
  checkpoints/training/generation_K/<step>/ full training state of generation K (the newest few steps)
  checkpoints/finished/<K>/                 generation K's variables, soft labels, val/test probs and metrics
  checkpoints/damaged/                      checkpoints found unreadable, set aside (never deleted)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

from lr_jax import distributed, results

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
KEEP_TRAINING_CHECKPOINTS = 2  # the newest and one to fall back to if the newest is damaged
# May differ between invocations of one run: the number of generations (a longer chain continues a shorter one).
# Run options (config.RunOptions: folders, cadence, hosts) are not recorded; older records that hold them are read
# without them. Every other Config value must match to resume.
GROWABLE = ("generations",)
# What a run writes into its workdir: removed by --overwrite (nothing else in the folder is touched).
RUN_FILES = (CONFIG_FILE, "results.json", "results.md", "labels_summary.npz", "log.txt")
# Held (flock) by the run writing into a workdir; names its host and pid for a second run that finds it held.
LOCK_FILE = "run.lock"
# Written into each finished step's folder: every file's size and SHA-256, checked before orbax reads it.
MANIFEST = "lr_jax_files.json"


class CheckpointError(RuntimeError):
    """A workdir or checkpoint that cannot be used; the message names the folder and what to do."""


class WorkdirInUse(CheckpointError):
    """Another run holds the workdir's lock; the message names its host and process id."""


def training_dir(workdir: str, generation: int) -> str:
    return os.path.join(workdir, CHECKPOINTS, "training", f"generation_{generation}")


def finished_dir(workdir: str) -> str:
    return os.path.join(workdir, CHECKPOINTS, "finished")


def open_manager(directory: str, max_to_keep: Optional[int] = None, read_only: bool = False):
    """An orbax CheckpointManager over `directory` (one numbered subfolder per saved step).

    Saves are atomic (written to a temporary folder, renamed when complete) and synchronous, so that a file
    manifest can follow each one; leftovers of an interrupted save are removed when the manager opens. Every
    process must open it and take part in saves."""
    import orbax.checkpoint as ocp

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    if read_only:  # orbax warns that a read-only manager will not save: expected here, so not shown
        absl_logger.setLevel(logging.ERROR)
    try:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, cleanup_tmp_directories=not read_only, read_only=read_only,
            create=not read_only, enable_async_checkpointing=False,
        )
        return ocp.CheckpointManager(os.path.abspath(directory), options=options)
    finally:
        absl_logger.setLevel(level)


def tree_digest(tree) -> str:
    """SHA-256 of every array leaf (dtype, shape and bytes, in tree order): detects silently damaged files."""
    import jax

    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _step_dir(manager, step: int) -> str:
    return os.path.join(str(manager.directory), str(step))


def _file_manifest(step_dir: str) -> dict:
    """{relative path: [size, sha256]} of every file in a step's folder (the manifest itself aside)."""
    manifest = {}
    for root, _, names in os.walk(step_dir):
        for name in sorted(names):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, step_dir)
            if relative == MANIFEST:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            manifest[relative] = [os.path.getsize(path), digest.hexdigest()]
    return manifest


def _check_files(step_dir: str) -> None:
    """Raises CheckpointError naming the first file that is missing, truncated or changed since it was saved.

    Checked before orbax reads anything, so a damaged file never reaches its concurrent readers. A step
    without a manifest (the process died between the save and the manifest) relies on the arrays' digest."""
    path = os.path.join(step_dir, MANIFEST)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{MANIFEST} is unreadable ({error})") from None
    found = _file_manifest(step_dir)
    for relative, (size, digest) in sorted(saved.items()):
        if relative not in found:
            raise CheckpointError(f"{relative} is missing")
        if found[relative][0] != size:
            raise CheckpointError(f"{relative} is {found[relative][0]} bytes, {size} when saved")
        if found[relative][1] != digest:
            raise CheckpointError(f"{relative} has changed since it was saved")


class _HeldRecords(logging.Filter):
    """Holds back the log records of a logger (orbax logs a failed write from each of its threads, traceback
    included); `release()` hands them on to the logger's handlers as they would have gone."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger, self.records = logger, []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        self.records.append(record)
        return False

    def release(self) -> None:
        for record in self.records:
            self.logger.handle(record)


def _orbax_save(manager, step: int, args) -> None:
    """manager.save(step, args) to the end; a failed write (disk full, ...) raises results.WriteError naming the
    step's folder and the newest step kept, after removing what it left (the same happens when a manager next
    opens the folder) and without orbax's per-thread tracebacks; any other error is raised as it is."""
    absl_logger = logging.getLogger("absl")
    held = _HeldRecords(absl_logger)
    absl_logger.addFilter(held)
    try:
        # force: we decide when to save (orbax would skip a step below the newest, e.g. a recomputed generation).
        manager.save(step, args=args, force=True)
        manager.wait_until_finished()
    except Exception as error:
        reason = results.write_failure(error)
        if reason is None:
            held.release()
            raise
        raise results.WriteError(f"cannot write the checkpoint {_step_dir(manager, step)}: {reason}; "
                                 f"{_kept(manager, step)}") from None
    finally:
        absl_logger.removeFilter(held)
    held.release()


def _kept(manager, failed_step: int) -> str:
    """What a failed save leaves: the steps saved before it (its partial temporary folder removed)."""
    import jax

    directory = str(manager.directory)
    if jax.process_count() == 1 and os.path.isdir(directory):  # with several, others may still be writing
        import shutil

        for name in os.listdir(directory):
            if name.startswith(f"{failed_step}.orbax-checkpoint-tmp"):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    steps = [step for step in manager.all_steps() if step != failed_step]
    return f"the newest step kept there is {max(steps)}" if steps else "no earlier step was saved there"


def _save(manager, step: int, arrays: dict, record: dict) -> None:
    """Saves `arrays` (a tree of host arrays) and the JSON `record` (plus the arrays' digest) as `step`, then
    the file manifest of the finished step."""
    import orbax.checkpoint as ocp

    record = dict(record, digest=tree_digest(arrays))
    _orbax_save(manager, step, ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                  record=ocp.args.JsonSave(record)))
    if distributed.is_main_process():
        step_dir = _step_dir(manager, step)
        results.write_json_atomic(os.path.join(step_dir, MANIFEST), _file_manifest(step_dir))


def _restore(manager, step: int) -> tuple[dict, dict]:
    """(arrays, record) of `step`; raises if any file is damaged or the arrays do not match their digest."""
    import orbax.checkpoint as ocp

    _check_files(_step_dir(manager, step))
    restored = manager.restore(
        step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(), record=ocp.args.JsonRestore())
    )
    arrays, record = restored["arrays"], restored["record"]
    if not isinstance(record, dict) or record.get("digest") != tree_digest(arrays):
        raise CheckpointError("its arrays do not match the digest recorded when it was saved")
    return arrays, record


def _reason(error: Exception) -> str:
    """The first line of an error, shortened, for a one-line warning."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _set_aside(manager, step: int) -> str:
    """Moves a damaged step out of the manager's folder into checkpoints/damaged/; returns where it went."""
    directory = os.path.abspath(str(manager.directory))
    root = directory
    while os.path.basename(root) != CHECKPOINTS and os.path.dirname(root) != root:
        root = os.path.dirname(root)
    if os.path.basename(root) != CHECKPOINTS:
        root = os.path.dirname(directory)
    name = os.path.relpath(directory, root).replace(os.sep, "_") + f"_step_{step}"
    target, copies = os.path.join(root, "damaged", name), 1
    while os.path.exists(target):
        copies += 1
        target = os.path.join(root, "damaged", f"{name}_{copies}")
    if distributed.is_main_process():
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(directory, str(step)), target)
    distributed.barrier(f"set_aside_{name}")
    manager.reload()
    return target


def save_training(manager, step: int, state_dict: dict, key, record: dict) -> None:
    """Saves the training state at `step`: the TrainState as a state dict (params, batch_stats, opt_state,
    step), the PRNG key, and `record` (JSON: history, running sums, ...)."""
    _save(manager, step, {"state": state_dict, "rng": np.asarray(key)}, dict(record, step=step))


def restore_training(manager, log: Callable[[str], None]) -> Optional[tuple[dict, dict]]:
    """The newest readable training checkpoint as (arrays, record), or None when there is none.

    A damaged checkpoint is set aside with a warning and the previous one is used; if every checkpoint is
    damaged, raises CheckpointError (nothing is changed and training never silently starts over)."""
    manager.reload()
    steps = sorted(manager.all_steps(), reverse=True)
    damaged = []
    for step in steps:
        try:
            restored = _restore(manager, step)
        except Exception as error:  # orbax and tensorstore raise many types for damaged files
            damaged.append((step, _reason(error)))
            continue
        for bad_step, reason in damaged:
            aside = _set_aside(manager, bad_step)
            log(f"  warning: the checkpoint at step {bad_step} in {manager.directory} is damaged ({reason}); "
                f"moved it to {aside} and fell back to the previous good checkpoint, step {step}")
        return restored
    if damaged:
        details = "; ".join(f"step {step}: {reason}" for step, reason in damaged)
        raise CheckpointError(
            f"every checkpoint in {manager.directory} is damaged ({details}); nothing was changed. To retrain this "
            f"generation from its start, delete that folder; to discard the whole run, rerun with --overwrite"
        )
    return None


def save_generation(manager, generation: int, arrays: dict, info: dict) -> None:
    """Saves a finished generation (variables, soft labels, val/test probs) with `info` (JSON: model, metrics,
    class names, normalisation)."""
    _save(manager, generation, arrays, dict(info, generation=generation))


def restore_generation(manager, generation: int, log: Callable[[str], None]) -> Optional[tuple[dict, dict]]:
    """A finished generation's (arrays, info), or None if it was never saved or is damaged (then it is set
    aside with a warning, and the caller recomputes it from its last training checkpoint)."""
    manager.reload()
    if generation not in manager.all_steps():
        return None
    try:
        return _restore(manager, generation)
    except Exception as error:  # orbax and tensorstore raise many types for damaged files
        aside = _set_aside(manager, generation)
        log(f"warning: the saved result of generation {generation} in {manager.directory} is damaged "
            f"({_reason(error)}); moved it to {aside}; generation {generation} is recomputed from its last "
            f"training checkpoint")
        return None


def load_generation(workdir: str, generation: Optional[int] = None) -> tuple[dict, dict]:
    """Reads finished generation `generation` (default: the newest) of the run in `workdir`, read-only.

    Returns (arrays, info): arrays holds 'variables' ({'params', 'batch_stats'}), 'soft_labels', 'val_probs'
    (and 'test_probs' where there was a test split); info holds 'model_name', 'num_classes', 'class_names',
    'image_shape', 'mean', 'std', 'dtype', 'metrics'. Errors name the folder and the saved generations."""
    directory = finished_dir(workdir)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{workdir}: no saved generations (no {directory}); is this a run's --workdir?")
    manager = open_manager(directory, read_only=True)
    try:
        saved = sorted(manager.all_steps())
        if not saved:
            raise CheckpointError(f"{directory}: no generation has finished in this run yet")
        generation = saved[-1] if generation is None else generation
        if generation not in saved:
            raise CheckpointError(
                f"{workdir}: generation {generation} was not saved; saved generations: {', '.join(map(str, saved))}"
            )
        try:
            return _restore(manager, generation)
        except CheckpointError:
            raise
        except Exception as error:  # damaged files
            raise CheckpointError(
                f"{directory}/{generation}: cannot read the saved generation ({_reason(error)}); rerunning the "
                f"training command with this --workdir recomputes it"
            ) from None
    finally:
        manager.close()


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
    option_a = {"resnet_shortcuts": "A"} if any(re.fullmatch(r"resnet\d+", str(m)) for m in resnets) else {}
    return json.loads(json.dumps({**config_dict, **option_a, "data": _data_fingerprint(splits)}))


def _recorded(workdir: str) -> Optional[dict]:
    """The record a workdir was made with: config.json, else (a run from before checkpoints) results.json's."""
    for name, key in ((CONFIG_FILE, None), ("results.json", "config")):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            try:
                with open(path) as f:
                    payload = json.load(f)
            except (OSError, json.JSONDecodeError) as error:
                raise CheckpointError(f"{path}: unreadable ({error}); rerun with --overwrite to start over") from None
            return payload if key is None else payload.get(key)
    return None


def check_same_data(workdir: str, splits) -> None:
    """Raises CheckpointError unless the run in `workdir` trained on the same train/validation data as `splits`
    (a refinery's labels are per training image, so they only transfer to the very same split)."""
    recorded = _recorded(workdir)
    if recorded is None:
        raise CheckpointError(f"{workdir}: no {CONFIG_FILE} or results.json; is this a run's --workdir?")
    theirs, ours = recorded.get("data"), _data_fingerprint(splits)
    if theirs is None:
        raise CheckpointError(f"{workdir}: {CONFIG_FILE} has no data fingerprint; cannot check it used this data")
    if theirs != ours:
        differing = sorted(k for k in ours if theirs.get(k) != ours.get(k))
        raise CheckpointError(
            f"{workdir}: that run's data differ from this run's ({', '.join(differing)}: it had "
            f"{_show(theirs)}, now {_show(ours)}); use the same --data_dir, --val_size, --train_size and --seed"
        )


def differing_keys(recorded: dict, record: dict) -> list[str]:
    """Config keys (but GROWABLE ones) whose values differ; 'data' only where both record it."""
    from lr_jax.config import RUN_OPTION_FIELDS

    keys = (set(recorded) | set(record)) - set(RUN_OPTION_FIELDS) - set(GROWABLE)
    if "data" not in recorded or "data" not in record:
        keys.discard("data")
    return sorted(k for k in keys if recorded.get(k) != record.get(k))


def _show(value) -> str:
    if isinstance(value, dict):  # the data fingerprint: name what differs inside it
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items() if k != "sha256") + "}"
    return json.dumps(value)


def prepare_workdir(workdir: str, record: dict, overwrite: bool, log: Callable[[str], None]) -> bool:
    """Checks that `workdir` was made with the same configuration (else raises CheckpointError naming the
    differing keys), or with `overwrite` removes what an earlier run wrote there; then records `record`.

    Returns True if the workdir holds an earlier run to resume. Process 0 writes; all processes wait for it."""
    recorded = _recorded(workdir)
    existing = [name for name in (*RUN_FILES, CHECKPOINTS) if os.path.exists(os.path.join(workdir, name))]
    if recorded is not None and not overwrite:
        differing = differing_keys(recorded, record)
        if differing:
            details = "; ".join(
                f"{k}: workdir has {_show(recorded.get(k))}, now {_show(record.get(k))}" for k in differing
            )
            raise CheckpointError(
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
        results.write_json_atomic(os.path.join(workdir, CONFIG_FILE), record)
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
            refused = CheckpointError(f"--workdir {workdir}: cannot create its lock file {path} ({error})")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        locked = int(multihost_utils.broadcast_one_to_all(np.int32(refused is None)))
        refused = refused or (None if locked else CheckpointError(
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
