"""The paper's mechanism, measured: a refinery's label confidence and entropy against a random-resized crop's area.

    python -m lr_jax.experiments.crop_confidence RUN_DIR --out DIR [--generation K] [--crop_scale 0.08,1]
        [--crop_ratio 0.75,1.3333] [--crops 20000] [--bins 10] [--sheet 32]

draws `--crops` random-resized crops (torchvision's rule, as `--crop random_resized` trains with) of randomly chosen
training images of RUN_DIR's split, lets generation K (default 1: the refinery trained on the given labels) label
each, and bins them by the crop's area fraction. Writes DIR/crop_confidence.json (per bin: crops, mean confidence
= the refinery's top probability, mean entropy, mean probability of the image's label, how often the refinery's
top class is that label), DIR/crop_confidence.png (those against area), and DIR/crop_sheet.png: crops from small
to large with the image's label and the refinery's label and confidence. Where ground truth is wrong for a crop
that lost the object, the refinery's label should be less confident and less often the ground truth.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import jax
import numpy as np

from lr_jax import augment, checkpoints, files, losses, provenance, run_data
from lr_jax.config import parse_range
from lr_jax.data import DataError
from lr_jax.analysis import plots
from lr_jax.labels import sheet

BATCH = 512


def draw_crops(images: np.ndarray, count: int, scale, ratio, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(which image, uint8 crops (count, H, W, C), area fractions) for `count` crops drawn with replacement."""
    chosen = np.random.default_rng(seed).integers(0, len(images), count)
    keys = jax.random.split(jax.random.PRNGKey(seed), count)
    crop = jax.jit(lambda pixels, keys: augment.random_resized_crop_with_areas(
        augment.to_unit_float(pixels), keys, scale, ratio, flip=False))
    crops, areas = [], []
    for start in range(0, count, BATCH):
        pixels, area = crop(images[chosen[start:start + BATCH]], keys[start:start + BATCH])
        crops.append(np.asarray(np.round(np.asarray(pixels) * 255.0), np.uint8))
        areas.append(np.asarray(area))
    return chosen, np.concatenate(crops), np.concatenate(areas)


