"""The refinery's label suspicion: a score per image, the flagged set, the ranking of suspects, and the two
recipes for a cleaned training set (relabel the flagged images, or drop them).

Score: 1 - p(given label), the refinery's probability for the label the image was trained with, complemented so
that a higher score is more suspect. This is cleanlab's default label-quality score ("self_confidence",
cleanlab.rank.get_label_quality_scores) complemented, so comparing these scores with confident_learning's on
other probabilities compares only the probabilities' source (the refinery's soft labels vs cleanlab's
out-of-sample predictions), never the scoring rule.
Flags: the images whose refinery argmax differs from the given label (cleanlab's 'predicted_neq_given' rule);
an argmax tie goes to the lower class index (numpy's argmax)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from lr_jax.labels import checks


def suspicion(probs, given) -> np.ndarray:
    """float64 (N,): 1 - probs[i, given[i]]; higher = more likely a wrong label."""
    probs, given = checks.probs_and_labels(probs, given)
    return 1.0 - probs[np.arange(len(given)), given].astype(np.float64)


def refinery_flags(probs, given) -> np.ndarray:
    """bool (N,): the images whose most probable class under `probs` is not their given label."""
    probs, given = checks.probs_and_labels(probs, given)
    return np.argmax(probs, axis=1) != given


def rank_suspects(probs, given, top: Optional[int] = None) -> np.ndarray:
    """int64 indices, most suspect first (highest `suspicion`), ties in index order; the first `top` only when
    given (all N when None)."""
    score = suspicion(probs, given)
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0):
        raise checks.LabelsError(f"top must be a non-negative integer or None, got {top!r}")
    order = np.argsort(-score, kind="stable").astype(np.int64)
    return order if top is None else order[:top]


def relabel(given, probs, flagged) -> np.ndarray:
    """int64 (N,): the given labels with each flagged image's label replaced by the refinery's argmax."""
    probs, given = checks.probs_and_labels(probs, given)
    flagged = checks.mask(flagged, "flagged", len(given))
    return np.where(flagged, np.argmax(probs, axis=1), given).astype(np.int64)


def keep_mask(flagged) -> np.ndarray:
    """bool (N,): the images to keep when the flagged ones are dropped (train on images[keep], labels[keep])."""
    return ~checks.mask(flagged, "flagged")
