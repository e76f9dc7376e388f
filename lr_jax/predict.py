"""`python -m lr_jax.predict --workdir W [--generation K] [--format text|json|csv] <images or folders>`: a saved
generation's predictions for new .png/.jpg images.

Output (stdout):
  text (default)  a header line `generation K of W: top-3 classes of N image(s)`, then one line per image:
                  `path: class p, class p, class p` (its three most probable classes).
  json            one JSON document: a list with one object per image, in input order,
                  {"file": path, "label": int, "class_name": str, "confidence": float, "probs": [C floats]}.
  csv             a header `file,label,class_name,confidence,prob_0,...,prob_{C-1}` (the probability columns of
                  lr_jax.labels' export CSV), then one row per image.
  `label` is the most probable class (ties: the lower index), `confidence` its probability; probabilities are
  written so that they read back as the same float32 values. With json and csv, stdout holds only that
  document (the header line and notes go to stderr), so `... --format csv > out.csv` gives a clean file.

Images must have the training images' height and width (`image_shape` in the generation's info); they are not
resized, and an image of another size is refused with a message naming the file, its shape and the training
shape. Greyscale images given to a model trained on colour images are converted to RGB (each channel the grey
value), with a note on stderr naming them; colour images given to a model trained on greyscale images are
refused, with a message saying so (which colour-to-grey conversion fits is the user's call, not a guess made
here). Exit status 2 on bad input."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Callable, Optional, Sequence

import numpy as np

from lr_jax import checkpoints
from lr_jax.data import DataError
from lr_jax.data.image_folder import IMAGE_EXTENSIONS, decode_all, decode_image

TOP_K = 3
FORMATS = ("text", "json", "csv")
PROB_PREFIX = "prob_"  # as in lr_jax.labels.export_format and lr_jax.data.label_files
NAMED_IN_NOTE = 20  # the greyscale note names at most this many files, then counts the rest


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


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


def fit_image(array: np.ndarray, path: str, expected: tuple, trained: str) -> tuple[np.ndarray, bool]:
    """(the image in the training shape `expected`, whether it was converted from greyscale to RGB).

    `trained` names the generation ("generation K of W") for the messages. Never resizes."""
    if array.shape == expected:
        return array, False
    if array.shape[:2] != expected[:2]:
        raise DataError(f"{path}: image is {array.shape} (H, W, C) but {trained} was trained on {expected} images "
                        f"(images are not resized: resize it to {expected[0]}x{expected[1]} first)")
    if array.shape[2] == 1 and expected[2] == 3:
        return np.repeat(array, 3, axis=2), True
    if array.shape[2] == 3 and expected[2] == 1:
        raise DataError(f"{path}: image is {array.shape} (H, W, C), a colour image, but {trained} was trained on "
                        f"{expected} greyscale images; colour images are not converted to grey (which conversion "
                        f"fits the training images is not known here): convert it to greyscale first")
    raise DataError(f"{path}: image is {array.shape} (H, W, C) but {trained} was trained on {expected} images")


def load_images(files: Sequence[str], expected: tuple, trained: str) -> tuple[np.ndarray, list[str]]:
    """(N, *expected) uint8 images, and the files converted from greyscale to RGB; errors name the file and shapes.

    Tries the fast parallel decoder first (every image the same shape); where shapes differ or do not match
    `expected`, decodes file by file so each image is converted or refused on its own."""
    expected = tuple(expected)
    try:
        images = decode_all(files, lambda i: files[i])
    except DataError:
        images = None
    if images is not None and images.shape[1:] == expected:
        return images, []
    if images is not None and images.shape[1:] == (*expected[:2], 1) and expected[2] == 3:
        return np.repeat(images, 3, axis=3), list(files)
    out = np.empty((len(files), *expected), np.uint8)
    converted = []
    for i, path in enumerate(files):
        out[i], was_grey = fit_image(decode_image(path, path), path, expected, trained)
        if was_grey:
            converted.append(path)
    return out, converted


def greyscale_note(converted: Sequence[str], expected: tuple, trained: str) -> str:
    """The stderr note naming the greyscale images converted to RGB (the first NAMED_IN_NOTE, then a count)."""
    named = ", ".join(converted[:NAMED_IN_NOTE])
    rest = len(converted) - NAMED_IN_NOTE
    more = f", and {rest} more" if rest > 0 else ""
    return (f"note: converted {len(converted)} greyscale image(s) to RGB, as {trained} was trained on "
            f"{tuple(expected)} images: {named}{more}")


def predict_images(workdir: str, generation: Optional[int], paths: Sequence[str], batch_size: int = 256,
                   log: Callable[[str], None] = _stderr):
    """Decodes the images and runs saved generation `generation` (None: the newest) of the run in `workdir`.

    Greyscale images for a colour model are converted (a note goes to `log`). Returns (files, probs (N, C)
    float32, class_names, generation)."""
    from lr_jax.devices import make_predict, predict_probs, replicate
    from lr_jax.models import get_model
    from lr_jax.step import compute_dtype

    arrays, info = checkpoints.load_generation(workdir, generation)
    files = list_images(paths)
    expected = tuple(info["image_shape"])
    trained = f"generation {info['generation']} of {workdir}"
    images, converted = load_images(files, expected, trained)
    if converted:
        log(greyscale_note(converted, expected, trained))
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


def records(files: Sequence[str], probs: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """One dict per image: file, label (argmax, ties: the lower index), class_name, confidence, probs.

    Floats are the shortest decimals that read back as the same float32 values."""
    probs = np.asarray(probs, np.float32)
    rows = []
    for path, row in zip(files, probs):
        label = int(np.argmax(row))
        rows.append({"file": str(path), "label": label, "class_name": str(class_names[label]),
                     "confidence": float(str(row[label])), "probs": [float(str(p)) for p in row]})
    return rows


def json_text(files: Sequence[str], probs: np.ndarray, class_names: Sequence[str]) -> str:
    """The --format json document: a list of `records`."""
    return json.dumps(records(files, probs, class_names), indent=1) + "\n"


def write_csv(stream, files: Sequence[str], probs: np.ndarray, class_names: Sequence[str]) -> None:
    """The --format csv table: file,label,class_name,confidence,prob_0,...,prob_{C-1}."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["file", "label", "class_name", "confidence",
                     *(f"{PROB_PREFIX}{c}" for c in range(len(class_names)))])
    for row in records(files, probs, class_names):
        writer.writerow([row["file"], row["label"], row["class_name"], repr(row["confidence"]),
                         *(repr(p) for p in row["probs"])])


