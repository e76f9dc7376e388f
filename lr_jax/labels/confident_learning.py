"""Confident learning (Northcutt et al. 2021) through cleanlab: its flagged set and its suspicion score, the
baseline the refinery's label suspicion (scores) is measured against. cleanlab is imported only when called.

Flags: cleanlab.filter.find_label_issues with its default filter_by='prune_by_noise_rate' (the paper's
recommended method: for each off-diagonal cell (given k, true j) of the calibrated confident joint, flag as many
images of given label k as the cell's estimated count, those with the largest margin p(j) - p(k)), and its
defaults frac_noise=1.0, min_examples_per_class=1.
Score: 1 - cleanlab.rank.get_label_quality_scores(method='self_confidence'), i.e. 1 - p(given label), the same
rule as scores.suspicion, so on the same probabilities the two scores are identical and a comparison measures
where the probabilities come from. Both want out-of-sample probabilities (folds) for cleanlab's baseline."""

from __future__ import annotations

import contextlib

from typing import Optional

import numpy as np

from lr_jax.labels import checks

FILTER_BY = "prune_by_noise_rate"  # cleanlab 2.x's default
QUALITY_METHOD = "self_confidence"  # cleanlab 2.x's default


def cleanlab_flags(probs, given, filter_by: str = FILTER_BY, n_jobs: Optional[int] = 1) -> np.ndarray:
    """bool (N,): the images cleanlab.filter.find_label_issues flags as label issues. `n_jobs` is cleanlab's
    process count (1 by default: no fork of a process that may hold JAX's threads; the result is the same)."""
    from cleanlab.filter import find_label_issues

    probs, given = checks.probs_and_labels(probs, given)
    with _cleanlab_errors("find_label_issues"):
        flagged = find_label_issues(labels=given, pred_probs=probs, filter_by=filter_by, n_jobs=n_jobs)
    return np.asarray(flagged, dtype=bool)


def cleanlab_scores(probs, given, method: str = QUALITY_METHOD) -> np.ndarray:
    """float64 (N,): 1 - cleanlab's label quality score; higher = more likely a wrong label."""
    from cleanlab.rank import get_label_quality_scores

    probs, given = checks.probs_and_labels(probs, given)
    with _cleanlab_errors("get_label_quality_scores"):
        quality = get_label_quality_scores(labels=given, pred_probs=probs, method=method)
    return 1.0 - np.asarray(quality, np.float64)


@contextlib.contextmanager
def _cleanlab_errors(function: str):
    """cleanlab's ValueError (input it refuses) as a LabelsError naming the call: one line for the command lines."""
    try:
        yield
    except ValueError as error:
        reason = " ".join(str(error).split())  # cleanlab's messages span lines
        raise checks.LabelsError(f"cleanlab's {function} refused these probabilities and labels: {reason}") from None
