"""Where ../shared/data exists: a short run on a few hundred real CIFAR-10 images learns (well above chance)."""

import math

from lr_jax import refinery
from lr_jax.config import Config, RunOptions
from lr_jax.data import make_dataset, make_splits

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_short_run_on_real_cifar10_learns(lossless_cifar):
    # resnet8 (He et al.'s parameter-free shortcuts), 512 training images, 5 epochs: validation accuracy
    # 0.256-0.296 over seeds 0-3 on this CPU with 4 simulated devices (chance is 0.10; resnet8_proj 0.266-0.292),
    # in a few seconds of training plus the compile.
    images, labels = lossless_cifar
    data = make_dataset("cifar10", CIFAR10_CLASSES, (images, labels), source="first4000-lossless.npz")
    splits = make_splits(data, val_size=500, train_size=512, seed=0)
    config = Config(model="resnet8", generations=1, epochs=5, batch_size=64, learning_rate=0.1,
                    warmup_epochs=1.0, seed=0)
    [generation] = refinery.run_chain(config, splits, log=lambda line: None, progress=False,
                                      run=RunOptions(eval_batch_size=500))
    metrics = generation.metrics
    assert metrics["val_accuracy"] > 0.2, metrics
    assert metrics["train_accuracy"] > 0.2, metrics
    epochs = metrics["epochs"]
    assert epochs[-1]["loss"] < epochs[0]["loss"] - 0.1, [e["loss"] for e in epochs]
    # Its labels are no longer uniform guesses: confident enough to refine the next generation.
    assert metrics["label_entropy"] < math.log(10) - 0.2
