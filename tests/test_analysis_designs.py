"""lr_jax.analysis.designs: headline comparisons declared as data, rendered by the one headline-table writer, against
hand-computed paired differences and 95% intervals; the shared seed pairing; the forest plot; PART_TWO."""

import pytest
import scipy.stats

from lr_jax.analysis import cli, designs, plots, stats, tables
from lr_jax.analysis.designs import Comparison, Design, Quantity
from lr_jax.analysis.runs import runs_named
from lr_jax.analysis.stats import LAST, SAME, Generations
from test_report import assert_png_drawn, generation_row, write_run

# Validation accuracy per seed (flip-averaged, then without flip) at generations 1 and 2.
CHAIN = {0: ((0.80, 0.81), (0.79, 0.80)), 1: ((0.82, 0.84), (0.81, 0.83)), 2: ((0.84, 0.86), (0.83, 0.85))}
TRUTH = {0: ((0.80, 0.80), (0.79, 0.80)), 1: ((0.82, 0.82), (0.81, 0.82)), 2: ((0.84, 0.83), (0.83, 0.83))}


def rows(accuracies):
    (flip1, flip2), (plain1, plain2) = accuracies
    out = [generation_row(1, flip1), generation_row(2, flip2)]
    out[0]["val_accuracy_no_flip"], out[1]["val_accuracy_no_flip"] = plain1, plain2
    return out


@pytest.fixture
def root(tmp_path):
    """ROOT/collected_a/{chain,truth}_seed{0,1,2} and a stale ROOT/a that the collected copy hides.

    Generation 2, chain minus truth: +1, +2, +3 points -> mean +2, sample std 1 point, 95% half width
    t(0.975, 2) * 1 / sqrt(3) = 4.3027 / 1.7321 = 2.484 points -> [-0.48, +4.48]. Without flip: 0, +1, +2 points ->
    +1.00 [-1.48, +3.48]. Chain generation 2 minus truth generation 1: +1, +2, +2 -> +1.67 (3)."""
    for seed in range(3):
        write_run(tmp_path / "collected_a" / f"chain_seed{seed}", rows(CHAIN[seed]), seed=seed)
        write_run(tmp_path / "collected_a" / f"truth_seed{seed}", rows(TRUTH[seed]), seed=seed)
    write_run(tmp_path / "a" / "chain_seed7", rows(CHAIN[0]), seed=7)
    return tmp_path


DESIGN = Design("test", ("a",), "collected_", (
    Comparison("1. a design", "chain minus truth", "a/chain", "a/truth", Generations(((2, 2, 2),))),
    Comparison("1", "chain minus truth's generation 1", "a/chain", "a/truth", Generations(((2, 2, 1),))),
    Comparison("1", "nothing to pair", "a/chain", "a/missing", Generations(((2, 2, 2),))),
))


def test_paired_values_pair_seeds_and_resolve_generations(root):
    runs = DESIGN.load_runs(str(root))
    assert sorted(runs) == [(f"a/{name}", seed) for name in ("chain", "truth") for seed in range(3)]
    groups = stats.match_seeds(runs_named(runs, "a/chain"), runs_named(runs, "a/truth"))
    assert [(chain.workdir[-11:], truth.workdir[-11:]) for chain, truth in groups] == [
        ("chain_seed0", "truth_seed0"), ("chain_seed1", "truth_seed1"), ("chain_seed2", "truth_seed2")]
    every = stats.paired_values(groups, "val_accuracy", Generations(partner=SAME))
    assert every == {1: pytest.approx({0: 0.0, 1: 0.0, 2: 0.0}), 2: pytest.approx({0: 0.01, 1: 0.02, 2: 0.03})}
    # LAST: the partner's configured last generation (2), shown in that column: 0.80 - 0.80, ..., 0.84 - 0.83.
    assert stats.paired_values(groups, "val_accuracy", Generations(((LAST, 1, LAST),))) == {
        2: pytest.approx({0: 0.0, 1: 0.0, 2: 0.01})}
    summary = stats.difference([0.01, 0.02, 0.03])
    interval = scipy.stats.ttest_1samp([0.01, 0.02, 0.03], 0.0).confidence_interval(0.95)
    assert (summary.low, summary.high, summary.n) == pytest.approx((interval.low, interval.high, 3))


