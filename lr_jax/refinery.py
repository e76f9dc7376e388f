"""The Label Refinery chain: an outer loop that trains fresh models, each on the labels the previous one predicted."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lr_jax import checkpoints, interrupt, losses, train
from lr_jax.config import Config, RunOptions
from lr_jax.data import Splits
from lr_jax.models import get_model


@dataclasses.dataclass
class Generation:
    """What one generation trained on, what it produced, and how well it did."""

    generation: int
    model_name: str
    trained_on: str  # "ground truth" or "generation k" (the refinery that made its labels)
    soft_labels: np.ndarray  # (num_train, C) its softmax on the un-augmented training images
    val_probs: np.ndarray
    test_probs: Optional[np.ndarray]
    variables: dict  # {'params', 'batch_stats'} on the host
    metrics: dict


def accuracy(probs: Optional[np.ndarray], labels: Optional[np.ndarray]) -> Optional[float]:
    """Top-1 accuracy, or None where there is no split."""
    if probs is None or labels is None or len(labels) == 0:
        return None
    return float(np.mean(np.argmax(probs, -1) == labels))


def generation_key(seed: int, generation: int) -> jax.Array:
    """Each generation's model starts from its own key: fresh initialisation, fresh data order."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), generation)


def model_for_generation(config: Config, generation: int) -> str:
    """With `--refinery_model`, generation 1 is that architecture (the refinery); the rest are `--model`."""
    if config.refinery_model and generation == 1:
        return config.refinery_model
    return config.model


def trains_on_refinery(config: Config, previous: list) -> bool:
    """Whether the next generation learns the previous one's labels: not generation 1, nor `--label_mode
    ground_truth` (every generation on the ground truth)."""
    return bool(previous) and config.label_mode != "ground_truth"


def evaluate_generation(
    gen: int, config: Config, splits: Splits, soft_labels, val_probs, test_probs, previous: list[Generation]
) -> dict:
    """Per-generation metrics: accuracies, the train-minus-validation and train-minus-test gaps (None without
    that split), label statistics, the ensemble. `label_agreement`: how often the argmax of `soft_labels` (this
    generation's softmax on the un-augmented training images) equals the argmax of the labels it trained on:
    the ground truth for generation 1 and in `--label_mode ground_truth` (so it equals the train accuracy), else
    the previous generation's. The ensemble is the mean of generations 1..gen's validation (test) probabilities."""
    train_accuracy = accuracy(soft_labels, splits.train_labels)
    val_accuracy = accuracy(val_probs, splits.val_labels)
    test_accuracy = accuracy(test_probs, splits.test_labels)
    teacher_labels = (np.argmax(previous[-1].soft_labels, -1) if trains_on_refinery(config, previous)
                      else splits.train_labels)
    ensemble_val = np.mean([g.val_probs for g in previous] + [val_probs], axis=0)
    ensemble_test = (
        None if test_probs is None else np.mean([g.test_probs for g in previous] + [test_probs], axis=0)
    )
    return {
        "generation": gen,
        "val_accuracy": val_accuracy,
        "test_accuracy": test_accuracy,
        "train_accuracy": train_accuracy,
        "train_val_gap": None if val_accuracy is None else train_accuracy - val_accuracy,
        "train_test_gap": None if test_accuracy is None else train_accuracy - test_accuracy,
        "label_entropy": float(np.mean(np.asarray(losses.label_entropy(jnp.asarray(soft_labels))))),
        "label_agreement": accuracy(soft_labels, teacher_labels),
        "ensemble_val_accuracy": accuracy(ensemble_val, splits.val_labels),
        "ensemble_test_accuracy": accuracy(ensemble_test, splits.test_labels),
    }


@dataclasses.dataclass
class ChainContext:
    """What every generation of one chain shares, built once: the training split on the devices, and each
    architecture's model, compiled functions and the optimizer (so generations with equal settings reuse them)."""

    config: Config
    splits: Splits
    data: train.DeviceData  # targets are swapped per generation
    plan: train.LoopPlan
    eval_batch_size: int
    programs: dict = dataclasses.field(default_factory=dict)

    def program(self, name: str, build: Callable):
        """The model, function or optimizer called `name`, built by `build()` the first time it is asked for."""
        if name not in self.programs:
            self.programs[name] = build()
        return self.programs[name]


