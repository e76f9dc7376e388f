"""Detection over seeds: each method's flags and scores against the known label errors (the detection.json files of
`python -m lr_jax.labels compare`, one per seed) as mean [95% interval] over seeds, and paired differences between
methods and between in-sample and K-fold probabilities of the same seed."""

from __future__ import annotations

import json
import os
import re
from typing import Optional

from lr_jax import results
from lr_jax.analysis import runs as runs_lib
from lr_jax.analysis import stats
from lr_jax.analysis.designs import CLEANED_LABEL_SETS, LABEL_ISSUES
from lr_jax.analysis.tables import format_difference, format_stat
from lr_jax.labels.compare import COLUMNS, DETECTION_JSON, IN_SAMPLE, KFOLD

FOLDER = "label_issues"  # under a runs root; under a collected results root, with LABEL_ISSUES' prefix
PREFIX = LABEL_ISSUES.prefix
METRICS = tuple((key, name) for key, name in COLUMNS if key not in ("method", "probabilities", "flagged"))
# (run, partner, text): each seed's metric of `run` minus `partner`'s, both (method, probabilities)
PAIRS = ((("refinery", IN_SAMPLE), ("cleanlab", IN_SAMPLE), "refinery minus cleanlab, in-sample probabilities"),
         (("refinery", KFOLD), ("cleanlab", KFOLD), "refinery minus cleanlab, K-fold probabilities"),
         (("refinery", KFOLD), ("refinery", IN_SAMPLE), "refinery: K-fold minus in-sample"),
         (("cleanlab", KFOLD), ("cleanlab", IN_SAMPLE), "cleanlab: K-fold minus in-sample"),
         (("refinery", IN_SAMPLE), ("cleanlab", KFOLD), "refinery in-sample minus cleanlab K-fold (each tool's own "
                                                       "recipe)"))


def read_detections(root: str, label_set: str) -> dict[int, dict]:
    """{seed: detection.json} from ROOT/part_three_label_issues/<set>/seed<S> (a collected copy) if that folder
    exists, else ROOT/label_issues/<set>/seed<S> (label_issues.sh's runs root); a ValueError names an unreadable
    file."""
    folder = runs_lib.design_folder(root, f"{FOLDER}/{label_set}", PREFIX)
    found = {}
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        match = re.fullmatch(r"seed(\d+)", entry)
        path = os.path.join(folder, entry, DETECTION_JSON)
        if match and os.path.exists(path):
            try:
                with open(path) as f:
                    payload = json.load(f)
                rows = {(row["method"], row["probabilities"]): row for row in payload["rows"]}
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}: not a detection.json of python -m lr_jax.labels compare ({error!r})") \
                    from None
            found[int(match.group(1))] = {**payload, "rows": rows}
    return found


def _values(by_seed: dict[int, dict], where: tuple[str, str], key: str) -> dict[int, Optional[float]]:
    return {seed: payload["rows"][where].get(key) for seed, payload in by_seed.items() if where in payload["rows"]}


def within_range(value: Optional[stats.Difference], low: float = 0.0, high: float = 1.0
                 ) -> Optional[stats.Difference]:
    """`value` with its interval's ends clipped to [low, high], the range of a rate (precision, AUROC ...): a t
    interval over 2-3 seeds of 99.9% would otherwise reach past 100%."""
    if value is None or value.low is None:
        return value
    return value._replace(low=min(max(value.low, low), high), high=max(min(value.high, high), low))