def test_headline_table_renders_the_declaration(root):
    text = tables.headline_table(designs.headline_cells(DESIGN, DESIGN.load_runs(str(root))))
    assert text.splitlines() == [
        "| design | comparison | gen 1 | gen 2 | gen 3 | per seed (seed: points) |",
        "|---|---|---|---|---|---|",
        "| 1. a design | chain minus truth | - | +2.00 [-0.48, +4.48] (3) | - | 0: +1.00, 1: +2.00, 2: +3.00 |",
        "| 1 | chain minus truth's generation 1 | - | +1.67 [+0.23, +3.10] (3) | - | 0: +1.00, 1: +2.00, 2: +2.00 |",
    ]  # "nothing to pair" has no cell, hence no row


def test_both_evaluations_give_every_comparison_twice(root):
    design = Design("test", ("a",), "collected_", DESIGN.comparisons[:1] + (
        Comparison("1", "without flip only", "a/chain", "a/truth", Generations(((2, 2, 2),)), key=designs.NO_FLIP),))
    cells = designs.headline_cells(design, design.load_runs(str(root)), designs.BOTH_EVALUATIONS)
    assert tables.headline_table(cells).splitlines()[2:] == [
        "| 1. a design | chain minus truth | flip-averaged | - | +2.00 [-0.48, +4.48] (3) | - | "
        "0: +1.00, 1: +2.00, 2: +3.00 |",
        "| 1. a design | chain minus truth | without flip | - | +1.00 [-1.48, +3.48] (3) | - | "
        "0: +0.00, 1: +1.00, 2: +2.00 |",
        "| 1 | without flip only | without flip | - | +1.00 [-1.48, +3.48] (3) | - | 0: +0.00, 1: +1.00, 2: +2.00 |",
    ]
    assert "| design | comparison | evaluation | gen 1 |" in tables.headline_table(cells)


def test_a_quantity_of_three_runs(root):
    """Room for derived cells: (refined - noisy) / (clean - noisy) of three runs of each seed, as a percentage."""
    recovered = Quantity("recovered fraction", lambda refined, noisy, clean: (refined - noisy) / (clean - noisy),
                         "percent")
    for seed in range(3):
        write_run(root / "collected_a" / f"clean_seed{seed}", rows(((0.90, 0.90), (0.90, 0.90))), seed=seed)
    design = Design("test", ("a",), "collected_", (
        Comparison("1", "recovered", "a/chain", "a/truth", Generations(((2, 2, 1, 1),)), quantity=recovered,
                   others=("a/clean",)),))
    (cell,) = designs.headline_cells(design, design.load_runs(str(root)))
    # (0.81 - 0.80) / 0.10, (0.84 - 0.82) / 0.08, (0.86 - 0.84) / 0.06
    assert cell.values == pytest.approx({0: 0.1, 1: 0.25, 2: 1 / 3})
    row = tables.headline_table([cell]).splitlines()[2]
    assert row.startswith("| 1 | recovered | - | 22.78 [") and row.endswith("(3) | - | 0: 10.00, 1: 25.00, 2: 33.33 |")


def test_runs_of_one_seed_with_other_data_are_an_error(root):
    write_run(root / "collected_a" / "truth_seed1", rows(TRUTH[1]), seed=1, num_train=999)
    with pytest.raises(ValueError, match=r"chain_seed1 and .*truth_seed1: not a pair \(seed or data differ"):
        designs.headline_cells(DESIGN, DESIGN.load_runs(str(root)))


def test_headline_command_and_forest_plot(root, tmp_path, capsys):
    out, png = tmp_path / "headline.md", tmp_path / "headline.png"
    text = cli.headline_main(DESIGN, [str(root), "--out", str(out), "--plot", str(png)], "prog", "doc", "root")
    assert out.read_text() == text + "\n" and capsys.readouterr().out == text + "\n"
    assert_png_drawn(png)
    assert_png_drawn(plots.forest_plot(DESIGN, designs.headline_cells(DESIGN, DESIGN.load_runs(str(root)),
                                                                      designs.BOTH_EVALUATIONS), str(png)))
    with pytest.raises(SystemExit) as stop:
        cli.headline_main(DESIGN, [str(tmp_path / "nowhere")], "prog", "doc", "root")
    assert stop.value.code == 2
    assert "nowhere: no run folders <name>_seed<S> with results.json under a or collected_<design>" in (
        capsys.readouterr().err)


