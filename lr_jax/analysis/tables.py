"""Tables: the report's Markdown and CSV (summary.md, summary.csv) and the one headline-table writer of designs."""

from __future__ import annotations

import csv
import io
import os
from typing import Optional, Sequence

import numpy as np

from lr_jax import files, results
from lr_jax.analysis import stats
from lr_jax.analysis.runs import ACCURACIES, Configuration, Report, held_out_key, settings_line
from lr_jax.analysis.stats import BASELINES, CONFIDENCE, Difference, Stat


def format_stat(value: Optional[Stat], kind: str) -> str:
    """'85.12 ± 0.31' style; '-' when missing; no '±' for a single seed."""
    if value is None:
        return "-"
    text = results.format_metric(value.mean, kind)
    if value.std is not None:
        text += f" ± {results.format_metric(value.std, kind, signed=False)}"
    return text


def format_difference(value: Optional[Difference], kind: str = "points") -> str:
    """'-1.88 [-3.10, -0.66] (3)': mean difference in points (`kind`), its CONFIDENCE interval, pairs; '-' when
    missing."""
    if value is None:
        return "-"
    text = results.format_metric(value.mean, kind)
    if value.low is not None:
        text += f" [{results.format_metric(value.low, kind)}, {results.format_metric(value.high, kind)}]"
    return f"{text} ({value.n})"


def _generations(report: Report) -> list[int]:
    return sorted({row["generation"] for c in report.configurations for row in c.rows})


