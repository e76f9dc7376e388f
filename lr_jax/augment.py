"""On-device augmentation (pad-and-crop, horizontal flip) and normalisation, driven by PRNG keys."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def to_unit_float(images: jax.Array) -> jax.Array:
    """uint8 pixels in [0, 255] -> float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def normalize(pixels: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Per-channel standardisation of [0, 1] pixels."""
    return (pixels - mean) / std


def random_crop_flip(pixels: jax.Array, keys: jax.Array, pad: int = 4, flip: bool = True) -> jax.Array:
    """Zero-pads each image by `pad`, takes a random crop of the original size, and (if `flip`) mirrors it
    left-right with probability 1/2. One key per image, so the result does not depend on how a batch is
    split across devices. `pixels` is (B, H, W, C); the output has the same shape and dtype."""
    batch, height, width, channels = pixels.shape
    padded = jnp.pad(pixels, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(image, key):
        crop_key, flip_key = jax.random.split(key)
        dy, dx = jax.random.randint(crop_key, (2,), 0, 2 * pad + 1)
        out = jax.lax.dynamic_slice(image, (dy, dx, 0), (height, width, channels))
        if flip:
            out = jnp.where(jax.random.bernoulli(flip_key), out[:, ::-1, :], out)
        return out

    if pad == 0 and not flip:
        return pixels
    return jax.vmap(one)(padded, keys)
