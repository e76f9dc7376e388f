"""Command lines: the report over run folders (`python -m lr_jax.report`, write_report, display_report) and a
design's headline (headline_main, behind `python -m lr_jax.experiments.part_two_table`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

from lr_jax import files, results
from lr_jax.analysis import designs, plots, tables
from lr_jax.analysis.plots import PLOTS
from lr_jax.analysis.stats import aggregate


def write_report(workdirs: Sequence[str], out: str, examples_workdir: Optional[str] = None,
                 reference: Optional[str] = None) -> dict[str, str]:
    """Tables and the plots (PLOTS) into `out`; returns {name: path}. Plot 3 shows `examples_workdir` (default:
    the first run, in the order given, that has labels_summary.npz); plots 3 and 4 are skipped when no run has one,
    plot 1 when no run has validation or test accuracy. Paired differences are against the configuration of run
    folder `reference` (default: the first configuration)."""
    report = aggregate(workdirs, reference)
    paths = tables.write_tables(report, out)
    if examples_workdir is None:
        examples_workdir = next(
            (w for w in workdirs if os.path.exists(os.path.join(w, results.LABELS_SUMMARY))), None)
    drawers = {
        "accuracy": lambda path: plots.plot_accuracy(report, path),
        "train_vs_test": lambda path: plots.plot_train_vs_test(report, path),
        "label_examples": lambda path: examples_workdir and plots.plot_label_examples(examples_workdir, path),
        "label_entropy": lambda path: plots.plot_label_entropy(report, path),
        "label_repair": lambda path: plots.plot_label_repair(report, path),
    }
    for name, draw in drawers.items():
        written = draw(os.path.join(out, f"{name}.png"))
        if written:
            paths[name] = written
    return paths


def display_report(paths: dict[str, str]) -> None:
    """In a notebook: shows the Markdown tables and the plots that write_report wrote."""
    from IPython.display import Image, Markdown, display

    with open(paths["markdown"]) as f:
        display(Markdown(f.read()))
    for name in PLOTS:
        if name in paths:
            display(Image(filename=paths[name]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lr_jax.report",
        description="Aggregates refinery runs (their --workdir folders) over seeds: per-generation tables and "
        "seed-paired differences with 95% confidence intervals (summary.md, summary.csv) and plots (accuracy.png, "
        "train_vs_test.png, label_examples.png, label_entropy.png). Runs whose settings differ only by --seed form "
        "one configuration.",
    )
    parser.add_argument("workdirs", nargs="+", help="run folders, each holding results.json")
    parser.add_argument("--out", required=True, help="folder for the tables and plots")
    parser.add_argument("--examples", default=None,
                        help="run folder whose labels_summary.npz is drawn in label_examples.png (default: the first)")
    parser.add_argument("--reference", default=None,
                        help="a run folder (one of those given) whose configuration is the reference of the paired "
                        "differences: other configurations' runs minus its generation 1 of the same seed (default: "
                        "the configuration of the first run folder)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> dict[str, str]:
    """Entry point: one-line errors for bad input instead of tracebacks."""
    args = build_parser().parse_args(argv)
    try:
        paths = write_report(args.workdirs, args.out, args.examples, args.reference)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


def headline_main(design: designs.Design, argv: Optional[Sequence[str]], prog: str, description: str,
                  root_help: str, preface: Optional[Callable[[str], str]] = None) -> str:
    """A design's headline: prints the Markdown table (designs.headline_cells, tables.headline_table), after
    `preface(root)` when given (further Markdown from the same root), and writes it with --out and the forest plot
    with --plot; one-line errors (exit status 2) for bad input."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help=root_help)
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--plot", help="also draw the differences (a forest plot) into this PNG file")
    parser.add_argument("--both_evaluations", action="store_true",
                        help="give every comparison flip-averaged and without flip averaging, one row each")
    args = parser.parse_args(argv)
    try:
        text = headline(design, args.root, args.both_evaluations, args.plot)
        if preface:
            text = f"{preface(args.root)}\n{text}"
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(text)
    if args.out:
        files.write_text_atomic(args.out, text + "\n")
    return text


def headline(design: designs.Design, root: str, both_evaluations: bool = False, plot: Optional[str] = None) -> str:
    """A design's headline table over the runs under `root` (designs.headline_cells, tables.headline_table), both
    evaluations or the comparisons' own; with `plot`, its forest plot drawn there. OSError or ValueError for bad
    input."""
    evaluations = designs.BOTH_EVALUATIONS if both_evaluations else None
    cells = designs.headline_cells(design, design.load_runs(root), evaluations)
    if plot:
        plots.forest_plot(design, cells, plot)
    return tables.headline_table(cells, design.column)
