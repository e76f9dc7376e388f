"""`python -m lr_jax.predict`: a saved generation's top-3 classes for new image files and folders."""

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


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A workdir whose generation 1 is an initialised tiny_cnn over 8x8 RGB images of 5 classes."""
    workdir = tmp_path_factory.mktemp("run")
    model = get_model("tiny_cnn", len(CLASS_NAMES))
    variables = jax.device_get(model.init(jax.random.PRNGKey(3), jnp.zeros((1, 8, 8, 3)), train=False))
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    splits = Splits(train_images, np.arange(10) % 5, train_images[:5], np.arange(5), None, None, CLASS_NAMES,
                    MEAN, STD)
    probs = np.full((10, 5), 0.2, np.float32)
    result = refinery.Generation(1, "tiny_cnn", "ground truth", probs, probs[:5], None, variables,
                                 {"generation": 1})
    manager = checkpoints.open_manager(checkpoints.finished_dir(str(workdir)))
    checkpoints.save_generation(manager, 1, refinery.generation_arrays(result),
                                refinery.generation_info(result, Config(model="tiny_cnn"), splits))
    manager.close()
    return workdir, model, variables


def expected_probs(model, variables, images):
    """softmax(model(normalised images)), computed here without lr_jax.devices."""
    inputs = (images.astype(np.float32) / 255.0 - MEAN) / STD
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
        "wrong_size": ([str(workdir), "--generation", "1", str(image)], f"{image}: image is (16, 16, 3)"),
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
