"""The Label Refinery chain: an outer loop that trains fresh models, each on the labels the previous one predicted."""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lr_jax import checkpoints, distributed, interrupt, loop, losses, step, summaries, workdir
from lr_jax.config import Config, RunOptions
from lr_jax.data import Splits
from lr_jax.devices import device_data, make_predict, predict_probs, replicate
from lr_jax.generation import GenerationPlan, plan_generation, training_labels
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
    reloaded: bool = False  # loaded from a saved generation (this run's or another's), not trained by this call


def accuracy(probs: Optional[np.ndarray], labels: Optional[np.ndarray]) -> Optional[float]:
    """Top-1 accuracy, or None where there is no split."""
    if probs is None or labels is None or len(labels) == 0:
        return None
    return float(np.mean(np.argmax(probs, -1) == labels))


def generation_key(seed: int, generation: int) -> jax.Array:
    """Each generation's model starts from its own key: fresh initialisation, fresh data order."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), generation)


def label_repair(soft_labels: np.ndarray, given: np.ndarray, dataset_labels: np.ndarray) -> dict:
    """Where a run trains on labels other than the dataset's (--train_labels): how the labels this generation hands
    on (the argmax of its softmax on the un-augmented training images) compare with the dataset's labels.
    `train_accuracy_dataset_labels`: their accuracy against the dataset's labels; `labels_repaired`: how many given
    labels that differ from the dataset's it hands on as the dataset's; `labels_broken`: how many given labels that
    equal the dataset's it hands on differently."""
    handed_on = np.argmax(soft_labels, -1)
    wrong = given != dataset_labels
    right_now = handed_on == dataset_labels
    return {"train_accuracy_dataset_labels": float(np.mean(right_now)),
            "labels_repaired": int(np.sum(wrong & right_now)), "labels_broken": int(np.sum(~wrong & ~right_now))}


def evaluate_generation(gen: int, splits: Splits, soft_labels, val_probs, test_probs, previous: list[Generation],
                        taught: np.ndarray, dataset_labels: Optional[np.ndarray] = None) -> dict:
    """Per-generation metrics: accuracies, the train-minus-validation and train-minus-test gaps (None without
    that split), label statistics, the ensemble. `label_agreement`: how often the argmax of `soft_labels` (this
    generation's softmax on the un-augmented training images) equals `taught`, the class each training image was
    taught (see generation.training_labels: the ground truth, so it equals the train accuracy, or the argmax of
    its teacher's labels). The ensemble is the mean of generations 1..gen's validation (test) probabilities.
    `train_accuracy` compares with the given labels (the dataset's, or --train_labels'); with `dataset_labels` (a run
    on --train_labels) the metrics of `label_repair` are added."""
    train_accuracy = accuracy(soft_labels, splits.train_labels)
    val_accuracy = accuracy(val_probs, splits.val_labels)
    test_accuracy = accuracy(test_probs, splits.test_labels)
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
        "label_agreement": accuracy(soft_labels, taught),
        "ensemble_val_accuracy": accuracy(ensemble_val, splits.val_labels),
        "ensemble_test_accuracy": accuracy(ensemble_test, splits.test_labels),
        **({} if dataset_labels is None else label_repair(soft_labels, splits.train_labels, dataset_labels)),
    }


@dataclasses.dataclass
class ChainContext:
    """What every generation of one chain shares, built once: the training split on the devices, the step loop's
    shape, and each architecture's model, compiled functions and the optimizer (so generations with equal
    settings reuse them), keyed by hashable tuples."""

    config: Config
    splits: Splits
    data: step.DeviceData  # targets are swapped per generation
    loop_plan: loop.LoopPlan
    eval_batch_size: int
    curves_dir: Optional[str] = None  # the workdir whose tensorboard/ folder gets live curves; None: none
    programs: dict = dataclasses.field(default_factory=dict)

    def program(self, key: tuple, build: Callable):
        """The model, function or optimizer under `key`, built by `build()` the first time it is asked for."""
        if key not in self.programs:
            self.programs[key] = build()
        return self.programs[key]


def make_context(config: Config, splits: Splits, run: RunOptions, workdir: Optional[str] = None) -> ChainContext:
    """Copies the training split onto the devices and fixes the step loop's shape for the whole chain. Live
    TensorBoard curves go to `workdir` when it is given, `run.tensorboard` is on and this is the main process."""
    # Global device count: with several processes each computes its own slice of a batch. The step options
    # check the batch against the devices and the data before anything is copied.
    options = step.step_options(config, jax.device_count(), len(splits.train_images), refined=False)
    data = device_data(splits.train_images, splits.train_labels,
                       np.zeros((len(splits.train_labels), splits.num_classes), np.float32), splits.mean, splits.std)
    loop_plan = loop.LoopPlan(config.epochs, options.steps_per_epoch, options.global_batch, run.checkpoint_every)
    curves_dir = workdir if workdir and run.tensorboard and distributed.is_main_process() else None
    return ChainContext(config, splits, data, loop_plan, run.eval_batch_size, curves_dir)


