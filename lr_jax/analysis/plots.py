"""Plots: figure helpers, the report's four plots (PLOTS) and the headline's forest plot of paired differences."""

from __future__ import annotations

import os
import textwrap
from typing import Optional, Sequence

import numpy as np

from lr_jax import files, results
from lr_jax.analysis import stats
from lr_jax.analysis.runs import ACCURACIES, Configuration, Report, held_out_key, load_label_summary

# <out>/<name>.png, in this order; label_repair only for runs on --train_labels
PLOTS = ("accuracy", "train_vs_test", "label_examples", "label_entropy", "label_repair")


# Plots (matplotlib's object interface: no pyplot, so no global backend is touched and notebooks keep theirs).


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(figure, path: str) -> str:
    """Saves a PNG atomically (temporary file, then rename)."""
    files.write_atomic(path, lambda f: figure.savefig(f, format="png"), binary=True)
    return path


def _series(configuration: Configuration, key: str, scale: float = 100.0):
    """(generations, means, stds), in % (or times `scale`), for the generations that have `key`."""
    rows = [row for row in configuration.rows if row.get(key) is not None]
    generations = [row["generation"] for row in rows]
    means = [scale * row[key].mean for row in rows]
    stds = [scale * (row[key].std or 0.0) for row in rows]
    return generations, means, stds


def _integer_ticks(axis, report: Report) -> None:
    generations = sorted({row["generation"] for c in report.configurations for row in c.rows})
    axis.set_xticks(generations)
    axis.set_xlabel("generation")


def plot_names(report: Report) -> tuple[str, list[str]]:
    """What the plots call each configuration: the parts of its label (runs.describe's, comma-separated) that not
    every configuration shares (its whole label where it has no other), and the parts all share, said once in the
    figure's title; with one configuration, its whole label and nothing shared."""
    labels = [configuration.label for configuration in report.configurations]
    parts = [label.split(", ") for label in labels]
    if len(parts) < 2:
        return "", labels
    shared = [part for part in parts[0] if all(part in other for other in parts[1:])]
    names = [", ".join(part for part in own if part not in shared) or label for own, label in zip(parts, labels)]
    return ", ".join(shared), names


def _title(text: str, shared: str) -> str:
    """A figure title, with the settings every configuration shares (plot_names) on a second line."""
    return text if not shared else f"{text}\n{textwrap.shorten(shared, 160)}"


def _wrap(name: str, width: int = 48) -> str:
    return textwrap.fill(name, width)


def _legend_below(figure, axis, count: int) -> None:
    """One legend for the whole figure, under its panels, with `axis`'s `count` entries."""
    figure.legend(*axis.get_legend_handles_labels(), loc="outside lower center", ncols=min(count, 2),
                  fontsize="small")


