"""Part two's headline table: every design's paired differences against its controls, with 95% intervals.

    python -m lr_jax.experiments.part_two_table ROOT [--out FILE] [--plot PNG]

ROOT holds experiments/part_two.sh's designs, either as it wrote them (ROOT/online, ROOT/stronger,
ROOT/converged) or as experiments/collect_part_two.sh copied them (ROOT/part_two_online, ...). Each line
subtracts, seed by seed, a partner run with the same seed and data (so the same validation split and, for the
same generation, the same initialisation and data order), then gives the mean over seeds, its 95% Student-t
interval (lr_jax.analysis.stats.difference) and the per-seed differences. Prints the markdown table (and writes it
to FILE with --out; with --plot, draws the same differences as a forest plot). The comparisons are declared in
lr_jax.analysis.designs.PART_TWO.
"""

from __future__ import annotations

from lr_jax.analysis import cli, designs


def main(argv=None) -> str:
    return cli.headline_main(designs.PART_TWO, argv, "python -m lr_jax.experiments.part_two_table", __doc__,
                             "part_two.sh's RUNS_ROOT, or collect_part_two.sh's DEST_ROOT")


if __name__ == "__main__":
    main()