def make_context(config: Config, splits: Splits, run: RunOptions) -> ChainContext:
    """Copies the training split onto the devices and fixes the step loop's shape for the whole chain."""
    # Global device count: with several processes each computes its own slice of a batch. The step options
    # check the batch against the devices and the data before anything is copied.
    options = train.step_options(config, jax.device_count(), len(splits.train_images), refined=False)
    data = train.device_data(splits.train_images, splits.train_labels,
                             np.zeros((len(splits.train_labels), splits.num_classes), np.float32),
                             splits.mean, splits.std)
    plan = train.LoopPlan(config.epochs, options.steps_per_epoch, options.global_batch, run.checkpoint_every)
    return ChainContext(config, splits, data, plan, run.eval_batch_size)


def _model(context: ChainContext, name: str):
    build = lambda: get_model(name, context.splits.num_classes, train.compute_dtype(context.config.dtype))
    return context.program(f"model {name}", build)


def _init(context: ChainContext, name: str) -> Callable:
    """key -> a fresh TrainState of architecture `name`, with the chain's one optimizer."""
    tx = context.program("optimizer", lambda: train.make_optimizer(context.config, context.plan.steps_per_epoch))
    shape = context.splits.train_images.shape[1:]
    return context.program(f"init {name}", lambda: train.make_init(_model(context, name), shape, tx))


def _step(context: ChainContext, name: str, refinery_name: Optional[str]) -> tuple[Callable, bool]:
    """(the train step of architecture `name` refined by `refinery_name`, whether it calls the refinery).
    Precomputed labels never call the refinery: such steps leave it out, so every generation shares one."""
    options = train.step_options(context.config, jax.device_count(), len(context.splits.train_images),
                                 refined=refinery_name is not None)
    refinery_model = _model(context, refinery_name) if options.uses_refinery else None
    key = f"step {name} {options} {refinery_name if options.uses_refinery else None}"
    step_fn = context.program(key, lambda: train.make_train_step(_model(context, name), refinery_model, options))
    return step_fn, options.uses_refinery


def predict_all(context: ChainContext, name: str, variables: dict) -> tuple:
    """(soft labels on the un-augmented training images, validation probs, test probs or None, {metric: value}).
    With `--eval_flip`, the validation and test probs are the mean over each image and its mirror image, and the
    metrics hold the accuracies without that averaging; the soft labels (the next generation's targets) are never
    averaged."""
    predict_fn = context.program(f"predict {name}", lambda: train.make_predict(_model(context, name)))
    replicated = train.replicate(variables)
    splits = context.splits
    predict = lambda images: train.predict_probs(predict_fn, replicated, images, splits.mean, splits.std,
                                                 context.eval_batch_size)
    soft_labels, val_probs = predict(splits.train_images), predict(splits.val_images)
    test_probs = None if splits.test_images is None else predict(splits.test_images)
    if not context.config.eval_flip:
        return soft_labels, val_probs, test_probs, {}
    unflipped = {"val_accuracy_no_flip": accuracy(val_probs, splits.val_labels),
                 "test_accuracy_no_flip": accuracy(test_probs, splits.test_labels)}
    val_probs = (val_probs + predict(splits.val_images[:, :, ::-1])) / 2
    if test_probs is not None:
        test_probs = (test_probs + predict(splits.test_images[:, :, ::-1])) / 2
    return soft_labels, val_probs, test_probs, unflipped


