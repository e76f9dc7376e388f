"""Device placement and prediction: pytrees copied onto the local devices and back, the training split on them,
and batched softmax predictions split over them."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lr_jax import augment
from lr_jax.models import AXIS
from lr_jax.step import DeviceData


def replicate(tree, devices=None):
    """Copies a pytree onto every local device (or `devices`), as pmap expects (leading axis = device)."""
    devices = devices or jax.local_devices()
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), (AXIS,)), jax.P(AXIS))

    def one(x):
        x = x if isinstance(x, jax.Array) else np.asarray(x)
        shards = [jax.device_put(x[None], device) for device in devices]
        return jax.make_array_from_single_device_arrays((len(devices), *x.shape), sharding, shards)

    return jax.tree_util.tree_map(one, tree)


def unreplicate(tree):
    """The first device's copy of a replicated pytree, on the host."""
    return jax.device_get(jax.tree_util.tree_map(lambda x: x.addressable_shards[0].data[0], tree))


def device_data(images, labels, targets, mean, std, devices=None) -> DeviceData:
    """A training split copied once onto every local device (or `devices`); swap its targets per generation
    with `data.replace(targets=replicate(...))`."""
    return replicate(DeviceData(images=np.asarray(images, np.uint8), labels=np.asarray(labels, np.int32),
                                targets=np.asarray(targets, np.float32), mean=np.asarray(mean, np.float32),
                                std=np.asarray(std, np.float32)), devices)


def make_predict(model: nn.Module) -> Callable:
    """The pmapped softmax of un-augmented uint8 images: (variables, images, mean, std) -> probabilities."""

    def predict(variables, images, mean, std):
        inputs = augment.normalize(augment.to_unit_float(images), mean, std)
        return jax.nn.softmax(model.apply(variables, inputs, train=False).astype(jnp.float32), axis=-1)

    return jax.pmap(predict, axis_name=AXIS)


def predict_probs(predict: Callable, variables, images: np.ndarray, mean, std, batch_size: int) -> np.ndarray:
    """softmax(model(images)) for un-augmented uint8 images, in batches split over the local devices.

    `predict` comes from `make_predict`; `variables` are replicated over the local devices. Returns float32
    (N, num_classes) on the host."""
    count = jax.local_device_count()
    per_device = max(1, -(-batch_size // count))
    chunk = per_device * count
    rep_mean, rep_std = replicate(np.asarray(mean, np.float32)), replicate(np.asarray(std, np.float32))
    queued = []
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk]
        valid = len(batch)
        if valid < chunk:  # pad the last batch so every device gets the same shape; trimmed below
            batch = np.concatenate([batch, np.zeros((chunk - valid, *batch.shape[1:]), batch.dtype)])
        batch = batch.reshape(count, per_device, *batch.shape[1:])
        queued.append((predict(variables, batch, rep_mean, rep_std), valid))
    # Fetched after every batch is queued, so the devices never wait for the host between batches.
    outputs = [np.asarray(probs).reshape(chunk, -1)[:valid] for probs, valid in queued]
    return np.concatenate(outputs).astype(np.float32)
