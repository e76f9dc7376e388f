"""lr_jax.labels.scores and lr_jax.labels.confident_learning: suspicion, flags, ranking, the clean-set recipes,
and cleanlab's flags and scores on a synthetic set with known flipped labels."""

import numpy as np
import pytest

from lr_jax.labels import confident_learning, detection, scores
from lr_jax.labels.checks import LabelsError

PROBS = np.array([[0.7, 0.2, 0.1],   # given 0: agrees, suspicion 0.3
                  [0.1, 0.8, 0.1],   # given 2: argmax 1, suspicion 0.9
                  [0.5, 0.5, 0.0],   # given 1: argmax tie -> 0 (lower index), suspicion 0.5
                  [0.2, 0.2, 0.6],   # given 2: agrees, suspicion 0.4
                  [0.1, 0.8, 0.1]],  # given 0: argmax 1, suspicion 0.9 (ties image 1)
                 np.float32)
GIVEN = np.array([0, 2, 1, 2, 0])


def test_suspicion_is_one_minus_given_probability():
    assert scores.suspicion(PROBS, GIVEN) == pytest.approx([0.3, 0.9, 0.5, 0.4, 0.9], abs=1e-6)


def test_flags_are_argmax_disagreements_with_low_index_ties():
    assert scores.refinery_flags(PROBS, GIVEN).tolist() == [False, True, True, False, True]


def test_rank_suspects_is_stable_most_suspect_first():
    assert scores.rank_suspects(PROBS, GIVEN).tolist() == [1, 4, 2, 3, 0]  # 1 and 4 tie: index order
    assert scores.rank_suspects(PROBS, GIVEN, top=2).tolist() == [1, 4]
    assert scores.rank_suspects(PROBS, GIVEN, top=0).tolist() == []
    with pytest.raises(LabelsError, match="top"):
        scores.rank_suspects(PROBS, GIVEN, top=-1)


def test_relabel_and_keep_mask():
    flagged = scores.refinery_flags(PROBS, GIVEN)
    assert scores.relabel(GIVEN, PROBS, flagged).tolist() == [0, 1, 0, 2, 1]
    assert scores.relabel(GIVEN, PROBS, np.zeros(5, bool)).tolist() == GIVEN.tolist()
    assert scores.keep_mask(flagged).tolist() == [True, False, False, True, False]


def test_inputs_are_checked():
    with pytest.raises(LabelsError, match="outside"):
        scores.suspicion(PROBS, np.array([0, 1, 2, 3, 0]))
    with pytest.raises(LabelsError, match="do not sum to 1"):
        scores.suspicion(PROBS * 3, GIVEN)
    with pytest.raises(LabelsError, match="given has 4 entries, expected 5"):
        scores.refinery_flags(PROBS, GIVEN[:4])
    with pytest.raises(LabelsError, match="integer"):
        scores.suspicion(PROBS, GIVEN.astype(float))


def flipped_set(n=200, classes=4, flips=10, seed=0):
    """(probs, given, is_error): confident probabilities of the true class (0.85-0.9, the rest spread at random),
    and `flips` given labels moved to another class, on images whose true class has probability 0.95: above
    cleanlab's per-class threshold (the mean probability of class j over the images given j, at most 0.9 here),
    so confident learning counts every one of them."""
    rng = np.random.default_rng(seed)
    true = np.arange(n) % classes
    rest = rng.dirichlet(np.ones(classes - 1), size=n)
    top = rng.uniform(0.85, 0.9, size=n)
    flipped = rng.choice(n, flips, replace=False)
    top[flipped] = 0.95
    probs = np.empty((n, classes))
    for i in range(n):
        probs[i, true[i]] = top[i]
        probs[i, np.arange(classes) != true[i]] = (1 - top[i]) * rest[i]
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, classes, flips)) % classes
    return probs.astype(np.float32), given, given != true


def test_both_methods_find_the_flipped_labels():
    pytest.importorskip("cleanlab")
    probs, given, is_error = flipped_set()
    assert is_error.sum() == 10
    for flagged in (confident_learning.cleanlab_flags(probs, given), scores.refinery_flags(probs, given)):
        assert flagged.dtype == bool and flagged.shape == (200,)
        assert flagged.tolist() == is_error.tolist()
        assert detection.flag_metrics(flagged, is_error) == {"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                                             "flagged": 10, "errors": 10}
    for score in (confident_learning.cleanlab_scores(probs, given), scores.suspicion(probs, given)):
        assert detection.score_metrics(score, is_error) == {"auroc": 1.0, "average_precision": 1.0}
    assert set(scores.rank_suspects(probs, given, top=10).tolist()) == set(np.flatnonzero(is_error).tolist())


def test_cleanlab_score_equals_refinery_score_on_the_same_probabilities():
    pytest.importorskip("cleanlab")
    probs, given, _ = flipped_set(seed=1)
    np.testing.assert_allclose(confident_learning.cleanlab_scores(probs, given), scores.suspicion(probs, given),
                               atol=1e-6)


def test_cleanlab_on_noisier_probabilities_is_sane():
    pytest.importorskip("cleanlab")
    probs, given, is_error = flipped_set(n=400, flips=40, seed=2)
    noisy = probs + np.random.default_rng(3).uniform(0, 0.6, probs.shape)
    noisy = (noisy / noisy.sum(axis=1, keepdims=True)).astype(np.float32)
    metrics = detection.flag_metrics(confident_learning.cleanlab_flags(noisy, given), is_error)
    assert metrics["errors"] == 40 and 0 < metrics["flagged"] < 400
    assert 0.5 < metrics["precision"] <= 1.0 and 0.5 < metrics["recall"] <= 1.0
    ranking = detection.score_metrics(confident_learning.cleanlab_scores(noisy, given), is_error)
    assert 0.9 < ranking["auroc"] <= 1.0 and 0.5 < ranking["average_precision"] <= 1.0


def test_cleanlab_wrappers_check_inputs():
    with pytest.raises(LabelsError, match="do not sum to 1"):
        confident_learning.cleanlab_flags(np.ones((4, 2), np.float32), np.array([0, 1, 0, 1]))


def test_what_cleanlab_refuses_is_one_labels_error():
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=30).astype(np.float32)
    given = np.arange(30) % 3
    with pytest.raises(LabelsError, match="cleanlab's get_label_quality_scores refused these probabilities and "
                       "labels: no_such_method is not a valid scoring method") as refused:
        confident_learning.cleanlab_scores(probs, given, method="no_such_method")
    assert "\n" not in str(refused.value)
