"""The model registry: every name builds, gives (B, num_classes) logits, and has the expected size; the CIFAR
ResNets' shortcuts are He et al.'s (parameter-free) or, as `resnet*_proj`, 1x1 projections."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr_jax import models

CLASSES = 7  # not 10, so a hard-coded class count would show
# Small enough to run a forward pass at full depth within CI time; the rest are checked abstractly.
RUN_ON_CPU = ("tiny_cnn", "small_cnn", "resnet8", "resnet20", "wrn16_4")


def param_count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def abstract_variables(model, image_shape=(32, 32, 3)):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False))


def cifar_resnet_params(blocks_per_stage: int, classes: int, projection: bool = False) -> int:
    """ResNet-(6n+2): conv kernels, BatchNorm scale+bias, final dense; with `projection`, a 1x1 conv + BatchNorm
    on each shortcut that changes width (He et al.'s own shortcuts there are parameter-free)."""
    total = 3 * 3 * 3 * 16 + 2 * 16  # stem conv + BN
    in_ch = 16
    for width in (16, 32, 64):
        for _ in range(blocks_per_stage):
            total += 9 * in_ch * width + 2 * width + 9 * width * width + 2 * width
            if in_ch != width and projection:
                total += in_ch * width + 2 * width
            in_ch = width
    return total + 64 * classes + classes


def wide_resnet_params(depth: int, k: int, classes: int) -> int:
    """WRN-d-k, pre-activation blocks with 1x1 projections where the width or stride changes."""
    n = (depth - 4) // 6
    total = 3 * 3 * 3 * 16
    in_ch = 16
    for width in (16 * k, 32 * k, 64 * k):
        for block in range(n):
            total += 2 * in_ch + 9 * in_ch * width + 2 * width + 9 * width * width
            if in_ch != width or (block == 0 and width != 16 * k):
                total += in_ch * width
            in_ch = width
    return total + 2 * in_ch + in_ch * classes + classes


EXPECTED_PARAMS = {
    **{f"resnet{6 * n + 2}": cifar_resnet_params(n, CLASSES) for n in (1, 3, 5, 9, 18)},
    **{f"resnet{6 * n + 2}_proj": cifar_resnet_params(n, CLASSES, projection=True) for n in (1, 3, 5, 9, 18)},
    "wrn16_4": wide_resnet_params(16, 4, CLASSES),
    "wrn28_10": wide_resnet_params(28, 10, CLASSES),
}


@pytest.mark.parametrize("name", sorted(models.MODEL_BUILDERS))
def test_every_registered_model_has_the_right_output_shape(name):
    model = models.get_model(name, CLASSES)
    variables = abstract_variables(model)
    assert set(variables) == {"params", "batch_stats"}
    logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((3, 32, 32, 3)), train=False), variables)
    assert logits.shape == (3, CLASSES) and logits.dtype == jnp.float32
    if name in EXPECTED_PARAMS:
        assert param_count(variables["params"]) == EXPECTED_PARAMS[name]


def test_parameter_counts_match_the_papers():
    """He et al. 2016 / Zagoruyko & Komodakis 2016 report these sizes for 10 classes."""
    published = {"resnet20": 0.27e6, "resnet56": 0.85e6, "resnet110": 1.7e6, "wrn16_4": 2.7e6, "wrn28_10": 36.5e6}
    for name, size in published.items():
        count = param_count(abstract_variables(models.get_model(name, 10))["params"])
        assert abs(count - size) / size < 0.03, (name, count, size)


def test_resnet20_has_he_et_als_exact_size_and_the_projection_variant_its_own():
    """Option A (zero-padded identity shortcuts): 269,722 parameters for 10 classes; 1x1 projections add
    16*32 + 2*32 + 32*64 + 2*64 = 2,752 (272,474, the size of /work/shared/bench/torch_ref.py's ResNet-20)."""
    assert param_count(abstract_variables(models.get_model("resnet20", 10))["params"]) == 269_722
    assert param_count(abstract_variables(models.get_model("resnet20_proj", 10))["params"]) == 272_474