def bin_by_area(areas: np.ndarray, probs: np.ndarray, labels: np.ndarray, edges: np.ndarray) -> list[dict]:
    """Per area bin [edges[i], edges[i+1]): crops, mean confidence, entropy, p(label) and top-1 agreement."""
    entropy = np.asarray(losses.label_entropy(probs))
    confidence = probs.max(axis=1)
    p_label = probs[np.arange(len(labels)), labels]
    agrees = np.argmax(probs, axis=1) == labels
    which = np.clip(np.digitize(areas, edges) - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        inside = which == b
        mean = lambda values: float(np.mean(values[inside])) if inside.any() else None
        rows.append({"area_low": float(edges[b]), "area_high": float(edges[b + 1]), "crops": int(inside.sum()),
                     "confidence": mean(confidence), "entropy": mean(entropy), "p_label": mean(p_label),
                     "top1_is_label": mean(agrees)})
    return rows


def plot_bins(rows: list[dict], path: str, title: str) -> str:
    """Confidence, p(label) and top-1 agreement (left axis) and entropy (right) against the bins' centres."""
    kept = [row for row in rows if row["crops"]]
    centres = [(row["area_low"] + row["area_high"]) / 2 for row in kept]
    figure = plots.new_figure(6.4, 4.0)
    axis = figure.add_subplot()
    for key, label in (("confidence", "refinery's top probability"), ("p_label", "refinery's p(image's label)"),
                       ("top1_is_label", "top-1 = image's label")):
        axis.plot(centres, [row[key] for row in kept], marker="o", label=label)
    axis.set_xlabel("crop area / image area")
    axis.set_ylabel("mean over crops")
    axis.set_ylim(0, 1)
    right = axis.twinx()
    right.plot(centres, [row["entropy"] for row in kept], marker="s", color="grey", linestyle="--",
               label="label entropy (nats, right)")
    right.set_ylabel("label entropy (nats)")
    handles = axis.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    axis.legend(handles=handles, loc="lower right", fontsize=8)
    axis.set_title(title, fontsize=9)
    return plots.save_figure(figure, path)


def crop_sheet(crops, areas, probs, labels, class_names, path: str, count: int) -> str:
    """`count` crops at evenly spaced area ranks, smallest first, with the image's label and the refinery's."""
    picked = np.argsort(areas, kind="stable")[np.linspace(0, len(areas) - 1, count).astype(int)]
    captions = [f"area {areas[i]:.2f}, label: {class_names[labels[i]]}\n"
                f"refinery: {class_names[int(np.argmax(probs[i]))]} {probs[i].max():.2f}" for i in picked]
    return sheet.contact_sheet(crops[picked], captions, path, columns=8,
                               title="random-resized crops (smallest first): image's label and refinery's label")


def measure(run_dir: str, out: str, generation: Optional[int] = 1, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
            crops: int = 20000, bins: int = 10, sheet_size: int = 32) -> dict:
    """Writes out/crop_confidence.{json,png} and out/crop_sheet.png; returns the JSON document."""
    run = run_data.reload_run(run_dir)
    splits = run.splits
    predict, info = run_data.generation_predictor(run_dir, generation, splits.num_classes)
    chosen, crop_images, areas = draw_crops(splits.train_images, crops, scale, ratio, int(run.config["seed"]))
    probs = predict(crop_images, splits.mean, splits.std)
    labels = np.asarray(splits.train_labels)[chosen]
    edges = np.linspace(scale[0], scale[1], bins + 1)
    rows = bin_by_area(areas, probs, labels, edges)
    os.makedirs(out, exist_ok=True)
    document = {"run": os.path.basename(os.path.normpath(run_dir)), "generation": info["metrics"]["generation"],
                "model": info["model_name"], "crop_scale": list(scale), "crop_ratio": list(ratio), "crops": crops,
                "labels": "the labels the run trained on (the dataset's, or --train_labels')", "bins": rows,
                "code": provenance.code_version()}
    files.write_json_atomic(os.path.join(out, "crop_confidence.json"), document)
    title = (f"{document['run']} generation {document['generation']} ({info['model_name']}) on {crops} crops, "
             f"scale {scale[0]:g}-{scale[1]:g}")
    plot_bins(rows, os.path.join(out, "crop_confidence.png"), title)
    crop_sheet(crop_images, areas, probs, labels, splits.class_names, os.path.join(out, "crop_sheet.png"), sheet_size)
    return document


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lr_jax.experiments.crop_confidence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run's --workdir (results.json and its saved generations)")
    parser.add_argument("--out", required=True, help="folder for crop_confidence.json/.png and crop_sheet.png")
    parser.add_argument("--generation", type=int, default=1, help="the refinery generation (default 1)")
    parser.add_argument("--crop_scale", default="0.08,1", help="area fractions MIN,MAX (default 0.08,1)")
    parser.add_argument("--crop_ratio", default="0.75,1.3333333", help="aspect ratios MIN,MAX (default 3/4,4/3)")
    parser.add_argument("--crops", type=int, default=20000, help="crops to draw (default 20000)")
    parser.add_argument("--bins", type=int, default=10, help="area bins (default 10)")
    parser.add_argument("--sheet", type=int, default=32, help="crops on the contact sheet (default 32)")
    args = parser.parse_args(argv)
    try:
        scale, ratio = parse_range(args.crop_scale, "--crop_scale"), parse_range(args.crop_ratio, "--crop_ratio")
        if scale[1] > 1:
            raise ValueError(f"--crop_scale {args.crop_scale!r}: a crop's area cannot exceed the image's (MAX <= 1)")
        for flag, value in (("--crops", args.crops), ("--bins", args.bins), ("--sheet", args.sheet)):
            if value < 1:
                raise ValueError(f"{flag} must be at least 1, got {value}")
    except ValueError as error:
        parser.error(str(error))
    try:
        document = measure(args.run_dir, args.out, args.generation, scale, ratio, args.crops, args.bins, args.sheet)
    except (checkpoints.CheckpointError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(json.dumps(document["bins"]))


if __name__ == "__main__":
    main()
