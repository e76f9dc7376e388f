"""The experiments' controls: ground-truth chains (independent models), test-time flips, the refinery generation
reused, and the entropy-matched label smoothing."""

import dataclasses
import json
import math

import chex
import numpy as np
import pytest

from lr_jax import checkpoints, losses, refinery
from lr_jax.config import Config, RunOptions, build_config
from lr_jax.devices import make_predict, predict_probs, replicate
from lr_jax.models import get_model
from test_chain import CLASSES, run_recorded, synthetic_splits, tiny_config

RUN = RunOptions(eval_batch_size=64)


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits()


@pytest.mark.parametrize("entropy", [0.05, 0.5, 1.2, 2.2])
def test_smoothing_for_entropy_inverts_the_smoothed_entropy(entropy):
    smoothing = losses.smoothing_for_entropy(entropy, 10)
    assert 0.0 < smoothing < 1.0
    assert losses.smoothed_entropy(smoothing, 10) == pytest.approx(entropy, abs=1e-9)
    row = np.asarray(losses.one_hot(np.array([3]), 10, smoothing))[0]
    assert -(row * np.log(row)).sum() == pytest.approx(entropy, rel=1e-5)  # the targets the run trains on


def test_smoothing_for_entropy_known_values_and_range():
    assert losses.smoothed_entropy(0.0, 10) == 0.0
    assert losses.smoothed_entropy(1.0, 10) == pytest.approx(math.log(10))
    assert losses.smoothed_entropy(0.1, 10) == pytest.approx(0.5003, abs=1e-4)  # LS 0.1: about 0.50 nats
    with pytest.raises(ValueError, match="outside"):
        losses.smoothing_for_entropy(2.4, 10)


def test_ground_truth_chain_trains_independent_models_on_ground_truth(splits):
    """Every generation a fresh model on one-hot ground truth; generation 1 equals the refinery chain's."""
    config = dataclasses.replace(tiny_config(), label_mode="ground_truth")
    chain, calls = run_recorded(config, splits, RUN)
    refined, _ = run_recorded(dataclasses.replace(config, label_mode="precomputed", generations=1), splits, RUN)
    one_hot = np.eye(CLASSES, dtype=np.float32)[splits.train_labels]
    for generation, call in zip(chain, calls):
        np.testing.assert_array_equal(call["targets"], one_hot)
        assert generation.metrics["trained_on"] == "ground truth"
        assert generation.metrics["label_mode"] == "ground truth"
        assert generation.metrics["label_agreement"] == generation.metrics["train_accuracy"]
    chex.assert_trees_all_close(chain[0].val_probs, refined[0].val_probs)
    assert not np.allclose(chain[1].val_probs, chain[0].val_probs)  # a fresh initialisation, not a copy
    ensemble = np.mean([g.val_probs for g in chain], axis=0)
    assert chain[-1].metrics["ensemble_val_accuracy"] == pytest.approx(
        np.mean(ensemble.argmax(-1) == splits.val_labels))


def test_eval_flip_averages_held_out_predictions_over_mirrors_but_not_the_labels(splits):
    config = dataclasses.replace(tiny_config(), generations=1)
    plain, _ = run_recorded(config, splits, RUN)
    flipped, _ = run_recorded(dataclasses.replace(config, eval_flip=True), splits, RUN)
    chex.assert_trees_all_close(flipped[0].variables, plain[0].variables)
    np.testing.assert_array_equal(flipped[0].soft_labels, plain[0].soft_labels)
    predict = make_predict(get_model("tiny_cnn", CLASSES))
    variables = replicate(plain[0].variables)
    for images, probs in ((splits.val_images, flipped[0].val_probs), (splits.test_images, flipped[0].test_probs)):
        mirrored = predict_probs(predict, variables, images[:, :, ::-1], splits.mean, splits.std, 64)
        straight = predict_probs(predict, variables, images, splits.mean, splits.std, 64)
        chex.assert_trees_all_close(probs, (straight + mirrored) / 2, atol=1e-6)
    assert not np.allclose(flipped[0].val_probs, plain[0].val_probs)
    for split in ("val", "test"):  # the accuracy without the averaging is recorded beside it
        assert flipped[0].metrics[f"{split}_accuracy_no_flip"] == plain[0].metrics[f"{split}_accuracy"]
    assert "val_accuracy_no_flip" not in plain[0].metrics


def test_control_flags_are_checked():
    with pytest.raises(ValueError, match="--refinery_generation needs --refinery_workdir"):
        build_config("cifar10", {"refinery_generation": 1})
    with pytest.raises(ValueError, match="--refinery_generation must be at least 1"):
        build_config("cifar10", {"refinery_generation": 0, "refinery_workdir": "x"})
    with pytest.raises(ValueError, match="ground_truth.*--refinery_workdir"):
        build_config("cifar10", {"label_mode": "ground_truth", "refinery_workdir": "x"})
    config, _ = build_config("cifar10", {"label_mode": "ground_truth", "eval_flip": True})
    assert config.label_mode == "ground_truth" and config.eval_flip


