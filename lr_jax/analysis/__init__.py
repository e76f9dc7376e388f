"""Analysis of finished runs: runs (reading and grouping), stats (seed-paired differences), tables, plots, designs
(headline comparisons declared as data) and cli (`python -m lr_jax.report`, the headline commands)."""
