"""lr_jax.report: grouping over seeds, mean/std tables against hand-computed numbers, plots, and bad input."""

import csv
import dataclasses
import json
import types

import numpy as np
import pytest

from lr_jax import config as config_lib
from lr_jax import report, results

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


def write_run(workdir, rows, dataset="cifar10", generations=2, summary_images=None, **settings):
    """A run folder written by results.write_results (and write_label_summary when summary_images is given)."""
    values = dict(model="small_cnn", generations=generations, workdir=str(workdir))
    values.update(settings)
    config = config_lib.Config(dataset=dataset, **{k: v for k, v in values.items() if k in config_lib.CONFIG_FIELDS})
    run_options = config_lib.RunOptions(**{k: v for k, v in values.items() if k in config_lib.RUN_OPTION_FIELDS})
    info = {"description": "synthetic", "class_names": CLASSES, "devices": 4, "platform": "cpu"}
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


def test_test_split_columns_and_headline(tmp_path):
    runs = [write_run(tmp_path / f"s{seed}", [generation_row(1, 0.9, test=test)], seed=seed, generations=1)
            for seed, test in ((0, 0.70), (1, 0.74))]
    summary = report.aggregate(runs)
    assert report.held_out_key(summary.configurations[0]) == "test_accuracy"
    text = report.markdown_report(summary)
    assert "## Test accuracy per generation" in text
    assert "| small_cnn, precomputed | 72.00 ± 2.83 (2) |" in text


def test_labels_tell_apart_configurations_that_describe_alike(tmp_path):
    runs = [write_run(tmp_path / "a", [generation_row(1, 0.5)], epochs=8),
            write_run(tmp_path / "b", [generation_row(1, 0.6)], epochs=16),
            write_run(tmp_path / "c", [generation_row(1, 0.6)], label_mode="online", temperature=4.0)]
    labels = [c.label for c in report.aggregate(runs).configurations]
    assert labels == ["small_cnn, precomputed, epochs=8", "small_cnn, precomputed, epochs=16",
                      "small_cnn, online, temperature 4"]


def assert_png_drawn(path):
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_write_report_draws_every_plot(runs, tmp_path):
    out = tmp_path / "out"
    paths = report.main([*runs, "--out", str(out)])
    assert set(paths) == {"markdown", "csv", *report.PLOTS}
    for name in report.PLOTS:
        assert paths[name] == str(out / f"{name}.png")
        assert_png_drawn(paths[name])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.md", "summary.csv"] + [f"{name}.png" for name in report.PLOTS])  # no temporary files left


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
        results.write_json_atomic(str(tmp_path / name / "results.json"), broken)
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
