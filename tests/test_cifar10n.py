"""CIFAR-10N command: the CSVs it writes, its mapping check and noise rates, on synthetic and real files."""

import csv
import io
import re

import numpy as np
import pytest

from data_fixtures import C, N, synthetic_sets, write_torch_zip, write_tree
from lr_jax import cifar10n
from lr_jax.data.label_files import (
    image_folder_order, labels_for_images, load_train_labels, read_label_file, tfds_order,
)

README_NOISE = {"aggre_label": 9.01, "clean_label": 0.0, "random_label1": 17.23, "random_label2": 18.12,
                "random_label3": 17.64, "worse_label": 40.21}  # ../shared/data/README.md


def read_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def run(capsys, *args):
    cifar10n.main(list(args))
    return capsys.readouterr().out.splitlines()


def test_synthetic_csv_maps_each_index_to_its_image(tmp_path, capsys):
    """Each row's path is the image of that official index (its pixels carry the index) and the label is the set's
    label of that index; read back through the image-folder order, the CSV gives the set in the reader's order."""
    from lr_jax.data import load_dataset

    sets = synthetic_sets()
    labels_file = write_torch_zip(tmp_path / "human.pt", sets)
    archive = write_tree(tmp_path, sets["clean_label"])
    out = tmp_path / "worse.csv"
    lines = run(capsys, "--labels", labels_file, "--key", "worse_label", "--image_folder", archive, "--out", str(out))
    header, rows = read_rows(out)
    assert header == ["path", "label"] and len(rows) == N
    dataset = load_dataset("cifar10", archive)
    order = image_folder_order(archive)
    index_of_path = dict(zip(order.paths, dataset.train_images[:, 0, 0, 0].tolist()))
    assert [index_of_path[path] for path, _ in rows] == list(range(N))
    assert [int(label) for _, label in rows] == sets["worse_label"].tolist()
    got = load_train_labels(str(out), order, C)
    np.testing.assert_array_equal(got, sets["worse_label"][dataset.train_images[:, 0, 0, 0]])
    wrong = int(np.sum(sets["worse_label"] != sets["clean_label"]))
    assert lines[-1] == f"worse_label: {100 * wrong / N:.2f}% differ from clean_label ({wrong} of {N}) -> {out}"
    assert "every official index maps to a file of its clean_label class" in lines[0]


def test_key_all_writes_one_csv_per_set(tmp_path, capsys):
    sets = synthetic_sets()
    labels_file = write_torch_zip(tmp_path / "human.pt", sets)
    archive = write_tree(tmp_path, sets["clean_label"], archive=False)
    lines = run(capsys, "--labels", labels_file, "--key", "all", "--image_folder", archive,
                "--out", str(tmp_path / "sets"))
    assert sorted(p.name for p in (tmp_path / "sets").iterdir()) == [f"{k}.csv" for k in sorted(sets)]
    assert len(lines) == 1 + len(sets)
    for key, labels in sets.items():
        _, rows = read_rows(tmp_path / "sets" / f"{key}.csv")
        assert [int(label) for _, label in rows] == labels.tolist()
    assert any(line.startswith("clean_label: 0.00% differ") for line in lines)


