"""Aggregates runs over seeds into per-generation tables (Markdown, CSV), seed-paired differences against
generation 1 with confidence intervals, and PNG plots: `python -m lr_jax.report`."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
from typing import NamedTuple, Optional, Sequence

import numpy as np
import scipy.stats

from lr_jax import config as config_lib
from lr_jax import results

# Runs whose configs differ only in the seed are seeds of one configuration (run options, config.RunOptions, were
# never part of a configuration; older results.json files that hold them in "config" are read without them).
# `refinery_workdir` counts only as "a refinery was reused or not", since each seed usually reuses its own.
NOT_SETTINGS = ("seed", *config_lib.RUN_OPTION_FIELDS)

ACCURACIES = (("val_accuracy", "validation"), ("test_accuracy", "test"))
PLOTS = ("accuracy", "train_vs_test", "label_examples", "label_entropy")  # <out>/<name>.png, in this order
LABEL_SUMMARY = "labels_summary.npz"
LABEL_SUMMARY_KEYS = ("images", "labels", "class_names", "probs", "entropies", "generations")
# Runs are paired only when these (results.json section, key) are equal: the same seed (hence the same validation
# split and generation-1 initialisation) and the same data.
PAIRING_KEYS = (("config", "seed"), ("config", "train_size"), ("config", "val_size"),
                ("dataset", "num_train"), ("dataset", "num_val"), ("dataset", "num_test"))
CONFIDENCE = 0.95


class Stat(NamedTuple):
    """Mean and sample standard deviation (n - 1; None for a single value) of one metric over n seeds."""

    mean: float
    std: Optional[float]
    n: int


class Difference(NamedTuple):
    """Mean of n paired differences and its CONFIDENCE interval from Student's t with n - 1 degrees of freedom
    (low and high None for n = 1)."""

    mean: float
    low: Optional[float]
    high: Optional[float]
    n: int


@dataclasses.dataclass
class Run:
    workdir: str
    payload: dict  # the run's results.json


@dataclasses.dataclass
class Configuration:
    label: str  # readable name for tables and legends
    settings: dict  # the run config without NOT_SETTINGS
    runs: list[Run]  # sorted by seed
    rows: list[dict]  # per generation: {"generation": g, "seeds": n, <metric>: Stat or None}
    # Paired differences per generation, one dict per BASELINES name: held-out accuracy (held_out_key) minus
    # generation 1's of the same run ("own_gen1"), minus generation 1's and generation k's of the reference
    # configuration's run with the same seed and data ("reference_gen1", "reference_genk"), and the ensemble of
    # generations 1..k minus the reference run's ("reference_ensemble"); the reference itself has only "own_gen1".
    paired: dict[str, dict[int, Difference]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Report:
    dataset: str
    configurations: list[Configuration]
    reference: int = 0  # index of the configuration whose generation 1 the "reference" differences subtract


# Reading runs.


def load_run(workdir: str) -> Run:
    """Reads and checks `workdir/results.json`; errors name the folder or file."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"{workdir}: no such run folder")
    payload = results.load_results(workdir)
    return Run(workdir=workdir, payload=results.check_payload(payload, os.path.join(workdir, "results.json")))


def load_label_summary(workdir: str) -> dict:
    """Reads `workdir/labels_summary.npz` (see results.write_label_summary); errors name the file."""
    path = os.path.join(workdir, LABEL_SUMMARY)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no {LABEL_SUMMARY} (written by runs of lr_jax with this report)")
    try:
        with np.load(path, allow_pickle=False) as data:
            summary = {key: data[key] for key in data.files}
    except Exception as error:  # zip and format errors come in several types
        raise ValueError(f"{path}: cannot read ({error})") from None
    missing = [key for key in LABEL_SUMMARY_KEYS if key not in summary]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    probs, entropies = summary["probs"], summary["entropies"]
    count, classes = len(summary["labels"]), len(summary["class_names"])
    num_generations = len(summary["generations"])
    if probs.shape != (num_generations, count, classes) or len(summary["images"]) != count:
        raise ValueError(
            f"{path}: probs has shape {probs.shape}, expected (generations, examples, classes) = "
            f"({num_generations}, {count}, {classes}); images {summary['images'].shape}"
        )
    if entropies.ndim != 2 or len(entropies) != num_generations:
        raise ValueError(f"{path}: entropies has shape {entropies.shape}, expected ({num_generations}, train images)")
    return summary