def write_output(output_format: str, header: str, files, probs, class_names) -> None:
    """Writes the predictions to stdout in `output_format`; the header line goes to stderr unless text."""
    if output_format == "text":
        print(header)
        for line in top_k_lines(files, probs, class_names):
            print(line)
        return
    _stderr(header)
    if output_format == "json":
        sys.stdout.write(json_text(files, probs, class_names))
    else:
        write_csv(sys.stdout, files, probs, class_names)
    sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lr_jax.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the --workdir of a refinery run")
    parser.add_argument("--generation", type=int, default=None, help="which generation (default: the newest saved)")
    parser.add_argument("--batch_size", type=int, default=256, help="images per prediction batch")
    parser.add_argument("--format", choices=FORMATS, default="text", dest="output_format",
                        help="text (default): top-3 classes per image; json: one JSON list of {file, label, "
                             "class_name, confidence, probs}; csv: file,label,class_name,confidence,prob_0,... "
                             "(json/csv: stdout holds only the document, notes go to stderr)")
    parser.add_argument("images", nargs="+", help="image files (.png/.jpg) or folders of them")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")
    try:
        files, probs, class_names, generation = predict_images(args.workdir, args.generation, args.images,
                                                               args.batch_size)
    except (DataError, checkpoints.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    header = f"generation {generation} of {args.workdir}: top-{TOP_K} classes of {len(files)} image(s)"
    if args.output_format != "text":
        header = f"generation {generation} of {args.workdir}: predictions for {len(files)} image(s)"
    write_output(args.output_format, header, files, probs, class_names)


if __name__ == "__main__":
    main()
