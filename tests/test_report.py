"""lr_jax.report: grouping over seeds, mean/std tables against hand-computed numbers, paired differences with
confidence intervals against scipy's one-sample t test, plots, and bad input."""

import csv
import dataclasses
import json
import types

import chex
import numpy as np
import pytest
import scipy.stats

from lr_jax import config as config_lib
from lr_jax import files, report, results
from lr_jax.analysis import plots

CLASSES = ["cat", "dog", "frog"]


def generation_row(generation, val, test=None, train=None, entropy=0.5):
    """A results.json generation row as refinery.run_generation writes it."""
    train = val + 0.1 if train is None else train
    return {
        "generation": generation, "val_accuracy": val, "test_accuracy": test, "train_accuracy": train,
        "train_val_gap": train - val, "train_test_gap": None if test is None else train - test,
        "label_entropy": entropy, "label_agreement": 0.9,
        "ensemble_val_accuracy": val, "ensemble_test_accuracy": test, "model": "small_cnn",
        "trained_on": "ground truth" if generation == 1 else f"generation {generation - 1}",
        "label_mode": "precomputed", "train_seconds": 10.0 * generation, "images_per_second": 500.0, "epochs": 8,
    }


def write_run(workdir, rows, dataset="cifar10", generations=2, summary_images=None, num_train=1000, **settings):
    """A run folder written by results.write_results (and write_label_summary when summary_images is given);
    `num_train` is the dataset's training images as the run reported them."""
    values = dict(model="small_cnn", generations=generations, workdir=str(workdir))
    values.update(settings)
    config = config_lib.Config(dataset=dataset, **{k: v for k, v in values.items() if k in config_lib.CONFIG_FIELDS})
    run_options = config_lib.RunOptions(**{k: v for k, v in values.items() if k in config_lib.RUN_OPTION_FIELDS})
    info = {"description": "synthetic", "class_names": CLASSES, "devices": 4, "platform": "cpu",
            "num_train": num_train, "num_val": config.val_size, "num_test": None}
    payload = results.results_payload(config, run_options, info, rows, len(rows) == generations, 12.5)
    results.write_results(str(workdir), payload)
    if summary_images is not None:
        rng = np.random.default_rng(config.seed)
        count = len(summary_images)
        splits = types.SimpleNamespace(train_images=summary_images, train_labels=np.arange(count) % 3,
                                       class_names=CLASSES)
        chain = [types.SimpleNamespace(generation=row["generation"],
                                       soft_labels=rng.dirichlet(np.ones(3), size=count))
                 for row in rows]
        results.write_label_summary(str(workdir), splits, chain)
    return str(workdir)


@pytest.fixture
def runs(tmp_path):
    """Refinery seeds 2, 0, 1 (given out of order; seed 2 stopped after generation 1) and one label-smoothing run.

    Validation accuracy, generation 1: 0.80, 0.82, 0.84 -> mean 0.82, sample std 0.02.
    Generation 2 (seeds 0, 1 only): 0.81, 0.85 -> mean 0.83, sample std sqrt(2 * 0.02^2 / 1) = 0.0282843.
    Label smoothing 0.1, one seed: 0.79, 0.78 -> no std."""
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    return [
        write_run(tmp_path / "ref2", [generation_row(1, 0.84)], seed=2),
        write_run(tmp_path / "ref0", [generation_row(1, 0.80), generation_row(2, 0.81)], seed=0,
                  summary_images=images),
        # Another preset name and data folder: still the same configuration.
        write_run(tmp_path / "ref1", [generation_row(1, 0.82), generation_row(2, 0.85)], seed=1,
                  preset="cpu", data_dir="/elsewhere", summary_images=images),
        write_run(tmp_path / "smooth0", [generation_row(1, 0.79), generation_row(2, 0.78)], seed=0,
                  label_smoothing=0.1, summary_images=images),
    ]