def test_refinery_generation_picks_that_generation_and_matched_smoothing_reads_it(tmp_path, capsys):
    """A 2-generation run reused at generation 1: the student trains on generation 1's labels. The matched
    smoothing of that generation carries its label entropy."""
    from cli_runs import RUN_FLAGS, write_image_folder

    from lr_jax.data import load_dataset, make_splits
    from lr_jax.experiments import matched_smoothing, runner

    data_dir = write_image_folder(tmp_path / "data")
    flags = [*RUN_FLAGS, "--data_dir", str(data_dir), "--seed", "3"]
    teacher_dir = tmp_path / "teacher"
    runner.run("cifar10", [*flags, "--workdir", str(teacher_dir)])  # 2 generations
    first, _ = checkpoints.load_generation(str(teacher_dir), 1)
    second, _ = checkpoints.load_generation(str(teacher_dir), 2)
    assert not np.allclose(first["soft_labels"], second["soft_labels"])

    config = Config(**{**dataclasses.asdict(tiny_config()), "batch_size": 8, "val_size": 8, "seed": 3,
                       "refinery_workdir": str(teacher_dir), "refinery_generation": 1, "generations": 2})
    splits = make_splits(load_dataset("cifar10", str(data_dir)), config.val_size, None, config.seed)
    chain, calls = run_recorded(config, splits, RUN)
    assert len(calls) == 1 and "generation 1" in chain[0].metrics["trained_on"]
    np.testing.assert_array_equal(calls[0]["targets"], first["soft_labels"])
    with pytest.raises(checkpoints.CheckpointError, match="generation 5 was not saved"):
        refinery.reused_refinery(str(teacher_dir), splits, lambda line: None, 5)

    matched_smoothing.main([str(teacher_dir), "--generation", "1", "--crops", "40"])
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    entropy = np.mean(-(first["soft_labels"] * np.log(np.clip(first["soft_labels"], 1e-30, 1))).sum(-1))
    assert found["label_entropy_clean"] == pytest.approx(entropy, rel=1e-5)
    for kind in ("clean", "crops"):
        assert losses.smoothed_entropy(found[f"smoothing_{kind}"], 4) == pytest.approx(found[f"label_entropy_{kind}"])
    assert found["label_entropy_crops"] != pytest.approx(found["label_entropy_clean"])


def test_report_names_the_controls():
    from lr_jax import report

    chain = dict(model="small_cnn", generations=3, epochs=8, label_mode="ground_truth")
    assert report.describe(chain) == ["small_cnn", "independent ground-truth models"]
    single = {**chain, "generations": 1, "label_mode": "precomputed", "epochs": 24}
    assert report.describe(single) == ["small_cnn", "ground truth only, 24 epochs"]
    distilled = {**chain, "generations": 2, "label_mode": "online", "refinery_workdir": True, "refinery_generation": 1,
                 "temperature": 4.0, "gt_weight": 0.5, "eval_flip": True}
    assert report.describe(distilled) == ["small_cnn", "online", "temperature 4", "ground-truth weight 0.5",
                                          "refinery = its generation 1", "reused refinery", "flip-averaged evaluation"]
    # Trained on other labels than the dataset's (--train_labels), the names say "given labels", not ground truth.
    noisy = {"train_labels": "/somewhere/worse_label.csv"}
    assert report.describe({**chain, **noisy}) == ["small_cnn", "independent models on the given labels",
                                                   "labels worse_label.csv"]
    assert report.describe({**single, **noisy})[1] == "given labels only, 24 epochs"
    assert "given-label weight 0.5" in report.describe({**distilled, **noisy})


def test_cpu_preset_averages_over_mirrors_only_where_it_trains_on_them():
    cifar, _ = build_config("cifar10", {"preset": "cpu"})
    assert (cifar.model, cifar.epochs, cifar.eval_flip) == ("small_cnn_c2_16", 12, True)
    svhn, _ = build_config("svhn", {"preset": "cpu"})
    assert (svhn.flip, svhn.eval_flip) == (False, False)
    unflipped, _ = build_config("cifar10", {"preset": "cpu", "flip": False})
    assert not unflipped.eval_flip
    asked, _ = build_config("svhn", {"preset": "cpu", "eval_flip": True})
    assert asked.eval_flip  # the user's flag wins
    old, _ = build_config("cifar10", {"preset": "cpu_v1"})
    assert (old.model, old.epochs, old.batch_size, old.eval_flip) == ("small_cnn", 8, 256, False)
