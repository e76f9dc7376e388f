"""Soft-label cross-entropy against optax and its closed-form gradient, and the label transforms around it."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lr_jax import losses

BATCH, CLASSES = 6, 5


def random_logits(seed=0, scale=3.0):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), (BATCH, CLASSES), jnp.float32)


def random_distributions(seed=1):
    return jax.nn.softmax(2.0 * jax.random.normal(jax.random.PRNGKey(seed), (BATCH, CLASSES)), axis=-1)


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_soft_cross_entropy_equals_optax_integer_label_loss_on_one_hot_labels():
    logits = random_logits()
    labels = jnp.array([0, 4, 2, 2, 1, 3])
    ours = losses.soft_cross_entropy(logits, jax.nn.one_hot(labels, CLASSES))
    reference = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    chex.assert_shape(ours, (BATCH,))
    chex.assert_type(ours, jnp.float32)
    chex.assert_trees_all_close(ours, reference, rtol=1e-6, atol=1e-6)


def test_soft_cross_entropy_matches_formula_on_soft_labels():
    logits, p = random_logits(), random_distributions()
    expected = -(np.asarray(p, np.float64) * np_log_softmax(logits)).sum(-1)
    chex.assert_trees_all_close(losses.soft_cross_entropy(logits, p), expected.astype(np.float32), rtol=1e-5)
    # Soft labels are scored exactly as optax's distribution-label loss.
    chex.assert_trees_all_close(
        losses.soft_cross_entropy(logits, p), optax.softmax_cross_entropy(logits, p), rtol=1e-6, atol=1e-6
    )


def test_gradient_is_softmax_minus_label_distribution():
    logits, p = random_logits(), random_distributions()
    grad = jax.grad(lambda z: jnp.sum(losses.soft_cross_entropy(z, p)))(logits)
    chex.assert_shape(grad, (BATCH, CLASSES))
    chex.assert_type(grad, jnp.float32)
    chex.assert_trees_all_close(grad, jax.nn.softmax(logits) - p, atol=1e-6)
    # One-hot targets are the special case: gradient softmax - e_y.
    one_hot = jax.nn.one_hot(jnp.arange(BATCH) % CLASSES, CLASSES)
    grad_hard = jax.grad(lambda z: jnp.sum(losses.soft_cross_entropy(z, one_hot)))(logits)
    chex.assert_trees_all_close(grad_hard, jax.nn.softmax(logits) - one_hot, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 2.0, 4.0])
def test_temperature_scales_logits_and_loss(temperature):
    logits, p = random_logits(), random_distributions()
    loss = losses.soft_cross_entropy(logits, p, temperature)
    expected = -(np.asarray(p, np.float64) * np_log_softmax(np.asarray(logits) / temperature)).sum(-1)
    chex.assert_trees_all_close(loss, (temperature**2 * expected).astype(np.float32), rtol=1e-5)
    # The T^2 factor keeps the gradient at T * (softmax(z / T) - p).
    grad = jax.grad(lambda z: jnp.sum(losses.soft_cross_entropy(z, p, temperature)))(logits)
    chex.assert_trees_all_close(grad, temperature * (jax.nn.softmax(logits / temperature) - p), atol=1e-5)


def test_bfloat16_logits_give_float32_loss():
    logits = random_logits().astype(jnp.bfloat16)
    loss = losses.soft_cross_entropy(logits, random_distributions())
    chex.assert_shape(loss, (BATCH,))
    chex.assert_type(loss, jnp.float32)
    chex.assert_tree_all_finite(loss)


def test_temper_is_identity_at_one_and_sharpens_or_flattens_otherwise():
    p = random_distributions()
    chex.assert_trees_all_close(losses.temper(p, 1.0), p)
    for temperature in (0.5, 3.0):
        tempered = losses.temper(p, temperature)
        expected = np.asarray(p, np.float64) ** (1.0 / temperature)
        expected /= expected.sum(-1, keepdims=True)
        chex.assert_trees_all_close(tempered, expected.astype(np.float32), rtol=1e-5, atol=1e-7)
        chex.assert_trees_all_close(jnp.sum(tempered, -1), jnp.ones(BATCH), atol=1e-6)
    entropy = lambda q: np.asarray(losses.label_entropy(q))
    assert np.all(entropy(losses.temper(p, 3.0)) > entropy(p))
    assert np.all(entropy(losses.temper(p, 0.5)) < entropy(p))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_one_hot_label_smoothing_formula(smoothing):
    labels = jnp.array([0, 4, 2, 1])
    smoothed = losses.one_hot(labels, CLASSES, smoothing)
    chex.assert_shape(smoothed, (4, CLASSES))
    chex.assert_type(smoothed, jnp.float32)
    expected = np.full((4, CLASSES), smoothing / CLASSES, np.float32)
    expected[np.arange(4), np.asarray(labels)] += 1.0 - smoothing
    chex.assert_trees_all_close(smoothed, expected, atol=1e-7)
    chex.assert_trees_all_close(jnp.sum(smoothed, -1), jnp.ones(4), atol=1e-6)


def test_refinery_loss_defaults_to_plain_soft_cross_entropy():
    logits, p = random_logits(), random_distributions()
    labels = jnp.arange(BATCH) % CLASSES
    chex.assert_trees_all_close(
        losses.refinery_loss(logits, p, labels), losses.soft_cross_entropy(logits, p), rtol=1e-6
    )


@pytest.mark.parametrize("gt_weight,temperature,smoothing", [(0.3, 1.0, 0.0), (0.5, 2.0, 0.1), (1.0, 4.0, 0.0)])
def test_refinery_loss_mixes_tempered_refined_labels_with_ground_truth(gt_weight, temperature, smoothing):
    logits, p = random_logits(), random_distributions()
    labels = jnp.array([1, 0, 4, 3, 2, 2])
    loss = losses.refinery_loss(logits, p, labels, temperature, gt_weight, smoothing)
    # Independent float64 evaluation of (1 - w) T^2 CE(temper(p, T), z / T) + w CE(smooth(y), z).
    p64 = np.asarray(p, np.float64) ** (1.0 / temperature)
    p64 /= p64.sum(-1, keepdims=True)
    refined = -(p64 * np_log_softmax(np.asarray(logits) / temperature)).sum(-1) * temperature**2
    target = np.full((BATCH, CLASSES), smoothing / CLASSES)
    target[np.arange(BATCH), np.asarray(labels)] += 1.0 - smoothing
    ground_truth = -(target * np_log_softmax(logits)).sum(-1)
    expected = (1.0 - gt_weight) * refined + gt_weight * ground_truth
    chex.assert_shape(loss, (BATCH,))
    chex.assert_trees_all_close(loss, expected.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_label_entropy_bounds():
    uniform = jnp.full((3, CLASSES), 1.0 / CLASSES)
    hard = jax.nn.one_hot(jnp.array([0, 1, 2]), CLASSES)
    chex.assert_trees_all_close(losses.label_entropy(uniform), jnp.full(3, np.log(CLASSES)), rtol=1e-6)
    chex.assert_trees_all_close(losses.label_entropy(hard), jnp.zeros(3), atol=1e-6)
