"""Aggregates runs over seeds into per-generation tables (Markdown, CSV), seed-paired differences against
generation 1 with confidence intervals, and PNG plots: `python -m lr_jax.report`. The work is done in
lr_jax.analysis (runs, stats, tables, plots, cli); this module is its entry point and keeps its names."""

from lr_jax.analysis.cli import build_parser, display_report, main, write_report  # noqa: F401
from lr_jax.analysis.plots import (  # noqa: F401
    PLOTS, new_figure, plot_accuracy, plot_label_entropy, plot_label_examples, plot_train_vs_test, save_figure)
from lr_jax.analysis.runs import (  # noqa: F401
    ACCURACIES, LABEL_SUMMARY_KEYS, NOT_SETTINGS, Configuration, Report, Run, configuration_labels,
    describe, held_out_key, load_label_summary, load_run, reference_index, settings_line, settings_of)
from lr_jax.analysis.stats import (  # noqa: F401
    BASELINES, CONFIDENCE, PAIRING_KEYS, Difference, Stat, aggregate, difference, generation_rows,
    pair_configurations, paired_differences, pairing_of, stat)
from lr_jax.analysis.tables import (  # noqa: F401
    configuration_table, csv_report, format_difference, format_stat, markdown_report, paired_table, write_tables)

if __name__ == "__main__":
    main()
