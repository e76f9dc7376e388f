"""Label files: every format read, checked and matched to the images; every bad file a one-line error naming it."""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from data_fixtures import C, N, synthetic_sets, write_torch_zip, write_tree
from lr_jax.data import DataError
from lr_jax.data.label_files import (
    ImageOrder, LabelFileError, check_labels, file_sha256, image_folder_order, image_order, label_source_record,
    labels_for_images, load_train_labels, noise_rate, official_index_paths, official_order, read_label_file,
    tfds_order,
)

def write_csv(path, header, rows):
    path.write_text("\n".join([header] + [",".join(str(v) for v in row) for row in rows]) + "\n")
    return str(path)


def assert_error(path, match, call, *args, **kwargs):
    """The call raises a one-line LabelFileError (a DataError) that names `path` and matches `match`."""
    with pytest.raises(LabelFileError, match=match) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, DataError)
    assert str(path) in message, message
    assert "\n" not in message, message
    return message


# --- the PyTorch-saved zip (CIFAR-10N's CIFAR-10_human.pt) ---------------------------------------------------


def test_torch_zip_key_selects_the_set(tmp_path):
    sets = synthetic_sets()
    path = write_torch_zip(tmp_path / "human.pt", sets)
    table = read_label_file(path, C, key="worse_label")
    assert table.labels.dtype == np.int64 and table.paths is None and not table.soft
    np.testing.assert_array_equal(table.labels, sets["worse_label"])
    assert "worse_label" in table.where


def test_torch_zip_key_errors_list_the_keys(tmp_path):
    path = write_torch_zip(tmp_path / "human.pt", synthetic_sets())
    message = assert_error(path, "no key 'random_label9'", read_label_file, path, C, key="random_label9")
    assert "aggre_label, clean_label, worse_label" in message
    assert_error(path, "holds 3 arrays .*--train_label_key", read_label_file, path, C)
    single = write_torch_zip(tmp_path / "one.pt", {"worse_label": synthetic_sets()["worse_label"]})
    assert len(read_label_file(single, C).labels) == N


