"""The shared command line: flags -> Config, data -> splits, the refinery chain, results on disk."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from typing import Optional, Sequence

from lr_jax import config as config_lib
from lr_jax import checkpoints, distributed, files, interrupt, loop, provenance, refinery, results, step, workdir
from lr_jax import summaries, xla_cpu, xla_gpu
from lr_jax.data import DataError, class_counts, label_files, load_dataset, make_splits, tfds_source

WRITE_ERROR_STATUS = 74  # sysexits.h EX_IOERR: a checkpoint or result file could not be written

HELP = {
    "data_dir": "dataset folder or archive: CIFAR-10 python/binary version, SVHN .mat files, IDX files, or an "
    "image-folder tree (train/<class>/*.png|jpg) as a folder, .tar, .tar.gz or .zip; omit to read TFDS",
    "tfds_data_dir": "without --data_dir: the folder where TFDS keeps prepared data and looks for manually "
    "downloaded originals (downloads/manual/); default TFDS_DATA_DIR or ~/tensorflow_datasets",
    "svhn_extra": "SVHN only: add the extra split (531k images) to training",
    "cache_dir": "keep decoded --data_dir arrays here, reused while the source files are unchanged",
    "workdir": "folder for results.json, results.md, log.txt and checkpoints; rerunning resumes it",
    "preset": f"named settings applied before other flags: {', '.join(config_lib.PRESETS)}",
    "generations": "number of models in the chain (1 = ground truth only)",
    "model": "architecture of every generation (see lr_jax.models.MODEL_BUILDERS)",
    "epochs": "training epochs per generation",
    "batch_size": "global batch size, split evenly over all devices",
    "learning_rate": "peak SGD learning rate",
    "seed": "seed for the validation split, initialisation, data order and augmentation",
    "train_size": "use only this many training images (stratified), for quick runs",
    "val_size": "images held out of train (stratified) as the validation split",
    "augment": "augment training images on the device: zero-pad by --crop_padding, random crop, flip (see --flip)",
    "flip": "random horizontal flips while augmenting (the SVHN default is --no_flip: digits are not symmetric)",
    "label_mode": "precomputed: labels predicted once per generation; online: per augmented crop",
    "refinery_bn": "online labels: refinery BatchNorm in eval mode, or train mode as the official code",
    "refinery_model": "architecture of generation 1 (the first refinery), when it differs from --model",
    "temperature": "distillation temperature T (loss scaled by T^2)",
    "gt_weight": "weight of the ground-truth loss mixed into refined generations",
    "label_smoothing": "label smoothing of ground-truth targets",
    "adversarial_jitter": "fraction of each batch perturbed adversarially and relabelled by the refinery",
    "jitter_epsilon": "L-infinity size of the adversarial perturbation in [0, 1] pixel units",
    "checkpoint_every": "steps between mid-generation checkpoints in --workdir (0: only at epoch ends)",
    "coordinator_address": "multi-process runs: host:port of process 0 (or JAX_COORDINATOR_ADDRESS)",
    "num_processes": "multi-process runs: how many processes (or JAX_NUM_PROCESSES)",
    "process_id": "multi-process runs: this process's index, 0 .. num_processes-1 (or JAX_PROCESS_ID)",
    "momentum": "SGD momentum (Nesterov)",
    "weight_decay": "L2 weight decay on kernels, added to the gradient",
    "warmup_epochs": "epochs of linear learning-rate warm-up from 0",
    "schedule": "learning-rate decay after the warm-up: cosine to 0, or piecewise (/10 at 50%% and 75%%)",
    "dtype": "compute dtype of the convolutions; bfloat16 pays on GPUs and TPUs, not on CPUs",
    "crop_padding": "pad-and-crop: zero padding on each side before the random crop",
    "crop": "training crops: pad (pad by --crop_padding, random crop) or random_resized (the paper's: a random "
    "area and aspect ratio, resized back)",
    "crop_scale": "random_resized: the crop's area as a fraction of the image, MIN,MAX",
    "crop_ratio": "random_resized: the crop's aspect ratio, MIN,MAX",
    "train_labels": "a file of labels that replace the training images' (validation and test keep the dataset's): "
    "CIFAR-10N's .pt, .npy/.npz, or CSV path,label / index,label (soft: prob_0..; -1: leave the image out of "
    "training), or a python -m lr_jax.labels export; or 'tfds': TFDS's cifar10_n label sets (with "
    "--train_label_key); see README",
    "train_label_key": "the label set of a --train_labels file that holds several (e.g. worse_label)",
    "refinery_workdir": "start the chain from a finished generation of this earlier run (same data and split) "
    "instead of training generation 1",
    "refinery_generation": "with --refinery_workdir: which of its generations (default: its newest)",
    "eval_flip": "average validation and test predictions over each image and its mirror image (not the labels)",
    "eval_batch_size": "images per prediction batch, over all devices",
    "tensorboard": "write live training curves as TensorBoard event files into <workdir>/tensorboard",
}


class OneLineErrors(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2), not the usage of fifty flags."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(dataset: str) -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog=f"python -m lr_jax.experiments.{dataset}",
        description=f"Label Refinery chain on {dataset}: generation 1 learns the ground truth, each later "
        "generation a fresh model trained on the previous one's soft labels.",
        epilog="presets (--preset NAME; flags given with it override it):\n" + config_lib.describe_presets(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="settings from a file: a run's config.json or "
                        "results.json, or a JSON preset file; flags given with it override it")
    for field in (*dataclasses.fields(config_lib.Config), *dataclasses.fields(config_lib.RunOptions)):
        if field.name == "dataset":
            continue
        flag = "--" + field.name
        help_text = HELP.get(field.name, "")
        default = field.default
        if field.type in ("bool", bool):  # --name / --no_name, underscores like every other flag
            pair = parser.add_mutually_exclusive_group()
            pair.add_argument(flag, dest=field.name, action="store_true", default=None,
                              help=f"{help_text} (default {default})")
            pair.add_argument(f"--no_{field.name}", dest=field.name, action="store_false", default=None,
                              help=f"the opposite of {flag}")
            continue
        kind = {"int": int, "float": float}.get(str(field.type).replace("Optional[", "").rstrip("]"), str)
        choices = config_lib.CHOICES.get(field.name)
        if field.name == "preset":
            choices = tuple(config_lib.PRESETS)
        parser.add_argument(flag, type=kind, default=None, choices=choices, help=f"{help_text} (default {default})")
    parser.add_argument("--no_progress", action="store_true", help="no per-epoch progress bars")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard what an earlier run wrote into --workdir instead of resuming it")
    return parser


def make_logger(workdir: Optional[str], enabled: bool = True, earlier: Optional[list] = None):
    """Prints each line and appends it to workdir/log.txt once the workdir exists (only where `enabled`).

    Lines logged while the workdir does not exist yet are kept in `earlier` (when given) and written first
    by the next logger that has a workdir, so the data-reading lines reach log.txt too. Where log.txt cannot
    be written (a full disk, ...), lines go to the terminal only, with one warning."""
    failed = []

    def log(line: str, echo: bool = True) -> None:
        if not enabled:
            return
        if echo:
            print(line, flush=True)
        if not (workdir and os.path.isdir(workdir)):
            if earlier is not None:
                earlier.append(line)
            return
        if failed:
            return
        try:
            with open(os.path.join(workdir, results.LOG_FILE), "a") as f:
                f.write("".join(earlier_line + "\n" for earlier_line in earlier or ()) + line + "\n")
        except OSError as error:
            failed.append(error)
            print(f"warning: cannot append to {os.path.join(workdir, results.LOG_FILE)} ({error}); lines go to the "
                  f"terminal only", file=sys.stderr, flush=True)
            return
        if earlier:
            earlier.clear()

    return log


def read_splits(config: config_lib.Config, options: config_lib.RunOptions, log=print) -> tuple:
    """(dataset, splits, label source or None): the data a run trains on, from --data_dir or TFDS; the validation
    split (and --train_size) drawn from the dataset's own labels; then the training images relabelled by
    --train_labels, whose record (file, key, sha256, noise rates) is returned. Runs and tools reloading a run
    (lr_jax.run_data) read data through this one function."""
    data = load_dataset(config.dataset, options.data_dir, svhn_extra=config.svhn_extra, cache_dir=options.cache_dir,
                        log=log, tfds_data_dir=options.tfds_data_dir)
    replacement, source = None, None
    if config.train_labels == config_lib.TFDS_LABELS:  # TFDS's label-set builder of the dataset (cifar10_n)
        table = tfds_source.tfds_label_table(config.dataset, config.train_label_key, data.num_classes,
                                             options.tfds_data_dir)
        replacement = label_files.labels_for_images(table, label_files.image_order(data))
        source = label_files.label_source_record(table.where, config.train_label_key, None, replacement,
                                                 data.train_labels)
    elif config.train_labels:
        replacement = label_files.load_train_labels(config.train_labels, label_files.image_order(data),
                                                    data.num_classes, config.train_label_key)
        source = label_files.label_source_record(config.train_labels, config.train_label_key,
                                                 label_files.file_sha256(config.train_labels), replacement,
                                                 data.train_labels)
    splits = make_splits(data, config.val_size, config.train_size, config.seed, train_labels=replacement)
    if source is not None:
        source["noise_rate_train"] = label_files.noise_rate(splits.train_labels, splits.dataset_train_labels)
        log(f"training labels from {source['file']}{'' if source['key'] is None else ' [' + source['key'] + ']'}: "
            f"{100 * source['noise_rate_train']:.2f}% of the training images' labels differ from the dataset's "
            f"(validation keeps the dataset's labels)")
    return data, splits, source


def _read_data(config, options, log):
    """(data, splits, label source, description) from --data_dir or TFDS, checked; the description is logged."""
    data, splits, source = read_splits(config, options, log)
    train_counts = class_counts(splits.train_labels, splits.num_classes)
    description = (
        f"{data.source}: {len(splits.train_labels)} train / {len(splits.val_labels)} validation / "
        f"{0 if splits.test_labels is None else len(splits.test_labels)} test images of shape "
        f"{data.image_shape}, {splits.num_classes} classes"
    )
    log(description)
    log(f"train images per class: {dict(zip(splits.class_names, train_counts))}")
    return data, splits, source, description


def check_against_data(config: config_lib.Config, splits) -> None:
    """What would otherwise fail once training starts, checked while nothing is written yet (DataError /
    CheckpointError): the batch against the training images and the devices, and --refinery_workdir's data and
    generation."""
    import jax

    try:
        step.step_options(config, jax.device_count(), len(splits.train_images), refined=False)
    except ValueError as error:
        raise DataError(str(error)) from None
    if config.refinery_workdir:
        workdir.check_same_data(config.refinery_workdir, splits)
        checkpoints.load_generation(config.refinery_workdir, config.refinery_generation)


def _dataset_info(data, splits, description: str, label_source: Optional[dict]) -> dict:
    import jax

    return {
        "description": description,
        "source": data.source,
        "class_names": list(splits.class_names),
        "num_train": int(len(splits.train_labels)),
        "num_val": int(len(splits.val_labels)),
        "num_test": None if splits.test_labels is None else int(len(splits.test_labels)),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,  # e.g. "NVIDIA H200", "TPU v4", "cpu"
        "xla_cpu_path": xla_cpu.path(),
        "xla_gpu_kernels": xla_gpu.state(),  # deterministic unless the user chose otherwise (lr_jax.xla_gpu)
        "label_source": label_source,  # --train_labels: file, key, sha256, noise rates; None: the dataset's labels
    }


def run(dataset: str, argv: Optional[Sequence[str]] = None) -> dict:
    """Parses flags, locks --workdir, reads and checks the data (before anything is written), runs the chain,
    writes results.

    A rerun with the same --workdir resumes: finished generations are reloaded, an interrupted one continues
    from its last checkpoint. With several processes, process 0 alone writes results and logs. While it runs,
    SIGTERM and SIGINT stop it cleanly (lr_jax.interrupt): the state is saved at the next step, results of the
    finished generations are written and interrupt.Interrupted says where it stopped; a second run on the same
    --workdir meets workdir.WorkdirInUse."""
    parser = build_parser(dataset)
    args = vars(parser.parse_args(argv))
    progress = not args.pop("no_progress")
    overwrite = args.pop("overwrite")
    config_file = args.pop("config")
    try:
        config, options = config_lib.build_config(dataset, args, config_file)
        distributed.initialize(options.coordinator_address, options.num_processes, options.process_id)
        import jax

        step.check_batch_divides(config.batch_size, jax.device_count())
    except ValueError as error:
        parser.error(str(error))
    with interrupt.stop_on_signals(), workdir.workdir_lock(options.workdir):
        return _run_locked(config, options, overwrite, progress)


def _run_locked(config, options, overwrite: bool, progress: bool) -> dict:
    """`run` once the workdir is this run's: data, workdir check, chain, results."""
    import jax

    main_process = distributed.is_main_process()
    early_lines: list = []  # logged before the workdir is prepared; written into its log.txt later
    log = make_logger(None, main_process, early_lines)
    start = time.perf_counter()
    code = provenance.run_provenance()  # the code this process imported (whatever the work tree holds later), the CPU
    data, splits, label_source, description = _read_data(config, options, log)
    data_seconds = time.perf_counter() - start
    check_against_data(config, splits)
    record = workdir.run_record(dataclasses.asdict(config), splits)
    resuming = workdir.prepare_workdir(options.workdir, record, overwrite, log)
    log = make_logger(options.workdir, main_process, early_lines)
    earlier_wall_seconds = 0.0
    if resuming:
        log(f"resuming the run in {options.workdir}")
        earlier_wall_seconds = results.previous_wall_seconds(options.workdir)
    log(f"devices: {jax.device_count()} x {jax.devices()[0].platform} in {jax.process_count()} process(es); "
        f"config: {dataclasses.asdict(config)}; run options: {dataclasses.asdict(options)}")
    dataset_info = _dataset_info(data, splits, description, label_source)
    recorder = Recorder(config, options, splits, dataset_info, code, start, data_seconds, earlier_wall_seconds,
                        main_process)
    try:
        with contextlib.closing(refinery.run_chain(config, splits, log=log, progress=progress and main_process,
                                                   workdir=options.workdir, run=options, code=code)) as generations:
            for result in generations:
                recorder.add(result)
    except interrupt.Interrupted as stop:
        if recorder.chain:
            recorder.write()  # this invocation's time too, for the resumed run's wall time
        log(str(stop), echo=False)  # main() prints it
        raise
    except (loop.NonFiniteLossError, checkpoints.CheckpointError, files.WriteError) as error:
        log(f"error: {error}", echo=False)  # main() prints it
        raise
    recorder.write_final(log)
    rows = [g.metrics for g in recorder.chain]
    log("\n" + results.markdown_table(rows))
    log(f"wall time {time.perf_counter() - start:.1f} s (this invocation); results in {os.path.join(options.workdir, results.RESULTS_FILE)}")
    distributed.barrier("results_written")
    return results.load_results(options.workdir)


