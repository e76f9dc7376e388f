"""Classifier architectures (CIFAR ResNets, wide ResNets, a small CPU convnet), the name registry, and the pmap
axis name `AXIS` that BatchNorm averages over."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

AXIS = "batch"  # the pmap axis name over which BatchNorm averages its batch statistics while training
# He et al. use the "fan-out" He-normal initialisation for convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class _Norm(nn.Module):
    """BatchNorm whose batch statistics are averaged over the pmap axis when training."""

    axis_name: Optional[str] = AXIS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            axis_name=self.axis_name if train else None,
            dtype=self.dtype,
        )(x)


class _ResidualBlock(nn.Module):
    """Fields and layer factories shared by the residual blocks."""

    filters: int
    strides: int = 1
    axis_name: Optional[str] = AXIS
    dtype: Any = jnp.float32

    def layer_factories(self):
        """(conv, norm): bias-free He-initialised convolutions and cross-device BatchNorm in this dtype."""
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
        norm = functools.partial(_Norm, axis_name=self.axis_name, dtype=self.dtype)
        return conv, norm


def zero_pad_shortcut(x: jax.Array, filters: int, strides: int) -> jax.Array:
    """He et al.'s parameter-free shortcut (option A): `x` subsampled by `strides`, zero channels appended."""
    x = x[:, ::strides, ::strides]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, filters - x.shape[-1])))


