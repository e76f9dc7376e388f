"""Contact sheets: a PNG grid of (suspect) training images, each upscaled without smoothing and captioned."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from lr_jax.analysis.plots import new_figure, save_figure
from lr_jax.labels import checks

CELL_INCHES = 1.5  # width and image height of one grid cell (150 pixels at the figures' 100 dpi)
LINE_INCHES = 0.16  # height of one caption line
TITLE_INCHES = 0.35  # height of the title, when there is one
SHOWN_PIXELS = 128  # images are repeated to about this many pixels a side (32x32 CIFAR images: 4x)
CAPTION_POINTS = 7


def suspect_captions(indices, given, probs, class_names: Sequence[str]) -> list[str]:
    """One caption per index: '#123 given: cat' over 'refinery: dog 0.93' (the refinery's top class and its
    probability)."""
    probs, given = checks.probs_and_labels(probs, given)
    captions = []
    for i in np.asarray(indices, np.int64):
        top = int(np.argmax(probs[i]))
        captions.append(f"#{i} given: {class_names[given[i]]}\nrefinery: {class_names[top]} {probs[i, top]:.2f}")
    return captions


def _check_images(images, captions: Sequence[str]) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
        raise checks.LabelsError(f"contact sheet images must be uint8 (M, H, W, 1 or 3), got {images.dtype} "
                                 f"{images.shape}")
    if not len(images):
        raise checks.LabelsError("a contact sheet needs at least one image; got 0 (nothing was selected)")
    if len(captions) != len(images):
        raise checks.LabelsError(f"{len(images)} images but {len(captions)} captions")
    return images


def sheet_inches(count: int, columns: int, caption_lines: int, title: bool) -> tuple[float, float]:
    """(width, height) in inches of a sheet of `count` images: min(count, columns) cells across."""
    rows = math.ceil(count / columns)
    height = rows * (CELL_INCHES + LINE_INCHES * caption_lines) + (TITLE_INCHES if title else 0.0)
    return min(count, columns) * CELL_INCHES, height


def contact_sheet(images, captions: Sequence[str], path: str, columns: int = 8, title: Optional[str] = None) -> str:
    """Writes a PNG grid of `images` (uint8 (M, H, W, C), C 1 for greyscale or 3), `columns` across, each over its
    caption (one string per image, lines split on '\\n'), atomically; returns `path`."""
    images = _check_images(images, captions)
    if not isinstance(columns, int) or isinstance(columns, bool) or columns < 1:
        raise checks.LabelsError(f"columns must be a positive whole number, got {columns!r}")
    if not str(path).lower().endswith(".png"):
        raise checks.LabelsError(f"{path}: a contact sheet is a PNG; name it <name>.png")
    lines = max(len(str(caption).split("\n")) for caption in captions)
    figure = new_figure(*sheet_inches(len(images), columns, lines, title is not None))
    scale = max(1, math.ceil(SHOWN_PIXELS / max(images.shape[1:3])))
    grid = figure.add_gridspec(math.ceil(len(images) / columns), min(len(images), columns))
    for number, (image, caption) in enumerate(zip(images, captions)):
        axis = figure.add_subplot(grid[number // columns, number % columns])
        shown = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
        if shown.shape[-1] == 1:
            axis.imshow(shown[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            axis.imshow(shown, interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel(str(caption), fontsize=CAPTION_POINTS, linespacing=1.1)
    if title is not None:
        figure.suptitle(title, fontsize="medium")
    return save_figure(figure, path)
