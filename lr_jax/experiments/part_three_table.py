"""Part three's headline table: every design's paired differences (and recovered fractions), with 95% intervals.

    python -m lr_jax.experiments.part_three_table ROOT [--out FILE] [--plot PNG] [--both_evaluations]

ROOT holds experiments/part_three.sh's designs as collect_part_three.sh copied them (ROOT/part_three_worst, ...)
beside Part two's collected runs (ROOT/part_two_online: the clean-label ceiling of the same seeds); the comparisons
are declared in lr_jax.analysis.designs.PART_THREE.
"""

from __future__ import annotations

from lr_jax.analysis import cli, designs


def main(argv=None) -> str:
    return cli.headline_main(designs.PART_THREE, argv, "python -m lr_jax.experiments.part_three_table", __doc__,
                             "collect_part_three.sh's DEST_ROOT (experiments/results)")


if __name__ == "__main__":
    main()
