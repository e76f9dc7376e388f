"""RandomResizedCrop on device: torchvision's box distribution, bilinear resizing, flips, determinism, one trace."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr_jax import augment

SIZE = 32
COUNT = 64  # one batch size for most tests: fewer compilations
STATIC = ("scale", "ratio", "flip")
crop = jax.jit(augment.random_resized_crop, static_argnames=STATIC)
crop_with_areas = jax.jit(augment.random_resized_crop_with_areas, static_argnames=STATIC)


def images(count, height=SIZE, width=SIZE, seed=0, dtype=jnp.float32):
    return jax.random.uniform(jax.random.PRNGKey(seed), (count, height, width, 3)).astype(dtype)


def keys(count, seed=1):
    return jax.random.split(jax.random.PRNGKey(seed), count)


def torchvision_boxes(count, height, width, scale, ratio, seed=0):
    """torchvision.transforms.RandomResizedCrop.get_params, transcribed with numpy's generator."""
    rng, out = np.random.default_rng(seed), []
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(count):
        for _ in range(10):
            target = height * width * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                out.append((rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w))
                break
        else:
            h, w = augment._fallback_box(height, width, ratio)
            out.append(((height - h) // 2, (width - w) // 2, h, w))
    return np.asarray(out)


def numpy_resized_crop(image, top, left, h, w):
    """The box resized to the image's size, pixel by pixel: half-pixel centres, edges clamped (torch bilinear,
    align_corners=False)."""
    crop = np.asarray(image, np.float64)[top : top + h, left : left + w]
    out_h, out_w = image.shape[:2]
    out = np.zeros((out_h, out_w, image.shape[2]))

    def taps(dst, size_in, size_out):
        src = max((dst + 0.5) * size_in / size_out - 0.5, 0.0)
        low = int(src)
        return low, min(low + 1, size_in - 1), src - low

    for y in range(out_h):
        y0, y1, fy = taps(y, h, out_h)
        for x in range(out_w):
            x0, x1, fx = taps(x, w, out_w)
            top_row = (1 - fx) * crop[y0, x0] + fx * crop[y0, x1]
            bottom_row = (1 - fx) * crop[y1, x0] + fx * crop[y1, x1]
            out[y, x] = (1 - fy) * top_row + fy * bottom_row
    return out


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shapes_and_dtypes(dtype):
    out, areas = crop_with_areas(images(8, 24, 20, dtype=dtype), keys(8))
    chex.assert_shape(out, (8, 24, 20, 3))
    chex.assert_type(out, dtype)
    chex.assert_shape(areas, (8,))
    chex.assert_type(areas, jnp.float32)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_full_square_box_without_flip_is_the_identity():
    pixels = images(COUNT)
    out, areas = crop_with_areas(pixels, keys(COUNT), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    chex.assert_trees_all_close(out, pixels)
    chex.assert_trees_all_close(areas, jnp.ones(COUNT))


def test_flip_mirrors_about_half_of_the_images():
    pixels = images(COUNT)
    out = np.asarray(crop_with_areas(pixels, keys(COUNT), scale=(1.0, 1.0), ratio=(1.0, 1.0))[0])
    same = [np.allclose(o, p) for o, p in zip(out, np.asarray(pixels))]
    mirrored = [np.allclose(o, p[:, ::-1]) for o, p in zip(out, np.asarray(pixels))]
    assert all(s != m for s, m in zip(same, mirrored))
    assert 16 <= sum(mirrored) <= 48


@pytest.mark.parametrize("box", [(3, 5, 10, 17), (0, 0, SIZE, SIZE), (31, 31, 1, 1), (0, 20, 7, 12), (4, 0, 28, 9)])
def test_known_box_matches_numpy_bilinear(box):
    pixels = images(1, seed=7)
    out = augment.crop_resize(pixels, jnp.asarray([box], jnp.int32))[0]
    np.testing.assert_allclose(np.asarray(out), numpy_resized_crop(np.asarray(pixels[0]), *box), atol=1e-5)


def test_output_is_the_drawn_box_resized():
    pixels, example_keys = images(COUNT), keys(COUNT)
    out, areas = crop_with_areas(pixels, example_keys, flip=False)
    boxes = np.asarray(augment.resized_crop_boxes(example_keys, SIZE, SIZE))
    for image, result, box in list(zip(np.asarray(pixels), np.asarray(out), boxes))[:6]:
        np.testing.assert_allclose(result, numpy_resized_crop(image, *box), atol=1e-5)
    np.testing.assert_allclose(np.asarray(areas), boxes[:, 2] * boxes[:, 3] / SIZE**2)


def test_boxes_follow_torchvisions_distribution():
    count = 4000
    ours = np.asarray(augment.resized_crop_boxes(keys(count), SIZE, SIZE))
    reference = torchvision_boxes(count, SIZE, SIZE, (0.08, 1.0), (3 / 4, 4 / 3))
    assert np.all(ours[:, 0] >= 0) and np.all(ours[:, 0] + ours[:, 2] <= SIZE)
    assert np.all(ours[:, 1] >= 0) and np.all(ours[:, 1] + ours[:, 3] <= SIZE)
    area, reference_area = ours[:, 2] * ours[:, 3] / SIZE**2, reference[:, 2] * reference[:, 3] / SIZE**2
    quantiles = [0.1, 0.25, 0.5, 0.75, 0.9]
    np.testing.assert_allclose(np.quantile(area, quantiles), np.quantile(reference_area, quantiles), atol=0.03)
    aspect, reference_aspect = ours[:, 3] / ours[:, 2], reference[:, 3] / reference[:, 2]
    np.testing.assert_allclose(np.quantile(aspect, quantiles), np.quantile(reference_aspect, quantiles), atol=0.04)
    centre = ours[:, 0] + ours[:, 2] / 2  # box positions spread over the image, not pinned to a corner
    assert np.std(centre) > 3 and abs(np.mean(centre) - SIZE / 2) < 1


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.25, 0.5)])
def test_area_fractions_lie_in_scale_and_cover_it(scale):
    _, areas = crop_with_areas(images(2000), keys(2000), scale=scale)
    areas = np.asarray(areas)
    rounding = 2 * 0.5 * SIZE * math.sqrt(scale[0] * 4 / 3) / SIZE**2 + 0.25 / SIZE**2  # half a pixel per side
    assert areas.min() >= scale[0] - rounding and areas.max() <= min(scale[1] + 2 * rounding, 1.0)
    counts, _ = np.histogram(areas, bins=8, range=scale)
    assert np.all(counts > 0), counts


