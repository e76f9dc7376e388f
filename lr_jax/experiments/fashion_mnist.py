"""`python -m lr_jax.experiments.fashion_mnist`: the Label Refinery chain on Fashion-MNIST (Debian's IDX files)."""

from lr_jax.experiments.runner import main

if __name__ == "__main__":
    main("fashion_mnist")