@pytest.mark.parametrize("case, match", [
    ("missing_key", "no key 'random_label1'; it holds aggre_label, clean_label, worse_label"),
    ("no_clean", "no key 'clean_label'"),
    ("counts", r"the clean labels count \[4, 2, 3, 3, 3, 3, 3, 3, 3, 3\] images per class"),
    ("out_of_range", r"outside \[0, 10\)"),
])
def test_errors_exit_2_with_one_line(tmp_path, capsys, case, match):
    sets = synthetic_sets()
    archive = write_tree(tmp_path, sets["clean_label"])
    contents = dict(sets)
    if case == "no_clean":
        del contents["clean_label"]
    elif case == "counts":  # one class-1 image labelled class 0: the folders no longer fit the clean labels
        contents["clean_label"] = np.where(np.arange(N) == np.flatnonzero(sets["clean_label"] == 1)[0], 0,
                                           sets["clean_label"])
    elif case == "out_of_range":
        contents["worse_label"] = sets["worse_label"] + C
    key = "random_label1" if case == "missing_key" else "worse_label"
    labels_file = write_torch_zip(tmp_path / "human.pt", contents)
    with pytest.raises(SystemExit) as info:
        cifar10n.main(["--labels", labels_file, "--key", key, "--image_folder", archive,
                       "--out", str(tmp_path / "out.csv")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert re.search(match, err), err
    assert not (tmp_path / "out.csv").exists()


def test_verify_mapping_catches_a_wrong_folder():
    paths = ["train/cat/0000.jpg", "train/dog/0000.jpg"]
    cifar10n.verify_mapping(paths, np.array([0, 1]), ["cat", "dog"], "tree")
    with pytest.raises(cifar10n.LabelFileError, match="index 0 \\(clean 'dog'\\) -> train/cat/0000.jpg"):
        cifar10n.verify_mapping(paths, np.array([1, 1]), ["cat", "dog"], "tree")
    with pytest.raises(cifar10n.LabelFileError, match="more than one official index"):
        cifar10n.verify_mapping(paths[:1] * 2, np.array([0, 0]), ["cat", "dog"], "tree")


# --- the real files in ../shared/data -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_files(request):
    shared = request.getfixturevalue("shared_data")
    labels, archive = shared / "cifar10n" / "CIFAR-10_human.pt", shared / "cifar10-train-jpeg75.tar.gz"
    for path in (labels, archive):
        if not path.exists():
            pytest.skip(f"{path} is absent")
    return str(labels), str(archive)


def test_real_noise_rates_and_csvs(real_files, tmp_path, capsys):
    labels, archive = real_files
    lines = run(capsys, "--labels", labels, "--key", "all", "--image_folder", archive, "--out", str(tmp_path))
    rates = {line.split(":")[0]: float(line.split(": ")[1].split("%")[0]) for line in lines[1:]}
    assert rates == README_NOISE
    assert lines[0].startswith(f"{archive}: 50000 images in 10 class folders")
    header, rows = read_rows(tmp_path / "worse_label.csv")
    assert header == ["path", "label"] and len(rows) == 50000 and len({path for path, _ in rows}) == 50000
    order = image_folder_order(archive)  # paths only, as a user's run would have them
    clean_in_folder_order = load_train_labels(str(tmp_path / "clean_label.csv"), order, C)
    folder_labels = np.repeat(np.arange(C), 5000)  # the reader's labels: class folders in order, 5000 each
    np.testing.assert_array_equal(clean_in_folder_order, folder_labels)


def test_real_mapping_matches_the_lossless_pixels(real_files, lossless_cifar):
    """The JPEG a row names is the image of that official index: close to the lossless original (JPEG error
    about 6/255), far from it when the mapping is shifted by one file."""
    from lr_jax.data.image_folder import decode_image
    from lr_jax.data.source_tree import open_tree

    labels, archive = real_files
    x, y = lossless_cifar
    clean = read_label_file(labels, C, key="clean_label").labels
    np.testing.assert_array_equal(clean[: len(y)], y)
    paths, _ = cifar10n.folder_paths(archive, clean)
    tree = open_tree(archive)
    count = 200

    def error(offset):
        shifted = [path.replace(path[-8:-4], f"{int(path[-8:-4]) + offset:04d}") for path in paths[:count]]
        images = np.stack([decode_image(io.BytesIO(tree.read(p)), p) for p in shifted]).astype(np.float64)
        return np.abs(images - x[:count]).mean()

    assert error(0) < 10 and error(1) > 30, (error(0), error(1))


def test_real_tfds_order(real_files, shared_data):
    order_file = shared_data / "cifar10n" / "image_order_c10.npy"
    if not order_file.exists():
        pytest.skip(f"{order_file} is absent")
    table = read_label_file(real_files[0], C, key="worse_label")
    order = tfds_order(str(order_file))
    np.testing.assert_array_equal(labels_for_images(table, order), table.labels[np.load(order_file)])
    assert len(order) == 50000
