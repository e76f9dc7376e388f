"""The Label Refinery chain: an outer loop that trains fresh models, each on the labels the previous one predicted."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lr_jax import checkpoints, losses, train
from lr_jax.config import Config
from lr_jax.data import Splits
from lr_jax.models import get_model


@dataclasses.dataclass
class Generation:
    """What one generation trained on, what it produced, and how well it did."""

    generation: int
    model_name: str
    trained_on: str  # "ground truth" or "generation k" (the refinery that made its labels)
    targets: np.ndarray  # (num_train, C) label distributions it trained on (precomputed mode)
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


def evaluate_generation(
    gen: int, splits: Splits, soft_labels, val_probs, test_probs, previous: list[Generation]
) -> dict:
    """Per-generation metrics: accuracies, the train-minus-validation and train-minus-test gaps (None without
    that split), label statistics, the ensemble. `label_agreement`: how often the argmax of `soft_labels` (this
    generation's softmax on the un-augmented training images) equals the argmax of the labels it trained on:
    the ground truth for generation 1 (so it equals the train accuracy), else the previous generation's."""
    train_accuracy = accuracy(soft_labels, splits.train_labels)
    val_accuracy = accuracy(val_probs, splits.val_labels)
    test_accuracy = accuracy(test_probs, splits.test_labels)
    teacher_labels = np.argmax(previous[-1].soft_labels, -1) if previous else splits.train_labels
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


def run_generation(
    config: Config,
    splits: Splits,
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
    model_name = model_for_generation(config, gen)
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    model = get_model(model_name, splits.num_classes, dtype)
    init_key, train_key = jax.random.split(generation_key(config.seed, gen))
    steps_per_epoch = len(splits.train_images) // config.batch_size
    state = train.create_train_state(
        init_key, model, splits.train_images.shape[1:], train.make_optimizer(config, steps_per_epoch)
    )
    refinery, refinery_variables = None, None
    if previous:
        refinery = get_model(previous[-1].model_name, splits.num_classes, dtype)
        refinery_variables = previous[-1].variables
    state, stats = train.train_generation(
        state, model, config, splits.train_images, splits.train_labels, targets, splits.mean, splits.std,
        train_key, refinery=refinery, refinery_variables=refinery_variables, log=log, progress=progress,
        checkpoint_dir=checkpoint_dir,
    )
    variables = train.variables_of(state)
    replicated = train.replicate(variables)
    predict = lambda images: train.predict_probs(
        model, replicated, images, splits.mean, splits.std, config.eval_batch_size
    )
    soft_labels = predict(splits.train_images)
    val_probs = predict(splits.val_images)
    test_probs = None if splits.test_images is None else predict(splits.test_images)
    metrics = evaluate_generation(gen, splits, soft_labels, val_probs, test_probs, previous)
    metrics.update(
        model=model_name,
        trained_on="ground truth" if not previous else f"generation {previous[-1].generation}",
        label_mode=config.label_mode if previous else "ground truth",
        train_seconds=stats["train_seconds"],
        images_per_second=stats["images_per_second"],
        epochs=stats["epochs"],
    )
    return Generation(
        generation=gen, model_name=model_name, trained_on=metrics["trained_on"], targets=targets,
        soft_labels=soft_labels, val_probs=val_probs, test_probs=test_probs, variables=variables,
        metrics=metrics,
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


def generation_from_saved(gen: int, arrays: dict, info: dict, targets: np.ndarray) -> Generation:
    """A Generation rebuilt from its checkpoint (`targets`: the labels it was trained on, for the record)."""
    return Generation(
        generation=gen, model_name=info["model_name"], trained_on=info["trained_on"], targets=targets,
        soft_labels=arrays["soft_labels"], val_probs=arrays["val_probs"], test_probs=arrays.get("test_probs"),
        variables=arrays["variables"], metrics=info["metrics"],
    )


def reused_refinery(refinery_workdir: str, splits: Splits, log: Callable[[str], None] = print) -> Generation:
    """Generation 1 taken from another run (`--refinery_workdir`): its newest finished generation, which must
    have been trained on the same train/validation split. Its labels start this chain; it is not retrained."""
    checkpoints.check_same_data(refinery_workdir, splits)
    arrays, info = checkpoints.load_generation(refinery_workdir)
    source_generation = info["metrics"]["generation"]
    reused = generation_from_saved(1, arrays, info, targets=arrays["soft_labels"])
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
) -> list[Generation]:
    """Runs generations len(finished)+1 .. config.generations; generation k+1 trains on generation k's labels.

    The label array is an explicit value threaded through the loop: `targets` for the next generation is the
    `soft_labels` array this generation predicted on the un-augmented training images. With `workdir`, each
    finished generation is saved under it (and reloaded instead of retrained on a rerun), and training
    checkpoints let an interrupted generation continue from its last saved step."""
    chain = list(finished or [])
    if not chain and config.refinery_workdir:
        chain = [reused_refinery(config.refinery_workdir, splits, log)]
    targets = chain[-1].soft_labels if chain else ground_truth_targets(splits, config)
    store = checkpoints.open_manager(checkpoints.finished_dir(workdir)) if workdir else None
    try:
        for gen in range(len(chain) + 1, config.generations + 1):
            saved = checkpoints.restore_generation(store, gen, log) if store is not None else None
            if saved is not None:
                result = generation_from_saved(gen, *saved, targets)
                log(f"generation {gen}/{config.generations}: reloaded from {store.directory}/{gen} (not retrained)")
            else:
                log(f"generation {gen}/{config.generations}: training {model_for_generation(config, gen)} on "
                    f"{'ground truth' if not chain else 'labels of generation ' + str(chain[-1].generation)}")
                checkpoint_dir = checkpoints.training_dir(workdir, gen) if workdir else None
                try:
                    result = run_generation(config, splits, gen, targets, chain, log=log, progress=progress,
                                            checkpoint_dir=checkpoint_dir)
                except train.NonFiniteLossError as error:
                    raise train.NonFiniteLossError(f"generation {gen}: {error}") from None
                if store is not None:
                    checkpoints.save_generation(store, gen, generation_arrays(result),
                                                generation_info(result, config, splits))
            chain.append(result)
            if on_generation is not None and saved is None:
                on_generation(result, chain)
            targets = result.soft_labels
    finally:
        if store is not None:
            store.close()
    return chain
