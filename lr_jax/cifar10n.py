"""CIFAR-10N command: `path,label` CSVs for an image-folder copy of CIFAR-10 from the release's CIFAR-10_human.pt."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Optional, Sequence

import numpy as np

from lr_jax.data.dataset import DataError
from lr_jax.data.formats import find_image_folder
from lr_jax.data.label_files import (
    LabelFileError, check_labels, image_folder_classes, noise_rate, official_index_paths, read_torch_arrays,
    select_array,
)

CLEAN_KEY = "clean_label"
ALL = "all"
USAGE = """Writes one row `path,label` per training image (paths relative to the image folder's root, in the official
order), for --train_labels. Example:
  python -m lr_jax.cifar10n --labels ../shared/data/cifar10n/CIFAR-10_human.pt --key worse_label \\
      --image_folder ../shared/data/cifar10-train-jpeg75.tar.gz --out worse_label.csv
With --key all, --out is a folder that receives <key>.csv for every label set in the file. Official index i with
clean label c is the k-th file (natural order) of train/<class c>/, k = the number of class-c images before i;
the mapping is checked against clean_label, and each set's noise rate against clean_label is printed."""


def folder_paths(image_folder: str, clean: np.ndarray) -> tuple[list[str], list[str]]:
    """(path of each official index, class folder names) for the image-folder tree `image_folder`."""
    tree, prefix = find_image_folder(image_folder, "--image_folder")
    classes = image_folder_classes(tree, prefix)
    paths = official_index_paths(clean, list(classes.values()), f"{tree.where(prefix.rstrip('/'))} with {CLEAN_KEY}")
    return paths, list(classes)


def verify_mapping(paths: Sequence[str], clean: np.ndarray, class_names: Sequence[str], where: str) -> None:
    """Every official index's path lies in the class folder of its clean label, and no path is used twice."""
    folders = np.asarray([path.split("/")[-2] for path in paths])
    wrong = np.flatnonzero(folders != np.asarray(class_names, object)[clean])
    if len(wrong):
        i = wrong[0]
        raise LabelFileError(f"{where}: {len(wrong)} official indices map outside their clean class, e.g. index {i} "
                             f"(clean {class_names[clean[i]]!r}) -> {paths[i]}")
    if len(set(paths)) != len(paths):
        raise LabelFileError(f"{where}: some files are mapped to more than one official index")


def write_label_csv(out: str, paths: Sequence[str], labels: np.ndarray) -> None:
    """`path,label` rows, one per image."""
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(zip(paths, labels.tolist()))


def export(labels_file: str, key: str, image_folder: str, out: str) -> list[str]:
    """Writes the CSV(s) (see USAGE) and returns the report lines: the mapping check and each set's noise rate."""
    arrays = read_torch_arrays(labels_file)
    if key != ALL:
        select_array(arrays, key, labels_file)  # a missing key is an error that lists the keys present
    keys = sorted(arrays) if key == ALL else [key]
    clean_array, where = select_array(arrays, CLEAN_KEY, labels_file)
    paths, class_names = folder_paths(image_folder, clean_array)
    clean = check_labels(clean_array, len(class_names), where)
    verify_mapping(paths, clean, class_names, image_folder)
    lines = [f"{image_folder}: {len(paths)} images in {len(class_names)} class folders; every official index maps "
             f"to a file of its {CLEAN_KEY} class"]
    if key == ALL:
        os.makedirs(out, exist_ok=True)
    for name in keys:
        labels = check_labels(arrays[name], len(class_names), f"{labels_file} [{name}]")
        if len(labels) != len(clean):
            raise LabelFileError(f"{labels_file} [{name}]: {len(labels)} labels but {len(clean)} {CLEAN_KEY}")
        target = os.path.join(out, f"{name}.csv") if key == ALL else out
        write_label_csv(target, paths, labels)
        wrong = int(np.sum(labels != clean))
        lines.append(f"{name}: {100 * noise_rate(labels, clean):.2f}% differ from {CLEAN_KEY} "
                     f"({wrong} of {len(labels)}) -> {target}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lr_jax.cifar10n", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", required=True, help="CIFAR-10_human.pt from the CIFAR-10N release")
    parser.add_argument("--key", required=True, help=f"label set, e.g. worse_label, aggre_label; '{ALL}': every set")
    parser.add_argument("--image_folder", required=True, help="image-folder tree train/<class>/<k>.jpg (or archive)")
    parser.add_argument("--out", required=True, help=f"CSV file to write (a folder with --key {ALL})")
    args = parser.parse_args(argv)
    try:
        lines = export(args.labels, args.key, args.image_folder, args.out)
    except (DataError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