def test_aggregate_means_and_stds_over_seeds(runs):
    summary = report.aggregate(runs)
    assert summary.dataset == "cifar10"
    refinery, smoothing = summary.configurations
    assert refinery.label == "small_cnn, precomputed"
    assert smoothing.label == "small_cnn, precomputed, label smoothing 0.1"
    assert [r.payload["config"]["seed"] for r in refinery.runs] == [0, 1, 2]
    first, second = refinery.rows
    assert (first["generation"], first["seeds"], second["generation"], second["seeds"]) == (1, 3, 2, 2)
    assert first["val_accuracy"] == pytest.approx(report.Stat(0.82, 0.02, 3))
    assert second["val_accuracy"] == pytest.approx(report.Stat(0.83, 0.02 * 2**0.5, 2))
    # Train accuracy is val + 0.1 in every row, so its mean moves by 0.1 and its std not at all.
    assert second["train_accuracy"] == pytest.approx(report.Stat(0.93, 0.02 * 2**0.5, 2))
    assert first["test_accuracy"] is None
    assert first["train_seconds"] == pytest.approx(report.Stat(10.0, 0.0, 3))
    assert smoothing.rows[1]["val_accuracy"] == report.Stat(0.78, None, 1)


def test_markdown_and_csv_tables(runs, tmp_path):
    paths = report.write_tables(report.aggregate(runs), str(tmp_path / "out"))
    with open(paths["markdown"]) as f:
        text = f.read()
    assert "| small_cnn, precomputed | 82.00 ± 2.00 (3) | 83.00 ± 2.83 (2) |" in text
    assert "| small_cnn, precomputed, label smoothing 0.1 | 79.00 (1) | 78.00 (1) |" in text
    assert "| 2 | 2 | 83.00 ± 2.83 | 93.00 ± 2.83 | +10.00 ± 0.00 |" in text
    assert "test acc %" not in text and "Test accuracy" not in text  # no run has a test split
    assert "train-val gap (points)" in text and "train-test gap" not in text.split("## small_cnn")[1]
    assert "| label agreement % |" in text and "| 90.00 ± 0.00 |" in text
    assert "| 1 of 2 | False |" in text  # seed 2 is listed as incomplete
    per_run = text.split("## Per run")[1].split("## Runs")[0]
    assert "| configuration | run folder | seed | gen | val acc % | train acc % | ensemble val acc % |" in per_run
    assert "| small_cnn, precomputed | ref1 | 1 | 2 | 85.00 | 95.00 | 85.00 |" in per_run
    assert per_run.count("| small_cnn, precomputed |") == 5 and "given labels repaired" not in per_run
    # Training time sums each run's generations (10 s; 10 + 20 s; 10 + 20 s), then averages over runs.
    assert "Mean wall time per run: 12 s; mean training time per run, all generations: 23 s." in text
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [(r["configuration"], r["generation"], r["seeds"]) for r in rows] == [
        ("small_cnn, precomputed", "1", "3"), ("small_cnn, precomputed", "2", "2"),
        ("small_cnn, precomputed, label smoothing 0.1", "1", "1"),
        ("small_cnn, precomputed, label smoothing 0.1", "2", "1"),
    ]
    assert float(rows[1]["val_accuracy_mean"]) == pytest.approx(0.83)
    assert float(rows[1]["val_accuracy_std"]) == pytest.approx(0.02 * 2**0.5)
    assert rows[2]["val_accuracy_std"] == "" and rows[2]["test_accuracy_mean"] == ""


def test_per_run_table_shows_the_labels_each_generation_hands_on(tmp_path):
    rows = [dict(generation_row(g, 0.7 + g / 100), train_accuracy_dataset_labels=0.75 + g / 100,
                 labels_repaired=100 * g, labels_broken=10 * g) for g in (1, 2)]
    text = report.markdown_report(report.aggregate([write_run(tmp_path / "online_seed3", rows, seed=3)]))
    per_run = text.split("## Per run")[1].split("## Runs")[0]
    assert ("| train acc % vs the dataset's labels | given labels repaired | given labels broken |"
            in per_run.splitlines()[2])
    assert "| small_cnn, precomputed | online_seed3 | 3 | 2 | 72.00 | 82.00 | 72.00 | 77.00 | 200 | 20 |" in per_run


