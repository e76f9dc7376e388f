"""Statistics: Stat and Difference with Student-t intervals, and the one seed pairing (match_seeds, paired_values)
behind both the report's paired differences and the designs' headlines."""

from __future__ import annotations

import dataclasses
import operator
from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import scipy.stats

from lr_jax import results
from lr_jax.analysis import runs as runs_lib
from lr_jax.analysis.runs import Configuration, Report, Run

# Runs are paired only when these (results.json section, key) are equal: the same seed (hence the same validation
# split and generation-1 initialisation) and the same data.
PAIRING_KEYS = (("config", "seed"), ("config", "train_size"), ("config", "val_size"),
                ("dataset", "num_train"), ("dataset", "num_val"), ("dataset", "num_test"))
# A pair of runs where one trains on a subset of the other's training images (a cleaning that leaves images out):
# the same seed and validation split, any training set.
SAME_VALIDATION = tuple(key for key in PAIRING_KEYS if key != ("dataset", "num_train"))
CONFIDENCE = 0.95
LAST = 0  # in Generations.cells: a partner's configured last generation (as a column: that generation's)
SAME = "same"  # Generations.partner: the run's own generation g


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


def stat(values: list) -> Optional[Stat]:
    """Stat of the non-missing values, or None when every value is missing."""
    present = np.array([v for v in values if v is not None], np.float64)
    if present.size == 0:
        return None
    std = float(np.std(present, ddof=1)) if present.size > 1 else None
    return Stat(mean=float(np.mean(present)), std=std, n=int(present.size))


def difference(values: list) -> Optional[Difference]:
    """Difference (mean and CONFIDENCE interval) of paired differences; None when there are none."""
    summary = stat(values)
    if summary is None:
        return None
    if summary.std is None:
        return Difference(mean=summary.mean, low=None, high=None, n=1)
    half_width = float(scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, summary.n - 1) * summary.std / np.sqrt(summary.n))
    return Difference(mean=summary.mean, low=summary.mean - half_width, high=summary.mean + half_width, n=summary.n)


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


# The pairing.


def pairing_of(run: Run, keys: Sequence[tuple[str, str]] = PAIRING_KEYS) -> tuple:
    """The values of `keys` (results.json section, key): runs pair when these are equal."""
    return tuple((run.payload.get(section) or {}).get(key) for section, key in keys)


def metric(run: Run, generation: int, key: str) -> Optional[float]:
    """The run's `key` at `generation`, None where the run has not finished it."""
    row = next((r for r in run.payload["generations"] if r["generation"] == generation), None)
    return None if row is None else row.get(key)


@dataclasses.dataclass(frozen=True)
class Generations:
    """Which generations of matched runs (run, partner, ...) a paired value reads: `cells`, fixed (column, run's
    generation, each partner's generation) tuples (LAST: that partner's configured last generation; as the column:
    the first partner's), or without cells every generation g >= `first` of the run against each partner's
    generation `partner` (SAME: g), in column g."""

    cells: tuple[tuple[int, ...], ...] = ()
    partner: Union[int, str] = 1
    first: int = 1

    @property
    def several(self) -> bool:
        """Whether a comparison may fill more than one column."""
        return len(self.cells) != 1

    def __call__(self, run: Run, *partners: Run) -> list[tuple[int, ...]]:
        if self.cells:
            out = []
            for column, generation, *partner_generations in self.cells:
                resolved = [g or p.payload["config"]["generations"] for g, p in zip(partner_generations, partners)]
                out.append((column or resolved[0], generation, *resolved))
            return out
        return [(g, g, *(g if self.partner == SAME else self.partner for _ in partners))
                for g in (row["generation"] for row in run.payload["generations"]) if g >= self.first]