def run_generation(
    context: ChainContext,
    gen: int,
    targets: np.ndarray,
    previous: list[Generation],
    log: Callable[[str], None] = print,
    progress: bool = True,
    checkpoint_dir: Optional[str] = None,
) -> Generation:
    """Initialises a fresh model, trains it on `targets` (or on the previous generation's per-crop labels in
    online mode), and predicts soft labels for every un-augmented training image. With `checkpoint_dir`,
    training saves its state there and resumes from it."""
    config, splits = context.config, context.splits
    model_name = model_for_generation(config, gen)
    init_key, train_key = jax.random.split(generation_key(config.seed, gen))
    state = _init(context, model_name)(init_key)
    refined = trains_on_refinery(config, previous)
    refinery_name = previous[-1].model_name if refined else None
    step_fn, uses_refinery = _step(context, model_name, refinery_name)
    data = context.data.replace(targets=train.replicate(np.asarray(targets, np.float32)))
    state, stats = train.train_generation(
        state, step_fn, data, train_key, context.plan,
        refinery_variables=previous[-1].variables if uses_refinery else None, checkpoint_dir=checkpoint_dir,
        log=log, progress_bar=progress,
    )
    variables = train.variables_of(state)
    start = time.perf_counter()
    soft_labels, val_probs, test_probs, unflipped = predict_all(context, model_name, variables)
    stats["overhead_seconds"]["predict"] = time.perf_counter() - start
    metrics = evaluate_generation(gen, config, splits, soft_labels, val_probs, test_probs, previous)
    metrics.update(unflipped)
    metrics.update(
        model=model_name,
        trained_on=f"generation {previous[-1].generation}" if refined else "ground truth",
        label_mode=config.label_mode if refined else "ground truth",
        train_seconds=stats["train_seconds"],
        images_per_second=stats["images_per_second"],
        overhead_seconds=stats["overhead_seconds"],
        epochs=stats["epochs"],
    )
    return Generation(
        generation=gen, model_name=model_name, trained_on=metrics["trained_on"], soft_labels=soft_labels,
        val_probs=val_probs, test_probs=test_probs, variables=variables, metrics=metrics,
    )


def ground_truth_targets(splits: Splits, config: Config) -> np.ndarray:
    """Generation 1's targets: one-hot ground truth (smoothed if `--label_smoothing`)."""
    return np.asarray(losses.one_hot(jnp.asarray(splits.train_labels), splits.num_classes, config.label_smoothing))


def generation_arrays(result: Generation) -> dict:
    """The arrays a finished generation saves: its variables and what it predicted."""
    arrays = {"variables": result.variables, "soft_labels": result.soft_labels, "val_probs": result.val_probs}
    if result.test_probs is not None:
        arrays["test_probs"] = result.test_probs
    return arrays


def generation_info(result: Generation, config: Config, splits: Splits) -> dict:
    """The JSON a finished generation saves: enough to rebuild its model and predict on new images."""
    return {
        "model_name": result.model_name,
        "trained_on": result.trained_on,
        "num_classes": splits.num_classes,
        "class_names": list(splits.class_names),
        "image_shape": list(splits.train_images.shape[1:]),
        "mean": np.asarray(splits.mean, np.float64).tolist(),
        "std": np.asarray(splits.std, np.float64).tolist(),
        "dtype": config.dtype,
        "metrics": result.metrics,
    }


def generation_from_saved(gen: int, arrays: dict, info: dict) -> Generation:
    """A Generation rebuilt from its checkpoint."""
    return Generation(
        generation=gen, model_name=info["model_name"], trained_on=info["trained_on"],
        soft_labels=arrays["soft_labels"], val_probs=arrays["val_probs"], test_probs=arrays.get("test_probs"),
        variables=arrays["variables"], metrics=info["metrics"],
    )


def reused_refinery(refinery_workdir: str, splits: Splits, log: Callable[[str], None] = print,
                    generation: Optional[int] = None) -> Generation:
    """Generation 1 taken from another run (`--refinery_workdir`): its finished generation `generation`
    (`--refinery_generation`; default its newest), which must have been trained on the same train/validation
    split. Its labels start this chain; it is not retrained."""
    checkpoints.check_same_data(refinery_workdir, splits)
    arrays, info = checkpoints.load_generation(refinery_workdir, generation)
    source_generation = info["metrics"]["generation"]
    reused = generation_from_saved(1, arrays, info)
    reused.trained_on = f"{info['trained_on']} (reused: {refinery_workdir} generation {source_generation})"
    reused.metrics = {**info["metrics"], "generation": 1, "trained_on": reused.trained_on,
                      "train_seconds": 0.0, "epochs": []}
    log(f"generation 1: reusing {info['model_name']} from {refinery_workdir} (its generation "
        f"{source_generation}) as the first refinery")
    return reused