class _Payload:
    """Pickles as a call of `function(argument)`: run by a plain unpickler, it creates the marker file."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("function, forbidden", [(os.system, f"{os.system.__module__}.system"),
                                                 (eval, "(builtins|__builtin__).eval")])
def test_malicious_pickle_never_runs(tmp_path, function, forbidden):
    marker = tmp_path / "marker"
    argument = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w').close()"
    data = pickle.dumps({"clean_label": _Payload(function, argument)}, protocol=2)
    path = write_torch_zip(tmp_path / "evil.pt", None, pickle_bytes=data)
    assert_error(path, f"refers to {forbidden}", read_label_file, path, C, key="clean_label")
    assert not marker.exists()
    pickle.loads(data)  # the payload is live: a plain unpickler runs it
    assert marker.exists()


def test_torch_tensors_are_refused(tmp_path):
    tensor = b"\x80\x02}X\x01\x00\x00\x00actorch._utils\n_rebuild_tensor_v2\n)Rs."
    path = write_torch_zip(tmp_path / "tensor.pt", None, pickle_bytes=tensor)
    assert_error(path, "refers to torch._utils._rebuild_tensor_v2", read_label_file, path, C)

    class Storage(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "0") if isinstance(obj, bytearray) else None

    buffer = io.BytesIO()
    Storage(buffer, protocol=2).dump({"a": bytearray(b"x")})
    path = write_torch_zip(tmp_path / "storage.pt", None, pickle_bytes=buffer.getvalue())
    assert_error(path, "PyTorch storage", read_label_file, path, C)


@pytest.mark.parametrize("case", ["not_zip", "no_pkl", "list", "object_array", "truncated"])
def test_bad_torch_files(tmp_path, case):
    path = tmp_path / f"{case}.pt"
    if case == "not_zip":
        path.write_bytes(pickle.dumps({"a": np.zeros(3, np.int64)}))
    elif case == "no_pkl":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/version", "3\n")
    elif case == "truncated":
        write_torch_zip(path, None, pickle_bytes=pickle.dumps(synthetic_sets(), protocol=2)[:200])
    else:
        write_torch_zip(path, [1, 2] if case == "list" else {"a": np.array([1, None], object)})
    match = {"not_zip": "PyTorch-saved zip", "no_pkl": "one data.pkl", "list": "holds a list",
             "object_array": "not numeric numpy arrays", "truncated": "cannot be loaded"}[case]
    assert_error(path, match, read_label_file, str(path), C)


# --- .npy / .npz ---------------------------------------------------------------------------------------------


def test_npy_and_npz(tmp_path):
    labels = synthetic_sets()["worse_label"]
    np.save(tmp_path / "labels.npy", labels.astype(np.int32))
    np.testing.assert_array_equal(read_label_file(str(tmp_path / "labels.npy"), C).labels, labels)
    np.savez(tmp_path / "one.npz", labels=labels)
    np.testing.assert_array_equal(read_label_file(str(tmp_path / "one.npz"), C).labels, labels)
    np.savez(tmp_path / "two.npz", a=labels, b=labels[::-1])
    two = str(tmp_path / "two.npz")
    np.testing.assert_array_equal(read_label_file(two, C, key="b").labels, labels[::-1])
    assert_error(two, "holds 2 arrays \\(a, b\\)", read_label_file, two, C)
    assert_error(two, "no key 'c'; it holds a, b", read_label_file, two, C, key="c")


def test_soft_labels_are_accepted_and_checked(tmp_path):
    probs = np.random.default_rng(1).dirichlet(np.ones(C), N)
    np.save(tmp_path / "soft.npy", probs)
    table = read_label_file(str(tmp_path / "soft.npy"), C)
    assert table.soft and table.labels.dtype == np.float32 and table.labels.shape == (N, C)
    np.testing.assert_allclose(table.labels, probs, rtol=1e-6)
    for name, bad, match in [("unnormalised", probs * 1.1, "do not sum to 1"),
                             ("negative", probs - probs.mean(), "non-negative"),
                             ("classes", probs[:, :-1] / probs[:, :-1].sum(1, keepdims=True), r"\(N, 10\)")]:
        path = tmp_path / f"{name}.npy"
        np.save(path, bad)
        assert_error(path, match, read_label_file, str(path), C)


@pytest.mark.parametrize("bad, match", [
    (np.array([0, 1, 10]), r"1 label\(s\) outside \[0, 10\), e.g. 10 in row 2"),
    (np.array([0, -1, 2]), "outside"),
    (np.array([0.0, 1.0, 2.0]), "hard labels must be integers, got float64"),
    (np.array([True, False]), "must be integers"),
    (np.zeros((2, 3, 4), np.float32), "expected hard labels"),
])
def test_bad_label_values(tmp_path, bad, match):
    path = tmp_path / "bad.npy"
    np.save(path, bad)
    assert_error(path, match, read_label_file, str(path), C)


def test_pickled_npy_and_unknown_types_are_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([1, None], object), allow_pickle=True)
    assert_error(path, "cannot read it as .npy", read_label_file, str(path), C)
    other = tmp_path / "labels.txt"
    other.write_text("1\n2\n")
    assert_error(other, "unknown label file type", read_label_file, str(other), C)
    assert_error(tmp_path / "absent.npy", "no such label file", read_label_file, str(tmp_path / "absent.npy"), C)


def test_wrong_length_names_the_file(tmp_path):
    path = tmp_path / "labels.npy"
    np.save(path, np.zeros(N - 1, np.int64))
    assert_error(path, f"{N - 1} labels, but .* has {N} training images", load_train_labels, str(path),
                 official_order(N), C)


# --- image orders --------------------------------------------------------------------------------------------


def test_official_and_tfds_orders(tmp_path):
    labels = synthetic_sets()["worse_label"]
    np.save(tmp_path / "labels.npy", labels)
    np.testing.assert_array_equal(load_train_labels(str(tmp_path / "labels.npy"), official_order(N), C), labels)
    tfds = np.random.default_rng(2).permutation(N)  # element i: official index of TFDS's i-th image
    np.save(tmp_path / "order.npy", tfds)
    got = load_train_labels(str(tmp_path / "labels.npy"), tfds_order(str(tmp_path / "order.npy")), C)
    np.testing.assert_array_equal(got, labels[tfds])
    np.save(tmp_path / "repeats.npy", np.zeros(N, np.int64))
    assert_error(tmp_path / "repeats.npy", "not a permutation", tfds_order, str(tmp_path / "repeats.npy"))


def test_image_folder_order_is_the_readers_order(tmp_path):
    """The reader decodes class by class in file order; with the clean labels each image gets its official index
    (the pixel value each synthetic image carries)."""
    from lr_jax.data import load_dataset

    clean = synthetic_sets()["clean_label"]
    archive = write_tree(tmp_path, clean)
    dataset = load_dataset("cifar10", archive)
    order = image_folder_order(archive, clean)
    assert order.paths[:4] == ("train/airplane/0000.png", "train/airplane/0001.png", "train/airplane/0002.png",
                               "train/automobile/0000.png")
    np.testing.assert_array_equal(order.indices, dataset.train_images[:, 0, 0, 0])
    np.testing.assert_array_equal(clean[order.indices], dataset.train_labels)
    path_only = image_folder_order(archive)
    assert path_only.indices is None and path_only.paths == order.paths
    # A run's order comes from the dataset's own ids, with no second listing, and is the same.
    assert path_only.paths == tuple(dataset.train_ids)
    from_dataset = image_order(dataset, clean)
    assert from_dataset.paths == order.paths and from_dataset.describe == dataset.source
    np.testing.assert_array_equal(from_dataset.indices, order.indices)
    assert image_order(dataset).indices is None


def test_image_order_of_an_official_order_dataset(tmp_path):
    """Readers that keep the original order carry the official index: a label file keyed by index applies as is,
    whatever clean labels are given; a path-keyed CSV does not apply."""
    from lr_jax.data import make_dataset

    labels = synthetic_sets()["worse_label"]
    images = np.zeros((N, 2, 2, 1), np.uint8)
    dataset = make_dataset("cifar10", [str(c) for c in range(C)], (images, synthetic_sets()["clean_label"]),
                           source="toy")
    order = image_order(dataset, clean_labels=labels)
    assert order.paths is None and order.describe == "toy"
    np.testing.assert_array_equal(order.indices, np.arange(N))
    np.save(tmp_path / "labels.npy", labels)
    np.testing.assert_array_equal(load_train_labels(str(tmp_path / "labels.npy"), order, C), labels)
    csv_path = write_csv(tmp_path / "p.csv", "path,label", [("train/a/0.png", 1)])
    assert_error(csv_path, "keyed by image path, but toy has no paths", load_train_labels, csv_path, order, C)


def test_official_index_paths_counts_must_match(tmp_path):
    class_paths = [[f"train/c{c}/{k:04d}.jpg" for k in range(3)] for c in range(2)]
    paths = official_index_paths(np.array([1, 0, 0, 1, 1, 0]), class_paths, "tree")
    assert paths == ["train/c1/0000.jpg", "train/c0/0000.jpg", "train/c0/0001.jpg", "train/c1/0001.jpg",
                     "train/c1/0002.jpg", "train/c0/0002.jpg"]
    with pytest.raises(LabelFileError, match=r"count \[2, 4\] images per class, but the class folders hold \[3, 3\]"):
        official_index_paths(np.array([1, 0, 0, 1, 1, 1]), class_paths, "tree")


def test_keying_must_fit_the_order(tmp_path):
    np.save(tmp_path / "labels.npy", np.zeros(N, np.int64))
    by_index = read_label_file(str(tmp_path / "labels.npy"), C)
    assert_error(tmp_path / "labels.npy", "keyed by official index, but", labels_for_images, by_index,
                 ImageOrder(paths=tuple(f"train/a/{i}.png" for i in range(N))))
    csv_path = write_csv(tmp_path / "p.csv", "path,label", [("train/a/0.png", 1)])
    assert_error(csv_path, "keyed by image path, but", load_train_labels, csv_path, official_order(1), C)


# --- CSV -----------------------------------------------------------------------------------------------------


def test_path_csv_matches_any_row_order(tmp_path):
    sets = synthetic_sets()
    archive = write_tree(tmp_path, sets["clean_label"])
    order = image_folder_order(archive, sets["clean_label"])
    expected = sets["worse_label"][order.indices]
    rows = list(zip(order.paths, expected))[::-1]
    rows[0] = ("./" + rows[0][0], rows[0][1])
    rows[1] = (rows[1][0].replace("/", "\\"), rows[1][1])
    csv_path = write_csv(tmp_path / "labels.csv", "path,label", rows)
    np.testing.assert_array_equal(load_train_labels(csv_path, image_folder_order(archive), C), expected)


def test_index_csv_and_soft_csv(tmp_path):
    labels = synthetic_sets()["worse_label"]
    shuffled = np.random.default_rng(3).permutation(N)
    csv_path = write_csv(tmp_path / "index.csv", "index,label", [(i, labels[i]) for i in shuffled])
    np.testing.assert_array_equal(load_train_labels(csv_path, official_order(N), C), labels)
    probs = np.random.default_rng(4).dirichlet(np.ones(C), N)
    header = "index," + ",".join(f"prob_{c}" for c in range(C))
    soft_path = write_csv(tmp_path / "soft.csv", header, [(i, *probs[i].tolist()) for i in shuffled])
    got = load_train_labels(soft_path, official_order(N), C)
    assert got.dtype == np.float32 and got.shape == (N, C)
    np.testing.assert_allclose(got, probs, rtol=1e-6)


@pytest.mark.parametrize("header, rows, match", [
    ("path,label", [("train/airplane/0000.png", 0), ("train/nope/0001.png", 0)],
     r"1 path\(s\) are not training images of .*: train/nope/0001.png"),
    ("path,label", [("train/airplane/0000.png", 0)], r"no rows for 29 training image\(s\)"),
    ("path,label", [("train/airplane/0000.png", 0), ("./train/airplane/0000.png", 1)],
     r"duplicate rows for 'train/airplane/0000.png' \(lines 2 and 3\)"),
    ("path,label", [("train/airplane/0000.png", "cat")], "line 2: label 'cat' is not an integer"),
    ("path,label", [("train/airplane/0000.png", "3.5")], "line 2: label '3.5' is not an integer"),
    ("path,label", [("train/airplane/0000.png", 12)], r"outside \[0, 10\)"),
    ("path,label", [("train/airplane/0000.png", 1, 2)], "line 2 has 3 fields, the header 2"),
    ("index,label", [(0, 1), (2, 1)], "no rows for index 1"),
    ("index,label", [(0, 1), (0, 2)], "duplicate rows for 0"),
    ("index,label", [(-1, 1)], "index '-1' is not a non-negative integer"),
    ("file,label", [("a", 1)], "header 'file,label' is not one of"),
    ("index,prob_0,prob_1", [(0, 0.5, 0.5)], r"is not one of .*\(C = 10 classes\)"),
    ("path,label", [], "no label rows"),
])
def test_bad_csv(tmp_path, header, rows, match):
    archive = write_tree(tmp_path, synthetic_sets()["clean_label"])
    order = image_folder_order(archive, synthetic_sets()["clean_label"])
    path = write_csv(tmp_path / "labels.csv", header, rows)
    assert_error(path, match, load_train_labels, path, order, C)


def test_check_labels_converts(tmp_path):
    assert check_labels(np.array([1, 2], np.uint8), 3, "x").dtype == np.int64
    assert check_labels(np.full((2, 4), 0.25, np.float64), 4, "x").dtype == np.float32


def test_csv_with_a_byte_order_mark(tmp_path):
    """Spreadsheets save UTF-8 CSVs with a BOM before the header."""
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffindex,label\n0,3\n1,4\n".encode("utf-8"))
    np.testing.assert_array_equal(load_train_labels(str(path), official_order(2), C), [3, 4])


# --- the run's record of its label source --------------------------------------------------------------------


def test_label_source_record_by_hand(tmp_path):
    """Noise rate over the whole file-aligned train split: 2 of 5 hard labels differ; soft rows count by argmax."""
    path = tmp_path / "labels.npy"
    path.write_bytes(b"abc")
    digest = file_sha256(str(path))
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # SHA-256 of "abc"
    record = label_source_record(str(path), "worse_label", digest, np.array([0, 1, 2, 3, 3]), np.array([0, 1, 2, 0, 1]))
    assert record == {"file": str(path), "key": "worse_label", "sha256": digest, "noise_rate": 0.4}
    soft = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])  # argmax 0, 1, 0, 1
    assert noise_rate(soft, np.array([0, 0, 0, 0])) == 0.5
    assert label_source_record(str(path), None, digest, soft, np.array([0, 1, 0, 1]))["noise_rate"] == 0.0
    assert_error(path, "3 labels, but the dataset has 4 training images", label_source_record, str(path), None,
                 digest, np.zeros(3, np.int64), np.zeros(4, np.int64))
    assert_error(tmp_path / "absent.csv", "cannot read the label file", file_sha256, str(tmp_path / "absent.csv"))