# Grouping and statistics.


def settings_of(config: dict) -> dict:
    """The settings that make a configuration: the config without run options and seed."""
    settings = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
    if "refinery_workdir" in settings:
        settings["refinery_workdir"] = settings["refinery_workdir"] is not None
    return settings


def _format_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(settings: dict) -> list[str]:
    """Readable parts of a configuration's name: the model, the label mode, and every non-default label knob."""
    defaults = dataclasses.asdict(config_lib.Config())
    model = settings.get("model", "?")
    if settings.get("refinery_model"):
        model = f"{settings['refinery_model']} refinery, {model}"
    mode = str(settings.get("label_mode", "precomputed"))
    if settings.get("generations") == 1 and not settings.get("refinery_workdir"):
        mode = f"ground truth only, {settings.get('epochs', '?')} epochs"
    elif mode == "ground_truth":
        mode = "independent ground-truth models"
    parts = [model, mode]
    knobs = (
        ("label_smoothing", "label smoothing {}"),
        ("temperature", "temperature {}"),
        ("gt_weight", "ground-truth weight {}"),
        ("adversarial_jitter", "adversarial jitter {}"),
        ("dtype", "{}"),
        ("refinery_generation", "refinery = its generation {}"),
    )
    for key, text in knobs:
        if key in settings and settings[key] != defaults.get(key):
            parts.append(text.format(_format_value(settings[key])))
    if settings.get("label_mode") == "online" and settings.get("refinery_bn") == "train":
        parts.append("refinery BatchNorm in train mode")
    if settings.get("refinery_workdir"):
        parts.append("reused refinery")
    if settings.get("eval_flip"):
        parts.append("flip-averaged evaluation")
    return parts


def configuration_labels(all_settings: list[dict]) -> list[str]:
    """describe() for each configuration; where two names collide, the settings that tell them apart are added."""
    labels = [", ".join(describe(s)) for s in all_settings]
    for label in set(labels):
        clash = [i for i, other in enumerate(labels) if other == label]
        if len(clash) < 2:
            continue
        keys = sorted({k for i in clash for k in all_settings[i]})
        differing = [k for k in keys if len({json.dumps(all_settings[i].get(k)) for i in clash}) > 1]
        for i in clash:
            extra = ", ".join(f"{k}={_format_value(all_settings[i].get(k))}" for k in differing)
            labels[i] = f"{label}, {extra}"
    return labels


def stat(values: list) -> Optional[Stat]:
    """Stat of the non-missing values, or None when every value is missing."""
    present = np.array([v for v in values if v is not None], np.float64)
    if present.size == 0:
        return None
    std = float(np.std(present, ddof=1)) if present.size > 1 else None
    return Stat(mean=float(np.mean(present)), std=std, n=int(present.size))


def generation_rows(runs: list[Run]) -> list[dict]:
    """Per generation, every metric's Stat over the runs that finished that generation."""
    by_generation: dict[int, list[dict]] = {}
    for run in runs:
        for row in run.payload["generations"]:
            by_generation.setdefault(row["generation"], []).append(row)
    rows = []
    for generation in sorted(by_generation):
        finished = by_generation[generation]
        row = {"generation": generation, "seeds": len(finished)}
        row.update({key: stat([r.get(key) for r in finished]) for key, _, _ in results.METRICS})
        rows.append(row)
    return rows


def difference(values: list) -> Optional[Difference]:
    """Difference (mean and CONFIDENCE interval) of paired differences; None when there are none."""
    summary = stat(values)
    if summary is None:
        return None
    if summary.std is None:
        return Difference(mean=summary.mean, low=None, high=None, n=1)
    half_width = float(scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, summary.n - 1) * summary.std / np.sqrt(summary.n))
    return Difference(mean=summary.mean, low=summary.mean - half_width, high=summary.mean + half_width, n=summary.n)


def pairing_of(run: Run) -> tuple:
    """The values of PAIRING_KEYS: runs pair when these are equal."""
    return tuple((run.payload.get(section) or {}).get(key) for section, key in PAIRING_KEYS)


