"""On-device augmentation: shapes kept, only crops of the zero-padded image (optionally mirrored), key-driven."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr_jax import augment

H, W, C, PAD, COUNT = 6, 5, 2, 2, 32


def known_images(count=COUNT, dtype=jnp.float32):
    """Every pixel value distinct and non-zero, so a crop position and a mirror are identifiable."""
    image = (np.arange(H * W * C).reshape(H, W, C) + 1).astype(np.float32)
    return jnp.asarray(np.broadcast_to(image, (count, H, W, C)), dtype)


def keys(seed, count=COUNT):
    return jax.random.split(jax.random.PRNGKey(seed), count)


def candidates(image, pad, flips):
    """{(dy, dx, mirrored): crop} for every crop of the zero-padded image."""
    padded = np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)))
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy : dy + H, dx : dx + W]
            out[(dy, dx, False)] = crop
            if flips:
                out[(dy, dx, True)] = crop[:, ::-1]
    return out


def identify(outputs, image, pad, flips):
    """The (dy, dx, mirrored) each output is; fails if an output is no crop (or mirrored crop) at all."""
    table = candidates(image, pad, flips)
    found = []
    for i, out in enumerate(np.asarray(outputs)):
        matches = [k for k, crop in table.items() if np.array_equal(out, crop)]
        assert matches, f"output {i} is not a crop{' or mirrored crop' if flips else ''} of the padded image"
        found.append(matches[0])
    return found


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.uint8])
def test_keeps_shape_and_dtype(dtype):
    images = known_images(dtype=dtype)
    out = augment.random_crop_flip(images, keys(0), PAD, flip=True)
    chex.assert_shape(out, (COUNT, H, W, C))
    chex.assert_type(out, dtype)


def test_outputs_are_only_crops_and_flips_and_use_both():
    images = known_images()
    found = identify(augment.random_crop_flip(images, keys(0), PAD, flip=True), images[0], PAD, flips=True)
    offsets = {(dy, dx) for dy, dx, _ in found}
    assert len(offsets) > 3, f"crops barely vary over {COUNT} keys: {offsets}"
    mirrored = sum(m for _, _, m in found)
    assert 0 < mirrored < COUNT, f"{mirrored} of {COUNT} outputs mirrored; expected about half"


def test_no_flip_means_never_mirrored():
    images = known_images()
    found = identify(augment.random_crop_flip(images, keys(1), PAD, flip=False), images[0], PAD, flips=False)
    assert len({(dy, dx) for dy, dx, _ in found}) > 3


def test_pad_zero_with_flip_only_mirrors():
    images = known_images()
    found = identify(augment.random_crop_flip(images, keys(2), 0, flip=True), images[0], 0, flips=True)
    assert {(dy, dx) for dy, dx, _ in found} == {(0, 0)}
    assert 0 < sum(m for _, _, m in found) < COUNT


def test_pad_zero_without_flip_is_the_identity():
    images = jax.random.uniform(jax.random.PRNGKey(3), (4, H, W, C))
    chex.assert_trees_all_equal(augment.random_crop_flip(images, keys(3, 4), 0, flip=False), images)


def test_differs_across_keys_and_repeats_for_the_same_key():
    images = known_images()
    first = augment.random_crop_flip(images, keys(0), PAD, flip=True)
    again = augment.random_crop_flip(images, keys(0), PAD, flip=True)
    other = augment.random_crop_flip(images, keys(1), PAD, flip=True)
    chex.assert_trees_all_equal(first, again)
    assert not np.array_equal(first, other)
    # Within a batch each image has its own key: the same image comes out different ways.
    assert len({np.asarray(o).tobytes() for o in first}) > 3


def test_each_image_depends_only_on_its_own_key():
    """Why one key per image: a batch split over devices gets the same augmentation as the whole batch."""
    images = jax.random.uniform(jax.random.PRNGKey(4), (COUNT, H, W, C))
    k, half = keys(5), COUNT // 2
    whole = augment.random_crop_flip(images, k, PAD, flip=True)
    halves = jnp.concatenate([augment.random_crop_flip(images[:half], k[:half], PAD, True),
                              augment.random_crop_flip(images[half:], k[half:], PAD, True)])
    chex.assert_trees_all_equal(whole, halves)


def test_unit_float_and_normalize():
    pixels = augment.to_unit_float(jnp.array([[0, 51, 255]], jnp.uint8))
    chex.assert_type(pixels, jnp.float32)
    chex.assert_trees_all_close(pixels, jnp.array([[0.0, 0.2, 1.0]]), atol=1e-7)
    mean, std = jnp.array([0.5, 0.2, 0.5]), jnp.array([0.5, 0.1, 0.25])
    chex.assert_trees_all_close(augment.normalize(pixels, mean, std), jnp.array([[-1.0, 0.0, 2.0]]), atol=1e-6)