def match_seeds(runs: Sequence[Run], *partners: Sequence[Run], strict: bool = False,
                keys: Sequence[tuple[str, str]] = PAIRING_KEYS) -> list[tuple[Run, ...]]:
    """(run, partner, ...) for each of `runs` (in order) that every partner list has a run of the same seed for, and
    the same data (pairing_of `keys`); one with other data is left out, or with `strict` an error."""
    by_seed = [{runs_lib.seed_of(p): p for p in group} for group in partners]
    matched = []
    for run in runs:
        group = [found.get(runs_lib.seed_of(run)) for found in by_seed]
        if any(partner is None for partner in group):
            continue
        other = next((p for p in group if pairing_of(p, keys) != pairing_of(run, keys)), None)
        if other is not None and strict:
            raise ValueError(f"{run.workdir} and {other.workdir}: not a pair (seed or data differ: "
                             f"{pairing_of(run, keys)} against {pairing_of(other, keys)})")
        if other is None:
            matched.append((run, *group))
    return matched


def paired_values(groups: Sequence[tuple[Run, ...]], key: str, generations: Generations,
                  quantity: Callable[..., float] = operator.sub) -> dict[int, dict[int, float]]:
    """{column: {seed: quantity of the runs' `key`}} per match_seeds group (run, partner, ...) and cell of
    `generations` (by default the run's value minus the partner's), over the cells where every run has its
    generation; columns ascending, seeds in the groups' order."""
    by_column: dict[int, dict[int, float]] = {}
    for group in groups:
        for column, *group_generations in generations(*group):
            values = [metric(run, g, key) for run, g in zip(group, group_generations)]
            if all(value is not None for value in values):
                by_column.setdefault(column, {})[runs_lib.seed_of(group[0])] = quantity(*values)
    return {column: by_column[column] for column in sorted(by_column)}


def paired_differences(groups: Sequence[tuple[Run, ...]], key: str, generations: Generations) -> dict[int, Difference]:
    """paired_values' differences summarised per column (mean and CONFIDENCE interval)."""
    return {column: difference(list(values.values()))
            for column, values in paired_values(groups, key, generations).items()}


# The report's paired differences.


class Baseline(NamedTuple):
    """One kind of paired difference in Configuration.paired: `name`, what is subtracted (`text`), from the run
    itself (`own`) or the reference configuration's run, of the ensemble accuracy or not, at which generations."""

    name: str
    text: str
    own: bool
    ensemble: bool
    generations: Generations


BASELINES = (
    Baseline("own_gen1", "gen 1 of the same run", True, False, Generations(first=2)),
    Baseline("reference_gen1", "reference gen 1, same seed", False, False, Generations()),
    # At generation 1 the next two equal reference_gen1's (an ensemble of one is that model): from generation 2 on.
    Baseline("reference_genk", "reference gen k, same seed", False, False, Generations(partner=SAME, first=2)),
    Baseline("reference_ensemble", "ensembles of gens 1..k: this run's minus the reference's, same seed", False,
             True, Generations(partner=SAME, first=2)),
)


def pair_configurations(configurations: list[Configuration], reference: int) -> None:
    """Fills each configuration's `paired` (BASELINES): every run against its own generation 1, and (all but the
    reference) against the reference configuration's run with the same PAIRING_KEYS; runs without such a partner
    are left out."""
    for index, configuration in enumerate(configurations):
        key = runs_lib.held_out_key(configuration)
        own = match_seeds(configuration.runs, configuration.runs)
        pairs = match_seeds(configuration.runs, configurations[reference].runs)
        configuration.paired = {
            baseline.name: paired_differences(own if baseline.own else pairs,
                                              f"ensemble_{key}" if baseline.ensemble else key, baseline.generations)
            for baseline in BASELINES if baseline.own or index != reference
        }


def aggregate(workdirs: Sequence[str], reference: Optional[str] = None) -> Report:
    """Reads every run, groups runs that differ only by seed into configurations (in order of first appearance),
    computes per-generation mean and std over seeds, and paired differences (pair_configurations) against the
    configuration of run folder `reference` (default: the first configuration). All runs must be of one dataset."""
    if not workdirs:
        raise ValueError("no run folders given")
    dataset, groups = runs_lib.group_runs([runs_lib.load_run(w) for w in workdirs])
    configurations = [Configuration(label=label, settings=settings, runs=group, rows=generation_rows(group))
                      for label, settings, group in groups]
    index = runs_lib.reference_index(configurations, reference)
    pair_configurations(configurations, index)
    return Report(dataset=dataset, configurations=configurations, reference=index)
