"""The refinery chain threads labels: each generation trains on what the previous one predicted; runs repeat."""

import dataclasses
import types

import chex
import jax
import numpy as np
import pytest

from lr_jax import generation, loop, models, refinery, results, step
from lr_jax.config import Config, RunOptions
from lr_jax.data import Splits
from lr_jax.devices import make_predict, predict_probs, replicate

CLASSES, SIZE, NUM_TRAIN, NUM_HELD_OUT, GENERATIONS = 4, 8, 64, 16, 3
TIMING_KEYS = ("train_seconds", "images_per_second", "seconds", "overhead_seconds")


def synthetic_splits(seed=0) -> Splits:
    """Class-dependent colour blobs plus noise, so labels carry some signal; uint8 like real data."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = np.arange(n) % CLASSES
        rng.shuffle(labels)
        base = np.eye(CLASSES, 3)[labels] * 160 + 40
        images = base[:, None, None, :] + rng.normal(0, 40, (n, SIZE, SIZE, 3))
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int32)

    train_images, train_labels = split(NUM_TRAIN)
    val_images, val_labels = split(NUM_HELD_OUT)
    test_images, test_labels = split(NUM_HELD_OUT)
    pixels = train_images.reshape(-1, 3) / 255.0
    return Splits(train_images, train_labels, val_images, val_labels, test_images, test_labels,
                  class_names=[f"c{i}" for i in range(CLASSES)],
                  mean=pixels.mean(0).astype(np.float32), std=pixels.std(0).astype(np.float32))


def tiny_config(seed=0) -> Config:
    return Config(model="tiny_cnn", generations=GENERATIONS, epochs=1, batch_size=16, learning_rate=0.1,
                  warmup_epochs=0.0, seed=seed, crop_padding=2)


def run_recorded(config, splits, run=RunOptions(eval_batch_size=NUM_TRAIN)):
    """run_chain, recording what each generation's train_generation call was given (initial params, the
    targets and images on the first device)."""
    calls = []
    real = loop.train_generation

    def recording(state, step_fn, data, *args, **kwargs):
        calls.append({"initial_params": jax.device_get(state.params), "targets": np.array(data.targets[0]),
                      "images": np.array(data.images[0])})
        return real(state, step_fn, data, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "train_generation", recording)
        chain = list(refinery.run_chain(config, splits, log=lambda line: None, progress=False, run=run))
    return chain, calls


@pytest.fixture(scope="module")
def step_traces():
    """Counts how often the train step is traced (= compiled) from here on; a fresh compile cache."""
    count = {"traces": 0}
    real = step.train_step

    def counting(*args, **kwargs):
        count["traces"] += 1
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step, "train_step", counting)
        yield count


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits()


@pytest.fixture(scope="module")
def recorded(splits, step_traces):
    chain, calls = run_recorded(tiny_config(), splits)
    return chain, calls, step_traces["traces"]


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_generation_one_trains_on_one_hot_ground_truth(recorded, splits):
    chain, calls, _ = recorded
    assert len(chain) == len(calls) == GENERATIONS
    one_hot = np.eye(CLASSES, dtype=np.float32)[splits.train_labels]
    np.testing.assert_array_equal(calls[0]["targets"], one_hot)
    assert chain[0].trained_on == "ground truth"
    np.testing.assert_array_equal(calls[0]["images"], splits.train_images)


def test_each_generation_trains_on_the_previous_generations_soft_labels(recorded):
    chain, calls, _ = recorded
    for k in range(1, GENERATIONS):
        previous = chain[k - 1].soft_labels
        np.testing.assert_array_equal(calls[k]["targets"], previous)  # what train_generation was given
        assert chain[k].trained_on == f"generation {k}" and chain[k].metrics["trained_on"] == f"generation {k}"
        # Soft, not the one-hot labels again.
        assert not np.array_equal(previous, calls[0]["targets"])
        assert np.all(previous.max(-1) < 1.0)


def test_soft_labels_are_the_models_softmax_on_unaugmented_training_images(recorded, splits):
    chain, _, _ = recorded
    for gen in chain:
        model = models.get_model(gen.model_name, CLASSES)
        chex.assert_shape(gen.soft_labels, (NUM_TRAIN, CLASSES))
        assert gen.soft_labels.dtype == np.float32
        np.testing.assert_allclose(gen.soft_labels.sum(-1), 1.0, atol=1e-5)
        # Independently: plain model.apply on the normalised, un-augmented images, no pmap, no batching.
        inputs = (splits.train_images.astype(np.float32) / 255.0 - splits.mean) / splits.std
        logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(gen.variables, inputs)
        np.testing.assert_allclose(gen.soft_labels, jax.nn.softmax(logits, -1), atol=2e-5)
        # And through predict_probs with another batch size (a padded last batch).
        again = predict_probs(make_predict(model), replicate(gen.variables), splits.train_images, splits.mean,
                              splits.std, batch_size=24)
        np.testing.assert_allclose(gen.soft_labels, again, atol=2e-5)


def test_metrics_follow_from_the_predictions(recorded, splits):
    chain, _, _ = recorded
    for number, gen in enumerate(chain, start=1):
        m = gen.metrics
        assert m["generation"] == number
        train_acc = np.mean(gen.soft_labels.argmax(-1) == splits.train_labels)
        assert m["train_accuracy"] == pytest.approx(train_acc)
        # Agreement with the labels it trained on: ground truth, then the previous generation's argmax.
        teacher = splits.train_labels if number == 1 else chain[number - 2].soft_labels.argmax(-1)
        assert m["label_agreement"] == pytest.approx(np.mean(gen.soft_labels.argmax(-1) == teacher))
        assert m["val_accuracy"] == pytest.approx(np.mean(gen.val_probs.argmax(-1) == splits.val_labels))
        assert m["test_accuracy"] == pytest.approx(np.mean(gen.test_probs.argmax(-1) == splits.test_labels))
        assert m["train_test_gap"] == pytest.approx(m["train_accuracy"] - m["test_accuracy"])
        assert m["train_val_gap"] == pytest.approx(m["train_accuracy"] - m["val_accuracy"])
        entropy = -(gen.soft_labels * np.log(np.clip(gen.soft_labels, 1e-30, 1))).sum(-1).mean()
        assert m["label_entropy"] == pytest.approx(entropy, rel=1e-5)
        assert 0.0 < m["label_entropy"] < np.log(CLASSES)


def test_the_metric_registry_names_every_number_the_chain_writes(recorded):
    """results.METRICS (results.md's columns, the report's metrics) is exactly the chain's per-generation numbers;
    the two accuracies without flip averaging come with --eval_flip only (test_controls), the label-repair
    metrics with --train_labels only (test_part_three_features)."""
    chain, _, _ = recorded
    registry = {key for key, _, _ in results.METRICS} - {"val_accuracy_no_flip", "test_accuracy_no_flip"}
    registry -= {"train_accuracy_dataset_labels", "labels_repaired", "labels_broken"}
    for gen in chain:
        numbers = {key for key, value in gen.metrics.items() if isinstance(value, (int, float))
                   and not isinstance(value, bool) and key != "generation"}
        assert numbers == registry


def test_label_agreement_measures_the_student_against_its_teachers_labels_not_the_ground_truth():
    """A teacher wrong on half the images, a student that copies it: agreement 1, train accuracy 0.5. Without a
    test split the train-test gap is None, not silently the train-validation gap."""
    labels = np.array([0, 1, 2, 3], np.int32)
    splits = types.SimpleNamespace(train_labels=labels, val_labels=labels[:2], test_labels=None, num_classes=CLASSES,
                                   train_targets=None)
    teacher_says = np.eye(CLASSES, dtype=np.float32)[[0, 1, 3, 2]]  # right, right, wrong, wrong
    teacher = types.SimpleNamespace(generation=1, model_name="tiny_cnn", soft_labels=teacher_says,
                                    val_probs=np.eye(CLASSES)[[0, 0]], test_probs=None)
    student = 0.7 * teacher_says + 0.075  # same argmax as the teacher, softer
    plan = generation.plan_generation(Config(batch_size=4), 2, [teacher], 1, len(labels))
    _, taught = generation.training_labels(plan, splits, Config(), [teacher])
    m = refinery.evaluate_generation(2, splits, student, np.eye(CLASSES)[[0, 1]], None, [teacher], taught)
    assert m["label_agreement"] == 1.0 and m["train_accuracy"] == 0.5
    assert m["train_val_gap"] == pytest.approx(0.5 - 1.0) and m["train_test_gap"] is None
    assert m["ensemble_val_accuracy"] == 0.5 and m["ensemble_test_accuracy"] is None
    first_plan = generation.plan_generation(Config(batch_size=4), 1, [], 1, len(labels))
    _, taught = generation.training_labels(first_plan, splits, Config(), [])
    first = refinery.evaluate_generation(1, splits, teacher_says, np.eye(CLASSES)[[0, 1]], None, [], taught)
    assert first["label_agreement"] == first["train_accuracy"] == 0.5  # generation 1 trained on ground truth


@pytest.mark.parametrize("label_mode, names", [
    ("precomputed", [("ground truth", "ground truth"), ("generation 1", "precomputed"), ("generation 2", "precomputed")]),
    ("online", [("ground truth", "ground truth"), ("generation 1", "online"), ("generation 2", "online")]),
    ("ground_truth", [("ground truth", "ground truth")] * 3),
])
def test_generation_plans_name_their_labels_as_results_json_does_and_key_their_compiled_steps(label_mode, names):
    config = dataclasses.replace(tiny_config(), label_mode=label_mode, refinery_model="small_cnn")
    plans, chain = [], []
    for number in range(1, 4):
        plans.append(generation.plan_generation(config, number, chain, 4, NUM_TRAIN))
        chain.append(types.SimpleNamespace(generation=number, model_name=plans[-1].model_name))
    assert [(plan.trained_on, plan.label_mode) for plan in plans] == names  # results.json's text, byte for byte
    assert [plan.model_name for plan in plans] == ["small_cnn", "tiny_cnn", "tiny_cnn"]
    online = label_mode == "online"
    assert [plan.step_options.online_labels for plan in plans] == [False, online, online]
    assert [plan.refinery_model for plan in plans] == [None, "small_cnn" if online else None,
                                                       "tiny_cnn" if online else None]
    # Precomputed labels: generations 2 and 3 share one compiled step; online steps call their own refinery.
    assert (plans[1].step_key == plans[2].step_key) is not online
    assert len({plan.step_key for plan in plans}) == (3 if online else 2)


def test_every_generation_starts_from_a_fresh_initialisation(recorded):
    chain, calls, _ = recorded
    inits = [jax.tree_util.tree_leaves(c["initial_params"]) for c in calls]
    for a in range(GENERATIONS):
        for b in range(a + 1, GENERATIONS):
            assert not all(np.array_equal(x, y) for x, y in zip(inits[a], inits[b]))
    trained = jax.tree_util.tree_leaves(chain[0].variables["params"])
    assert not all(np.allclose(x, y) for x, y in zip(inits[1], trained))  # not a warm start from generation 1


def test_the_train_step_compiles_once_for_the_whole_chain(recorded):
    """Precomputed labels: every generation reuses generation 1's compiled step (same shapes, same settings)."""
    _, _, traces = recorded
    assert traces == 1, f"the train step was traced {traces} times for {GENERATIONS} generations"