def detection_table(by_seed: dict[int, dict]) -> str:
    """One row per method and probabilities: images flagged (mean ± std) and each metric's mean [95% interval]
    (seeds, clipped to 0-100), in percent."""
    order = list(dict.fromkeys(where for payload in by_seed.values() for where in payload["rows"]))
    lines = ["| method | probabilities | flagged | " + " | ".join(name for _, name in METRICS) + " |",
             "|---|---|---|" + "---|" * len(METRICS)]
    for where in order:
        flagged = format_stat(stats.stat(list(_values(by_seed, where, "flagged").values())), "count")
        cells = [format_difference(within_range(stats.difference(list(_values(by_seed, where, key).values()))),
                                   "percent")
                 for key, _ in METRICS]
        lines.append(f"| {where[0]} | {where[1]} | {flagged} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(by_seed: dict[int, dict]) -> str:
    """PAIRS as rows: per metric, the mean [95% interval] (pairs) of the per-seed differences, in points; rows
    without any seed that has both are left out."""
    lines = ["| comparison | " + " | ".join(name for _, name in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for run, partner, text in PAIRS:
        cells = []
        for key, _ in METRICS:
            ours, theirs = _values(by_seed, run, key), _values(by_seed, partner, key)
            differences = [ours[s] - theirs[s] for s in ours if ours[s] is not None and theirs.get(s) is not None]
            cells.append(format_difference(stats.difference(differences), "points"))
        if any(cell != "-" for cell in cells):
            lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detection_sections(root: str) -> str:
    """Markdown: per label set of CLEANED_LABEL_SETS with detection files under `root`, its detection table over seeds and
    the paired differences; a line saying so when there are none."""
    sections = []
    for label_set in CLEANED_LABEL_SETS:
        by_seed = read_detections(root, label_set)
        if not by_seed:
            continue
        errors = ", ".join(f"seed {seed}: {payload.get('errors')} of {payload.get('images')}"
                           for seed, payload in by_seed.items())
        seeds = f"{len(by_seed)} seed{'' if len(by_seed) == 1 else 's'}"
        sections += [f"### {label_set}: finding the known label errors ({seeds}; wrong given labels "
                     f"among the training images, {errors})", "", detection_table(by_seed), "",
                     "Paired by seed (percentage points):", "", paired_table(by_seed), ""]
        notes = other_refineries(root, label_set, by_seed)
        sections += [*(f"- {note}" for note in notes), ""] if notes else []
    if not sections:
        return f"(no {DETECTION_JSON} under {FOLDER}/ or {PREFIX}{FOLDER}/ of this root)\n"
    return "\n".join(sections)


def other_refineries(root: str, label_set: str, by_seed: dict[int, dict]) -> list[str]:
    """A sentence per seed whose scored refinery is not the chain's generation of the downstream table: its
    detection.json's source (the generation's validation accuracy, the machine that trained it) against ROOT's
    <set>/online_seed<S>/results.json. label_issues.sh retrains a chain's generation 1 whose checkpoints are gone
    (NEED_CHAIN), and on a machine whose numerics differ that is another model."""
    chains = runs_lib.design_folder(root, label_set, PREFIX)
    notes = []
    for seed, payload in by_seed.items():
        source = payload.get("source") or {}
        generation, accuracy = source.get("generation"), source.get("val_accuracy")
        chain = os.path.join(chains, f"online_seed{seed}")
        if accuracy is None or not os.path.isfile(os.path.join(chain, results.RESULTS_FILE)):
            continue
        rows = [row for row in runs_lib.load_run(chain).payload["generations"] if row.get("generation") == generation]
        if rows and rows[0].get("val_accuracy") != accuracy:
            notes.append(f"seed {seed}: the refinery scored here is generation {generation} retrained on "
                         f"{trained_on(source)} "
                         f"(validation {100 * accuracy:.2f}%), not the chain's generation {generation} in the table "
                         f"below ({100 * rows[0]['val_accuracy']:.2f}%), which another machine's numerics trained; "
                         "its flags made this seed's relabelled set, while the chain's rows (the noisy labels, the "
                         "refinery's labels) are the other machine's models.")
    return notes


def trained_on(source: dict) -> str:
    """The machine a detection.json's scored generation trained on: its accelerator where it ran on one ("NVIDIA H200
    (gpu)"), else its CPU."""
    platform = source.get("platform")
    if platform not in (None, "cpu"):
        return f"{source.get('device_kind') or 'an accelerator'} ({platform})"
    return (source.get("host") or {}).get("cpu") or "a CPU it does not record"
