"""lr_jax.labels.folds: stratified fold assignment, its --folds errors, and assembling out-of-fold predictions."""

import numpy as np
import pytest

from lr_jax.labels import folds as folds_lib
from lr_jax.labels.folds import FoldsError


def imbalanced_labels(seed=0):
    counts = [400, 250, 200, 97, 53]  # 1000 images
    labels = np.repeat(np.arange(5), counts)
    return np.random.default_rng(seed).permutation(labels)


def test_folds_are_balanced_and_stratified():
    given = imbalanced_labels()
    folds = folds_lib.assign_folds(given, 5, seed=0)
    assert folds.dtype == np.int64 and folds.shape == given.shape
    assert np.bincount(folds).tolist() == [200] * 5
    for c in range(5):
        per_fold = np.bincount(folds[given == c], minlength=5)
        assert per_fold.min() >= 1 and per_fold.max() - per_fold.min() <= 1
    uneven = folds_lib.assign_folds(given[:997], 4, seed=1)
    assert sorted(np.bincount(uneven).tolist()) == [249, 249, 249, 250]


def test_folds_are_deterministic_per_seed():
    given = imbalanced_labels()
    first = folds_lib.assign_folds(given, 3, seed=11)
    assert np.array_equal(first, folds_lib.assign_folds(given.copy(), 3, seed=11))
    assert not np.array_equal(first, folds_lib.assign_folds(given, 3, seed=12))


def test_fold_count_errors_name_the_flag():
    given = np.array([0] * 10 + [1] * 8 + [2] * 6 + [3] * 4)
    with pytest.raises(FoldsError, match=r"^--folds 5 is larger than class 3's 4 images"):
        folds_lib.assign_folds(given, 5, seed=0)
    with pytest.raises(ValueError, match=r"class 3 \(truck\)'s 4 images"):
        folds_lib.assign_folds(given, 5, seed=0, class_names=["a", "b", "c", "truck"])
    for k in (1, 0, -2):
        with pytest.raises(ValueError, match=rf"^--folds {k}: .*at least 2 folds"):
            folds_lib.assign_folds(given, k, seed=0)
    assert set(folds_lib.assign_folds(given, 4, seed=0).tolist()) == {0, 1, 2, 3}  # 4 folds fit class 3
    with pytest.raises(ValueError, match="no images"):
        folds_lib.assign_folds(np.array([], np.int64), 2, seed=0)


def simulate(given, folds, classes):
    """{fold: (held-out indices, probs)}, each fold's model trained on the other folds only (checked)."""
    predictions = {}
    for fold in np.unique(folds):
        train, held_out = folds_lib.fold_split(folds, fold)
        assert not np.intersect1d(train, held_out).size and len(train) + len(held_out) == len(given)
        probs = np.full((len(held_out), classes), 0.1 / (classes - 1), np.float32)
        probs[np.arange(len(held_out)), given[held_out]] = 0.9
        predictions[int(fold)] = (held_out, probs)
    return predictions


def test_out_of_fold_assembles_every_image_once():
    given = imbalanced_labels()
    folds = folds_lib.assign_folds(given, 5, seed=0)
    probs = folds_lib.out_of_fold(simulate(given, folds, 5), len(given), folds=folds)
    assert probs.shape == (1000, 5) and probs.dtype == np.float32
    assert np.array_equal(probs.argmax(axis=1), given)


def test_out_of_fold_rejects_a_model_predicting_its_training_images():
    given = imbalanced_labels()
    folds = folds_lib.assign_folds(given, 3, seed=0)
    predictions = simulate(given, folds, 5)
    swapped = {0: predictions[1], 1: predictions[0], 2: predictions[2]}  # fold 0's model predicts fold 1
    folds_lib.out_of_fold(swapped, len(given))  # each image once: fine without the assignment
    with pytest.raises(FoldsError, match=r"fold 0's model predicts image \d+, which it trained on"):
        folds_lib.out_of_fold(swapped, len(given), folds=folds)


def test_out_of_fold_rejects_twice_and_never():
    given = imbalanced_labels()
    folds = folds_lib.assign_folds(given, 3, seed=0)
    predictions = simulate(given, folds, 5)
    indices, probs = predictions[2]
    with pytest.raises(FoldsError, match=r"image \d+ is predicted by folds 1 and 2"):
        folds_lib.out_of_fold({**predictions, 2: (np.append(indices, predictions[1][0][0]),
                                                  np.vstack([probs, probs[:1]]))}, len(given))
    with pytest.raises(FoldsError, match="fold 2 predicts image"):
        folds_lib.out_of_fold({**predictions, 2: (np.append(indices, indices[0]), np.vstack([probs, probs[:1]]))},
                              len(given))
    missing = np.sort(indices[:3])
    with pytest.raises(FoldsError, match=rf"^3 image\(s\) are predicted by no fold, e.g. {missing[0]}"):
        folds_lib.out_of_fold({**predictions, 2: (indices[3:], probs[3:])}, len(given))
    with pytest.raises(FoldsError, match=r"outside \[0, 1000\)"):
        folds_lib.out_of_fold({**predictions, 2: (indices + 1000, probs)}, len(given))
    with pytest.raises(FoldsError, match="no fold predictions"):
        folds_lib.out_of_fold({}, len(given))