def paired_differences(pairs: list[tuple[Run, Run]], key: str, same_generation: bool = False) -> dict[int, Difference]:
    """Per generation g: the mean over pairs (run, partner) of the run's `key` at g minus the partner's at
    generation 1 (at g with `same_generation`), over the pairs that have both; a run paired with itself skips its
    generation 1."""
    by_generation: dict[int, list[float]] = {}
    for run, partner in pairs:
        partner_rows = {row["generation"]: row.get(key) for row in partner.payload["generations"]}
        for row in run.payload["generations"]:
            base = partner_rows.get(row["generation"] if same_generation else 1)
            if base is None or row.get(key) is None or (run is partner and row["generation"] == 1):
                continue
            by_generation.setdefault(row["generation"], []).append(row[key] - base)
    return {g: difference(values) for g, values in sorted(by_generation.items())}


def pair_configurations(configurations: list[Configuration], reference: int) -> None:
    """Fills each configuration's `paired`: every run against its own generation 1, and (all but the reference)
    against the reference configuration's run with the same PAIRING_KEYS; runs without such a partner are left out."""
    partners = {pairing_of(run): run for run in configurations[reference].runs}
    for index, configuration in enumerate(configurations):
        key = held_out_key(configuration)
        configuration.paired = {"own_gen1": paired_differences([(run, run) for run in configuration.runs], key)}
        if index != reference:
            pairs = [(run, partners[pairing_of(run)]) for run in configuration.runs if pairing_of(run) in partners]
            configuration.paired["reference_gen1"] = paired_differences(pairs, key)
            # At generation 1 both equal reference_gen1's (an ensemble of one is that model): from generation 2 on.
            for name, compared in (("reference_genk", key), ("reference_ensemble", f"ensemble_{key}")):
                differences = paired_differences(pairs, compared, same_generation=True)
                configuration.paired[name] = {g: d for g, d in differences.items() if g > 1}


def reference_index(configurations: list[Configuration], reference: Optional[str]) -> int:
    """Index of the configuration that holds run folder `reference` (default: the first configuration)."""
    if reference is None:
        return 0
    for index, configuration in enumerate(configurations):
        if any(os.path.realpath(run.workdir) == os.path.realpath(reference) for run in configuration.runs):
            return index
    raise ValueError(f"--reference {reference}: not one of the run folders given")


def aggregate(workdirs: Sequence[str], reference: Optional[str] = None) -> Report:
    """Reads every run, groups runs that differ only by seed into configurations (in order of first appearance),
    computes per-generation mean and std over seeds, and paired differences (pair_configurations) against the
    configuration of run folder `reference` (default: the first configuration). All runs must be of one dataset."""
    if not workdirs:
        raise ValueError("no run folders given")
    runs = [load_run(w) for w in workdirs]
    datasets = {run.payload["config"]["dataset"] for run in runs}
    if len(datasets) > 1:
        listing = "; ".join(f"{run.workdir}: {run.payload['config']['dataset']}" for run in runs)
        raise ValueError(f"runs of different datasets cannot share one report ({listing})")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        key = json.dumps(settings_of(run.payload["config"]), sort_keys=True)
        group = groups.setdefault(key, [])
        seed = run.payload["config"]["seed"]
        twin = next((other for other in group if other.payload["config"]["seed"] == seed), None)
        if twin is not None:
            raise ValueError(
                f"{twin.workdir} and {run.workdir}: the same configuration and seed {seed} twice "
                "(a copied run would count twice in the mean)"
            )
        group.append(run)
    all_settings = [json.loads(key) for key in groups]
    labels = configuration_labels(all_settings)
    configurations = [
        Configuration(label=label, settings=settings, runs=sorted(group, key=lambda r: r.payload["config"]["seed"]),
                      rows=generation_rows(group))
        for label, settings, group in zip(labels, all_settings, groups.values())
    ]
    index = reference_index(configurations, reference)
    pair_configurations(configurations, index)
    return Report(dataset=datasets.pop(), configurations=configurations, reference=index)


# Tables.


def format_stat(value: Optional[Stat], kind: str) -> str:
    """'85.12 ± 0.31' style; '-' when missing; no '±' for a single seed."""
    if value is None:
        return "-"
    text = results.format_metric(value.mean, kind)
    if value.std is not None:
        text += f" ± {results.format_metric(value.std, kind, signed=False)}"
    return text


def held_out_key(configuration: Configuration) -> str:
    """test_accuracy where the runs have a test split, else val_accuracy."""
    has_test = any(row["test_accuracy"] is not None for row in configuration.rows)
    return "test_accuracy" if has_test else "val_accuracy"


