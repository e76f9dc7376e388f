"""python -m lr_jax.labels: see lr_jax.labels.cli."""

from lr_jax.labels.cli import main

main()