def test_part_two_is_one_declaration():
    part_two = designs.PART_TWO
    assert len(part_two.comparisons) == 14 and part_two.folders == ("online", "stronger", "converged")
    assert [part_two.design_number(c) for c in part_two.comparisons] == [1] * 8 + [2] * 3 + [3] * 3
    assert all(name.split("/")[0] in part_two.folders for c in part_two.comparisons for name in c.names)


def test_part_three_recovered_fraction_by_hand(tmp_path):
    """PART_THREE's recovered fraction (refined - noisy) / (clean - noisy) on runs laid out as collected: the worst
    labels' chain at generation 2 (0.78, 0.80, 0.81), its independent models' generation 1 (0.70, 0.72, 0.75) and
    the clean runs' generation 1 (0.90, 0.92, 0.95) -> 0.08/0.20, 0.08/0.20, 0.06/0.20 = 40%, 40%, 30%."""
    noisy, clean, refined = (0.70, 0.72, 0.75), (0.90, 0.92, 0.95), (0.78, 0.80, 0.81)
    for seed in range(3):
        write_run(tmp_path / "part_three_worst" / f"online_seed{seed}",
                  [generation_row(1, noisy[seed]), generation_row(2, refined[seed])], seed=seed)
        write_run(tmp_path / "part_three_worst" / f"ground_truth_seed{seed}",
                  [generation_row(1, noisy[seed]), generation_row(2, noisy[seed])], seed=seed)
        write_run(tmp_path / "part_two_online" / f"online_seed{seed}", [generation_row(1, clean[seed])], seed=seed)
    part_three = designs.PART_THREE
    assert all(name.split("/")[0] in part_three.folders for c in part_three.comparisons for name in c.names)
    cells = designs.headline_cells(part_three, part_three.load_runs(str(tmp_path)))
    recovered = [cell for cell in cells if cell.comparison.quantity is designs.RECOVERED]
    assert [cell.column for cell in recovered] == [2]
    assert recovered[0].values == pytest.approx({0: 0.4, 1: 0.4, 2: 0.3})
    ceiling = next(cell for cell in cells if cell.comparison.text.startswith("clean labels"))
    assert ceiling.values == pytest.approx({0: 0.2, 1: 0.2, 2: 0.2})


