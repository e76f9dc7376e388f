"""The entropy-matched label-smoothing control: the smoothing whose targets carry a refinery's mean label entropy.

    python -m lr_jax.experiments.matched_smoothing RUN_DIR [--generation K] [--crops N]

reads generation K (default 1) of the run in RUN_DIR, measures the mean entropy of its labels on the
un-augmented training images (what precomputed labels train on) and on N augmented crops of them (what online
labels train on: each crop labelled by the frozen refinery), and prints one JSON line with both and the label
smoothing that matches each. Scripts take `smoothing_crops` for online chains, `smoothing_clean` otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

from lr_jax import augment, checkpoints, losses
from lr_jax.data import load_dataset, make_splits
from lr_jax.devices import make_predict, predict_probs, replicate
from lr_jax.models import get_model


def crop_label_entropy(predict_fn, variables, splits, config: dict, count: int, batch_size: int, seed: int) -> float:
    """Mean entropy of the model's softmax on `count` augmented crops (the training run's padding and flips) of
    training images, drawn with replacement by `seed`."""
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(splits.train_images), count)
    keys = jax.random.split(jax.random.PRNGKey(seed), count)
    crop = jax.jit(lambda pixels, keys: augment.random_crop_flip(pixels, keys, config["crop_padding"], config["flip"]))
    crops = np.concatenate([np.asarray(crop(splits.train_images[chosen[i:i + batch_size]], keys[i:i + batch_size]))
                            for i in range(0, count, batch_size)])
    probs = predict_probs(predict_fn, variables, crops, splits.mean, splits.std, batch_size)
    return float(np.mean(np.asarray(losses.label_entropy(probs))))


def matched_smoothing(run_dir: str, generation: int = 1, crops: int = 10000, batch_size: int = 256) -> dict:
    """{label_entropy_clean, label_entropy_crops, smoothing_clean, smoothing_crops, ...} for that generation."""
    path = os.path.join(run_dir, "results.json")
    try:
        with open(path) as f:
            payload = json.load(f)
        config, run = payload["config"], payload["run"]
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit(f"error: {path}: cannot read the run's config and run options ({error})")
    arrays, info = checkpoints.load_generation(run_dir, generation)
    data = load_dataset(config["dataset"], run.get("data_dir"), svhn_extra=config.get("svhn_extra", False),
                        cache_dir=run.get("cache_dir"), tfds_data_dir=run.get("tfds_data_dir"))
    splits = make_splits(data, config["val_size"], config["train_size"], config["seed"])
    checkpoints.check_same_data(run_dir, splits)
    predict_fn = make_predict(get_model(info["model_name"], splits.num_classes))
    variables = replicate(arrays["variables"])
    clean = float(np.mean(np.asarray(losses.label_entropy(arrays["soft_labels"]))))
    on_crops = crop_label_entropy(predict_fn, variables, splits, config, crops, batch_size, config["seed"])
    return {
        "generation": generation,
        "model": info["model_name"],
        "crops": crops,
        "label_entropy_clean": clean,
        "label_entropy_crops": on_crops,
        "smoothing_clean": losses.smoothing_for_entropy(clean, splits.num_classes),
        "smoothing_crops": losses.smoothing_for_entropy(on_crops, splits.num_classes),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lr_jax.experiments.matched_smoothing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run's --workdir (results.json and its saved generations)")
    parser.add_argument("--generation", type=int, default=1, help="the refinery generation (default 1)")
    parser.add_argument("--crops", type=int, default=10000, help="augmented crops to label (default 10000)")
    args = parser.parse_args(argv)
    if args.crops < 1:
        parser.error(f"--crops must be at least 1, got {args.crops}")
    try:
        print(json.dumps(matched_smoothing(args.run_dir, args.generation, args.crops)))
    except checkpoints.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
