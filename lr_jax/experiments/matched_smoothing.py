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
import sys

import jax
import numpy as np

from lr_jax import checkpoints, losses, run_data


def crop_label_entropy(predict, splits, config: dict, count: int, batch_size: int, seed: int) -> float:
    """Mean entropy of a model's softmax (`predict`, from run_data.generation_predictor) on `count` augmented crops
    (the training run's crops and flips) of training images, drawn with replacement by `seed`."""
    chosen = np.random.default_rng(seed).integers(0, len(splits.train_images), count)
    keys = jax.random.split(jax.random.PRNGKey(seed), count)
    crops = run_data.training_crops(splits.train_images, chosen, keys, config, batch_size)
    return float(np.mean(np.asarray(losses.label_entropy(predict(crops, splits.mean, splits.std, batch_size)))))


def matched_smoothing(run_dir: str, generation: int = 1, crops: int = 10000, batch_size: int = 256) -> dict:
    """{label_entropy_clean, label_entropy_crops, smoothing_clean, smoothing_crops, ...} for that generation."""
    run = run_data.reload_run(run_dir)
    splits = run.splits
    predict, info = run_data.generation_predictor(run_dir, generation, splits.num_classes)
    clean = float(np.mean(np.asarray(losses.label_entropy(info["arrays"]["soft_labels"]))))
    on_crops = crop_label_entropy(predict, splits, run.config, crops, batch_size, run.config["seed"])
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