def test_test_split_columns_and_headline(tmp_path):
    runs = [write_run(tmp_path / f"s{seed}", [generation_row(1, 0.9, test=test)], seed=seed, generations=1)
            for seed, test in ((0, 0.70), (1, 0.74))]
    summary = report.aggregate(runs)
    assert report.held_out_key(summary.configurations[0]) == "test_accuracy"
    text = report.markdown_report(summary)
    assert "## Test accuracy per generation" in text
    assert "| small_cnn, ground truth only, 30 epochs | 72.00 ± 2.83 (2) |" in text


def test_labels_tell_apart_configurations_that_describe_alike(tmp_path):
    runs = [write_run(tmp_path / "a", [generation_row(1, 0.5)], epochs=8),
            write_run(tmp_path / "b", [generation_row(1, 0.6)], epochs=16),
            write_run(tmp_path / "c", [generation_row(1, 0.6)], label_mode="online", temperature=4.0)]
    labels = [c.label for c in report.aggregate(runs).configurations]
    assert labels == ["small_cnn, precomputed, epochs=8", "small_cnn, precomputed, epochs=16",
                      "small_cnn, online, temperature 4"]


def test_plots_name_configurations_by_what_sets_them_apart(tmp_path):
    """The settings every configuration shares go once into the figure's title; each legend or panel keeps the
    rest, or its whole label where nothing else is left; one configuration keeps its whole label."""
    runs = [write_run(tmp_path / "a", [generation_row(1, 0.5)], epochs=8, temperature=4.0),
            write_run(tmp_path / "b", [generation_row(1, 0.6)], label_mode="online", temperature=4.0),
            write_run(tmp_path / "c", [generation_row(1, 0.6)], label_mode="online", temperature=4.0,
                      label_smoothing=0.1)]
    aggregated = report.aggregate(runs)
    assert [c.label for c in aggregated.configurations] == [
        "small_cnn, precomputed, temperature 4", "small_cnn, online, temperature 4",
        "small_cnn, online, label smoothing 0.1, temperature 4"]
    assert plots.plot_names(aggregated) == ("small_cnn, temperature 4",
                                            ["precomputed", "online", "online, label smoothing 0.1"])
    assert plots.plot_names(report.aggregate(runs[1:2])) == ("", ["small_cnn, online, temperature 4"])
    assert plots.plot_names(report.aggregate(runs[1:])) == ("small_cnn, online, temperature 4",
                                                            ["small_cnn, online, temperature 4",
                                                             "label smoothing 0.1"])


def assert_png_drawn(path):
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_write_report_draws_every_plot(runs, tmp_path):
    """Every plot but label_repair, which only runs on --train_labels have (test_part_three_features draws it)."""
    out = tmp_path / "out"
    paths = report.main([*runs, "--out", str(out)])
    drawn = [name for name in report.PLOTS if name != "label_repair"]
    assert set(paths) == {"markdown", "csv", *drawn}
    for name in drawn:
        assert paths[name] == str(out / f"{name}.png")
        assert_png_drawn(paths[name])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.md", "summary.csv"] + [f"{name}.png" for name in drawn])  # no temporary files left