def generation_table(report: Report, key: str) -> Optional[str]:
    """Configurations as rows, generations as columns, `key` as mean ± std (seeds); None if no run has `key`."""
    generations = _generations(report)
    if not any(row[key] is not None for c in report.configurations for row in c.rows):
        return None
    lines = ["| configuration | " + " | ".join(f"gen {g}" for g in generations) + " |",
             "|---|" + "---|" * len(generations)]
    for configuration in report.configurations:
        by_generation = {row["generation"]: row[key] for row in configuration.rows}
        cells = []
        for g in generations:
            value = by_generation.get(g)
            cells.append("-" if value is None else f"{format_stat(value, 'percent')} ({value.n})")
        lines.append(f"| {configuration.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(report: Report) -> Optional[str]:
    """One row per configuration and baseline (BASELINES) with paired differences, generations as columns; None
    when there are none (a single generation of a single configuration, or no held-out accuracy)."""
    generations = _generations(report)
    lines = ["| configuration | held-out | minus | " + " | ".join(f"gen {g}" for g in generations) + " |",
             "|---|---|---|" + "---|" * len(generations)]
    for configuration in report.configurations:
        held_out = dict(ACCURACIES)[held_out_key(configuration)]
        for baseline in BASELINES:
            cells = configuration.paired.get(baseline.name)
            if cells:
                lines.append(f"| {configuration.label} | {held_out} | {baseline.text} | "
                             + " | ".join(format_difference(cells.get(g)) for g in generations) + " |")
    return "\n".join(lines) if len(lines) > 2 else None


def configuration_table(configuration: Configuration) -> str:
    """One row per generation; metrics missing from every run are left out."""
    columns = results.present_metrics(configuration.rows)
    lines = ["| gen | seeds | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for row in configuration.rows:
        cells = [format_stat(row[key], kind) for key, _, kind in columns]
        lines.append(f"| {row['generation']} | {row['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def given_labels(report: Report) -> bool:
    """Whether the report's runs trained on other labels than the dataset's (--train_labels, e.g. CIFAR-10N's)."""
    return any(run.payload["config"].get("train_labels") for c in report.configurations for run in c.runs)


def first_labels(report: Report) -> str:
    """What generation 1 trained on, in the report's explanations."""
    return "the given labels (--train_labels)" if given_labels(report) else "ground truth"


def independent_models(report: Report) -> str:
    """The ensembles' partners, in the report's explanations."""
    return "independently trained models on the same labels" if given_labels(report) else \
        "independently trained ground-truth models"


def paired_section(report: Report) -> list[str]:
    """The Markdown lines of the paired differences: heading, what they are, and paired_table; none without it."""
    table = paired_table(report)
    if table is None:
        return []
    return ["", "## Paired differences", "",
            "Held-out accuracy (test where a configuration has a test split, else validation) minus generation "
            f"1's, in percentage points: the mean over pairs of runs, its {CONFIDENCE:.0%} confidence interval "
            "from Student's t with n - 1 degrees of freedom in brackets (none for a single pair), and the number "
            "of pairs n in parentheses. \"gen 1 of the same run\": each run's generation k minus its own "
            f"generation 1 (trained on {first_labels(report)}, on the same split). \"reference gen 1, same "
            "seed\": each run's generation k minus generation 1 of the reference configuration's run with the "
            "same seed and the same data (seed, train_size, val_size and the number of train, validation and "
            "test images equal), so the same split and generation-1 initialisation; runs without such a partner "
            "are left out. \"reference gen k, same seed\": minus the reference run's generation k (the same "
            "initialisation and data order: generation k's key depends only on the seed and k). \"ensembles\": "
            "the mean softmax of generations 1..k of this run minus that of the reference run (e.g. a refinery "
            f"chain's generations against as many {independent_models(report)}). "
            f"Reference: {report.configurations[report.reference].label}.",
            "", table]


def configuration_section(configuration: Configuration) -> list[str]:
    """A configuration's heading, settings, seeds, mean times and configuration_table."""
    seeds = ", ".join(str(r.payload["config"]["seed"]) for r in configuration.runs)
    wall = np.mean([r.payload.get("wall_seconds") or 0.0 for r in configuration.runs])
    train = np.mean([sum(g.get("train_seconds") or 0.0 for g in r.payload["generations"])
                     for r in configuration.runs])
    return ["", f"## {configuration.label}", "",
            f"Settings: {settings_line(configuration.settings)}. Seeds: {seeds}. "
            f"Mean wall time per run: {wall:.0f} s; mean training time per run, all generations: {train:.0f} s.",
            "", configuration_table(configuration)]


# The per-run table's metrics (those some run has): what a reader checks seed by seed.
PER_RUN_METRICS = ("val_accuracy", "val_accuracy_no_flip", "test_accuracy", "test_accuracy_no_flip",
                   "ensemble_val_accuracy", "ensemble_test_accuracy", "train_accuracy",
                   "train_accuracy_dataset_labels", "labels_repaired", "labels_broken")


def per_run_section(report: Report) -> list[str]:
    """Every run's generations, one row each, with the PER_RUN_METRICS that some run has (the values behind the
    means, and behind each paired difference)."""
    rows = [(configuration, run, row) for configuration in report.configurations for run in configuration.runs
            for row in run.payload["generations"]]
    columns = [c for c in results.present_metrics([row for _, _, row in rows]) if c[0] in PER_RUN_METRICS]
    out = ["", "## Per run", "", "| configuration | run folder | seed | gen | "
           + " | ".join(title for _, title, _ in columns) + " |", "|---|---|---|---|" + "---|" * len(columns)]
    for configuration, run, row in rows:
        cells = [results.format_metric(row.get(key), kind) for key, _, kind in columns]
        out.append(f"| {configuration.label} | {os.path.basename(run.workdir.rstrip('/'))} | "
                   f"{run.payload['config']['seed']} | {row['generation']} | " + " | ".join(cells) + " |")
    return out


def devices_label(dataset_info: dict) -> str:
    """A run's devices: "4 x cpu", or "1 x gpu (NVIDIA H200)" where the device kind names more than the platform."""
    platform, kind = dataset_info.get("platform", "?"), dataset_info.get("device_kind")
    named = f" ({kind})" if kind not in (None, platform) else ""
    return f"{dataset_info.get('devices', '?')} x {platform}{named}"


def runs_section(report: Report) -> list[str]:
    """The list of runs: folder, configuration, seed, generations finished, devices."""
    out = ["", "## Runs", "", "| run folder | configuration | seed | generations | complete | wall s | devices |",
           "|---|---|---|---|---|---|---|"]
    for configuration in report.configurations:
        for run in configuration.runs:
            payload, dataset_info = run.payload, run.payload.get("dataset") or {}
            devices = devices_label(dataset_info)
            done = f"{len(payload['generations'])} of {payload['config'].get('generations', '?')}"
            out.append(f"| {run.workdir} | {configuration.label} | {payload['config']['seed']} | {done} | "
                       f"{payload.get('complete')} | {payload.get('wall_seconds') or 0:.0f} | {devices} |")
    return out


def markdown_report(report: Report) -> str:
    """The whole Markdown document: paired differences, per-generation accuracy tables, one table per
    configuration, every run's generations, and the list of runs."""
    total = sum(len(c.runs) for c in report.configurations)
    out = [
        f"# Label Refinery: {report.dataset}",
        "",
        f"{total} runs in {len(report.configurations)} configurations. Accuracies in %, as mean ± sample "
        "standard deviation (n - 1) over seeds; the number in parentheses (or the `seeds` column) is how many "
        "runs finished that generation. The train-val (train-test) gap is train accuracy minus validation (test) "
        "accuracy, in percentage points. Label agreement: how often a generation's argmax on the un-augmented "
        "training images matches the argmax of the labels it trained on "
        f"({first_labels(report)} for generation 1, so there it is the train accuracy; the previous generation's "
        "labels after that).",
    ]
    out += paired_section(report)
    for key, name in ACCURACIES:
        table = generation_table(report, key)
        if table is not None:
            out += ["", f"## {name.capitalize()} accuracy per generation", "", table]
    for configuration in report.configurations:
        out += configuration_section(configuration)
    return "\n".join(out + per_run_section(report) + runs_section(report)) + "\n"


def _csv_line(report: Report, configuration: Configuration, row: dict) -> list:
    line = [report.dataset, configuration.label, row["generation"], row["seeds"]]
    for key, _, _ in results.METRICS:
        value = row[key]
        line += ["", ""] if value is None else [repr(value.mean), "" if value.std is None else repr(value.std)]
    line.append(held_out_key(configuration))
    for baseline in BASELINES:
        value = configuration.paired.get(baseline.name, {}).get(row["generation"])
        line += ["", "", "", ""] if value is None else [
            repr(value.mean), "" if value.low is None else repr(value.low),
            "" if value.high is None else repr(value.high), value.n]
    return line + [report.configurations[report.reference].label]


def csv_report(report: Report) -> str:
    """One line per configuration and generation: seeds, then <metric>_mean and <metric>_std for every metric; then
    the paired differences of that generation (as fractions, like the means): held_out (the accuracy compared),
    minus_<baseline>_mean, _low, _high (the CONFIDENCE interval; empty for one pair) and _n for each of
    BASELINES (empty where a difference is missing), and reference_configuration."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["dataset", "configuration", "generation", "seeds"]
    for key, _, _ in results.METRICS:
        header += [f"{key}_mean", f"{key}_std"]
    header.append("held_out")
    for baseline in BASELINES:
        header += [f"minus_{baseline.name}_{part}" for part in ("mean", "low", "high", "n")]
    writer.writerow(header + ["reference_configuration"])
    for configuration in report.configurations:
        for row in configuration.rows:
            writer.writerow(_csv_line(report, configuration, row))
    return buffer.getvalue()


def write_tables(report: Report, out: str) -> dict[str, str]:
    """Writes `out/summary.md` and `out/summary.csv` (each atomically); returns {"markdown": path, "csv": path}."""
    os.makedirs(out, exist_ok=True)
    paths = {"markdown": os.path.join(out, "summary.md"), "csv": os.path.join(out, "summary.csv")}
    files.write_text_atomic(paths["markdown"], markdown_report(report))
    files.write_text_atomic(paths["csv"], csv_report(report))
    return paths


# The headline of a design (designs.py): one row per comparison (and evaluation) with data.


def headline_table(cells: Sequence, column: Optional[str] = None) -> str:
    """The Markdown headline of designs.headline_cells: one row per comparison (per evaluation, in a column of its
    own, when the cells were computed for several), generations as columns (mean [95% interval] (pairs)), then
    each cell's per-seed values. With `column` (a design's one column), every cell is in column 1, so named."""
    evaluated = any(cell.evaluation is not None for cell in cells)
    names = [column] if column else [f"gen {g}" for g in range(1, max([3] + [cell.column for cell in cells]) + 1)]
    columns = len(names)
    rows = ["| design | comparison | " + ("evaluation | " if evaluated else "")
            + " | ".join(names) + " | per seed (seed: points) |",
            "|---|---|" + ("---|" if evaluated else "") + "---|" * columns + "---|"]
    by_row: dict[tuple, list] = {}
    for cell in cells:
        by_row.setdefault((cell.comparison, cell.evaluation), []).append(cell)
    for (comparison, evaluation), filled in by_row.items():
        texts, seeds, kind = ["-"] * columns, [], comparison.quantity.kind
        for cell in filled:
            texts[cell.column - 1] = format_difference(stats.difference(list(cell.values.values())), kind)
            listed = ", ".join(f"{seed}: {results.format_metric(v, kind)}" for seed, v in cell.values.items())
            seeds.append(f"gen {cell.column}: {listed}" if comparison.generations.several else listed)
        lead = f"| {comparison.group} | {comparison.text} | " + (f"{evaluation} | " if evaluated else "")
        rows.append(lead + " | ".join(texts) + f" | {'; '.join(seeds)} |")
    return "\n".join(rows)
