"""`python -m lr_jax.experiments.cifar10`: the Label Refinery chain on CIFAR-10."""

from lr_jax.experiments.runner import main

if __name__ == "__main__":
    main("cifar10")
