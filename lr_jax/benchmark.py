"""`python -m lr_jax.benchmark`: images/s of the pmapped train step and of prediction, on synthetic data.

Prints the devices and the XLA:CPU convolution path in use (lr_jax.xla_cpu); `--profile DIR` writes a
jax.profiler trace of the timed train steps (open it with TensorBoard's profile plugin or Perfetto)."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import time
import types
from typing import Callable, Optional

import jax
import numpy as np

from lr_jax import loop, step, xla_cpu, xla_gpu
from lr_jax.config import Config
from lr_jax.devices import device_data, make_predict, replicate, unreplicate
from lr_jax.models import get_model


def _timed(run: Callable[[int], object], steps: int, profile_dir: Optional[str] = None) -> float:
    """Seconds for `run(steps)` (which must wait for its results) after an untimed `run(1)` (compilation);
    with `profile_dir`, the timed run is traced there."""
    run(1)
    tracing = jax.profiler.trace(profile_dir, create_perfetto_trace=True) if profile_dir else contextlib.nullcontext()
    with tracing:
        start = time.perf_counter()
        run(steps)
        return time.perf_counter() - start


def benchmark(model_name: str, batch_size: int, steps: int, label_mode: str = "precomputed",
              image_size: int = 32, num_classes: int = 10, adversarial_jitter: float = 0.0,
              dtype: str = "float32", profile_dir: Optional[str] = None, crop: str = "pad") -> dict:
    """Times `steps` train steps and `steps` prediction batches of `batch_size` after a warm-up each."""
    devices = jax.local_device_count()
    rng = np.random.default_rng(0)
    num_images = batch_size * 4
    images = rng.integers(0, 256, (num_images, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, num_images).astype(np.int32)
    targets = np.eye(num_classes, dtype=np.float32)[labels]
    config = Config(model=model_name, batch_size=batch_size, epochs=1, label_mode=label_mode,
                    adversarial_jitter=adversarial_jitter, dtype=dtype, crop=crop)
    options = step.step_options(config, devices, num_images, refined=True,  # what a refined generation runs
                                online=label_mode == "online")
    model = get_model(model_name, num_classes, step.compute_dtype(dtype))
    state = step.create_train_state(jax.random.PRNGKey(0), model, images.shape[1:],
                                    step.make_optimizer(config, options.steps_per_epoch))
    step_fn = step.make_train_step(model, model if options.uses_refinery else None, options)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    variables = replicate(step.variables_of(state))
    args = loop.StepArgs(replicate(state), device_data(images, labels, targets, mean, std),
                         replicate(np.arange(num_images, dtype=np.int32)), replicate(jax.random.PRNGKey(1)),
                         variables if options.uses_refinery else None)

    # The training loop's own step runner: it keeps at most loop.IN_FLIGHT_STEPS steps queued (hundreds in
    # flight can stall XLA:CPU's collectives on simulated devices) and fetches the metrics at the end.
    def train_steps(count: int) -> None:
        nonlocal args
        args, _, _ = loop.run_steps(step_fn, args, count, types.SimpleNamespace(update=lambda count: None),
                                    lambda: False)

    train_seconds = _timed(train_steps, steps, profile_dir)
    predict_fn = make_predict(model)
    batch = replicate(np.asarray(mean)), replicate(np.asarray(std))
    shards = images[:batch_size].reshape(devices, batch_size // devices, *images.shape[1:])
    predict_seconds = _timed(lambda count: jax.block_until_ready([predict_fn(variables, shards, *batch)
                                                                  for _ in range(count)]), steps)
    return {"model": model_name, "batch_size": batch_size, "devices": devices, "label_mode": label_mode,
            "adversarial_jitter": adversarial_jitter, "dtype": dtype, "crop": crop, "steps": steps,
            "train_steps_run": int(unreplicate(args.state.step)),  # the timed steps and the warm-up step
            "train_images_per_second": steps * batch_size / train_seconds,
            "predict_images_per_second": steps * batch_size / predict_seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20", help="comma-separated model names")
    parser.add_argument("--batch_size", type=int, default=128, help="global batch, split over the devices")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after one warm-up step)")
    parser.add_argument("--label_modes", default="precomputed", help="comma-separated: precomputed,online")
    parser.add_argument("--adversarial_jitter", type=float, default=0.0)
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32,bfloat16")
    parser.add_argument("--crops", default="pad", help="comma-separated training crops: pad,random_resized")
    parser.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace of the timed train steps")
    args = parser.parse_args(argv)
    if args.profile:  # XLA:CPU records each thunk (op) in the trace only when asked, before the backend starts
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_enable_xprof_traceme=true".strip()
    device = jax.devices()[0]
    print(f"{jax.local_device_count()} x {device.platform} ({device.device_kind}); XLA:CPU path: {xla_cpu.path()}"
          + (f"; XLA:GPU: {xla_gpu.state()}" if device.platform == "gpu" else ""))
    for model_name in args.models.split(","):
        for mode in args.label_modes.split(","):
            for dtype, crop in itertools.product(args.dtypes.split(","), args.crops.split(",")):
                r = benchmark(model_name, args.batch_size, args.steps, mode, adversarial_jitter=args.adversarial_jitter,
                              dtype=dtype, profile_dir=args.profile, crop=crop)
                print(f"{r['model']:>10} batch {r['batch_size']} {r['label_mode']:>11} {dtype:>8} {crop:>14} jitter "
                      f"{r['adversarial_jitter']}: train {r['train_images_per_second']:.0f} images/s, predict "
                      f"{r['predict_images_per_second']:.0f} images/s ({r['steps']} steps, "
                      f"{r['train_images_per_second'] / r['batch_size']:.1f} train steps/s)")
    if args.profile:
        print(f"trace written under {args.profile} (tensorboard --logdir {args.profile}, or ui.perfetto.dev)")


if __name__ == "__main__":
    main()
