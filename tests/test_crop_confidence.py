"""python -m lr_jax.experiments.crop_confidence: the refinery's confidence binned by a random-resized crop's area
(the paper's mechanism), on a tiny finished run; the binning checked on hand-made probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lr_jax.experiments import crop_confidence
from test_labels_cli import C, source  # noqa: F401  (fixture: a finished 1-generation run of C classes)


def test_bins_count_and_average_the_crops_of_each_area():
    probs = np.array([[0.7, 0.3], [0.5, 0.5], [0.1, 0.9], [0.8, 0.2]])
    labels = np.array([0, 1, 1, 1])
    areas = np.array([0.1, 0.2, 0.9, 1.0])  # the last sits on the top edge: it counts in the last bin
    low, high = crop_confidence.bin_by_area(areas, probs, labels, np.array([0.08, 0.54, 1.0]))
    assert (low["crops"], high["crops"]) == (2, 2)
    assert low["confidence"] == pytest.approx(0.6) and high["confidence"] == pytest.approx(0.85)
    assert low["p_label"] == pytest.approx(0.6) and high["p_label"] == pytest.approx(0.55)
    assert low["top1_is_label"] == pytest.approx(0.5) and high["top1_is_label"] == pytest.approx(0.5)
    assert high["entropy"] == pytest.approx(np.mean([-(p * np.log(p)).sum() for p in probs[2:]]), rel=1e-5)
    empty = crop_confidence.bin_by_area(areas[:1], probs[:1], labels[:1], np.array([0.0, 0.5, 1.0]))[1]
    assert empty["crops"] == 0 and empty["confidence"] is None


def test_measure_writes_the_bins_the_plot_and_the_sheet(source, tmp_path, capsys):  # noqa: F811
    _, _, run, _ = source
    out = tmp_path / "mechanism"
    crop_confidence.main([str(run), "--out", str(out), "--crops", "64", "--bins", "4", "--sheet", "8",
                          "--crop_scale", "0.2,1"])
    printed = json.loads(capsys.readouterr().out)
    document = json.loads((out / "crop_confidence.json").read_text())
    assert document["bins"] == printed and document["run"] == "run" and document["generation"] == 1
    bins = document["bins"]
    assert [b["area_low"] for b in bins] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and bins[-1]["area_high"] == 1.0
    assert sum(b["crops"] for b in bins) == 64
    for b in bins:
        if b["crops"]:
            assert 1 / C - 1e-6 <= b["confidence"] <= 1 and b["p_label"] <= b["confidence"] + 1e-6
            assert 0 <= b["entropy"] <= np.log(C) + 1e-5
    assert (out / "crop_confidence.png").stat().st_size > 0 and (out / "crop_sheet.png").stat().st_size > 0
    again = crop_confidence.measure(str(run), str(tmp_path / "again"), 1, (0.2, 1.0), crops=64, bins=4, sheet_size=8)
    assert again["bins"] == bins  # the same crops for the same run (its seed)


@pytest.mark.parametrize("flags, message", [
    (["--crop_scale", "0.5,1.5"], "cannot exceed the image's"),
    (["--crops", "0"], "--crops must be at least 1"),
])
def test_bad_flags_exit_2(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        crop_confidence.main([str(tmp_path), "--out", str(tmp_path / "out"), *flags])
    assert raised.value.code == 2 and message in capsys.readouterr().err


def test_a_folder_without_a_run_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        crop_confidence.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert raised.value.code == 2 and str(tmp_path / "missing") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
