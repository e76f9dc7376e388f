"""`make_splits`: validation and --train_size drawn from the dataset's own labels, image ids carried along, and
replacement training labels (hard or soft) from a label file."""

import numpy as np
import pytest

from lr_jax.data import DataError, make_dataset, make_splits

C = 4


def dataset(ids=None, count=40):
    """`count` 2x2 grey images whose pixels are their row number, labels cycling over C classes."""
    images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, 2, 2, 1)).copy()
    return make_dataset("toy", [f"c{c}" for c in range(C)], (images, np.arange(count) % C), train_ids=ids)


def replacement(count=40, seed=0):
    """Hard labels that differ from the dataset's on about half the rows."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(count) < 0.5, rng.integers(0, C, count), np.arange(count) % C)


@pytest.mark.parametrize("train_size", [None, 12])
def test_the_same_images_are_held_out_with_or_without_replacement_labels(train_size):
    data = dataset()
    plain = make_splits(data, val_size=8, train_size=train_size, seed=3)
    given = replacement()
    replaced = make_splits(data, val_size=8, train_size=train_size, seed=3, train_labels=given)
    for field in ("train_index", "val_index", "train_ids", "val_ids", "train_images", "val_images", "val_labels"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(replaced, field), err_msg=field)
    np.testing.assert_array_equal(replaced.train_labels, given[replaced.train_index])
    np.testing.assert_array_equal(replaced.dataset_train_labels, data.train_labels[replaced.train_index])
    assert not np.array_equal(replaced.train_labels, replaced.dataset_train_labels)  # the file's labels are used
    np.testing.assert_array_equal(plain.dataset_train_labels, plain.train_labels)  # always set; equal without one
    assert plain.train_targets is None and replaced.train_targets is None
    assert replaced.train_labels.dtype == np.int32
    assert len(plain.train_index) == (train_size or 32)


def test_ids_and_rows_follow_the_images():
    """Each split image is the dataset row `*_index` names (its pixel value) and carries that row's id."""
    paths = np.asarray([f"train/c{i % C}/{i:04d}.png" for i in range(40)])
    splits = make_splits(dataset(ids=paths), val_size=8, train_size=20, seed=0)
    for images, rows, ids in ((splits.train_images, splits.train_index, splits.train_ids),
                              (splits.val_images, splits.val_index, splits.val_ids)):
        np.testing.assert_array_equal(images[:, 0, 0, 0], rows)
        np.testing.assert_array_equal(ids, paths[rows])
    assert not set(splits.train_index) & set(splits.val_index)
    official = make_splits(dataset(), val_size=8, train_size=None, seed=0)  # default ids: the official index
    np.testing.assert_array_equal(official.train_ids, official.train_index)
    assert official.train_ids.dtype == np.int64


def test_soft_labels_train_on_their_argmax_and_keep_their_rows():
    rng = np.random.default_rng(1)
    soft = rng.dirichlet(np.ones(C), 40).astype(np.float32)
    splits = make_splits(dataset(), val_size=8, train_size=None, seed=0, train_labels=soft)
    np.testing.assert_array_equal(splits.train_labels, soft.argmax(1)[splits.train_index])
    np.testing.assert_allclose(splits.train_targets, soft[splits.train_index])
    assert splits.train_targets.dtype == np.float32 and splits.train_labels.dtype == np.int32
    np.testing.assert_array_equal(splits.val_labels, dataset().train_labels[splits.val_index])
    hand = np.array([[0.1, 0.7, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1]] * 20, np.float32)  # argmax 1, 0, 1, 0, ...
    np.testing.assert_array_equal(make_splits(dataset(), 8, None, 0, train_labels=hand).train_labels,
                                  np.tile([1, 0], 20)[splits.train_index])


@pytest.mark.parametrize("labels, match", [
    (np.zeros(39, np.int64), r"--train_labels: 39 labels, but toy has 40 training images"),
    (np.full(40, C), r"--train_labels: 40 label\(s\) outside \[0, 4\)"),
    (np.full((40, C), 0.5), "--train_labels: 40 soft-label row"),
])
def test_bad_replacement_labels_are_one_line_errors(labels, match):
    with pytest.raises(DataError, match=match) as error:
        make_splits(dataset(), val_size=8, train_size=None, seed=0, train_labels=labels)
    assert "\n" not in str(error.value)


def test_ids_must_fit_the_images():
    with pytest.raises(DataError, match="toy train split: image ids are not distinct"):
        dataset(ids=np.zeros(40, np.int64))
    with pytest.raises(DataError, match=r"40 images but image ids of shape \(39,\)"):
        dataset(ids=np.arange(39))
    with pytest.raises(DataError, match="image ids must be integers or paths, got float64"):
        dataset(ids=np.arange(40.0))
