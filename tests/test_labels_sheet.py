"""lr_jax.labels.sheet: contact sheets of captioned images as PNGs."""

import numpy as np
import pytest

from lr_jax.labels import sheet
from lr_jax.labels.checks import LabelsError

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")


def images(count, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, channels), dtype=np.uint8)


def test_sheet_is_a_png_of_the_grid_size(tmp_path):
    captions = [f"#{i} given: cat\nrefinery: dog 0.9{i % 10}" for i in range(10)]
    path = sheet.contact_sheet(images(10), captions, str(tmp_path / "suspects.png"), columns=4, title="suspects")
    assert path == str(tmp_path / "suspects.png")
    # 4 columns of 1.5 in; 3 rows of 1.5 in + 2 caption lines of 0.16 in, + 0.35 in of title; at 100 dpi
    assert sheet.sheet_inches(10, 4, 2, True) == pytest.approx((6.0, 3 * (1.5 + 0.32) + 0.35))
    with PIL.open(path) as png:
        assert png.format == "PNG" and png.size == (600, 581)
    assert [p.name for p in tmp_path.iterdir()] == ["suspects.png"]  # no temporary file left


def test_greyscale_and_a_short_row(tmp_path):
    path = sheet.contact_sheet(images(3, channels=1), ["a", "b", "c"], str(tmp_path / "grey.png"))
    with PIL.open(path) as png:
        assert png.size == (450, 166)  # 3 cells across (fewer images than columns); 1.5 + 0.16 in high


def test_empty_and_mismatched_sheets_raise(tmp_path):
    with pytest.raises(LabelsError, match="at least one image; got 0"):
        sheet.contact_sheet(np.zeros((0, 32, 32, 3), np.uint8), [], str(tmp_path / "empty.png"))
    with pytest.raises(ValueError, match="3 images but 2 captions"):
        sheet.contact_sheet(images(3), ["a", "b"], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="uint8"):
        sheet.contact_sheet(images(3).astype(np.float32), ["a", "b", "c"], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="a contact sheet is a PNG"):
        sheet.contact_sheet(images(3), ["a", "b", "c"], str(tmp_path / "x.jpg"))
    with pytest.raises(ValueError, match="columns"):
        sheet.contact_sheet(images(3), ["a", "b", "c"], str(tmp_path / "x.png"), columns=0)
    assert not list(tmp_path.iterdir())


def test_suspect_captions():
    probs = np.array([[0.93, 0.07], [0.4, 0.6]], np.float32)
    captions = sheet.suspect_captions([1, 0], np.array([0, 1]), probs, ["dog", "cat"])
    assert captions == ["#1 given: cat\nrefinery: cat 0.60", "#0 given: dog\nrefinery: dog 0.93"]