def headline_table(report: Report, key: str) -> Optional[str]:
    """Configurations as rows, generations as columns, `key` as mean ± std (seeds); None if no run has `key`."""
    generations = sorted({row["generation"] for c in report.configurations for row in c.rows})
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


BASELINES = (  # Configuration.paired: (name, what is subtracted)
    ("own_gen1", "gen 1 of the same run"),
    ("reference_gen1", "reference gen 1, same seed"),
    ("reference_genk", "reference gen k, same seed"),
    ("reference_ensemble", "ensembles of gens 1..k: this run's minus the reference's, same seed"),
)


def format_difference(value: Optional[Difference]) -> str:
    """'-1.88 [-3.10, -0.66] (3)': mean difference in points, its CONFIDENCE interval, pairs; '-' when missing."""
    if value is None:
        return "-"
    text = results.format_metric(value.mean, "points")
    if value.low is not None:
        text += f" [{results.format_metric(value.low, 'points')}, {results.format_metric(value.high, 'points')}]"
    return f"{text} ({value.n})"


def paired_table(report: Report) -> Optional[str]:
    """One row per configuration and baseline (BASELINES) with paired differences, generations as columns; None
    when there are none (a single generation of a single configuration, or no held-out accuracy)."""
    generations = sorted({row["generation"] for c in report.configurations for row in c.rows})
    lines = ["| configuration | held-out | minus | " + " | ".join(f"gen {g}" for g in generations) + " |",
             "|---|---|---|" + "---|" * len(generations)]
    for configuration in report.configurations:
        held_out = dict(ACCURACIES)[held_out_key(configuration)]
        for baseline, text in BASELINES:
            cells = configuration.paired.get(baseline)
            if cells:
                lines.append(f"| {configuration.label} | {held_out} | {text} | "
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


def settings_line(settings: dict) -> str:
    keys = ("model", "refinery_model", "generations", "epochs", "batch_size", "learning_rate", "weight_decay",
            "schedule", "augment", "train_size", "val_size", "label_mode", "temperature", "gt_weight",
            "label_smoothing", "adversarial_jitter", "dtype", "eval_flip")
    return ", ".join(f"{k}={_format_value(settings[k])}" for k in keys if settings.get(k) is not None)


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
            "generation 1 (trained on ground truth, on the same split). \"reference gen 1, same seed\": each "
            "run's generation k minus generation 1 of the reference configuration's run with the same seed and "
            "the same data (seed, train_size, val_size and the number of train, validation and test images "
            "equal), so the same split and generation-1 initialisation; runs without such a partner are left "
            "out. \"reference gen k, same seed\": minus the reference run's generation k (the same "
            "initialisation and data order: generation k's key depends only on the seed and k). \"ensembles\": "
            "the mean softmax of generations 1..k of this run minus that of the reference run (e.g. a refinery "
            "chain's generations against as many independently trained ground-truth models). "
            f"Reference: {report.configurations[report.reference].label}.",
            "", table]


