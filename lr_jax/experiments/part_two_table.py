"""Part two's headline table: every design's paired differences against its controls, with 95% intervals.

    python -m lr_jax.experiments.part_two_table ROOT [--out FILE] [--plot PNG]

ROOT holds experiments/part_two.sh's designs, either as it wrote them (ROOT/online, ROOT/stronger,
ROOT/converged) or as experiments/collect_part_two.sh copied them (ROOT/part_two_online, ...). Each line
subtracts, seed by seed, a partner run with the same seed and data (so the same validation split and, for the
same generation, the same initialisation and data order), then gives the mean over seeds, its 95% Student-t
interval (lr_jax.report.difference) and the per-seed differences. Prints the markdown table (and writes it to
FILE with --out; with --plot, draws the same differences as a forest plot).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import NamedTuple, Optional

from lr_jax import report, results

DESIGNS = ("online", "stronger", "converged")
FLIP, NO_FLIP = "val_accuracy", "val_accuracy_no_flip"
ENSEMBLE = "ensemble_val_accuracy"


class Line(NamedTuple):
    """One table row: `run`'s metric `key` minus `partner`'s (runs are 'design/name', e.g. 'online/online'; the
    seed is appended), per cell (column, run's generation, partner's generation); LAST as the partner's generation
    is its configured last one, shown in that generation's column."""

    design: str
    text: str
    run: str
    partner: str
    cells: tuple[tuple[int, int, int], ...]
    key: str = FLIP

    @property
    def design_number(self) -> int:
        """1, 2 or 3: the position in DESIGNS of the design folder that `run` lives in."""
        return DESIGNS.index(self.run.split("/")[0]) + 1


LAST = 0
SAME_GENERATION = ((2, 2, 2), (3, 3, 3))  # generation k against the partner's generation k


def lines() -> list[Line]:
    """The headline's comparisons, design by design (experiments/README.md, Part two, explains each control)."""
    chain, truth = "online/online", "online/ground_truth"
    converged, converged_truth = "converged/online", "converged/ground_truth"
    return [
        Line("1. online labels, `cpu` preset", "online chain minus independent ground-truth models", chain, truth,
             SAME_GENERATION),
        Line("1", "ensemble of the chain's generations minus ensemble of as many ground-truth models", chain, truth,
             SAME_GENERATION, key=ENSEMBLE),
        Line("1", "entropy-matched label smoothing minus ground truth", "online/matched_smoothing", truth,
             ((1, 1, 1),)),
        Line("1", "distillation (T = 4, ground-truth weight 0.5) minus ground-truth model 2", "online/distillation",
             truth, ((2, 2, 2),)),
        Line("1", "distillation minus the online chain's generation 2", "online/distillation", chain, ((2, 2, 2),)),
        Line("1", "compute-matched ground truth (3 x the epochs) minus ground truth", "online/compute_matched",
             truth, ((1, 1, 1),)),
        Line("1", "compute-matched ground truth minus the chain's last generation (same SGD steps)",
             "online/compute_matched", chain, ((LAST, 1, LAST),)),
        Line("2. stronger refinery (design 1's compute-matched model)", "teacher minus ground-truth generation 1",
             "stronger/online", truth, ((1, 1, 1),)),
        Line("2", "online student minus ground-truth model 2", "stronger/online", truth, ((2, 2, 2),)),
        Line("2", "online student minus ground-truth generation 1", "stronger/online", truth, ((2, 2, 1),)),
        Line("3. converged teacher (5,000 images, 60 epochs)", "online chain minus independent ground-truth models",
             converged, converged_truth, SAME_GENERATION),
        Line("3", "online chain minus ground-truth models, without flip averaging", converged, converged_truth,
             SAME_GENERATION, key=NO_FLIP),
        Line("3", "ensemble of generations minus ensemble of ground-truth models", converged, converged_truth,
             SAME_GENERATION, key=ENSEMBLE),
    ]


def design_dir(root: str, design: str) -> str:
    """ROOT/part_two_<design> (collected) if it exists, else ROOT/<design> (part_two.sh's layout)."""
    collected = os.path.join(root, f"part_two_{design}")
    return collected if os.path.isdir(collected) else os.path.join(root, design)


def load_runs(root: str) -> dict[tuple[str, int], report.Run]:
    """{('design/name', seed): Run} for every run folder <name>_seed<S> with a results.json under ROOT's designs."""
    runs = {}
    for design in DESIGNS:
        folder = design_dir(root, design)
        if not os.path.isdir(folder):
            continue
        for entry in sorted(os.listdir(folder)):
            match = re.fullmatch(r"(.+)_seed(\d+)", entry)
            if match and os.path.exists(os.path.join(folder, entry, "results.json")):
                runs[(f"{design}/{match.group(1)}", int(match.group(2)))] = report.load_run(os.path.join(folder, entry))
    if not runs:
        raise FileNotFoundError(f"{root}: no run folders <name>_seed<S> with results.json under "
                                f"{', '.join(DESIGNS)} or part_two_<design>")
    return runs


