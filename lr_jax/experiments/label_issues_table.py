"""The label-issues tables: how well the refinery and cleanlab find CIFAR-10N's known label errors (over seeds), then
which cleaning of the labels trains the better model (seed-paired differences with 95% intervals).

    python -m lr_jax.experiments.label_issues_table ROOT [--out FILE] [--plot PNG] [--both_evaluations]

ROOT is experiments/label_issues.sh's runs root (the part three runs root: ROOT/label_issues/<set>/seed<S>/
detection.json, the retrains ROOT/label_issues/<set>/<arm>_seed<S>, the chains ROOT/<set>/online_seed<S>) or the
collected results root (experiments/results: part_three_label_issues/, part_three_<set>/, and Part two's
part_two_online, whose generation 1 is the clean-label ceiling of the same seed). The downstream comparisons are
declared in lr_jax.analysis.designs.LABEL_ISSUES; the detection tables come from lr_jax.labels.summary.
"""

from __future__ import annotations

from lr_jax.analysis import cli, designs
from lr_jax.labels import summary


def main(argv=None) -> str:
    return cli.headline_main(designs.LABEL_ISSUES, argv, "python -m lr_jax.experiments.label_issues_table", __doc__,
                             "label_issues.sh's RUNS_ROOT, or the collected results root (experiments/results)",
                             preface=_detection_then_heading)


def _detection_then_heading(root: str) -> str:
    return (f"{summary.detection_sections(root)}\n### Which cleaning trains the better model: validation accuracy "
            "on the dataset's labels, one `cpu`-preset generation each, paired by seed (percentage points)\n")


if __name__ == "__main__":
    main()
