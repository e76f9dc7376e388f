"""On-device augmentation (pad-and-crop, random resized crop, horizontal flip) and normalisation, by PRNG keys."""

from __future__ import annotations

import math

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


CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries this many boxes before its central fallback


def _fallback_box(height: int, width: int, ratio: tuple) -> tuple[int, int]:
    """torchvision's fallback (height, width): the whole image, trimmed to the nearest aspect ratio in `ratio`."""
    aspect = width / height
    if aspect < min(ratio):
        return int(round(width / min(ratio))), width
    if aspect > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def _box_from_uniforms(draws: jax.Array, height: int, width: int, scale: tuple, ratio: tuple) -> jax.Array:
    """One (top, left, box height, box width) from uniforms in [0, 1), as torchvision's
    RandomResizedCrop.get_params draws it, vectorised: all attempts (area fraction uniform in `scale`, aspect ratio
    log-uniform in `ratio`, sides rounded) at once, the first that fits kept; if none fits, the central fallback.
    `draws` holds 2 * attempts + 2 uniforms: areas, log ratios, then the top and left positions."""
    attempts = (draws.shape[0] - 2) // 2
    area = height * width * (scale[0] + (scale[1] - scale[0]) * draws[:attempts])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(log_low + (log_high - log_low) * draws[attempts : 2 * attempts])
    box_w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    box_h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first, found = jnp.argmax(fits), jnp.any(fits)
    fallback_h, fallback_w = _fallback_box(height, width, ratio)
    box_h = jnp.where(found, box_h[first], fallback_h)
    box_w = jnp.where(found, box_w[first], fallback_w)

    def position(u, room):  # uniform over 0..room - 1, like torch.randint(0, room)
        return jnp.minimum(jnp.floor(u * room).astype(jnp.int32), room - 1)

    top = jnp.where(found, position(draws[-2], height - box_h + 1), (height - box_h) // 2)
    left = jnp.where(found, position(draws[-1], width - box_w + 1), (width - box_w) // 2)
    return jnp.stack([top, left, box_h, box_w]).astype(jnp.int32)


def _crop_draws(keys: jax.Array, attempts: int) -> jax.Array:
    """(B, 2 * attempts + 3) uniforms per example key: its box's draws, then its flip's. One generator call per
    key keeps the compiled program small."""
    return jax.vmap(lambda key: jax.random.uniform(key, (2 * attempts + 3,)))(keys)


def resized_crop_boxes(keys: jax.Array, height: int, width: int, scale: tuple = (0.08, 1.0),
                       ratio: tuple = (3 / 4, 4 / 3), attempts: int = CROP_ATTEMPTS) -> jax.Array:
    """(B, 4) int32 boxes (top, left, height, width) that `random_resized_crop` cuts with the same keys."""
    draws = _crop_draws(keys, attempts)[:, :-1]
    return jax.vmap(lambda d: _box_from_uniforms(d, height, width, scale, ratio))(draws)


def _bilinear_weights(start: jax.Array, length: jax.Array, size: int) -> jax.Array:
    """(size, size) matrix resampling source pixels [start, start + length) to `size` pixels: output pixel y
    reads source coordinate (y + 0.5) * length / size - 0.5 (half-pixel centres, i.e. torch's
    align_corners=False), clamped at the box edges, interpolated linearly between its two neighbours."""
    source = jnp.maximum((jnp.arange(size, dtype=jnp.float32) + 0.5) * (length / size) - 0.5, 0.0)
    low = jnp.minimum(jnp.floor(source), length - 1)
    frac = (source - low)[:, None]
    high = jnp.minimum(low + 1, length - 1)
    one_hot = lambda offset: jax.nn.one_hot((start + offset).astype(jnp.int32), size, dtype=jnp.float32)
    return (1.0 - frac) * one_hot(low) + frac * one_hot(high)


def crop_resize(pixels: jax.Array, boxes: jax.Array) -> jax.Array:
    """Each image's box (top, left, height, width) resized back to the image's (H, W) bilinearly (no antialiasing:
    a box is never larger than the image). Static shapes, any box: two small matrix products per image."""
    height, width = pixels.shape[1:3]

    def one(image, box):
        rows = _bilinear_weights(box[0], box[2], height)
        cols = _bilinear_weights(box[1], box[3], width)
        out = jnp.einsum("yh,hwc,xw->yxc", rows, image.astype(jnp.float32), cols,
                         precision=jax.lax.Precision.HIGHEST)
        return out.astype(pixels.dtype)

    return jax.vmap(one)(pixels, boxes)


def random_resized_crop_with_areas(pixels: jax.Array, keys: jax.Array, scale: tuple = (0.08, 1.0),
                                   ratio: tuple = (3 / 4, 4 / 3), flip: bool = True) -> tuple[jax.Array, jax.Array]:
    """`random_resized_crop`, and each crop's area as a fraction of the image, (B,) float32. The fraction is that
    of the rounded box, so it may leave `scale` by the rounding of its sides (at most half a pixel each)."""
    height, width = pixels.shape[1:3]
    draws = _crop_draws(keys, CROP_ATTEMPTS)
    boxes = jax.vmap(lambda d: _box_from_uniforms(d, height, width, scale, ratio))(draws[:, :-1])
    out = crop_resize(pixels, boxes)
    if flip:
        out = jnp.where((draws[:, -1] < 0.5)[:, None, None, None], out[:, :, ::-1, :], out)
    areas = (boxes[:, 2] * boxes[:, 3]).astype(jnp.float32) / (height * width)
    return out, areas


def random_resized_crop(pixels: jax.Array, keys: jax.Array, scale: tuple = (0.08, 1.0),
                        ratio: tuple = (3 / 4, 4 / 3), flip: bool = True) -> jax.Array:
    """torchvision's RandomResizedCrop (+ RandomHorizontalFlip) on float (B, H, W, C) images, one key per image:
    a box of area fraction uniform in `scale` and aspect ratio log-uniform in `ratio` (10 attempts drawn at once,
    the first that fits kept, else the central fallback), resized back to (H, W) bilinearly, then mirrored with
    probability 1/2 if `flip`. jit- and vmap-friendly; the same key gives the same image."""
    return random_resized_crop_with_areas(pixels, keys, scale, ratio, flip)[0]


def training_augmentation(pixels: jax.Array, keys: jax.Array, crop: str = "pad", padding: int = 4,
                          scale: tuple = (0.08, 1.0), ratio: tuple = (3 / 4, 4 / 3), flip: bool = True) -> jax.Array:
    """The training crops of `--crop`: "pad" (`random_crop_flip` with `padding`) or "random_resized"
    (`random_resized_crop` with `scale` and `ratio`), each mirrored with probability 1/2 if `flip`. The train step
    and every tool that reproduces its crops (matched smoothing) call this one function."""
    if crop == "random_resized":
        return random_resized_crop(pixels, keys, scale, ratio, flip)
    if crop != "pad":
        raise ValueError(f"unknown crop {crop!r}: pad or random_resized")
    return random_crop_flip(pixels, keys, padding, flip)
