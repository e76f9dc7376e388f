"""lr_jax.labels.detection: flag metrics and score metrics, by hand on tiny cases and against sklearn."""

import numpy as np
import pytest

from lr_jax.labels import detection
from lr_jax.labels.checks import LabelsError

T, F = True, False


def test_flag_metrics_by_hand():
    # flagged {0, 1, 4}, errors {0, 2, 4}: 2 hits; precision 2/3, recall 2/3, F1 2/3
    metrics = detection.flag_metrics(np.array([T, T, F, F, T]), np.array([T, F, T, F, T]))
    assert metrics == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "flagged": 3, "errors": 3})
    # flagged {0}, errors {0, 1, 2}: precision 1, recall 1/3, F1 = 2 * 1 * 1/3 / (4/3) = 1/2
    metrics = detection.flag_metrics(np.array([T, F, F]), np.array([T, T, T]))
    assert metrics["precision"] == 1.0 and metrics["recall"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx(0.5)


def test_flag_metrics_undefined_ratios_are_none():
    nothing_flagged = detection.flag_metrics(np.array([F, F]), np.array([T, F]))
    assert nothing_flagged == {"precision": None, "recall": 0.0, "f1": None, "flagged": 0, "errors": 1}
    no_errors = detection.flag_metrics(np.array([T, F]), np.array([F, F]))
    assert no_errors == {"precision": 0.0, "recall": None, "f1": None, "flagged": 1, "errors": 0}
    all_wrong = detection.flag_metrics(np.array([T, F]), np.array([F, T]))
    assert all_wrong["precision"] == 0.0 and all_wrong["recall"] == 0.0 and all_wrong["f1"] == 0.0


def test_score_metrics_by_hand_without_ties():
    # scores 0.9 (error), 0.8, 0.7 (error), 0.6.
    # AUROC: (error, correct) pairs 0.9>0.8 yes, 0.9>0.6 yes, 0.7>0.8 no, 0.7>0.6 yes -> 3/4.
    #   By ranks: ascending ranks 0.6:1 0.7:2 0.8:3 0.9:4; errors' rank sum 6; U = 6 - 2*3/2 = 3; 3/(2*2) = 0.75.
    # AP: thresholds from the top: 0.9 -> P 1/1, R 1/2; 0.8 -> P 1/2, R 1/2; 0.7 -> P 2/3, R 1; 0.6 -> P 2/4, R 1.
    #   AP = (1/2 - 0) * 1 + 0 * 1/2 + (1 - 1/2) * 2/3 + 0 * 1/2 = 1/2 + 1/3 = 5/6.
    metrics = detection.score_metrics(np.array([0.9, 0.8, 0.7, 0.6]), np.array([T, F, T, F]))
    assert metrics["auroc"] == pytest.approx(0.75)
    assert metrics["average_precision"] == pytest.approx(5 / 6)


def test_score_metrics_by_hand_with_ties():
    # scores 0.5 (error), 0.5, 0.2 (error), 0.2, 0.1.
    # AUROC: error 0.5 vs correct 0.5, 0.2, 0.1 -> 1/2 + 1 + 1; error 0.2 vs 0.5, 0.2, 0.1 -> 0 + 1/2 + 1;
    #   4 of 6 pairs -> 2/3. By average ranks: 0.1:1, 0.2:(2+3)/2=2.5, 0.5:(4+5)/2=4.5; errors' sum 7;
    #   U = 7 - 3 = 4; 4/6.
    # AP: ties enter together: >=0.5 -> P 1/2, R 1/2; >=0.2 -> P 2/4, R 1; >=0.1 -> P 2/5, R 1.
    #   AP = 1/2 * 1/2 + 1/2 * 1/2 + 0 = 1/2.
    metrics = detection.score_metrics(np.array([0.5, 0.5, 0.2, 0.2, 0.1]), np.array([T, F, T, F, F]))
    assert metrics["auroc"] == pytest.approx(2 / 3)
    assert metrics["average_precision"] == pytest.approx(0.5)


def test_precision_at_top_by_hand():
    # scores 0.9 (error), 0.8, 0.8 (error), 0.1 (error): top 1 {0} -> 1; top 2 {0, 1} (the tie at 0.8 in the
    # images' order) -> 1/2; top 3 -> 2/3; top 10 is every image -> 3/4.
    score, is_error = np.array([0.9, 0.8, 0.8, 0.1]), np.array([T, F, T, T])
    assert [detection.precision_at_top(score, is_error, k) for k in (1, 2, 3, 10)] == pytest.approx(
        [1.0, 0.5, 2 / 3, 0.75])
    assert detection.precision_at_top(np.array([]), np.array([], bool), 5) is None
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        detection.precision_at_top(score, is_error, 0)


def test_constant_score_is_chance():
    # all tied: every pair counts 1/2 -> AUROC 1/2; one threshold flags everything -> AP = P = 2/5 (prevalence)
    metrics = detection.score_metrics(np.zeros(5), np.array([T, T, F, F, F]))
    assert metrics == pytest.approx({"auroc": 0.5, "average_precision": 0.4})


def test_score_metrics_undefined_cases():
    assert detection.score_metrics(np.array([0.1, 0.2]), np.array([F, F])) == {"auroc": None,
                                                                                  "average_precision": None}
    only_errors = detection.score_metrics(np.array([0.1, 0.2]), np.array([T, T]))
    assert only_errors == {"auroc": None, "average_precision": 1.0}


@pytest.mark.parametrize("seed", range(6))
def test_score_metrics_match_sklearn(seed):
    metrics_lib = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 600))
    is_error = rng.random(n) < rng.uniform(0.05, 0.5)
    is_error[:2] = [True, False]
    score = rng.random(n) + 0.6 * is_error
    if seed % 2:  # many ties
        score = np.round(score, 1)
    ours = detection.score_metrics(score, is_error)
    assert ours["auroc"] == pytest.approx(metrics_lib.roc_auc_score(is_error, score), abs=1e-12)
    assert ours["average_precision"] == pytest.approx(metrics_lib.average_precision_score(is_error, score), abs=1e-12)


def test_flag_metrics_match_sklearn():
    metrics_lib = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    is_error, flagged = rng.random(300) < 0.2, rng.random(300) < 0.3
    ours = detection.flag_metrics(flagged, is_error)
    assert ours["precision"] == pytest.approx(metrics_lib.precision_score(is_error, flagged))
    assert ours["recall"] == pytest.approx(metrics_lib.recall_score(is_error, flagged))
    assert ours["f1"] == pytest.approx(metrics_lib.f1_score(is_error, flagged))


def test_bad_inputs_raise_value_errors():
    with pytest.raises(LabelsError, match="flagged has 2 entries, expected 3"):
        detection.flag_metrics(np.array([T, F]), np.array([T, F, T]))
    with pytest.raises(ValueError, match="is_error must be a 1-D boolean array"):
        detection.score_metrics(np.array([0.1, 0.2]), np.array([1, 0]))
    with pytest.raises(ValueError, match="NaN"):
        detection.score_metrics(np.array([0.1, np.nan]), np.array([T, F]))