def _panel_grid(count: int, width: float, height: float, most_columns: int = 3):
    """A figure of `count` panels, at most `most_columns` a row; the grid's spare panels hidden."""
    columns = min(count, most_columns)
    rows = -(-count // columns)
    figure = new_figure(width * columns, height * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes[count:]:
        axis.set_visible(False)
    return figure, axes[:count]


def plot_accuracy(report: Report, path: str) -> Optional[str]:
    """Plot 1: validation and test accuracy (those present) per generation, mean ± std over seeds, one line per
    configuration. None (no file) when no run has either (--val_size 0 and no test split)."""
    panels = [(key, name) for key, name in ACCURACIES
              if any(row[key] is not None for c in report.configurations for row in c.rows)]
    if not panels:
        return None
    shared, names = plot_names(report)
    count = len(report.configurations)
    figure = new_figure(max(5.5 * len(panels), 8.0), 4.2 + 0.3 * -(-count // 2))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (key, name) in zip(axes, panels):
        for index, (configuration, label) in enumerate(zip(report.configurations, names)):
            generations, means, stds = _series(configuration, key)
            shift = 0.04 * (index - (count - 1) / 2)  # side by side, so overlapping error bars stay readable
            if generations:
                axis.errorbar(np.array(generations) + shift, means, yerr=stds, marker="o", capsize=4,
                              color=f"C{index}", label=_wrap(label, 60))
        axis.set_title(f"{name} accuracy")
        axis.set_ylabel(f"{name} accuracy (%)")
        _integer_ticks(axis, report)
        axis.grid(alpha=0.3)
    figure.suptitle(_title(f"{report.dataset}: held-out accuracy per generation (mean ± std over seeds)", shared))
    _legend_below(figure, axes[0], count)
    return save_figure(figure, path)


def plot_train_vs_test(report: Report, path: str) -> str:
    """Plot 2 (the paper's Figure 1): train and test (else validation) accuracy per generation side by side, one
    panel per configuration, the gap written above each pair."""
    shared, names = plot_names(report)
    figure, axes = _panel_grid(len(report.configurations), 4.8, 3.8)
    width = 0.38
    for axis, configuration, name in zip(axes, report.configurations, names):
        held_key = held_out_key(configuration)
        held_name = "test" if held_key == "test_accuracy" else "validation"
        train_x, train_mean, train_std = _series(configuration, "train_accuracy")
        held_x, held_mean, held_std = _series(configuration, held_key)
        error_style = dict(capsize=3, ecolor="dimgray")
        axis.bar(np.array(train_x) - width / 2, train_mean, width, yerr=train_std, label="train", error_kw=error_style)
        axis.bar(np.array(held_x) + width / 2, held_mean, width, yerr=held_std, label=held_name, error_kw=error_style)
        held = dict(zip(held_x, held_mean))
        for x, top in zip(train_x, train_mean):
            if x in held:
                axis.annotate(f"gap {top - held[x]:+.1f}", (x, max(top, held[x])), ha="center", va="bottom",
                              fontsize="x-small", xytext=(0, 6), textcoords="offset points")
        lows = [m - s for m, s in zip(train_mean + held_mean, train_std + held_std)]
        highs = [m + s for m, s in zip(train_mean + held_mean, train_std + held_std)]
        if lows:
            axis.set_ylim(max(0.0, min(lows) - 5.0), min(100.0, max(highs)) + 6.0)
        axis.set_title(_wrap(name), fontsize="small")
        axis.set_ylabel("accuracy (%)")
        _integer_ticks(axis, report)
    figure.suptitle(_title(f"{report.dataset}: train vs held-out accuracy", shared))
    _legend_below(figure, axes[0], 2)
    return save_figure(figure, path)


def plot_label_examples(workdir: str, path: str, count: int = 8, top: int = 3) -> str:
    """Plot 3 (the paper's Figure 4): `count` fixed training images of one run, each beside its top-`top` refined
    labels with probabilities at every generation; the label each image trained with (the dataset's, or
    --train_labels', which may be wrong) beside it and in green; where the summary has the dataset's own labels
    and that one differs, it is given under it and in blue."""
    summary = load_label_summary(workdir)
    images, labels, names = summary["images"], summary["labels"], [str(n) for n in summary["class_names"]]
    dataset_labels = summary.get("dataset_labels", labels)
    probs, generations = summary["probs"].astype(np.float32), summary["generations"]
    count = min(count, len(labels))
    figure = new_figure(1.3 + 1.75 * len(generations), 1.15 * count + 0.5)
    grid = figure.add_gridspec(count, 1 + len(generations), width_ratios=[1.0] + [1.5] * len(generations))
    for i in range(count):
        image_axis = figure.add_subplot(grid[i, 0])
        grey = images.shape[-1] == 1
        image_axis.imshow(images[i, :, :, 0] if grey else images[i], cmap="gray" if grey else None)
        image_axis.set_xticks([])
        image_axis.set_yticks([])
        given, own = int(labels[i]), int(dataset_labels[i])
        image_axis.set_ylabel(names[given] + ("" if own == given else f"\n(dataset: {names[own]})"),
                              fontsize="small")
        for j, generation in enumerate(generations):
            axis = figure.add_subplot(grid[i, 1 + j])
            axis.axis("off")
            if i == 0:
                axis.set_title(f"generation {int(generation)}", fontsize="small")
            order = np.argsort(-probs[j, i])[:top]
            for rank, c in enumerate(order):
                axis.text(0.02, 0.8 - 0.3 * rank, f"{names[c]} {probs[j, i, c]:.2f}", fontsize="small",
                          transform=axis.transAxes,
                          color="tab:green" if c == given else "tab:blue" if c == own else "black")
    replaced = "dataset_labels" in summary
    figure.suptitle("left, and green in the top 3: the label the image trained with\n(the dataset's, or "
                    "--train_labels', which may be wrong)"
                    + ("\nin brackets, and blue: the dataset's own label" if replaced else ""), fontsize="small")
    return save_figure(figure, path)


def plot_label_entropy(report: Report, path: str) -> Optional[str]:
    """Plot 4: the distribution of per-image label entropy per generation (violins), pooled over the seeds of each
    configuration; runs without labels_summary.npz are left out. None (no file) when no run has one."""
    shared, names = plot_names(report)
    pooled = []
    for configuration, name in zip(report.configurations, names):
        by_generation: dict[int, list[np.ndarray]] = {}
        for run in configuration.runs:
            if not os.path.exists(os.path.join(run.workdir, results.LABELS_SUMMARY)):
                continue
            summary = load_label_summary(run.workdir)
            for generation, entropies in zip(summary["generations"], summary["entropies"]):
                by_generation.setdefault(int(generation), []).append(entropies.astype(np.float32))
        if by_generation:
            pooled.append((name, {g: np.concatenate(v) for g, v in sorted(by_generation.items())}))
    if not pooled:
        return None
    figure, axes = _panel_grid(len(pooled), 4.8, 3.6)
    top = max(float(values.max()) for _, by_generation in pooled for values in by_generation.values())
    for axis, (label, by_generation) in zip(axes, pooled):
        generations = list(by_generation)
        axis.violinplot([by_generation[g] for g in generations], positions=generations, showmeans=True,
                        showextrema=True)
        axis.set_xticks(generations)
        axis.set_xlabel("generation")
        axis.set_title(_wrap(label), fontsize="small")
        axis.set_ylabel("label entropy (nats)")
        axis.set_ylim(0.0, 1.05 * top)  # one scale for every panel
        axis.grid(alpha=0.3, axis="y")
    figure.suptitle(_title(f"{report.dataset}: entropy of the training labels each generation produced", shared))
    return save_figure(figure, path)


def forest_panels(cells: Sequence) -> list[tuple]:
    """The forest plot's panels: (quantity, its cells in table order), one per quantity the cells hold, in order of
    first appearance, so that a fraction in % (the recovered fraction) gets its own axis beside the differences in
    points instead of one scale for both."""
    panels: dict = {}
    for cell in cells:
        panels.setdefault(cell.comparison.quantity, []).append(cell)
    return list(panels.items())


def forest_plot(design, cells: Sequence, path: str) -> str:
    """The headline of designs.headline_cells as a forest plot, a panel per quantity (forest_panels): per cell, the
    mean (paired difference in points, or the quantity in %) with its 95% interval and the per-seed values as
    crosses, one row per cell, top to bottom in table order, numbered and coloured by the comparison's design
    (Design.design_number); a line at 0."""
    panels = forest_panels(cells)
    figure = new_figure(12.0, 0.36 * len(cells) + 1.2 * len(panels))
    axes = figure.subplots(len(panels), 1, squeeze=False,
                           gridspec_kw={"height_ratios": [len(panel) for _, panel in panels]})[:, 0]
    for axis, (quantity, panel) in zip(axes, panels):
        for row, cell in enumerate(panel):
            summary = stats.difference(list(cell.values.values()))
            low, high = (summary.low, summary.high) if summary.low is not None else (summary.mean, summary.mean)
            axis.errorbar(100 * summary.mean, row, xerr=[[100 * (summary.mean - low)], [100 * (high - summary.mean)]],
                          fmt="o", color=f"C{design.design_number(cell.comparison) - 1}", capsize=3)
            axis.scatter([100 * v for v in cell.values.values()], [row] * len(cell.values), marker="x", s=14,
                         color="gray", zorder=3)
        axis.set_yticks(range(len(panel)))
        axis.set_yticklabels([f"{design.design_number(cell.comparison)}: {cell.comparison.text}"
                              f"{'' if cell.evaluation is None else ', ' + cell.evaluation}"
                              f"{'' if design.column else f', gen {cell.column}'}"
                              for cell in panel], fontsize="x-small")
        axis.invert_yaxis()
        axis.axvline(0, color="black", linewidth=0.8)
        scale = f"paired difference, {design.measure} points" if quantity.kind == "points" else (
            f"{quantity.name}, %")
        axis.set_xlabel(f"{scale}\n(dot and bar: mean and 95% interval; x: each seed)")
        axis.grid(axis="x", alpha=0.3)
    return save_figure(figure, path)


def plot_label_repair(report: Report, path: str) -> Optional[str]:
    """Plot 5, for runs on --train_labels: per generation, how its handed-on labels (its argmax on the un-augmented
    training images) compare with the dataset's labels, beside how well it fits the labels it was given
    (memorisation), and how many given labels it repaired and broke; mean ± std over seeds. None (no file) when no
    configuration has these metrics."""
    shown = [c for c in report.configurations if any(row.get("labels_repaired") for row in c.rows)
             or any(row.get("train_accuracy_dataset_labels") is not None for row in c.rows)]
    if not shown:
        return None
    from matplotlib.lines import Line2D

    shared, names = plot_names(report)
    figure = new_figure(12.0, 4.4 + 0.3 * -(-len(shown) // 2))
    accuracy_axis, count_axis = figure.subplots(1, 2)
    for configuration in shown:
        index = report.configurations.index(configuration)
        colour, name = f"C{index}", _wrap(names[index], 60)
        for key, style in (("train_accuracy_dataset_labels", "-"), ("train_accuracy", ":")):
            generations, means, stds = _series(configuration, key)
            accuracy_axis.errorbar(generations, means, yerr=stds, marker="o", linestyle=style, capsize=3,
                                   color=colour, label=name if style == "-" else None)
        for key, marker, style in (("labels_repaired", "^", "-"), ("labels_broken", "v", "--")):
            generations, means, stds = _series(configuration, key, scale=1.0)
            count_axis.errorbar(generations, means, yerr=stds, marker=marker, linestyle=style, capsize=3,
                                color=colour)
    accuracy_axis.set_ylabel("training images (%)")
    accuracy_axis.set_title("handed-on labels right (against the dataset's) and fit to the given labels",
                            fontsize="medium")
    count_axis.set_ylabel("training images")
    count_axis.set_title("given labels repaired and broken", fontsize="medium")
    keys = ((accuracy_axis, (("-", "o", "handed-on labels (argmax) = dataset's label"),
                             (":", "o", "fit to its given labels"))),
            (count_axis, (("-", "^", "wrong given labels repaired"), ("--", "v", "right given labels broken"))))
    for axis, entries in keys:
        _integer_ticks(axis, report)
        axis.grid(alpha=0.3)
        axis.legend(handles=[Line2D([], [], color="black", linestyle=style, marker=marker, label=text)
                             for style, marker, text in entries], fontsize="x-small")
    figure.suptitle(_title(f"{report.dataset}: the labels each generation hands on, mean ± std over seeds", shared))
    _legend_below(figure, accuracy_axis, len(shown))
    return save_figure(figure, path)
