"""Checkpoints on disk (orbax): mid-generation training state and finished generations, each step with a file
manifest checked before it is read; damaged ones are set aside and the previous good one is used. The rest of the
workdir (its lock, config.json, results) is workdir.py's.

Layout of a workdir's checkpoints:
  checkpoints/training/generation_K/<step>/ full training state of generation K (the newest few steps)
  checkpoints/finished/<K>/                 generation K's variables, soft labels, val/test probs and metrics
  checkpoints/damaged/                      checkpoints found unreadable, set aside (never deleted)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Callable, Optional

import numpy as np

from lr_jax import distributed, files

CHECKPOINTS = "checkpoints"
KEEP_TRAINING_CHECKPOINTS = 2  # the newest and one to fall back to if the newest is damaged
# Written into each finished step's folder: every file's size and SHA-256, checked before orbax reads it.
MANIFEST = "lr_jax_files.json"


class CheckpointError(RuntimeError):
    """A checkpoint or run folder that cannot be used; the message names the folder and what to do."""


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
    """manager.save(step, args) to the end; a failed write (disk full, ...) raises files.WriteError naming the
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
        reason = files.write_failure(error)
        if reason is None:
            held.release()
            raise
        raise files.WriteError(f"cannot write the checkpoint {_step_dir(manager, step)}: {reason}; "
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
        files.write_json_atomic(os.path.join(step_dir, MANIFEST), _file_manifest(step_dir))


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