def markdown_report(report: Report) -> str:
    """The whole Markdown document: paired differences, headline tables, one table per configuration, and the list
    of runs."""
    total = sum(len(c.runs) for c in report.configurations)
    out = [
        f"# Label Refinery: {report.dataset}",
        "",
        f"{total} runs in {len(report.configurations)} configurations. Accuracies in %, as mean ± sample "
        "standard deviation (n - 1) over seeds; the number in parentheses (or the `seeds` column) is how many "
        "runs finished that generation. The train-val (train-test) gap is train accuracy minus validation (test) "
        "accuracy, in percentage points. Label agreement: how often a generation's argmax on the un-augmented "
        "training images matches the argmax of the labels it trained on (ground truth for generation 1, so there "
        "it is the train accuracy; the previous generation's labels after that).",
    ]
    out += paired_section(report)
    for key, name in ACCURACIES:
        table = headline_table(report, key)
        if table is not None:
            out += ["", f"## {name.capitalize()} accuracy per generation", "", table]
    for configuration in report.configurations:
        seeds = ", ".join(str(r.payload["config"]["seed"]) for r in configuration.runs)
        wall = np.mean([r.payload.get("wall_seconds") or 0.0 for r in configuration.runs])
        train = np.mean([sum(g.get("train_seconds") or 0.0 for g in r.payload["generations"])
                         for r in configuration.runs])
        out += ["", f"## {configuration.label}", "",
                f"Settings: {settings_line(configuration.settings)}. Seeds: {seeds}. "
                f"Mean wall time per run: {wall:.0f} s; mean training time per run, all generations: {train:.0f} s.",
                "", configuration_table(configuration)]
    out += ["", "## Runs", "", "| run folder | configuration | seed | generations | complete | wall s | devices |",
            "|---|---|---|---|---|---|---|"]
    for configuration in report.configurations:
        for run in configuration.runs:
            payload, dataset_info = run.payload, run.payload.get("dataset") or {}
            devices = f"{dataset_info.get('devices', '?')} x {dataset_info.get('platform', '?')}"
            done = f"{len(payload['generations'])} of {payload['config'].get('generations', '?')}"
            out.append(f"| {run.workdir} | {configuration.label} | {payload['config']['seed']} | {done} | "
                       f"{payload.get('complete')} | {payload.get('wall_seconds') or 0:.0f} | {devices} |")
    return "\n".join(out) + "\n"


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
    for baseline, _ in BASELINES:
        header += [f"minus_{baseline}_{part}" for part in ("mean", "low", "high", "n")]
    writer.writerow(header + ["reference_configuration"])
    for configuration in report.configurations:
        for row in configuration.rows:
            line = [report.dataset, configuration.label, row["generation"], row["seeds"]]
            for key, _, _ in results.METRICS:
                value = row[key]
                line += ["", ""] if value is None else [repr(value.mean), "" if value.std is None else repr(value.std)]
            line.append(held_out_key(configuration))
            for baseline, _ in BASELINES:
                value = configuration.paired.get(baseline, {}).get(row["generation"])
                line += ["", "", "", ""] if value is None else [
                    repr(value.mean), "" if value.low is None else repr(value.low),
                    "" if value.high is None else repr(value.high), value.n]
            writer.writerow(line + [report.configurations[report.reference].label])
    return buffer.getvalue()


def write_tables(report: Report, out: str) -> dict[str, str]:
    """Writes `out/summary.md` and `out/summary.csv` (each atomically); returns {"markdown": path, "csv": path}."""
    os.makedirs(out, exist_ok=True)
    paths = {"markdown": os.path.join(out, "summary.md"), "csv": os.path.join(out, "summary.csv")}
    results.write_text_atomic(paths["markdown"], markdown_report(report))
    results.write_text_atomic(paths["csv"], csv_report(report))
    return paths


# Plots (matplotlib's object interface: no pyplot, so no global backend is touched and notebooks keep theirs).


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(figure, path: str) -> str:
    """Saves a PNG atomically (temporary file, then rename)."""
    results.write_atomic(path, lambda f: figure.savefig(f, format="png"), binary=True)
    return path


def _series(configuration: Configuration, key: str):
    """(generations, means, stds) in % for the generations that have `key`."""
    rows = [row for row in configuration.rows if row[key] is not None]
    generations = [row["generation"] for row in rows]
    means = [100 * row[key].mean for row in rows]
    stds = [100 * (row[key].std or 0.0) for row in rows]
    return generations, means, stds


def _integer_ticks(axis, report: Report) -> None:
    generations = sorted({row["generation"] for c in report.configurations for row in c.rows})
    axis.set_xticks(generations)
    axis.set_xlabel("generation")


def plot_accuracy(report: Report, path: str) -> Optional[str]:
    """Plot 1: validation and test accuracy (those present) per generation, mean ± std over seeds, one line per
    configuration. None (no file) when no run has either (--val_size 0 and no test split)."""
    panels = [(key, name) for key, name in ACCURACIES
              if any(row[key] is not None for c in report.configurations for row in c.rows)]
    if not panels:
        return None
    figure = new_figure(5.5 * len(panels), 4.2)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (key, name) in zip(axes, panels):
        count = len(report.configurations)
        for index, configuration in enumerate(report.configurations):
            generations, means, stds = _series(configuration, key)
            shift = 0.04 * (index - (count - 1) / 2)  # side by side, so overlapping error bars stay readable
            if generations:
                axis.errorbar(np.array(generations) + shift, means, yerr=stds, marker="o", capsize=4,
                              label=configuration.label)
        axis.set_title(f"{report.dataset}: {name} accuracy")
        axis.set_ylabel(f"{name} accuracy (%)")
        _integer_ticks(axis, report)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    return save_figure(figure, path)


