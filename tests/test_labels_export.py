"""lr_jax.labels.export_format: .npz and .csv label exports round-trip, and read with numpy or pandas alone."""

import json

import numpy as np
import pytest

from lr_jax.labels import export_format
from lr_jax.labels.checks import LabelsError

CLASSES = ["airplane", "automobile", "bird"]
SOURCE = {"workdir": "runs/r1", "generation": 2}


def example(n=7, seed=0):
    rng = np.random.default_rng(seed)
    soft = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    given = rng.integers(0, 3, n)
    return soft, given


def ids_of(kind, n):
    if kind == "path":
        return [f"{CLASSES[i % 3]}/img, {i}.png" for i in range(n)]  # a comma: the CSV must quote it
    return list(np.arange(n) * 10)


@pytest.mark.parametrize("extension", [".npz", ".csv"])
@pytest.mark.parametrize("kind", ["path", "index"])
def test_round_trip(tmp_path, extension, kind):
    soft, given = example()
    ids = ids_of(kind, 7)
    path = str(tmp_path / f"labels{extension}")
    assert export_format.write_labels(path, ids, given, soft, CLASSES, SOURCE) == path
    loaded = export_format.read_labels(path)
    assert loaded["ids"].tolist() == [i if kind == "path" else int(i) for i in ids]
    assert loaded["ids"].dtype.kind == ("U" if kind == "path" else "i")
    assert loaded["given_label"].tolist() == given.tolist()
    assert loaded["label"].tolist() == soft.argmax(axis=1).tolist()
    assert np.array_equal(loaded["confidence"], soft.max(axis=1))  # exact: float32 written to round-trip
    assert loaded["soft_labels"].dtype == np.float32 and np.array_equal(loaded["soft_labels"], soft)
    assert loaded["class_names"].tolist() == CLASSES
    assert loaded["source"] == SOURCE and loaded["format"] == export_format.EXPORT_FORMAT


def test_npz_reads_with_numpy_alone(tmp_path):
    soft, given = example()
    path = str(tmp_path / "labels.npz")
    export_format.write_labels(path, ids_of("path", 7), given, soft, CLASSES, SOURCE)
    with np.load(path) as data:  # allow_pickle=False: no object arrays
        assert set(data.files) == {"ids", "given_label", "label", "confidence", "soft_labels", "class_names",
                                   "source", "format"}
        assert data["soft_labels"].shape == (7, 3) and json.loads(str(data["source"])) == SOURCE


@pytest.mark.parametrize("kind", ["path", "index"])
def test_csv_reads_with_pandas_alone(tmp_path, kind):
    pandas = pytest.importorskip("pandas")
    soft, given = example()
    path = str(tmp_path / "labels.csv")
    export_format.write_labels(path, ids_of(kind, 7), given, soft, CLASSES, SOURCE)
    frame = pandas.read_csv(path)
    assert list(frame.columns) == [kind, "label", "given_label", "confidence", "prob_0", "prob_1", "prob_2"]
    assert frame[kind].tolist() == ids_of(kind, 7)
    assert frame["given_label"].tolist() == given.tolist()
    np.testing.assert_allclose(frame[["prob_0", "prob_1", "prob_2"]].to_numpy(), soft, rtol=1e-7)
    with open(export_format.sidecar_path(path)) as f:
        assert json.load(f) == {"format": 1, "class_names": CLASSES, "source": SOURCE}


def test_csv_without_its_sidecar_reads_without_names(tmp_path):
    soft, given = example()
    path = tmp_path / "labels.csv"
    export_format.write_labels(str(path), ids_of("index", 7), given, soft, CLASSES, SOURCE)
    (tmp_path / "labels.csv.source.json").unlink()
    loaded = export_format.read_labels(str(path))
    assert loaded["class_names"] is None and loaded["source"] is None
    assert np.array_equal(loaded["soft_labels"], soft)


def test_bad_inputs_name_the_problem(tmp_path):
    soft, given = example()
    for name in ("labels.txt", "labels"):
        with pytest.raises(ValueError, match=rf"{name}: unknown label export type"):
            export_format.write_labels(str(tmp_path / name), ids_of("index", 7), given, soft, CLASSES, SOURCE)
    with pytest.raises(ValueError, match="labels.json: unknown label export type"):
        export_format.read_labels(str(tmp_path / "labels.json"))
    path = str(tmp_path / "labels.npz")
    with pytest.raises(LabelsError, match="2 class names for 3 classes"):
        export_format.write_labels(path, ids_of("index", 7), given, soft, CLASSES[:2], SOURCE)
    with pytest.raises(LabelsError, match="all strings .* or all integers"):
        export_format.write_labels(path, ["a.png", 1, 2, 3, 4, 5, 6], given, soft, CLASSES, SOURCE)
    with pytest.raises(LabelsError, match="ids has 6 entries, expected 7"):
        export_format.write_labels(path, ids_of("index", 6), given, soft, CLASSES, SOURCE)
    with pytest.raises(LabelsError, match="JSON"):
        export_format.write_labels(path, ids_of("index", 7), given, soft, CLASSES, {"bad": object()})
    with pytest.raises(LabelsError, match="do not sum to 1"):
        export_format.write_labels(path, ids_of("index", 7), given, soft * 2, CLASSES, SOURCE)
    assert not list(tmp_path.iterdir())
    bad = tmp_path / "other.csv"
    bad.write_text("path,label\na.png,1\n")
    with pytest.raises(LabelsError, match="other.csv: header 'path,label' is not an export's"):
        export_format.read_labels(str(bad))