@dataclasses.dataclass
class Recorder:
    """Writes a run's results (results.json, results.md, labels_summary.npz) as the chain's generations arrive:
    after each generation trained by this invocation, and when asked (at the end, or when the run stops early);
    with --tensorboard, each generation trained here also goes to the chain's TensorBoard curves."""

    config: config_lib.Config
    options: config_lib.RunOptions
    splits: object
    dataset_info: dict
    code: dict  # provenance.run_provenance() when the invocation started
    start: float  # time.perf_counter() when the invocation started
    data_seconds: float
    earlier_wall_seconds: float  # the wall time of the invocations this one resumes
    main_process: bool  # only the main process writes
    chain: list = dataclasses.field(default_factory=list)  # every generation so far, reloaded ones too
    trained_now: list = dataclasses.field(default_factory=list)  # metrics of those this invocation trained

    def add(self, result) -> None:
        """Takes the chain's next generation; one trained by this invocation is written at once."""
        self.chain.append(result)
        if not result.reloaded:
            self.trained_now.append(result.metrics)
            self.write()
            if self.main_process and self.options.tensorboard:
                summaries.write_generation(self.options.workdir, result.metrics)

    def write_final(self, log) -> None:
        """write() at the end of the chain (also when every generation was reloaded: results.json may lack the
        last of them after a stop between the two saves), unless this invocation trained nothing and results.json
        and labels_summary.npz already record this very chain, complete: a rerun of a finished run then keeps the
        results, and the timing and code of the invocations that trained it, as they were."""
        if self.main_process and not self.trained_now and self._recorded():
            log(f"every generation was reloaded and {results.RESULTS_FILE} already records them: kept as it was")
            return
        self.write()

    def _recorded(self) -> bool:
        try:
            recorded = results.load_results(self.options.workdir)
        except (OSError, ValueError):
            return False
        return (recorded.get("complete") is True and len(self.chain) == self.config.generations
                and os.path.exists(os.path.join(self.options.workdir, results.LABELS_SUMMARY))
                and [row.get("val_accuracy") for row in recorded.get("generations", [])]
                == [g.metrics.get("val_accuracy") for g in self.chain])

    def write(self) -> None:
        if not self.main_process:
            return
        results.write_label_summary(self.options.workdir, self.splits, self.chain)
        rows = [g.metrics for g in self.chain]
        complete = len(self.chain) == self.config.generations
        session = time.perf_counter() - self.start
        payload = results.results_payload(self.config, self.options, self.dataset_info, rows, complete,
                                          self.earlier_wall_seconds + session, session_wall_seconds=session,
                                          timing=results.timing_summary(self.trained_now, self.data_seconds, session),
                                          code=self.code)
        results.write_results(self.options.workdir, payload)


def main(dataset: str, argv: Optional[Sequence[str]] = None) -> None:
    """Entry point: clear one-line errors for bad input, unusable workdirs, failed writes and diverged training,
    no tracebacks.

    Exit status 2: bad input or workdir (also: another run uses --workdir); 3: training diverged (non-finite
    loss); 74 (sysexits EX_IOERR): a checkpoint or result could not be written (full disk, ...), what was saved
    before is kept; 75 (interrupt.EXIT_STATUS, EX_TEMPFAIL): stopped by SIGTERM or SIGINT after saving, the same
    command resumes; 128 + N (as shells report it): killed by a second signal N, nothing saved after the last
    checkpoint."""
    try:
        run(dataset, argv)
    except interrupt.Interrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(interrupt.EXIT_STATUS)
    except files.WriteError as error:
        print(f"error: {error}. Free some space (or fix the file system) and rerun the same command: it resumes "
              f"from what was kept", file=sys.stderr)
        sys.exit(WRITE_ERROR_STATUS)
    except (DataError, FileNotFoundError, checkpoints.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except loop.NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