def run_chain(
    config: Config,
    splits: Splits,
    log: Callable[[str], None] = print,
    progress: bool = True,
    on_generation: Optional[Callable[[Generation, list[Generation]], None]] = None,
    finished: Optional[list[Generation]] = None,
    workdir: Optional[str] = None,
    run: Optional[RunOptions] = None,
    code: Optional[dict] = None,
) -> list[Generation]:
    """Runs generations len(finished)+1 .. config.generations; generation k+1 trains on generation k's labels.

    The label array is an explicit value threaded through the loop: `targets` for the next generation is the
    `soft_labels` array this generation predicted on the un-augmented training images. With `workdir`, each
    finished generation is saved under it (and reloaded instead of retrained on a rerun), and training
    checkpoints (every `run.checkpoint_every` steps) let an interrupted generation continue from its last one.
    `code` (results.code_version() of this invocation) goes into the metrics of each generation trained here, and
    is saved and reloaded with them: a resumed chain's rows name the code that finished each generation.
    A stop request (see lr_jax.interrupt) ends the chain with `interrupt.Interrupted`, naming the generation and
    step and holding the generations finished so far; before a generation starts, it ends it without training."""
    run = run or RunOptions()
    chain = list(finished or [])
    if not chain and config.refinery_workdir:
        chain = [reused_refinery(config.refinery_workdir, splits, log, config.refinery_generation)]
    ground_truth = ground_truth_targets(splits, config)
    targets = chain[-1].soft_labels if trains_on_refinery(config, chain) else ground_truth
    context = None  # built when the first generation needs training: a fully reloaded chain needs no devices
    store = checkpoints.open_manager(checkpoints.finished_dir(workdir)) if workdir else None
    gen = len(chain) + 1
    try:
        for gen in range(len(chain) + 1, config.generations + 1):
            saved = checkpoints.restore_generation(store, gen, log) if store is not None else None
            if saved is not None:
                result = generation_from_saved(gen, *saved)
                log(f"generation {gen}/{config.generations}: reloaded from {store.directory}/{gen} (not retrained)")
            else:
                if interrupt.should_stop():  # a request that came in while the data were read or labels predicted
                    raise interrupt.Interrupted(interrupt.requested() or interrupt.AGREED)
                teacher = f"labels of generation {chain[-1].generation}" if trains_on_refinery(config, chain) else None
                log(f"generation {gen}/{config.generations}: training {model_for_generation(config, gen)} on "
                    f"{teacher or 'ground truth'}")
                context = context or make_context(config, splits, run)
                checkpoint_dir = checkpoints.training_dir(workdir, gen) if workdir else None
                try:
                    result = run_generation(context, gen, targets, chain, log=log, progress=progress,
                                            checkpoint_dir=checkpoint_dir)
                except train.NonFiniteLossError as error:
                    raise train.NonFiniteLossError(f"generation {gen}: {error}") from None
                if code is not None:
                    result.metrics["code"] = code
                if store is not None:
                    start = time.perf_counter()
                    checkpoints.save_generation(store, gen, generation_arrays(result),
                                                generation_info(result, config, splits))
                    result.metrics["overhead_seconds"]["save_generation"] = time.perf_counter() - start
            chain.append(result)
            if on_generation is not None and saved is None:
                on_generation(result, chain)
            targets = result.soft_labels if trains_on_refinery(config, chain) else ground_truth
    except interrupt.Interrupted as stop:
        stop.generation, stop.finished = stop.generation or gen, list(chain)
        raise
    finally:
        if store is not None:
            store.close()
    return chain