def plot_train_vs_test(report: Report, path: str) -> str:
    """Plot 2 (the paper's Figure 1): train and test (else validation) accuracy per generation side by side, one
    panel per configuration, the gap written above each pair."""
    count = len(report.configurations)
    columns = min(count, 3)
    rows = -(-count // columns)
    figure = new_figure(4.8 * columns, 3.8 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes[count:]:
        axis.set_visible(False)
    width = 0.38
    for axis, configuration in zip(axes, report.configurations):
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
        axis.set_title(configuration.label, fontsize="small")
        axis.set_ylabel("accuracy (%)")
        _integer_ticks(axis, report)
        axis.legend(fontsize="small", loc="lower right")
    figure.suptitle(f"{report.dataset}: train vs held-out accuracy")
    return save_figure(figure, path)


def plot_label_examples(workdir: str, path: str, count: int = 8, top: int = 3) -> str:
    """Plot 3 (the paper's Figure 4): `count` fixed training images of one run, each beside its top-`top` refined
    labels with probabilities at every generation; the true class in green."""
    summary = load_label_summary(workdir)
    images, labels, names = summary["images"], summary["labels"], [str(n) for n in summary["class_names"]]
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
        image_axis.set_ylabel(names[int(labels[i])], fontsize="small")
        for j, generation in enumerate(generations):
            axis = figure.add_subplot(grid[i, 1 + j])
            axis.axis("off")
            if i == 0:
                axis.set_title(f"generation {int(generation)}", fontsize="small")
            order = np.argsort(-probs[j, i])[:top]
            for rank, c in enumerate(order):
                axis.text(0.02, 0.8 - 0.3 * rank, f"{names[c]} {probs[j, i, c]:.2f}", fontsize="small",
                          transform=axis.transAxes, color="tab:green" if c == int(labels[i]) else "black")
    return save_figure(figure, path)


def plot_label_entropy(report: Report, path: str) -> Optional[str]:
    """Plot 4: the distribution of per-image label entropy per generation (violins), pooled over the seeds of each
    configuration; runs without labels_summary.npz are left out. None (no file) when no run has one."""
    pooled = []
    for configuration in report.configurations:
        by_generation: dict[int, list[np.ndarray]] = {}
        for run in configuration.runs:
            if not os.path.exists(os.path.join(run.workdir, LABEL_SUMMARY)):
                continue
            summary = load_label_summary(run.workdir)
            for generation, entropies in zip(summary["generations"], summary["entropies"]):
                by_generation.setdefault(int(generation), []).append(entropies.astype(np.float32))
        if by_generation:
            pooled.append((configuration.label, {g: np.concatenate(v) for g, v in sorted(by_generation.items())}))
    if not pooled:
        return None
    figure = new_figure(5.0 * len(pooled), 3.8)
    axes = figure.subplots(1, len(pooled), squeeze=False, sharey=True)[0]
    for axis, (label, by_generation) in zip(axes, pooled):
        generations = list(by_generation)
        axis.violinplot([by_generation[g] for g in generations], positions=generations, showmeans=True,
                        showextrema=True)
        axis.set_xticks(generations)
        axis.set_xlabel("generation")
        axis.set_title(label, fontsize="small")
        axis.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("label entropy (nats)")
    figure.suptitle(f"{report.dataset}: entropy of the training labels each generation produced")
    return save_figure(figure, path)


# Everything at once.


def write_report(workdirs: Sequence[str], out: str, examples_workdir: Optional[str] = None,
                 reference: Optional[str] = None) -> dict[str, str]:
    """Tables and the four plots (PLOTS) into `out`; returns {name: path}. Plot 3 shows `examples_workdir` (default:
    the first run, in the order given, that has labels_summary.npz); plots 3 and 4 are skipped when no run has one,
    plot 1 when no run has validation or test accuracy. Paired differences are against the configuration of run
    folder `reference` (default: the first configuration)."""
    report = aggregate(workdirs, reference)
    paths = write_tables(report, out)
    if examples_workdir is None:
        examples_workdir = next((w for w in workdirs if os.path.exists(os.path.join(w, LABEL_SUMMARY))), None)
    plots = {
        "accuracy": lambda path: plot_accuracy(report, path),
        "train_vs_test": lambda path: plot_train_vs_test(report, path),
        "label_examples": lambda path: examples_workdir and plot_label_examples(examples_workdir, path),
        "label_entropy": lambda path: plot_label_entropy(report, path),
    }
    for name, plot in plots.items():
        written = plot(os.path.join(out, f"{name}.png"))
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


if __name__ == "__main__":
    main()