def test_label_issues_cleanings_by_hand(tmp_path, capsys):
    """LABEL_ISSUES on runs laid out as label_issues.sh leaves them (uncollected) beside Part two's clean runs:
    noisy (the chain's generation 1) 0.70, 0.72, 0.75; refined (generation 2) 0.74, 0.75, 0.79; relabelled 0.76,
    0.77, 0.80; cleanlab's drop 0.73, 0.77, 0.77 on fewer training images (900 of 1,000: paired on the seed and
    validation split only); clean 0.90, 0.92, 0.95.
    Relabel minus drop: +3, 0, +3 points -> mean +2.00, std sqrt(3) -> half width 4.3027 * 1.7321 / 1.7321 = 4.30.
    Recovered by relabelling: 0.06/0.20, 0.05/0.20, 0.05/0.20 = 30%, 25%, 25%."""
    noisy, refined, clean = (0.70, 0.72, 0.75), (0.74, 0.75, 0.79), (0.90, 0.92, 0.95)
    relabel, drop = (0.76, 0.77, 0.80), (0.73, 0.77, 0.77)
    for seed in range(3):
        write_run(tmp_path / "worst" / f"online_seed{seed}", [generation_row(1, noisy[seed]),
                                                                generation_row(2, refined[seed])], seed=seed)
        write_run(tmp_path / "label_issues" / "worst" / f"relabel_refinery_seed{seed}",
                  [generation_row(1, relabel[seed])], generations=1, seed=seed)
        write_run(tmp_path / "label_issues" / "worst" / f"drop_cleanlab_seed{seed}", [generation_row(1, drop[seed])],
                  generations=1, seed=seed, num_train=900)
        write_run(tmp_path / "part_two_online" / f"online_seed{seed}", [generation_row(1, clean[seed])], seed=seed)
    design = designs.LABEL_ISSUES
    assert all(name.rsplit("/", 1)[0] in design.folders for c in design.comparisons for name in c.names)
    cells = designs.headline_cells(design, design.load_runs(str(tmp_path)))
    by_text = {cell.comparison.text: cell for cell in cells}
    assert len(cells) == 9  # aggre has no runs: its comparisons have no cells
    assert by_text["the refinery's labels (the chain's generation 2) minus the noisy labels"].values == pytest.approx(
        {0: 0.04, 1: 0.03, 2: 0.04})
    assert by_text["the refinery's flags relabelled minus cleanlab's flags left out"].values == pytest.approx(
        {0: 0.03, 1: 0.0, 2: 0.03})
    recovered = by_text["recovered fraction in %, the refinery's flags relabelled with its argmax: (cleaned - noisy) / "
                        "(clean - noisy)"]
    assert recovered.values == pytest.approx({0: 0.3, 1: 0.25, 2: 0.25})
    table = tables.headline_table(cells, design.column).splitlines()
    assert table[0] == "| design | comparison | mean [95% interval] (pairs) | per seed (seed: points) |"
    assert ("| 1 | the refinery's flags relabelled minus cleanlab's flags left out | +2.00 [-2.30, +6.30] (3) | "
            "0: +3.00, 1: +0.00, 2: +3.00 |") in table
    assert design.design_number(recovered.comparison) == 1  # the worst labels' design, in the plot too
    # The plot gives the recovered fraction (in %) its own panel, apart from the differences in points.
    panels = plots.forest_panels(cells)
    assert [(quantity.name, quantity.kind) for quantity, _ in panels] == [("difference", "points"),
                                                                         ("recovered fraction", "percent")]
    in_points = [cell for cell in cells if cell.comparison.quantity.kind == "points"]
    assert len(in_points) == 6 and recovered in panels[1][1] and (
        [cell for _, panel in panels for cell in panel] == in_points + [cell for cell in cells if cell not in in_points])
    assert_png_drawn(plots.forest_plot(design, cells, str(tmp_path / "label_issues.png")))
    # Strict pairing still holds where the training sets must match: a relabelled run on other data is an error.
    write_run(tmp_path / "label_issues" / "worst" / "relabel_refinery_seed1", [generation_row(1, 0.77)],
              generations=1, seed=1, num_train=900)
    with pytest.raises(ValueError, match="relabel_refinery_seed1 and .*online_seed1: not a pair"):
        designs.headline_cells(design, design.load_runs(str(tmp_path)))


def test_part_three_crop_row_refuses_runs_of_other_epochs(tmp_path):
    """The crop designs' generation-1 row states designs.CROP_EPOCHS (the default part_three.sh trains them for): crop
    runs of that many epochs fill it (0.83 - 0.85 = -2 points per seed); one trained for other epochs is an error
    naming its folder, not a mislabelled row."""
    def write(epochs):
        for seed in range(2):
            write_run(tmp_path / "part_three_crops_008" / f"ground_truth_seed{seed}", [generation_row(1, 0.83)],
                      generations=1, seed=seed, epochs=epochs)
            write_run(tmp_path / "part_two_online" / f"online_seed{seed}", [generation_row(1, 0.85)], seed=seed)

    part_three = designs.PART_THREE
    write(designs.CROP_EPOCHS)
    (row,) = [cell for cell in designs.headline_cells(part_three, part_three.load_runs(str(tmp_path)))
              if cell.comparison.text.startswith("generation 1 with these crops")]
    assert f"({designs.CROP_EPOCHS} epochs" in row.comparison.text
    assert row.values == pytest.approx({0: -0.02, 1: -0.02})
    write(designs.CROP_EPOCHS - 6)
    with pytest.raises(ValueError, match=f"ground_truth_seed0: trained with epochs={designs.CROP_EPOCHS - 6}, but "
                                         f"the headline row 'generation 1 with these crops .* states "
                                         f"epochs={designs.CROP_EPOCHS}"):
        designs.headline_cells(part_three, part_three.load_runs(str(tmp_path)))
