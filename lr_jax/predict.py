"""`python -m lr_jax.predict --workdir W --generation K <images or folders>`: a saved generation's top-3 classes."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

from lr_jax import checkpoints
from lr_jax.data import DataError
from lr_jax.data.image_folder import IMAGE_EXTENSIONS, decode_all

TOP_K = 3


def list_images(paths: Sequence[str]) -> list[str]:
    """Image files as given, and every .png/.jpg under each folder (recursively, sorted); errors name the path."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise DataError(f"{path}: no .png/.jpg images in this folder")
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def predict_images(workdir: str, generation: Optional[int], paths: Sequence[str], batch_size: int = 256):
    """Decodes the images and runs saved generation `generation` (None: the newest) of the run in `workdir`.

    Returns (files, probs (N, C) float32, class_names, generation)."""
    from lr_jax.devices import make_predict, predict_probs, replicate
    from lr_jax.models import get_model
    from lr_jax.step import compute_dtype

    arrays, info = checkpoints.load_generation(workdir, generation)
    files = list_images(paths)
    images = decode_all(files, lambda i: files[i])
    expected = tuple(info["image_shape"])
    if images.shape[1:] != expected:
        raise DataError(
            f"{files[0]}: image is {images.shape[1:]} (H, W, C) but generation {info['generation']} of {workdir} "
            f"was trained on {expected} images"
        )
    model = get_model(info["model_name"], info["num_classes"], compute_dtype(info["dtype"]))
    variables = replicate(arrays["variables"])
    mean, std = np.asarray(info["mean"], np.float32), np.asarray(info["std"], np.float32)
    probs = predict_probs(make_predict(model), variables, images, mean, std, batch_size)
    return files, probs, list(info["class_names"]), info["generation"]


def top_k_lines(files: Sequence[str], probs: np.ndarray, class_names: Sequence[str], k: int = TOP_K) -> list[str]:
    """One line per image: its path, then the k most probable classes with their probabilities."""
    lines = []
    for path, row in zip(files, probs):
        best = np.argsort(-row, kind="stable")[:k]
        lines.append(f"{path}: " + ", ".join(f"{class_names[i]} {row[i]:.3f}" for i in best))
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lr_jax.predict", description=__doc__)
    parser.add_argument("--workdir", required=True, help="the --workdir of a refinery run")
    parser.add_argument("--generation", type=int, default=None, help="which generation (default: the newest saved)")
    parser.add_argument("--batch_size", type=int, default=256, help="images per prediction batch")
    parser.add_argument("images", nargs="+", help="image files (.png/.jpg) or folders of them")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")
    try:
        files, probs, class_names, generation = predict_images(args.workdir, args.generation, args.images,
                                                               args.batch_size)
    except (DataError, checkpoints.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"generation {generation} of {args.workdir}: top-{TOP_K} classes of {len(files)} image(s)")
    for line in top_k_lines(files, probs, class_names):
        print(line)


if __name__ == "__main__":
    main()