def metric(run: report.Run, generation: int, key: str) -> Optional[float]:
    """The run's `key` at `generation`, None where the run has not finished it."""
    row = next((r for r in run.payload["generations"] if r["generation"] == generation), None)
    return None if row is None else row.get(key)


def per_seed(runs: dict, line: Line, generation: int, partner_generation: int) -> dict[int, dict[int, float]]:
    """{column: {seed: difference}} over the seeds where both runs have their generation (the column is the
    partner's generation); a partner with other data is an error (it would not be a pair)."""
    out: dict[int, dict[int, float]] = {}
    for (name, seed), run in sorted(runs.items(), key=lambda item: item[0][1]):
        partner = runs.get((line.partner, seed))
        if name != line.run or partner is None:
            continue
        if report.pairing_of(run) != report.pairing_of(partner):
            raise ValueError(f"{run.workdir} and {partner.workdir}: not a pair (seed or data differ: "
                             f"{report.pairing_of(run)} against {report.pairing_of(partner)})")
        compared = partner_generation or partner.payload["config"]["generations"]
        value, base = metric(run, generation, line.key), metric(partner, compared, line.key)
        if value is not None and base is not None:
            out.setdefault(compared, {})[seed] = value - base
    return out


class Cell(NamedTuple):
    """One filled cell: the Line, its generation column and {seed: difference}."""

    line: Line
    column: int
    values: dict[int, float]


def cells_of(runs: dict) -> list[Cell]:
    """Every Line's cells that have at least one pair, in the order of lines()."""
    return [Cell(line, column or compared, values)
            for line in lines() for column, generation, partner_generation in line.cells
            for compared, values in per_seed(runs, line, generation, partner_generation).items()]


def table(cells: list[Cell]) -> str:
    """The markdown table: one row per Line with data, generations as columns (mean [95% interval] (pairs)), then
    each cell's per-seed differences."""
    columns = max([3] + [cell.column for cell in cells])
    rows = ["| design | comparison | " + " | ".join(f"gen {g}" for g in range(1, columns + 1))
            + " | per seed (seed: points) |", "|---|---|" + "---|" * columns + "---|"]
    by_line: dict[Line, list[Cell]] = {}
    for cell in cells:
        by_line.setdefault(cell.line, []).append(cell)
    for line, filled in by_line.items():
        texts, seeds = ["-"] * columns, []
        for cell in filled:
            texts[cell.column - 1] = report.format_difference(report.difference(list(cell.values.values())))
            listed = ", ".join(f"{seed}: {results.format_metric(v, 'points')}" for seed, v in cell.values.items())
            seeds.append(f"gen {cell.column}: {listed}" if len(line.cells) > 1 else listed)
        rows.append(f"| {line.design} | {line.text} | " + " | ".join(texts) + f" | {'; '.join(seeds)} |")
    return "\n".join(rows)


def plot(cells: list[Cell], path: str) -> str:
    """A forest plot: per cell, the mean paired difference (points) with its 95% interval and the per-seed
    differences as dots, one row per cell, top to bottom in table order; a line at 0."""
    figure = report.new_figure(12.0, 0.36 * len(cells) + 1.2)
    axis = figure.subplots()
    for row, cell in enumerate(cells):
        summary = report.difference(list(cell.values.values()))
        low, high = (summary.low, summary.high) if summary.low is not None else (summary.mean, summary.mean)
        axis.errorbar(100 * summary.mean, row, xerr=[[100 * (summary.mean - low)], [100 * (high - summary.mean)]],
                      fmt="o", color=f"C{cell.line.design_number - 1}", capsize=3)
        axis.scatter([100 * v for v in cell.values.values()], [row] * len(cell.values), marker="x", s=14,
                     color="gray", zorder=3)
    axis.set_yticks(range(len(cells)))
    axis.set_yticklabels([f"{cell.line.design_number}: {cell.line.text}, gen {cell.column}"
                          for cell in cells], fontsize="x-small")
    axis.invert_yaxis()
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_xlabel("paired difference, validation accuracy points\n(dot and bar: mean and 95% interval; x: each seed)")
    axis.grid(axis="x", alpha=0.3)
    return report.save_figure(figure, path)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(prog="python -m lr_jax.experiments.part_two_table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="part_two.sh's RUNS_ROOT, or collect_part_two.sh's DEST_ROOT")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--plot", help="also draw the differences (a forest plot) into this PNG file")
    args = parser.parse_args(argv)
    try:
        cells = cells_of(load_runs(args.root))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    text = table(cells)
    print(text)
    if args.out:
        results.write_text_atomic(args.out, text + "\n")
    if args.plot:
        plot(cells, args.plot)
    return text


if __name__ == "__main__":
    main()