def test_fallback_when_no_box_fits():
    """An 8x32 strip cannot hold a box of 90% of its area with aspect in [3/4, 4/3]: the central crop, trimmed to
    aspect 4/3 (torchvision's fallback), every time."""
    boxes = np.asarray(augment.resized_crop_boxes(keys(20), 8, 32, scale=(0.9, 1.0)))
    np.testing.assert_array_equal(boxes, np.tile([0, 10, 8, 11], (20, 1)))
    np.testing.assert_array_equal(torchvision_boxes(5, 8, 32, (0.9, 1.0), (3 / 4, 4 / 3)), np.tile([0, 10, 8, 11],
                                                                                                    (5, 1)))


def test_deterministic_per_key_and_independent_of_the_batch():
    pixels, example_keys = images(COUNT), keys(COUNT)
    first = crop(pixels, example_keys)
    chex.assert_trees_all_equal(first, crop(pixels, example_keys))
    permutation = np.random.default_rng(0).permutation(COUNT)
    chex.assert_trees_all_close(crop(pixels[permutation], example_keys[permutation]), first[permutation])
    other = crop(pixels, keys(COUNT, seed=2))
    assert not np.allclose(np.asarray(first), np.asarray(other))


def test_jitted_function_traces_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def traced(pixels, example_keys):
        return augment.random_resized_crop_with_areas(pixels, example_keys)

    for seed in range(3):
        out, _ = traced(images(COUNT, seed=seed), keys(COUNT, seed=seed + 10))
        out.block_until_ready()
    vmapped = jax.jit(jax.vmap(augment.random_resized_crop))(images(COUNT).reshape(2, COUNT // 2, SIZE, SIZE, 3),
                                                             keys(COUNT).reshape(2, COUNT // 2, -1))
    chex.assert_trees_all_close(vmapped.reshape(COUNT, SIZE, SIZE, 3), crop(images(COUNT), keys(COUNT)))