def test_label_examples_of_grey_images(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    run = write_run(tmp_path / "grey", [generation_row(1, 0.5), generation_row(2, 0.6)], summary_images=images)
    assert_png_drawn(report.plot_label_examples(run, str(tmp_path / "examples.png")))


def test_runs_without_label_summaries_skip_plots_3_and_4(tmp_path):
    run = write_run(tmp_path / "bare", [generation_row(1, 0.5)], generations=1)
    paths = report.write_report([run], str(tmp_path / "out"))
    assert set(paths) == {"markdown", "csv", "accuracy", "train_vs_test"}
    with pytest.raises(FileNotFoundError, match="bare/labels_summary.npz"):
        report.plot_label_examples(run, str(tmp_path / "x.png"))


def test_bad_label_summary_names_the_file(tmp_path):
    run = write_run(tmp_path / "run", [generation_row(1, 0.5)], generations=1)
    np.savez(tmp_path / "run" / "labels_summary.npz", images=np.zeros((2, 4, 4, 3), np.uint8),
             labels=np.zeros(2, np.int32), class_names=np.array(CLASSES), probs=np.zeros((1, 3, 3)),
             entropies=np.zeros((1, 5), np.float16), generations=np.array([1]))
    with pytest.raises(ValueError, match=r"run/labels_summary.npz: probs has shape \(1, 3, 3\)"):
        report.load_label_summary(run)


def test_bad_input_names_the_path(tmp_path):
    good = write_run(tmp_path / "good", [generation_row(1, 0.5)])
    with pytest.raises(FileNotFoundError, match="missing: no such run folder"):
        report.aggregate([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty/results.json: no results.json"):
        report.aggregate([good, str(tmp_path / "empty")])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken/results.json: not valid JSON"):
        report.aggregate([str(tmp_path / "broken")])
    payload = results.load_results(good)
    for name, change, message in (
        ("nogens", lambda p: p.update(generations=[]), "no finished generation"),
        ("noconfig", lambda p: p.pop("config"), "no 'config' object"),
        ("twice", lambda p: p["generations"].append(dict(p["generations"][0])), "generation 1 appears twice"),
        ("text", lambda p: p["generations"][0].update(val_accuracy="high"), "val_accuracy='high' is not a number"),
    ):
        broken = json.loads(json.dumps(payload))
        change(broken)
        files.write_json_atomic(str(tmp_path / name / "results.json"), broken)
        with pytest.raises(ValueError, match=f"{name}/results.json: .*{message}"):
            report.aggregate([str(tmp_path / name)])
    with pytest.raises(ValueError, match="no run folders"):
        report.aggregate([])


def test_mixed_datasets_and_repeated_seeds_are_refused(tmp_path):
    cifar = write_run(tmp_path / "c", [generation_row(1, 0.5)])
    svhn = write_run(tmp_path / "s", [generation_row(1, 0.5)], dataset="svhn")
    with pytest.raises(ValueError, match=r"different datasets.*c: cifar10; .*s: svhn"):
        report.aggregate([cifar, svhn])
    copy = write_run(tmp_path / "copy", [generation_row(1, 0.5)])
    with pytest.raises(ValueError, match="c and .*copy: the same configuration and seed 0 twice"):
        report.aggregate([cifar, copy])


def test_command_line_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere: no such run folder" in err
    assert not (tmp_path / "out").exists()  # nothing written for bad input


def test_settings_that_count_and_those_that_do_not():
    # An older results.json held run options in its config: they never count.
    old = {**dataclasses.asdict(config_lib.Config(seed=3, refinery_workdir="r")), "workdir": "w", "data_dir": "d",
           "cache_dir": "c", "checkpoint_every": 7, "eval_batch_size": 9, "preset": "cpu"}
    settings = report.settings_of(old)
    assert not {"seed", *config_lib.RUN_OPTION_FIELDS} & set(settings)
    assert settings["refinery_workdir"] is True and settings["model"] == "resnet20"


def test_format_stat():
    assert report.format_stat(report.Stat(0.85123, 0.0031, 3), "percent") == "85.12 ± 0.31"
    assert report.format_stat(report.Stat(-0.012, None, 1), "points") == "-1.20"
    assert report.format_stat(report.Stat(0.012, 0.003, 2), "points") == "+1.20 ± 0.30"  # the std unsigned
    assert report.format_stat(None, "nats") == "-"


def test_runs_without_validation_or_test_skip_the_accuracy_plot(tmp_path):
    row = generation_row(1, 0.5)
    row.update(val_accuracy=None, train_val_gap=None, ensemble_val_accuracy=None)
    run = write_run(tmp_path / "train_only", [row], generations=1, val_size=0)
    paths = report.write_report([run], str(tmp_path / "out"))
    assert "accuracy" not in paths and not (tmp_path / "out" / "accuracy.png").exists()
    assert_png_drawn(paths["train_vs_test"])


@pytest.fixture
def paired_runs(tmp_path):
    """The reference chain (seeds 0, 1, 2) and three configurations to pair with it by seed and data:

    reference: generation 1 at 0.80, 0.82, 0.84 and generation 2 at 0.79, 0.80, 0.81 -> own differences -1, -2, -3
    points. Label smoothing: seed 0 0.81 (+1 point), seed 1 0.84 (+2), seed 2 on other data (num_train 999), seed 5
    without a partner -> 2 pairs. Temperature 2: seed 1 only, 0.85 then 0.86 -> +3 and +4 points against the
    reference's 0.82, +1 against its own generation 1. val_size 100: other data for every seed -> no pair with the
    reference, +10 points against its own generation 1."""
    return {
        "reference": [write_run(tmp_path / f"ref{seed}", [generation_row(1, g1), generation_row(2, g2)], seed=seed)
                      for seed, g1, g2 in ((0, 0.80, 0.79), (1, 0.82, 0.80), (2, 0.84, 0.81))],
        "smoothing": [write_run(tmp_path / f"ls{seed}", [generation_row(1, g1)], seed=seed, generations=1,
                                label_smoothing=0.1, num_train=num_train)
                      for seed, g1, num_train in ((0, 0.81, 1000), (1, 0.84, 1000), (2, 0.70, 999), (5, 0.60, 1000))],
        "temperature": [write_run(tmp_path / "t1", [generation_row(1, 0.85), generation_row(2, 0.86)], seed=1,
                                  temperature=2.0)],
        "other_data": [write_run(tmp_path / "v0", [generation_row(1, 0.5), generation_row(2, 0.6)], seed=0,
                                 val_size=100)],
    }


def t_interval(differences):
    """Mean and 95% confidence interval of `differences` from scipy's one-sample t test (independent of report)."""
    interval = scipy.stats.ttest_1samp(differences, 0.0).confidence_interval(0.95)
    return float(np.mean(differences)), float(interval.low), float(interval.high)


def test_paired_differences_pair_by_seed_and_data(paired_runs):
    summary = report.aggregate([w for runs in paired_runs.values() for w in runs])
    reference, smoothing, temperature, other_data = summary.configurations
    assert summary.reference == 0
    # Within the reference chain: generation 2 minus generation 1 of the same run, -1, -2, -3 points.
    mean, low, high = t_interval([-0.01, -0.02, -0.03])
    half_width = scipy.stats.t.ppf(0.975, 2) * 0.01 / 3**0.5  # by hand: sample std of -1, -2, -3 points is 1 point
    assert (mean, high - mean) == pytest.approx((-0.02, half_width))
    assert reference.paired == {"own_gen1": {2: pytest.approx(report.Difference(mean, low, high, 3))}}
    # Across configurations: seed 2 (other data) and seed 5 (no reference run) are left out.
    mean, low, high = t_interval([0.01, 0.02])
    first = {1: pytest.approx(report.Difference(mean, low, high, 2))}
    assert smoothing.paired == {"own_gen1": {}, "reference_gen1": first, "reference_genk": {},
                                "reference_ensemble": {}}  # generation 1 only: the same as reference_gen1
    assert temperature.paired["own_gen1"] == {2: pytest.approx(report.Difference(0.01, None, None, 1))}
    assert temperature.paired["reference_gen1"] == {1: pytest.approx(report.Difference(0.03, None, None, 1)),
                                                    2: pytest.approx(report.Difference(0.04, None, None, 1))}
    # Generation k against the reference's generation k (0.82 then 0.80): +3 and +6 points; the fixtures'
    # ensembles equal their generations' accuracies, so the ensemble differences are the same.
    same_generation = {2: pytest.approx(report.Difference(0.06, None, None, 1))}
    assert temperature.paired["reference_genk"] == temperature.paired["reference_ensemble"] == same_generation
    assert other_data.paired == {"own_gen1": {2: pytest.approx(report.Difference(0.1, None, None, 1))},
                                 "reference_gen1": {}, "reference_genk": {}, "reference_ensemble": {}}


def test_paired_differences_in_markdown_and_csv(paired_runs, tmp_path):
    paths = report.write_tables(report.aggregate([w for runs in paired_runs.values() for w in runs]),
                                str(tmp_path / "out"))
    with open(paths["markdown"]) as f:
        text = f.read()
    assert text.index("## Paired differences") < text.index("## Validation accuracy per generation")
    assert "Reference: small_cnn, precomputed, val_size=5000." in text
    mean, low, high = t_interval([-0.01, -0.02, -0.03])
    assert (f"| small_cnn, precomputed, val_size=5000 | validation | gen 1 of the same run | - | "
            f"-2.00 [{100 * low:+.2f}, {100 * high:+.2f}] (3) |") in text
    mean, low, high = t_interval([0.01, 0.02])
    assert (f"| small_cnn, ground truth only, 30 epochs, label smoothing 0.1 | validation | reference gen 1, same seed | "
            f"+1.50 [{100 * low:+.2f}, {100 * high:+.2f}] (2) | - |") in text
    assert ("| small_cnn, precomputed, temperature 2 | validation | reference gen 1, same seed | +3.00 (1) | "
            "+4.00 (1) |") in text
    assert "| small_cnn, precomputed, val_size=100 | validation | gen 1 of the same run | - | +10.00 (1) |" in text
    assert "val_size=100 | validation | reference" not in text  # no pair, no row
    assert ("| small_cnn, precomputed, temperature 2 | validation | reference gen k, same seed | - | "
            "+6.00 (1) |") in text
    with open(paths["csv"]) as f:
        rows = {(r["configuration"], r["generation"]): r for r in csv.DictReader(f)}
    row = rows["small_cnn, ground truth only, 30 epochs, label smoothing 0.1", "1"]
    assert (row["held_out"], row["minus_reference_gen1_n"], row["minus_own_gen1_mean"]) == ("val_accuracy", "2", "")
    assert [float(row[f"minus_reference_gen1_{part}"]) for part in ("mean", "low", "high")] == pytest.approx(
        [mean, low, high])
    row = rows["small_cnn, precomputed, temperature 2", "2"]
    assert float(row["minus_own_gen1_mean"]) == pytest.approx(0.01)
    assert (row["minus_own_gen1_low"], row["minus_own_gen1_high"], row["minus_own_gen1_n"]) == ("", "", "1")
    assert float(row["minus_reference_genk_mean"]) == pytest.approx(0.06)
    assert float(row["minus_reference_ensemble_mean"]) == pytest.approx(0.06)
    assert {r["reference_configuration"] for r in rows.values()} == {"small_cnn, precomputed, val_size=5000"}


def test_reference_option_picks_the_configuration(paired_runs, tmp_path, capsys):
    workdirs = [w for runs in paired_runs.values() for w in runs]
    smoothing_seed1 = paired_runs["smoothing"][1]
    summary = report.aggregate(workdirs, reference=smoothing_seed1)
    assert summary.reference == 1 and "reference_gen1" not in summary.configurations[1].paired
    # The chain's generations minus label smoothing's generation 1: seeds 0 and 1 pair (seed 2's data differ).
    mean, low, high = t_interval([-0.01, -0.02])
    assert summary.configurations[0].paired["reference_gen1"][1] == pytest.approx(report.Difference(mean, low, high, 2))
    mean, low, high = t_interval([-0.02, -0.04])
    assert summary.configurations[0].paired["reference_gen1"][2] == pytest.approx(report.Difference(mean, low, high, 2))
    with pytest.raises(SystemExit) as exit_info:
        report.main([*workdirs, "--out", str(tmp_path / "out"), "--reference", str(tmp_path / "elsewhere")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: --reference {tmp_path / 'elsewhere'}: not one of the run folders given\n"


def test_a_single_generation_of_one_configuration_has_no_paired_table(tmp_path):
    run = write_run(tmp_path / "one", [generation_row(1, 0.5)], generations=1)
    assert "Paired differences" not in report.markdown_report(report.aggregate([run]))


def test_label_summary_keeps_the_dataset_labels_where_train_labels_replaced_them(tmp_path):
    """A run whose training labels were replaced (--train_labels) stores the dataset's own labels of the example
    images beside the ones it trained with, and the examples plot draws them; a run on the dataset's labels has
    none; a dataset_labels array of the wrong length is an error naming the file."""
    count = 20
    images = np.random.default_rng(2).integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
    given = np.arange(count) % 3
    chain = [types.SimpleNamespace(generation=1, soft_labels=np.full((count, 3), 1 / 3))]
    for name, own in (("noisy", (given + 1) % 3), ("clean", given)):
        run = write_run(tmp_path / name, [generation_row(1, 0.5)], generations=1)
        splits = types.SimpleNamespace(train_images=images, train_labels=given, dataset_train_labels=own,
                                       class_names=CLASSES)
        results.write_label_summary(run, splits, chain)
        summary = report.load_label_summary(run)
        picks = [int(np.flatnonzero((images == image).all(axis=(1, 2, 3)))[0]) for image in summary["images"]]
        chex.assert_shape(summary["labels"], (results.NUM_EXAMPLES,))
        np.testing.assert_array_equal(summary["labels"], given[picks])
        if name == "noisy":
            np.testing.assert_array_equal(summary["dataset_labels"], own[picks])
        else:
            assert "dataset_labels" not in summary
        assert_png_drawn(report.plot_label_examples(run, str(tmp_path / f"{name}.png")))
    with np.load(tmp_path / "noisy" / "labels_summary.npz") as data:
        arrays = {key: data[key] for key in data.files}
    np.savez(tmp_path / "noisy" / "labels_summary.npz", **dict(arrays, dataset_labels=arrays["dataset_labels"][:3]))
    with pytest.raises(ValueError,
                       match=r"noisy/labels_summary.npz: dataset_labels has shape \(3,\), expected \(16,\)"):
        report.load_label_summary(str(tmp_path / "noisy"))


def test_runs_list_names_an_accelerator_but_not_a_cpu_twice():
    from lr_jax.analysis import tables

    assert tables.devices_label({"devices": 4, "platform": "cpu", "device_kind": "cpu"}) == "4 x cpu"
    assert tables.devices_label({"devices": 4, "platform": "cpu"}) == "4 x cpu"  # rows written before device_kind
    assert tables.devices_label({"devices": 1, "platform": "gpu", "device_kind": "NVIDIA H200"}) == \
        "1 x gpu (NVIDIA H200)"


def test_explanations_name_the_labels_generation_1_trained_on(tmp_path):
    rows = [generation_row(1, 0.80), generation_row(2, 0.81)]
    clean = report.markdown_report(report.aggregate([write_run(tmp_path / "clean", rows, seed=0)]))
    assert "ground truth for generation 1" in clean and "(trained on ground truth, on the same split)" in clean
    assert "independently trained ground-truth models" in clean
    noisy = report.markdown_report(report.aggregate(
        [write_run(tmp_path / "noisy", rows, seed=0, train_labels="/labels/worse_label.csv")]))
    assert "ground truth" not in noisy.split("## Paired differences")[0]  # the opening paragraph
    assert "the given labels (--train_labels) for generation 1" in noisy
    assert "(trained on the given labels (--train_labels), on the same split)" in noisy
    assert "independently trained models on the same labels" in noisy