def test_same_seed_repeats_exactly_and_another_seed_starts_elsewhere(recorded, splits):
    chain, calls, _ = recorded
    again, again_calls = run_recorded(tiny_config(seed=0), splits)
    for first, second in zip(chain, again):
        assert without_timings(first.metrics) == without_timings(second.metrics)
        np.testing.assert_array_equal(first.soft_labels, second.soft_labels)
    for first, second in zip(calls, again_calls):
        chex.assert_trees_all_equal(first["initial_params"], second["initial_params"])

    other_config = tiny_config(seed=1)
    other_config.generations = 1
    other, other_calls = run_recorded(other_config, splits)
    kernels = lambda c: [x for x in jax.tree_util.tree_leaves(c["initial_params"]) if x.ndim > 1]
    differs = [not np.array_equal(x, y) for x, y in zip(kernels(calls[0]), kernels(other_calls[0]))]
    assert len(differs) == 3 and all(differs), "a different seed should re-draw every random kernel"
    assert not np.array_equal(other[0].soft_labels, chain[0].soft_labels)


def test_each_generation_records_the_code_that_trained_it_across_a_resume(splits, tmp_path):
    """A rerun that reloads generation 1 and trains generation 2 under other code: each row names its own."""
    first, second = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}
    run = RunOptions(eval_batch_size=NUM_TRAIN)
    quiet = dict(log=lambda line: None, progress=False, workdir=str(tmp_path), run=run)
    list(refinery.run_chain(dataclasses.replace(tiny_config(), generations=1), splits, code=first, **quiet))
    chain = list(refinery.run_chain(dataclasses.replace(tiny_config(), generations=2), splits, code=second, **quiet))
    assert [g.metrics["code"] for g in chain] == [first, second]
    assert [g.reloaded for g in chain] == [True, False]
