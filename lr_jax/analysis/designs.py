"""Designs: each design's headline comparisons declared as data (Design, Comparison), PART_TWO, and their cells."""

from __future__ import annotations

import dataclasses
import operator
from typing import Callable, NamedTuple, Optional, Sequence

from lr_jax.analysis import runs as runs_lib
from lr_jax.analysis import stats
from lr_jax.analysis.runs import Run
from lr_jax.analysis.stats import LAST, Generations

FLIP, NO_FLIP = "val_accuracy", "val_accuracy_no_flip"
ENSEMBLE = "ensemble_val_accuracy"


class Quantity(NamedTuple):
    """What a comparison's cell holds per seed: `compute` of the metric values of its runs (run, partner,
    *others, each at its generation of the cell), printed as results.format_metric `kind`."""

    name: str
    compute: Callable[..., float]
    kind: str


DIFFERENCE = Quantity("difference", operator.sub, "points")  # run minus partner


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One headline row: `quantity` (by default `run`'s metric `key` minus `partner`'s) over the seeds that every
    run of the comparison has with the same data, at the cells of `generations`. Runs are named 'folder/name': the
    run folders <name>_seed<S> of that design folder. `group` is the row's first column (the design's name on its
    first row); `run_config` are settings `text` states of `run` (a run trained otherwise is an error, not a
    mislabelled row); `others` are further runs a quantity of more than two runs reads (each cell then gives their
    generations too); `pairing` the results.json keys paired runs share (stats.SAME_VALIDATION where a run trains
    on a subset of the other's training images)."""

    group: str
    text: str
    run: str
    partner: str
    generations: Generations
    key: str = FLIP
    quantity: Quantity = DIFFERENCE
    others: tuple[str, ...] = ()
    pairing: tuple[tuple[str, str], ...] = stats.PAIRING_KEYS
    run_config: tuple[tuple[str, object], ...] = ()  # (config key, value) every `run` must have: what `text` states

    @property
    def names(self) -> tuple[str, ...]:
        return (self.run, self.partner, *self.others)


@dataclasses.dataclass(frozen=True)
class Design:
    """A headline: its `comparisons`, in table order, between run folders under a root (ROOT/<prefix><folder>
    where collected, else ROOT/<folder>; see runs.load_named_runs); `measure` names the metric in the plot;
    `column`, where given, names the table's one column (every comparison's cell in column 1; None: a column per
    generation, "gen k")."""

    name: str
    folders: tuple[str, ...]
    prefix: str
    comparisons: tuple[Comparison, ...]
    measure: str = "validation accuracy"
    column: Optional[str] = None

    @staticmethod
    def design_number(comparison: Comparison) -> int:
        """1, 2, ...: the number its group starts with ("2. stronger refinery", "2"), the design it belongs to."""
        return int(comparison.group.split(".")[0])

    def load_runs(self, root: str) -> dict[tuple[str, int], Run]:
        return runs_lib.load_named_runs(root, self.folders, self.prefix)


class Evaluation(NamedTuple):
    """One evaluation a headline can give every comparison in: its name, and the suffix that turns a comparison's
    key into this evaluation's (a key that already ends in another evaluation's suffix is given in that one only)."""

    name: str
    suffix: str


BOTH_EVALUATIONS = (Evaluation("flip-averaged", ""), Evaluation("without flip", "_no_flip"))


class HeadlineCell(NamedTuple):
    """One filled cell of a headline: its comparison, generation column, {seed: value} and evaluation (None when
    the headline gives one evaluation)."""

    comparison: Comparison
    column: int
    values: dict[int, float]
    evaluation: Optional[str] = None


def evaluated_keys(key: str, evaluations: Optional[Sequence[Evaluation]]) -> list[tuple[Optional[str], str]]:
    """(evaluation name, metric key) pairs a comparison on `key` is given in: (None, key) without evaluations."""
    if not evaluations:
        return [(None, key)]
    own = [e for e in evaluations if e.suffix and key.endswith(e.suffix)]
    if own:
        return [(own[0].name, key)]
    return [(e.name, key + e.suffix) for e in evaluations]


def _check_run_config(run: Run, comparison: Comparison) -> None:
    config = run.payload["config"]
    for key, value in comparison.run_config:
        if config.get(key) != value:
            raise ValueError(f"{run.workdir}: trained with {key}={config.get(key)}, but the headline row "
                             f"'{comparison.text}' states {key}={value}")


def headline_cells(design: Design, runs: dict[tuple[str, int], Run],
                   evaluations: Optional[Sequence[Evaluation]] = None) -> list[HeadlineCell]:
    """Every comparison's cells with at least one seed, in declaration order (then evaluation, then column); runs
    of one seed with other data are an error (stats.match_seeds, strict)."""
    cells = []
    for comparison in design.comparisons:
        groups = stats.match_seeds(*(runs_lib.runs_named(runs, name) for name in comparison.names), strict=True,
                                   keys=comparison.pairing)
        for run, *_ in groups:
            _check_run_config(run, comparison)
        for evaluation, key in evaluated_keys(comparison.key, evaluations):
            values = stats.paired_values(groups, key, comparison.generations, comparison.quantity.compute)
            cells += [HeadlineCell(comparison, column, by_seed, evaluation) for column, by_seed in values.items()]
    return cells


# Part two (experiments/README.md, Part two, explains each control): design 1 online labels with its controls,
# design 2 a stronger refinery, design 3 a converged teacher.
_CHAIN, _TRUTH = "online/online", "online/ground_truth"
_CONVERGED, _CONVERGED_TRUTH = "converged/online", "converged/ground_truth"
_SAME_GENERATION = Generations(((2, 2, 2), (3, 3, 3)))  # generation k against the partner's generation k
_AGAINST_FIRST = Generations(((2, 2, 1), (3, 3, 1)))  # generation k against the partner's generation 1


def _at(column: int, generation: int, partner_generation: int) -> Generations:
    return Generations(((column, generation, partner_generation),))


PART_TWO = Design("Part two", ("online", "stronger", "converged"), "part_two_", (
    Comparison("1. online labels, `cpu` preset", "online chain minus independent ground-truth models", _CHAIN,
               _TRUTH, _SAME_GENERATION),
    Comparison("1", "ensemble of the chain's generations minus ensemble of as many ground-truth models", _CHAIN,
               _TRUTH, _SAME_GENERATION, key=ENSEMBLE),
    Comparison("1", "ensemble of the chain's generations minus the chain's own generation 1", _CHAIN, _CHAIN,
               _AGAINST_FIRST, key=ENSEMBLE),
    Comparison("1", "entropy-matched label smoothing minus ground truth", "online/matched_smoothing", _TRUTH,
               _at(1, 1, 1)),
    Comparison("1", "distillation (T = 4, ground-truth weight 0.5) minus ground-truth model 2",
               "online/distillation", _TRUTH, _at(2, 2, 2)),
    Comparison("1", "distillation minus the online chain's generation 2", "online/distillation", _CHAIN,
               _at(2, 2, 2)),
    Comparison("1", "compute-matched ground truth (3 x the epochs) minus ground truth", "online/compute_matched",
               _TRUTH, _at(1, 1, 1)),
    Comparison("1", "compute-matched ground truth minus the chain's last generation (same SGD steps)",
               "online/compute_matched", _CHAIN, _at(LAST, 1, LAST)),
    Comparison("2. stronger refinery (design 1's compute-matched model)", "teacher minus ground-truth generation 1",
               "stronger/online", _TRUTH, _at(1, 1, 1)),
    Comparison("2", "online student minus ground-truth model 2", "stronger/online", _TRUTH, _at(2, 2, 2)),
    Comparison("2", "online student minus ground-truth generation 1", "stronger/online", _TRUTH, _at(2, 2, 1)),
    Comparison("3. converged teacher (5,000 images, 60 epochs)", "online chain minus independent ground-truth models",
               _CONVERGED, _CONVERGED_TRUTH, _SAME_GENERATION),
    Comparison("3", "ensemble of generations minus ensemble of ground-truth models", _CONVERGED, _CONVERGED_TRUTH,
               _SAME_GENERATION, key=ENSEMBLE),
    Comparison("3", "ensemble of the chain's generations minus the chain's own generation 1", _CONVERGED, _CONVERGED,
               _AGAINST_FIRST, key=ENSEMBLE),
))


# Part three (experiments/README.md, Part three): Label Refinery where its premise holds. Design 1: CIFAR-10N's worst
# labels (40.2% wrong); design 2: its aggregate (9.0%) and one annotator's (17.2%) labels; design 3: random-resized
# crops. The clean-label ceiling is Part two's generation 1 of the same seed (its collected folder part_two_online).
CROP_EPOCHS = 24  # the crop designs' epochs per generation: part_three.sh's CROP_EPOCHS default reads it
RECOVERED = Quantity("recovered fraction", lambda refined, noisy, clean: (refined - noisy) / (clean - noisy), "percent")
_WORST, _WORST_MODELS = "worst/online", "worst/ground_truth"
_CLEAN = "part_two_online/online"
_RECOVERY = Generations(((2, 2, 1, 1), (3, 3, 1, 1)))  # generation k of the chain, the noisy and clean generation 1


def _label_set(group: str, folder: str) -> tuple[Comparison, ...]:
    """The comparisons every CIFAR-10N label set gets: the online chain against independent models on the same
    labels (generation k, ensembles), the clean ceiling, and the fraction of the noise's cost recovered."""
    chain, models = f"{folder}/online", f"{folder}/ground_truth"
    return (
        Comparison(group, "online chain minus independent models on the same labels", chain, models,
                   _SAME_GENERATION),
        Comparison(group.split(".")[0], "ensemble of the chain's generations minus ensemble of as many independent "
                   "models", chain, models, _SAME_GENERATION, key=ENSEMBLE),
        Comparison(group.split(".")[0], "clean labels (Part two's generation 1) minus the noisy labels' generation 1",
                   _CLEAN, models, _at(1, 1, 1)),
        Comparison(group.split(".")[0], "recovered fraction in %: (chain's generation k - noisy) / (clean - noisy)",
                   chain, models, _RECOVERY, quantity=RECOVERED, others=(_CLEAN,)),
        Comparison(group.split(".")[0], "labels handed on, accuracy against the dataset's labels: chain minus "
                   "independent models", chain, models, _SAME_GENERATION, key="train_accuracy_dataset_labels"),
    )


PART_THREE = Design("Part three", ("worst", "aggre", "random1", "crops_008", "crops_035", "part_two_online"),
                    "part_three_", (
    *_label_set("1. CIFAR-10N worst labels (40.2% wrong)", "worst"),
    Comparison("1", "precomputed chain (the blog's) minus independent models on the same labels", "worst/precomputed",
               _WORST_MODELS, _SAME_GENERATION),
    Comparison("1", "entropy-matched label smoothing minus the noisy labels' generation 1", "worst/matched_smoothing",
               _WORST_MODELS, _at(1, 1, 1)),
    Comparison("1", "distillation (T = 4, given-label weight 0.5) minus independent model 2", "worst/distillation",
               _WORST_MODELS, _at(2, 2, 2)),
    Comparison("1", "compute-matched run (36 epochs) on the same labels minus generation 1", "worst/compute_matched",
               _WORST_MODELS, _at(1, 1, 1)),
    Comparison("1", "compute-matched run minus the chain's last generation (same SGD steps)", "worst/compute_matched",
               _WORST, _at(LAST, 1, LAST)),
    *_label_set("2. CIFAR-10N aggregate labels (9.0% wrong)", "aggre"),
    *_label_set("3. CIFAR-10N one annotator's labels (17.2% wrong)", "random1"),
    *(comparison for scale, folder in (("0.08-1", "crops_008"), ("0.35-1", "crops_035")) for comparison in (
        Comparison(f"4. random-resized crops, scale {scale}", "online chain minus independent ground-truth models",
                   f"{folder}/online", f"{folder}/ground_truth", _SAME_GENERATION),
        Comparison("4", "ensemble of the chain's generations minus ensemble of as many ground-truth models",
                   f"{folder}/online", f"{folder}/ground_truth", _SAME_GENERATION, key=ENSEMBLE),
        Comparison("4", f"generation 1 with these crops ({CROP_EPOCHS} epochs, part_three.sh) minus pad-and-crop's "
                   "at the preset's 12 (Part two)",
                   f"{folder}/ground_truth", _CLEAN, _at(1, 1, 1), run_config=(("epochs", CROP_EPOCHS),)),
    )),
))


# Label issues (experiments/label_issues.sh; experiments/README.md, "Refined labels as a product"): which cleaning of
# CIFAR-10N's labels trains the better model, one generation at the `cpu` preset, paired by seed. The noisy labels'
# model and the refinery's are the online chain's generations 1 and 2 (part three's <set>/online); the retrains
# live in label_issues/<set>/; the clean ceiling is Part two's generation 1 of the same seed. A retrain that drops
# images pairs on the seed and validation split only (stats.SAME_VALIDATION).


CLEANED_LABEL_SETS = ("worst", "aggre")  # experiments/label_issues.sh's default DESIGNS


def _cleaning(group: str, label_set: str) -> tuple[Comparison, ...]:
    chain, cleaned = f"{label_set}/online", f"label_issues/{label_set}"
    relabel, drop = f"{cleaned}/relabel_refinery", f"{cleaned}/drop_cleanlab"
    subset = stats.SAME_VALIDATION
    arms = (("the refinery's labels (the chain's generation 2)", chain, 2, stats.PAIRING_KEYS),
            ("the refinery's flags relabelled with its argmax", relabel, 1, stats.PAIRING_KEYS),
            ("cleanlab's flags (K-fold) left out", drop, 1, subset))
    first = group.split(".")[0]
    return (
        *(Comparison(group if k == 0 else first, f"{text} minus the noisy labels", run, chain, _at(1, generation, 1),
                     pairing=pairing) for k, (text, run, generation, pairing) in enumerate(arms)),
        Comparison(first, "the refinery's flags relabelled minus cleanlab's flags left out", relabel, drop,
                   _at(1, 1, 1), pairing=subset),
        Comparison(first, "the refinery's labels (generation 2) minus cleanlab's flags left out", chain, drop,
                   _at(1, 2, 1), pairing=subset),
        Comparison(first, "clean labels (Part two's generation 1) minus the noisy labels", _CLEAN, chain, _at(1, 1, 1)),
        *(Comparison(first, f"recovered fraction in %, {text}: (cleaned - noisy) / (clean - noisy)", run, chain,
                     Generations(((1, generation, 1, 1),)), quantity=RECOVERED, others=(_CLEAN,), pairing=pairing)
          for text, run, generation, pairing in arms),
    )


LABEL_ISSUES = Design("Label issues", (*CLEANED_LABEL_SETS, *(f"label_issues/{label_set}" for label_set in
                                                             CLEANED_LABEL_SETS), "part_two_online"),
                      "part_three_", (
    *_cleaning("1. CIFAR-10N worst labels (40.2% wrong)", "worst"),
    *_cleaning("2. CIFAR-10N aggregate labels (9.0% wrong)", "aggre"),
), column="mean [95% interval] (pairs)")
