"""Detection metrics: how well a flagged set and a suspicion score find the known label errors.

`is_error` marks the images whose given label is wrong (on CIFAR-10N: the noisy label differs from the clean one).
Undefined ratios are None, never NaN or a warning: precision of an empty flagged set, recall and F1 when there are
no errors, AUROC without both errors and correct labels, average precision without errors, precision at the top k
without images."""

from __future__ import annotations

from typing import Optional

import numpy as np

from lr_jax.labels import checks


def _ratio(numerator: int, denominator: int) -> Optional[float]:
    return numerator / denominator if denominator else None


def flag_metrics(flagged, is_error) -> dict:
    """{precision, recall, f1, flagged, errors} of the flagged set: precision = flagged errors / flagged (None when
    nothing is flagged), recall = flagged errors / errors (None when there are no errors), f1 their harmonic mean
    (None when either is None, 0.0 when both are 0); `flagged` and `errors` are counts."""
    is_error = checks.mask(is_error, "is_error")
    flagged = checks.mask(flagged, "flagged", len(is_error))
    hits, count, errors = int(np.sum(flagged & is_error)), int(flagged.sum()), int(is_error.sum())
    precision, recall = _ratio(hits, count), _ratio(hits, errors)
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": count, "errors": errors}


def auroc(score, is_error) -> Optional[float]:
    """The probability that a random error outscores a random correct label, ties counting one half: the
    Mann-Whitney U statistic over (errors x correct labels), from average ranks. None without both kinds."""
    is_error = checks.mask(is_error, "is_error")
    score = checks.scores(score, "score", len(is_error))
    positives = int(is_error.sum())
    negatives = len(is_error) - positives
    if not positives or not negatives:
        return None
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    average_ranks = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based; a tie group shares its mean rank
    u = average_ranks[inverse.ravel()][is_error].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def average_precision(score, is_error) -> Optional[float]:
    """sklearn's average precision: sum over the distinct score thresholds t, from the highest, of
    (R_t - R_previous) * P_t, where P_t and R_t are the precision and recall of flagging every image scoring >= t
    (tied scores enter together; no interpolation). None when there are no errors."""
    is_error = checks.mask(is_error, "is_error")
    score = checks.scores(score, "score", len(is_error))
    if not is_error.any():
        return None
    order = np.argsort(-score, kind="stable")
    ordered = score[order]
    ends = np.append(np.flatnonzero(ordered[1:] != ordered[:-1]), len(ordered) - 1)  # last of each tie group
    true_positives = np.cumsum(is_error[order])[ends]
    precision = true_positives / (ends + 1.0)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def precision_at_top(score, is_error, k: int) -> Optional[float]:
    """The fraction of errors among the `k` highest-scoring images (all of them when there are fewer; ties in
    the images' order, as label_issues.csv ranks them): what a reviewer who checks the top k suspects finds. None
    when there are no images."""
    is_error = checks.mask(is_error, "is_error")
    score = checks.scores(score, "score", len(is_error))
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    top = np.argsort(-score, kind="stable")[:k]
    return float(is_error[top].mean()) if len(top) else None


def score_metrics(score, is_error) -> dict:
    """{auroc, average_precision} of a suspicion score (higher = more likely a wrong label) against `is_error`."""
    return {"auroc": auroc(score, is_error), "average_precision": average_precision(score, is_error)}
