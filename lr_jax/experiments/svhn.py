"""`python -m lr_jax.experiments.svhn`: the Label Refinery chain on SVHN (cropped digits)."""

from lr_jax.experiments.runner import main

if __name__ == "__main__":
    main("svhn")