def _model(context: ChainContext, name: str):
    build = lambda: get_model(name, context.splits.num_classes, step.compute_dtype(context.config.dtype))
    return context.program(("model", name), build)


def _init(context: ChainContext, name: str) -> Callable:
    """key -> a fresh TrainState of architecture `name`, with the chain's one optimizer."""
    steps = context.loop_plan.steps_per_epoch
    tx = context.program(("optimizer",), lambda: step.make_optimizer(context.config, steps))
    shape = context.splits.train_images.shape[1:]
    return context.program(("init", name), lambda: step.make_init(_model(context, name), shape, tx))


def _step(context: ChainContext, plan: GenerationPlan) -> Callable:
    """The plan's compiled train step. Precomputed labels never call the refinery: such steps leave it out, so
    every generation shares one."""
    refinery_model = None if plan.refinery_model is None else _model(context, plan.refinery_model)
    build = lambda: step.make_train_step(_model(context, plan.model_name), refinery_model, plan.step_options)
    return context.program(plan.step_key, build)


def _predictor(context: ChainContext, name: str, variables: dict) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images -> softmax of architecture `name` with `variables`, on every local device."""
    predict_fn = context.program(("predict", name), lambda: make_predict(_model(context, name)))
    replicated, splits = replicate(variables), context.splits
    return lambda images: predict_probs(predict_fn, replicated, images, splits.mean, splits.std,
                                        context.eval_batch_size)


def generation_curves(context: ChainContext, plan: GenerationPlan) -> Optional[summaries.GenerationCurves]:
    """The plan's live curves (None where the context has no curves folder): its learning rate per step and, per
    epoch, its validation accuracy without flip averaging (a prediction pass over the validation images)."""
    if context.curves_dir is None:
        return None
    schedule = step.learning_rate_schedule(context.config, context.loop_plan.steps_per_epoch)
    val_images, val_labels = context.splits.val_images, context.splits.val_labels
    evaluate = lambda variables: accuracy(_predictor(context, plan.model_name, variables)(val_images), val_labels)
    return summaries.GenerationCurves(context.curves_dir, plan.generation, lambda s: float(schedule(s)),
                                      evaluate if len(val_labels) else None)


def predict_all(context: ChainContext, name: str, variables: dict) -> tuple:
    """(soft labels on the un-augmented training images, validation probs, test probs or None, {metric: value}).
    With `--eval_flip`, the validation and test probs are the mean over each image and its mirror image, and the
    metrics hold the accuracies without that averaging; the soft labels (the next generation's targets) are never
    averaged."""
    splits, predict = context.splits, _predictor(context, name, variables)
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
    plan: GenerationPlan,
    previous: list[Generation],
    log: Callable[[str], None] = print,
    progress: bool = True,
    checkpoint_dir: Optional[str] = None,
    chrono: Optional[loop.Chrono] = None,
) -> Generation:
    """Initialises a fresh model, trains it as `plan` says (on the targets of generation.training_labels, or on its
    teacher's per-crop labels in online mode), and predicts soft labels for every un-augmented training image.
    With `checkpoint_dir`, training saves its state there and resumes from it. Training and prediction report
    their times to `chrono` (default: a new one)."""
    config, splits = context.config, context.splits
    chrono = loop.Chrono() if chrono is None else chrono
    init_key, train_key = jax.random.split(generation_key(config.seed, plan.generation))
    state = _init(context, plan.model_name)(init_key)
    targets, taught = training_labels(plan, splits, config, previous)
    data = context.data.replace(targets=replicate(np.asarray(targets, np.float32)))
    state, stats = loop.train_generation(
        state, _step(context, plan), data, train_key, context.loop_plan,
        refinery_variables=None if plan.refinery_model is None else previous[-1].variables, checkpoint_dir=checkpoint_dir,
        log=log, progress_bar=progress, chrono=chrono, curves=generation_curves(context, plan),
    )
    variables = step.variables_of(state)
    with chrono.overhead("predict"):
        soft_labels, val_probs, test_probs, unflipped = predict_all(context, plan.model_name, variables)
    dataset_labels = splits.dataset_train_labels if config.train_labels else None
    metrics = evaluate_generation(plan.generation, splits, soft_labels, val_probs, test_probs, previous, taught,
                                  dataset_labels)
    metrics.update(unflipped)
    metrics.update(
        model=plan.model_name,
        trained_on=plan.trained_on,
        label_mode=plan.label_mode,
        train_seconds=stats["train_seconds"],
        images_per_second=stats["images_per_second"],
        overhead_seconds=stats["overhead_seconds"],
        epochs=stats["epochs"],
    )
    return Generation(
        generation=plan.generation, model_name=plan.model_name, trained_on=plan.trained_on,
        soft_labels=soft_labels, val_probs=val_probs, test_probs=test_probs, variables=variables, metrics=metrics,
    )


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
        variables=arrays["variables"], metrics=info["metrics"], reloaded=True,
    )


def reused_refinery(refinery_workdir: str, splits: Splits, log: Callable[[str], None] = print,
                    generation: Optional[int] = None) -> Generation:
    """Generation 1 taken from another run (`--refinery_workdir`): its finished generation `generation`
    (`--refinery_generation`; default its newest), which must have been trained on the same train/validation
    split. Its labels start this chain; it is not retrained."""
    workdir.check_same_data(refinery_workdir, splits)
    arrays, info = checkpoints.load_generation(refinery_workdir, generation)
    source_generation = info["metrics"]["generation"]
    reused = generation_from_saved(1, arrays, info)
    reused.trained_on = f"{info['trained_on']} (reused: {refinery_workdir} generation {source_generation})"
    reused.metrics = {**info["metrics"], "generation": 1, "trained_on": reused.trained_on,
                      "train_seconds": 0.0, "epochs": []}
    log(f"generation 1: reusing {info['model_name']} from {refinery_workdir} (its generation "
        f"{source_generation}) as the first refinery")
    return reused


def _train_and_save(context: ChainContext, plan: GenerationPlan, chain: list[Generation], store, workdir, log,
                    progress: bool, code: Optional[dict]) -> Generation:
    """Trains the planned generation (resuming its training checkpoint in `workdir`) and saves it into `store`."""
    config, chrono = context.config, loop.Chrono()
    checkpoint_dir = checkpoints.training_dir(workdir, plan.generation) if workdir else None
    try:
        result = run_generation(context, plan, chain, log=log, progress=progress, checkpoint_dir=checkpoint_dir,
                                chrono=chrono)
    except loop.NonFiniteLossError as error:
        raise loop.NonFiniteLossError(f"generation {plan.generation}: {error}") from None
    if code is not None:
        result.metrics["code"] = code
    if store is not None:
        with chrono.overhead("save_generation"):  # shows in result.metrics["overhead_seconds"], not in the save
            checkpoints.save_generation(store, plan.generation, generation_arrays(result),
                                        generation_info(result, config, context.splits))
    return result


def run_chain(
    config: Config,
    splits: Splits,
    log: Callable[[str], None] = print,
    progress: bool = True,
    workdir: Optional[str] = None,
    run: Optional[RunOptions] = None,
    code: Optional[dict] = None,
) -> Iterator[Generation]:
    """Yields generations 1 .. config.generations in order, each once it is finished (trained, or reloaded:
    `Generation.reloaded`); generation k+1 trains on generation k's labels (see generation.plan_generation).

    With `workdir`, each finished generation is saved under it (and reloaded instead of retrained on a rerun), and
    training checkpoints (every `run.checkpoint_every` steps) let an interrupted generation continue from its last
    one. `code` (provenance.run_provenance() of this invocation) goes into the metrics of each generation trained here,
    and is saved and reloaded with them: a resumed chain's rows name the code that finished each generation.
    A stop request (see lr_jax.interrupt) ends the chain with `interrupt.Interrupted`, naming the generation and
    step and how many generations were finished; before a generation starts, it ends it without training."""
    run = run or RunOptions()
    chain = []
    if config.refinery_workdir:
        chain.append(reused_refinery(config.refinery_workdir, splits, log, config.refinery_generation))
        yield chain[-1]
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
                plan = plan_generation(config, gen, chain, jax.device_count(), len(splits.train_images))
                log(f"generation {gen}/{config.generations}: training {plan.model_name} on {plan.describe_labels}")
                context = context or make_context(config, splits, run, workdir)
                result = _train_and_save(context, plan, chain, store, workdir, log, progress, code)
            chain.append(result)
            yield result
    except interrupt.Interrupted as stop:
        stop.generation, stop.finished = gen, len(chain)  # where it stopped, for its message
        raise
    finally:
        if store is not None:
            store.close()