def test_option_a_shortcut_is_parameter_free_subsampling_and_zero_padding():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
    shortcut = models.zero_pad_shortcut(x, 32, 2)
    chex.assert_shape(shortcut, (2, 4, 4, 32))
    np.testing.assert_array_equal(shortcut[..., :16], x[:, ::2, ::2])
    np.testing.assert_array_equal(shortcut[..., 16:], 0.0)
    # In the network: the downsampling blocks hold only their two 3x3 convolutions and BatchNorms; with
    # projections they hold a third convolution and BatchNorm.
    for name, per_block in (("resnet20", 2), ("resnet20_proj", 3)):
        params = abstract_variables(models.get_model(name, 10))["params"]
        downsampling = params["BasicBlock_3"]  # first block of stage 2: 16 -> 32 channels, stride 2
        assert sum(key.startswith("Conv_") for key in downsampling) == per_block, name
        assert sum(key.startswith("_Norm_") for key in downsampling) == per_block, name
        assert set(params["BasicBlock_0"]) == {"Conv_0", "Conv_1", "_Norm_0", "_Norm_1"}  # 16 -> 16: identity


def test_option_a_block_adds_the_subsampled_input_to_the_residual():
    """A downsampling block with its residual branch zeroed (last BatchNorm scale 0) outputs
    relu(zero-padded subsampled input): the shortcut is the identity, not a learned map."""
    block = models.BasicBlock(8, 2, axis_name=None)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 4))
    variables = block.init(jax.random.PRNGKey(2), x, train=False)
    params = dict(variables["params"])
    params["_Norm_1"] = {"BatchNorm_0": {"scale": jnp.zeros(8), "bias": jnp.zeros(8)}}
    out = block.apply({**variables, "params": params}, x, train=False)
    np.testing.assert_allclose(out, jax.nn.relu(models.zero_pad_shortcut(x, 8, 2)), atol=1e-6)


def synthetic_variables(abstract, seed=0):
    """He-scaled random kernels from numpy, identity BatchNorm, zero biases: a real `init` compiles one PRNG
    kernel per parameter shape, which costs far more CPU time than the forward pass under test."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path).rsplit("'", 2)[-2]
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(leaf.dtype)
        return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.mark.parametrize("name", RUN_ON_CPU)
def test_small_models_run_and_give_finite_logits(name):
    model = models.get_model(name, CLASSES)
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
    variables = synthetic_variables(abstract_variables(model, images.shape[1:]))
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    chex.assert_shape(logits, (2, CLASSES))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)
    assert not np.allclose(logits[0], logits[1])  # the output depends on the input


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = models.get_model("tiny_cnn", CLASSES, jnp.bfloat16)
    images = jnp.ones((2, 8, 8, 3))
    abstract = abstract_variables(model, images.shape[1:])
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(abstract))
    logits = model.apply(synthetic_variables(abstract), images, train=False)
    chex.assert_shape(logits, (2, CLASSES))
    chex.assert_type(logits, jnp.float32)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="resnet21") as info:
        models.get_model("resnet21", 10)
    for name in models.MODEL_BUILDERS:
        assert name in str(info.value)


def test_max_pool_gradient_matches_jax_where_windows_have_one_maximum():
    """The pool's custom gradient is jnp.max's (to the window's maximum) for untied windows, also on odd sizes."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 3))  # continuous values: no ties
    reference = lambda v: v[:, :6, :6].reshape(2, 3, 2, 3, 2, 3).max(axis=(2, 4))
    weights = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 3, 3))
    loss = lambda pool: lambda v: jnp.sum(pool(v) * weights)
    chex.assert_trees_all_close(models.max_pool_2x2(x), reference(x))
    chex.assert_trees_all_close(jax.grad(loss(models.max_pool_2x2))(x), jax.grad(loss(reference))(x))
    grad = jax.grad(loss(models.max_pool_2x2))(x)
    assert int(jnp.sum(grad != 0)) == weights.size and float(jnp.abs(grad[:, 6]).max()) == 0.0  # odd row dropped
