"""Soft-label cross-entropy and the label transforms around it (temperature, smoothing, ground-truth mixing)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def soft_cross_entropy(logits: jax.Array, label_probs: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Per-example `-sum(p * log_softmax(logits / T))`, scaled by T^2 so gradients keep their size.

    `label_probs` holds label distributions (rows summing to 1); one-hot ground truth is a special case.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    return -jnp.sum(label_probs * log_probs, axis=-1) * (temperature**2)


def temper(label_probs: jax.Array, temperature: float) -> jax.Array:
    """softmax(log(p) / T): the distribution a teacher with these probabilities gives at temperature T."""
    if temperature == 1.0:
        return label_probs
    log_p = jnp.log(jnp.clip(label_probs, 1e-30, 1.0))
    return jax.nn.softmax(log_p / temperature, axis=-1)


def one_hot(labels: jax.Array, num_classes: int, label_smoothing: float = 0.0) -> jax.Array:
    """One-hot rows, optionally smoothed towards the uniform distribution by `label_smoothing`."""
    hard = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return hard * (1.0 - label_smoothing) + label_smoothing / num_classes


def refinery_loss(
    logits: jax.Array,
    refined_probs: jax.Array,
    labels: jax.Array,
    temperature: float = 1.0,
    gt_weight: float = 0.0,
    label_smoothing: float = 0.0,
) -> jax.Array:
    """Per-example loss against refined labels, optionally mixed with (smoothed) ground truth.

    `(1 - gt_weight) * T^2 * CE(temper(refined, T), logits / T) + gt_weight * CE(one_hot(labels), logits)`:
    Hinton et al.'s distillation loss; with the defaults (T = 1, gt_weight = 0) it is the paper's refinery loss.
    """
    refined = soft_cross_entropy(logits, temper(refined_probs, temperature), temperature)
    if gt_weight == 0.0:
        return refined
    ground_truth = soft_cross_entropy(logits, one_hot(labels, logits.shape[-1], label_smoothing))
    return (1.0 - gt_weight) * refined + gt_weight * ground_truth


def label_entropy(label_probs: jax.Array) -> jax.Array:
    """Per-row entropy in nats of label distributions."""
    p = jnp.clip(label_probs, 1e-30, 1.0)
    return -jnp.sum(label_probs * jnp.log(p), axis=-1)


def smoothed_entropy(label_smoothing: float, num_classes: int) -> float:
    """Entropy in nats of a one-hot row smoothed by `label_smoothing` over `num_classes` classes."""
    rest = label_smoothing / num_classes
    top = 1.0 - label_smoothing + rest
    terms = [top] + [rest] * (num_classes - 1)
    return float(-sum(p * math.log(p) for p in terms if p > 0))


def smoothing_for_entropy(entropy: float, num_classes: int) -> float:
    """The label smoothing in [0, 1] whose targets carry `entropy` nats (the entropy-matched control for refined
    labels of that mean entropy); bisection, as the entropy grows with the smoothing."""
    if not 0.0 <= entropy <= math.log(num_classes):
        raise ValueError(f"a label entropy of {entropy} nats is outside [0, log {num_classes}]")
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if smoothed_entropy(middle, num_classes) < entropy else (low, middle)
    return (low + high) / 2