class BasicBlock(_ResidualBlock):
    """Post-activation 3x3/3x3 residual block of the CIFAR ResNets (He et al. 2016). Where the width or stride
    changes, the shortcut is option A (zero-padded identity, no parameters) or, with `projection`, a 1x1
    convolution + BatchNorm (option B)."""

    projection: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        conv, norm = self.layer_factories()
        y = conv(self.filters, (3, 3), (self.strides, self.strides))(x)
        y = nn.relu(norm()(y, train))
        y = conv(self.filters, (3, 3))(y)
        y = norm()(y, train)
        if x.shape[-1] != self.filters or self.strides != 1:
            if self.projection:
                x = conv(self.filters, (1, 1), (self.strides, self.strides))(x)
                x = norm()(x, train)
            else:
                x = zero_pad_shortcut(x, self.filters, self.strides)
        return nn.relu(x + y)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: a 3x3 stem, three stages of n blocks at 16/32/64 channels; shortcuts as
    He et al. (zero-padded identity) or, with `projection`, 1x1 convolutions."""

    blocks_per_stage: int
    num_classes: int
    widths: Sequence[int] = (16, 32, 64)
    projection: bool = False
    axis_name: Optional[str] = AXIS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.widths[0], (3, 3), use_bias=False, kernel_init=conv_init, dtype=self.dtype)(x)
        x = nn.relu(_Norm(self.axis_name, self.dtype)(x, train))
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(width, strides, self.axis_name, self.dtype, projection=self.projection)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=jnp.float32)(x.astype(jnp.float32))


class WideBlock(_ResidualBlock):
    """Pre-activation wide residual block (Zagoruyko & Komodakis 2016)."""

    @nn.compact
    def __call__(self, x, train: bool):
        conv, norm = self.layer_factories()
        y = nn.relu(norm()(x, train))
        shortcut = x
        if x.shape[-1] != self.filters or self.strides != 1:
            shortcut = conv(self.filters, (1, 1), (self.strides, self.strides))(y)
        y = conv(self.filters, (3, 3), (self.strides, self.strides))(y)
        y = nn.relu(norm()(y, train))
        y = conv(self.filters, (3, 3))(y)
        return shortcut + y


class WideResNet(nn.Module):
    """WRN-d-k: (d-4)/6 pre-activation blocks per stage at 16k/32k/64k channels."""

    depth: int
    widen_factor: int
    num_classes: int
    axis_name: Optional[str] = AXIS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        blocks_per_stage = (self.depth - 4) // 6
        x = nn.Conv(16, (3, 3), use_bias=False, kernel_init=conv_init, dtype=self.dtype)(x)
        for stage, width in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = WideBlock(width * self.widen_factor, strides, self.axis_name, self.dtype)(x, train)
        x = nn.relu(_Norm(self.axis_name, self.dtype)(x, train))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=jnp.float32)(x.astype(jnp.float32))


def _windows(x: jax.Array) -> jax.Array:
    """(B, H, W, C) with even H, W -> (B, H/2, 2, W/2, 2, C): each 2x2 window on its own two axes."""
    batch, height, width, channels = x.shape
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels)


@jax.custom_vjp
def _max_pool_even(x: jax.Array) -> jax.Array:
    return _windows(x).max(axis=(2, 4))


def _max_pool_even_fwd(x):
    pooled = _max_pool_even(x)
    return pooled, (x, pooled)


def _max_pool_even_bwd(saved, grad):
    """The gradient goes to each window's maximum. Where a window holds its maximum more than once, every copy
    gets it (jnp.max's rule would split it evenly); after a ReLU such ties are zeros, whose gradient the ReLU
    stops anyway. No count and no division: on XLA:CPU that keeps the input-gradient convolution that feeds
    it out of a fused reduction, so it runs on the faster convolution path."""
    x, pooled = saved
    expand = lambda y: y[:, :, None, :, None, :]
    return (jnp.where(_windows(x) == expand(pooled), expand(grad), 0.0).astype(x.dtype).reshape(x.shape),)


_max_pool_even.defvjp(_max_pool_even_fwd, _max_pool_even_bwd)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pooling by reshape (odd rows and columns dropped): the values of nn.max_pool, with a cheap
    gradient on XLA:CPU (no select-and-scatter, no tie counting)."""
    _, height, width, _ = x.shape
    return _max_pool_even(x[:, : height // 2 * 2, : width // 2 * 2])


class SmallConvNet(nn.Module):
    """A fast CPU convnet: conv-BN-ReLU stages at widths 32/64/128/256, 2x2 max-pool between stages,
    global max-pool, a scaled linear classifier."""

    num_classes: int
    widths: Sequence[int] = (32, 64, 128, 256)
    convs: Sequence[int] = (1, 1, 1, 1)  # conv-BN-ReLU layers per stage
    logit_scale: float = 0.125  # max-pooled features are large; airbench scales its logits likewise
    axis_name: Optional[str] = AXIS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, (width, convs) in enumerate(zip(self.widths, self.convs)):
            if i > 0:
                x = max_pool_2x2(x)
            for _ in range(convs):
                x = nn.Conv(width, (3, 3), use_bias=False, kernel_init=conv_init, dtype=self.dtype)(x)
                x = nn.relu(_Norm(self.axis_name, self.dtype)(x, train))
        x = jnp.max(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, use_bias=False, dtype=jnp.float32)(x.astype(jnp.float32))
        return logits * self.logit_scale


CIFAR_RESNET_DEPTHS = (8, 20, 32, 56, 110)  # 6n + 2
MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **{f"resnet{depth}": functools.partial(CifarResNet, (depth - 2) // 6) for depth in CIFAR_RESNET_DEPTHS},
    **{f"resnet{depth}_proj": functools.partial(CifarResNet, (depth - 2) // 6, projection=True)
       for depth in CIFAR_RESNET_DEPTHS},
    "wrn16_4": functools.partial(WideResNet, 16, 4),
    "wrn28_10": functools.partial(WideResNet, 28, 10),
    "small_cnn": SmallConvNet,
    # Variants measured for the `cpu` preset (experiments/README.md): _c2 / _c3: two convolutions in the last one /
    # two stages; _16: 16 channels in the first stage; _w: widths 32/64/192/384. The preset uses small_cnn_c2_16.
    "small_cnn_c2": functools.partial(SmallConvNet, convs=(1, 1, 1, 2)),
    "small_cnn_w": functools.partial(SmallConvNet, widths=(32, 64, 192, 384)),
    "small_cnn_c2_16": functools.partial(SmallConvNet, widths=(16, 64, 128, 256), convs=(1, 1, 1, 2)),
    "small_cnn_c3_16": functools.partial(SmallConvNet, widths=(16, 64, 128, 256), convs=(1, 1, 2, 2)),
    "tiny_cnn": functools.partial(SmallConvNet, widths=(8, 16), convs=(1, 1)),
}


def get_model(name: str, num_classes: int, dtype: Any = jnp.float32) -> nn.Module:
    """Builds the registered model `name`; unknown names raise a ValueError listing the known ones.

    A TrainState holds `model.apply` as static data, and bound methods of two equal modules compare unequal:
    build a model once and reuse it (refinery.ChainContext does, per chain) where states must share a step."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODEL_BUILDERS))}")
    return MODEL_BUILDERS[name](num_classes=num_classes, dtype=dtype)
