"""`python -m lr_jax.benchmark`: images/s of the pmapped train step (and prediction) on synthetic data."""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from lr_jax import train
from lr_jax.config import Config
from lr_jax.models import get_model


def benchmark(model_name: str, batch_size: int, steps: int, label_mode: str = "precomputed",
              image_size: int = 32, num_classes: int = 10, adversarial_jitter: float = 0.0) -> dict:
    """Times `steps` train steps after one warm-up (compilation) step; returns images/s."""
    devices = jax.local_device_count()
    train.check_batch_divides(batch_size, devices)
    rng = np.random.default_rng(0)
    num_images = batch_size * 4
    images = rng.integers(0, 256, (num_images, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, num_images).astype(np.int32)
    targets = np.eye(num_classes, dtype=np.float32)[labels]
    config = Config(model=model_name, batch_size=batch_size, epochs=1, label_mode=label_mode,
                    adversarial_jitter=adversarial_jitter)
    model = get_model(model_name, num_classes)
    options = train.step_options(config, devices, num_images, refined=True)
    state = train.create_train_state(jax.random.PRNGKey(0), model, images.shape[1:],
                                     train.make_optimizer(config, options.steps_per_epoch))
    refinery = model if options.uses_refinery else None
    step_fn = train.make_train_step(model, refinery, options)
    data = train.replicate(train.DeviceData(images, labels, targets, np.full(3, 0.5, np.float32),
                                            np.full(3, 0.25, np.float32)))
    rep_refinery = train.replicate(train.variables_of(state)) if refinery is not None else None
    rep_state = train.replicate(state)
    order = train.replicate(np.arange(num_images, dtype=np.int32))
    key = train.replicate(jax.random.PRNGKey(1))
    rep_state, metrics = step_fn(rep_state, data, order, key, rep_refinery)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        rep_state, metrics = step_fn(rep_state, data, order, key, rep_refinery)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    return {"model": model_name, "batch_size": batch_size, "devices": devices, "label_mode": label_mode,
            "adversarial_jitter": adversarial_jitter, "steps": steps, "seconds": seconds,
            "images_per_second": steps * batch_size / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet20", help="comma-separated model names")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--label_modes", default="precomputed", help="comma-separated: precomputed,online")
    parser.add_argument("--adversarial_jitter", type=float, default=0.0)
    args = parser.parse_args()
    print(f"{jax.local_device_count()} x {jax.devices()[0].platform} ({jax.devices()[0].device_kind})")
    for model_name in args.models.split(","):
        for mode in args.label_modes.split(","):
            r = benchmark(model_name, args.batch_size, args.steps, mode, adversarial_jitter=args.adversarial_jitter)
            print(f"{r['model']:>10} batch {r['batch_size']} {r['label_mode']:>11} jitter {r['adversarial_jitter']}: "
                  f"{r['images_per_second']:.0f} images/s ({r['steps']} steps in {r['seconds']:.2f} s)")


if __name__ == "__main__":
    main()
