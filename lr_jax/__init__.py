"""lr_jax: Label Refinery (Bagherinezhad et al. 2018) in JAX/Flax."""

__version__ = "0.1.0"
