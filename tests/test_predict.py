"""`python -m lr_jax.predict`: a saved generation's predictions (text, json, csv) for new image files and folders."""

import csv
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from lr_jax import checkpoints, predict, refinery
from lr_jax.config import Config
from lr_jax.data.splits import Splits
from lr_jax.models import get_model

CLASS_NAMES = ["ant", "bee", "cat", "dog", "eel"]
MEAN, STD = np.array([0.4, 0.5, 0.6], np.float32), np.array([0.2, 0.25, 0.3], np.float32)


def save_run(workdir, channels):
    """Saves generation 1 of an initialised tiny_cnn over 8x8 images with `channels` channels of 5 classes."""
    model = get_model("tiny_cnn", len(CLASS_NAMES))
    variables = jax.device_get(model.init(jax.random.PRNGKey(3), jnp.zeros((1, 8, 8, channels)), train=False))
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (10, 8, 8, channels), dtype=np.uint8)
    splits = Splits(train_images, np.arange(10) % 5, train_images[:5], np.arange(5), None, None, CLASS_NAMES,
                    MEAN[:channels], STD[:channels])
    probs = np.full((10, 5), 0.2, np.float32)
    result = refinery.Generation(1, "tiny_cnn", "ground truth", probs, probs[:5], None, variables,
                                 {"generation": 1})
    manager = checkpoints.open_manager(checkpoints.finished_dir(str(workdir)))
    checkpoints.save_generation(manager, 1, refinery.generation_arrays(result),
                                refinery.generation_info(result, Config(model="tiny_cnn"), splits))
    manager.close()
    return workdir, model, variables


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A workdir whose generation 1 is an initialised tiny_cnn over 8x8 RGB images of 5 classes."""
    return save_run(tmp_path_factory.mktemp("run"), 3)


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    """The same over 8x8 greyscale (1-channel) images."""
    return save_run(tmp_path_factory.mktemp("grey_run"), 1)


def expected_probs(model, variables, images):
    """softmax(model(normalised images)), computed here without lr_jax.devices."""
    channels = images.shape[-1]
    inputs = (images.astype(np.float32) / 255.0 - MEAN[:channels]) / STD[:channels]
    return np.asarray(jax.nn.softmax(model.apply(variables, inputs, train=False), axis=-1))


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def parse(line):
    path, ranked = line.rsplit(": ", 1)
    return path, [(name, float(p)) for name, p in (item.split(" ") for item in ranked.split(", "))]


def test_prints_top3_classes_with_probabilities(saved_run, tmp_path, capsys):
    workdir, model, variables = saved_run
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    folder = tmp_path / "new"
    files = [write_png(folder / "a.png", pixels[0]), write_png(folder / "sub" / "b.png", pixels[1])]
    single = write_png(tmp_path / "c.png", pixels[2])
    predict.main(["--workdir", str(workdir), "--generation", "1", str(folder), str(single)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"generation 1 of {workdir}: top-3 classes of 3 image(s)"
    want = expected_probs(model, variables, pixels)
    for line, path, row in zip(lines[1:], [*files, single], want):
        printed_path, ranked = parse(line)
        assert printed_path == str(path)
        best = np.argsort(-row)[:3]
        assert [name for name, _ in ranked] == [CLASS_NAMES[i] for i in best]
        np.testing.assert_allclose([p for _, p in ranked], row[best], atol=6e-4)


def test_newest_generation_is_the_default(saved_run, tmp_path, capsys):
    workdir, _, _ = saved_run
    image = write_png(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    predict.main(["--workdir", str(workdir), str(image)])
    assert capsys.readouterr().out.startswith("generation 1 of")


@pytest.mark.parametrize("case", ["wrong_size", "missing_generation", "missing_file", "not_a_workdir"])
def test_bad_input_is_a_one_line_error(saved_run, tmp_path, capsys, case):
    workdir, _, _ = saved_run
    image = write_png(tmp_path / "big.png", np.zeros((16, 16, 3), np.uint8))
    argv, expected = {
        "wrong_size": ([str(workdir), "--generation", "1", str(image)],
                       f"{image}: image is (16, 16, 3) (H, W, C) but generation 1 of {workdir} was trained on "
                       f"(8, 8, 3) images"),
        "missing_generation": ([str(workdir), "--generation", "4", str(image)],
                               "generation 4 was not saved; saved generations: 1"),
        "missing_file": ([str(workdir), str(tmp_path / "nope.png")], "nope.png: no such file or folder"),
        "not_a_workdir": ([str(tmp_path), str(image)], "no saved generations"),
    }[case]
    with pytest.raises(SystemExit) as stopped:
        predict.main(["--workdir", *argv])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err


def three_images(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    return pixels, [write_png(tmp_path / name, image) for name, image in zip(["a.png", "b.png", "c.png"], pixels)]


def read_back(output_format, out):
    """(files, labels, class names, confidences, probs) from a --format json or csv document."""
    if output_format == "json":
        rows = json.loads(out)
        assert all(set(row) == {"file", "label", "class_name", "confidence", "probs"} for row in rows)
        return ([r["file"] for r in rows], [r["label"] for r in rows], [r["class_name"] for r in rows],
                [r["confidence"] for r in rows], np.array([r["probs"] for r in rows], np.float32))
    header, *body = list(csv.reader(io.StringIO(out)))
    assert header == ["file", "label", "class_name", "confidence", *(f"prob_{c}" for c in range(5))]
    return ([r[0] for r in body], [int(r[1]) for r in body], [r[2] for r in body], [float(r[3]) for r in body],
            np.array([r[4:] for r in body], np.float32))


@pytest.mark.parametrize("output_format", ["json", "csv"])
def test_machine_formats_parse_back_and_match_the_text_output(saved_run, tmp_path, capsys, output_format):
    workdir, model, variables = saved_run
    pixels, files = three_images(tmp_path)
    predict.main(["--workdir", str(workdir), *map(str, files)])
    text_lines = capsys.readouterr().out.strip().splitlines()[1:]
    predict.main(["--workdir", str(workdir), "--format", output_format, *map(str, files)])
    captured = capsys.readouterr()
    assert captured.err.strip() == f"generation 1 of {workdir}: predictions for 3 image(s)"
    printed, labels, names, confidences, probs = read_back(output_format, captured.out)  # stdout: the document only
    assert printed == [str(f) for f in files]
    assert names == [parse(line)[1][0][0] for line in text_lines]  # the text output's most probable class
    assert names == [CLASS_NAMES[i] for i in labels]
    want = expected_probs(model, variables, pixels)
    assert labels == list(np.argmax(want, axis=1))
    np.testing.assert_allclose(probs, want, atol=6e-4)
    np.testing.assert_array_equal(np.float32(confidences), probs.max(axis=1))


def test_machine_format_floats_round_trip_float32():
    probs = np.array([[0.1, 0.2, 0.7], [1 / 3, 1 / 3, 1 / 3]], np.float32)
    rows = json.loads(predict.json_text(["x", "y"], probs, ["a", "b", "c"]))
    np.testing.assert_array_equal(np.array([r["probs"] for r in rows], np.float32), probs)
    assert [r["label"] for r in rows] == [2, 0]  # ties: the lower index
    out = io.StringIO()
    predict.write_csv(out, ["x", "y"], probs, ["a", "b", "c"])
    body = list(csv.reader(io.StringIO(out.getvalue())))[1:]
    np.testing.assert_array_equal(np.array([r[4:] for r in body], np.float32), probs)


@pytest.mark.parametrize("mixed", [False, True], ids=["all_grey", "grey_and_colour"])
def test_greyscale_images_are_converted_for_a_colour_model(saved_run, tmp_path, capsys, mixed):
    workdir, model, variables = saved_run
    grey = np.random.default_rng(4).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    files = [write_png(tmp_path / "g1.png", grey[0]), write_png(tmp_path / "g2.png", grey[1])]
    images = np.repeat(grey[..., None], 3, axis=3)
    if mixed:
        colour = np.random.default_rng(5).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        files.insert(1, write_png(tmp_path / "rgb.png", colour))
        images = np.stack([images[0], colour, images[1]])
    predict.main(["--workdir", str(workdir), "--format", "json", *map(str, files)])
    captured = capsys.readouterr()
    note = [line for line in captured.err.splitlines() if line.startswith("note: ")]
    assert note == [f"note: converted 2 greyscale image(s) to RGB, as generation 1 of {workdir} was trained on "
                    f"(8, 8, 3) images: {files[0]}, {files[-1]}"]
    rows = json.loads(captured.out)
    assert [r["file"] for r in rows] == [str(f) for f in files]
    np.testing.assert_allclose([r["probs"] for r in rows], expected_probs(model, variables, images), atol=6e-4)


def test_greyscale_note_names_the_first_files_and_counts_the_rest():
    files = [f"g{i}.png" for i in range(predict.NAMED_IN_NOTE + 3)]
    note = predict.greyscale_note(files, (8, 8, 3), "generation 1 of W")
    assert note.endswith(f"g{predict.NAMED_IN_NOTE - 1}.png, and 3 more")
    assert f"g{predict.NAMED_IN_NOTE}.png" not in note


def test_grey_model_predicts_grey_images_and_refuses_colour_ones(grey_run, tmp_path, capsys):
    workdir, model, variables = grey_run
    grey = np.random.default_rng(6).integers(0, 256, (8, 8), dtype=np.uint8)
    grey_file = write_png(tmp_path / "g.png", grey)
    predict.main(["--workdir", str(workdir), "--format", "csv", str(grey_file)])
    _, _, _, _, probs = read_back("csv", capsys.readouterr().out)
    np.testing.assert_allclose(probs, expected_probs(model, variables, grey[None, :, :, None]), atol=6e-4)
    colour = write_png(tmp_path / "rgb.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SystemExit) as stopped:
        predict.main(["--workdir", str(workdir), str(grey_file), str(colour)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {colour}: image is (8, 8, 3) (H, W, C), a colour image, but generation 1 of "
                          f"{workdir} was trained on (8, 8, 1) greyscale images")
    assert err.count("\n") == 1


def test_wrong_size_after_good_images_names_that_file(saved_run, tmp_path, capsys):
    workdir, _, _ = saved_run
    _, files = three_images(tmp_path)
    big = write_png(tmp_path / "d_big.png", np.zeros((16, 12), np.uint8))
    with pytest.raises(SystemExit):
        predict.main(["--workdir", str(workdir), "--format", "csv", *map(str, files), str(big)])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"error: {big}: image is (16, 12, 1) (H, W, C) but generation 1 of {workdir} was "
                            f"trained on (8, 8, 3) images (images are not resized: resize it to 8x8 first)\n")
