"""lr_jax.labels.summary and the label-issues tables: detection metrics over seeds (mean and 95% interval), paired
differences between methods, from detection.json files laid out as label_issues.sh and collect_part_three.sh leave
them; python -m lr_jax.experiments.label_issues_table's output and errors; portable copies of the text files."""

import json

import pytest
import scipy.stats

from lr_jax import portable
from lr_jax.analysis import stats
from lr_jax.experiments import label_issues_table
from lr_jax.labels import summary
from test_report import generation_row, write_run


def detection(precision_refinery, precision_cleanlab, flagged=(100, 80)):
    """A detection.json payload: refinery and cleanlab on in-sample and K-fold probabilities (K-fold: 0.1 higher
    precision); recall, F1, AUROC, AP and precision at the top fixed, cleanlab's recall missing on K-fold (None)."""
    rows = []
    for source, shift in (("in-sample", 0.0), ("k-fold", 0.1)):
        for method, precision, count in (("refinery", precision_refinery, flagged[0]),
                                         ("cleanlab", precision_cleanlab, flagged[1])):
            rows.append({"method": method, "probabilities": source, "flagged": count, "precision": precision + shift,
                         "recall": None if (method, source) == ("cleanlab", "k-fold") else 0.5, "f1": 0.4,
                         "auroc": 0.9, "average_precision": 0.7, "precision_top": 0.8, "errors": 40})
    return {"source": {"run_dir": "/machine/runs/worst/online_seed0"}, "images": 1000, "errors": 40, "rows": rows}


def write_detection(runs_root, seed, payload):
    """Writes `payload` where label_issues.sh leaves the worst labels' detection.json of `seed`."""
    folder = runs_root / "label_issues" / "worst" / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "detection.json").write_text(json.dumps(payload))


@pytest.fixture
def runs_root(tmp_path):
    """Refinery precision 0.60, 0.65, 0.70 and cleanlab's 0.50, 0.50, 0.60 in-sample over seeds 0-2:
    refinery mean 65.00, std 5 points -> half width 4.3027 * 5 / sqrt(3) = 12.42 -> [52.58, 77.42];
    refinery minus cleanlab +10, +15, +10 -> +11.67, std 2.887 -> half width 7.17 -> [+4.50, +18.84]."""
    for seed, (ours, theirs) in enumerate(((0.60, 0.50), (0.65, 0.50), (0.70, 0.60))):
        write_detection(tmp_path, seed, detection(ours, theirs, (100 + seed, 80)))
    return tmp_path


def test_detection_table_over_seeds(runs_root):
    by_seed = summary.read_detections(str(runs_root), "worst")
    assert sorted(by_seed) == [0, 1, 2] and summary.read_detections(str(runs_root), "aggre") == {}
    table = summary.detection_table(by_seed).splitlines()
    assert table[0] == ("| method | probabilities | flagged | precision | recall | F1 | AUROC | AP | "
                        "precision, top 1,000 |")
    interval = scipy.stats.t.ppf(0.975, 2) * 0.05 / 3 ** 0.5
    assert table[2] == (f"| refinery | in-sample | 101 ± 1 | 65.00 [{100 * (0.65 - interval):.2f}, "
                        f"{100 * (0.65 + interval):.2f}] (3) | 50.00 [50.00, 50.00] (3) | 40.00 [40.00, 40.00] (3) | "
                        "90.00 [90.00, 90.00] (3) | 70.00 [70.00, 70.00] (3) | 80.00 [80.00, 80.00] (3) |")
    assert table[5].startswith("| cleanlab | k-fold | 80 ± 0 | 63.33 [") and "| - |" in table[5]  # recall missing
    paired = summary.paired_table(by_seed).splitlines()
    assert paired[2].startswith("| refinery minus cleanlab, in-sample probabilities | +11.67 [+4.50, +18.84] (3) | "
                                "+0.00 [+0.00, +0.00] (3) |")
    assert paired[3].split(" | ")[2] == "-"  # K-fold recall: cleanlab's is missing, so no pair
    assert paired[4].startswith("| refinery: K-fold minus in-sample | +10.00 [+10.00, +10.00] (3) |")


def test_detection_intervals_stay_within_0_and_100_percent(tmp_path):
    """Precision at the top 1,000 of 1.000 and 0.998 over 2 seeds: mean 99.90, t half width 12.71 * 0.1414 = 1.27
    points -> [98.63, 101.17] before clipping, [98.63, 100.00] after; AUROC (0.9 on both seeds) untouched."""
    for seed, top in enumerate((1.0, 0.998)):
        payload = detection(0.6, 0.5)
        for row in payload["rows"]:
            row["precision_top"] = top
        write_detection(tmp_path, seed, payload)
    row = summary.detection_table(summary.read_detections(str(tmp_path), "worst")).splitlines()[2].split(" | ")
    assert row[-1] == "99.90 [98.63, 100.00] (2) |" and row[-3] == "90.00 [90.00, 90.00] (2)"
    assert summary.within_range(None) is None
    clipped = summary.within_range(stats.Difference(mean=0.01, low=-0.02, high=0.04, n=2))
    assert (clipped.low, clipped.high, clipped.mean) == (0.0, 0.04, 0.01)


def test_label_issues_table_command(runs_root, tmp_path, capsys):
    for seed in range(3):
        write_run(runs_root / "worst" / f"online_seed{seed}", [generation_row(1, 0.70), generation_row(2, 0.72 + seed / 100)],
                  seed=seed)
    out = tmp_path / "summary.md"
    text = label_issues_table.main([str(runs_root), "--out", str(out)])
    assert out.read_text() == text + "\n"
    assert text.startswith("### worst: finding the known label errors (3 seeds; wrong given labels among the "
                           "training images, seed 0: 40 of 1000, seed 1: 40 of 1000, seed 2: 40 of 1000)")
    assert "| the refinery's labels (the chain's generation 2) minus the noisy labels | +3.00 [" in text
    assert "\n### Which cleaning trains the better model: validation accuracy on the dataset's labels" in text
    assert "the refinery scored here" not in text  # the detection files record no refinery: nothing to compare
    # Seed 1's refinery retrained on another machine (its accuracy differs from the chain's generation 1), seed 2's
    # the chain's own: one sentence, for seed 1.
    for seed, accuracy in ((1, 0.6912), (2, 0.70)):
        path = runs_root / "label_issues" / "worst" / f"seed{seed}" / "detection.json"
        payload = json.loads(path.read_text())
        path.write_text(json.dumps({**payload, "source": {"generation": 1, "val_accuracy": accuracy,
                                                          "host": {"cpu": "Other CPU", "isa": [], "cpus": 2}}}))
    notes = [line for line in label_issues_table.main([str(runs_root)]).splitlines() if "refinery scored" in line]
    assert notes == [notes[0]] and notes[0].startswith(
        "- seed 1: the refinery scored here is generation 1 retrained on Other CPU (validation 69.12%), not the "
        "chain's generation 1 in the table below (70.00%)"), notes
    # Retrained on an accelerator: the note names it, not the host's CPU.
    path = runs_root / "label_issues" / "worst" / "seed1" / "detection.json"
    payload = json.loads(path.read_text())
    path.write_text(json.dumps({**payload, "source": {**payload["source"], "platform": "gpu",
                                                      "device_kind": "NVIDIA H200"}}))
    notes = [line for line in label_issues_table.main([str(runs_root)]).splitlines() if "refinery scored" in line]
    assert notes[0].startswith("- seed 1: the refinery scored here is generation 1 retrained on NVIDIA H200 (gpu) "
                               "(validation 69.12%)"), notes
    bad = runs_root / "label_issues" / "worst" / "seed1" / "detection.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as stop:
        label_issues_table.main([str(runs_root)])
    assert stop.value.code == 2
    assert f"{bad}: not a detection.json of python -m lr_jax.labels compare" in capsys.readouterr().err


def test_text_files_are_copied_without_the_machines_paths(runs_root, tmp_path):
    source = runs_root / "label_issues" / "worst" / "seed0" / "detection.json"
    payload = json.loads(source.read_text())
    payload["kfold"] = str(runs_root / "label_issues" / "worst" / "seed0" / "kfold" / "kfold_probs.npz")
    source.write_text(json.dumps(payload))
    dest = tmp_path / "copy" / "detection.json"
    portable.main([str(source), str(dest), "--runs_root", str(runs_root)])
    copied = json.loads(dest.read_text())
    assert copied["kfold"] == "<runs_root>/label_issues/worst/seed0/kfold/kfold_probs.npz"
    assert copied["source"]["run_dir"] == "<path>" and copied["rows"] == payload["rows"]


def test_collect_part_three_copies_label_issues_without_paths(runs_root, tmp_path):
    """collect_part_three.sh on a runs root with part three's worst chain and label_issues.sh's outputs (seed 0;
    detection files of seeds 0-2) and a design the queue has just started (no results.json yet: skipped),
    as on a fresh clone whose results root holds Part two's clean runs: the retrains and detection files are copied
    without the machine's paths, the suspects cut to the top 1,000, and both tables written."""
    import subprocess

    import numpy as np

    from test_results import REPO_ROOT, assert_no_absolute_paths, script_environment

    images = np.zeros((6, 8, 8, 3), np.uint8)
    seed_dir = runs_root / "label_issues" / "worst" / "seed0"
    for name, rows, extra in (("worst/online_seed0", [generation_row(1, 0.70), generation_row(2, 0.74)],
                               {"label_mode": "online"}),
                              ("worst/ground_truth_seed0", [generation_row(1, 0.70), generation_row(2, 0.71)],
                               {"label_mode": "ground_truth"}),
                              ("label_issues/worst/relabel_refinery_seed0", [generation_row(1, 0.76)],
                               {"generations": 1, "train_labels": str(seed_dir / "relabel_refinery.csv")}),
                              ("label_issues/worst/drop_cleanlab_seed0", [generation_row(1, 0.73)],
                               {"generations": 1, "num_train": 900,
                                "train_labels": str(seed_dir / "drop_cleanlab.csv")})):
        write_run(runs_root / name, rows, summary_images=images, **extra)
    payload = json.loads((seed_dir / "detection.json").read_text())
    (seed_dir / "detection.json").write_text(json.dumps({**payload, "kfold": str(seed_dir / "kfold" / "p.npz")}))
    (seed_dir / "detection.md").write_text(f"# {runs_root}/worst/online_seed0, generation 1\n")
    (seed_dir / "label_issues.csv").write_text("rank,id\n" + "".join(f"{k},train/a/{k}.jpg\n" for k in range(1500)))
    (seed_dir / "label_issues.png").write_bytes(b"\x89PNG not really")
    (seed_dir / "kfold").mkdir()
    kfold_probs = {"ids": np.array(["train/a/0.jpg", "train/a/1.jpg"]), "probs": np.eye(2, dtype=np.float32),
                   "source": np.asarray(json.dumps({"config": {"data_dir": "/data/cifar", "workdir": str(seed_dir)}}))}
    np.savez_compressed(seed_dir / "kfold" / "kfold_probs.npz", **kfold_probs)
    unfinished = runs_root / "label_issues" / "worst" / "seed3"  # its folds were training: nothing of it collected
    unfinished.mkdir()
    (unfinished / "label_issues.png").write_bytes(b"\x89PNG not really")
    (runs_root / "crops_008" / "online_seed0").mkdir(parents=True)  # started by the queue, no generation finished
    (runs_root / "crops_008" / "log.txt").write_text("generation 1/3: training\n")
    results_root = tmp_path / "fresh" / "experiments" / "results"
    write_run(results_root / "part_two_online" / "online_seed0", [generation_row(1, 0.90)])
    done = subprocess.run(["bash", str(REPO_ROOT / "experiments" / "collect_part_three.sh"), str(runs_root),
                           str(results_root.relative_to(tmp_path))], cwd=tmp_path, env=script_environment(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{unfinished}: unfinished (no detection.json), not collected" in done.stderr
    copied = results_root / "part_three_label_issues"
    assert sorted(p.name for p in (copied / "worst").iterdir()) == ["drop_cleanlab_seed0", "relabel_refinery_seed0",
                                                                   "report", "seed0", "seed1", "seed2"]
    assert sorted(p.name for p in (copied / "worst" / "seed0").iterdir()) == [
        "detection.json", "detection.md", "kfold_probs.npz", "label_issues.png", "label_issues_top1000.csv"]
    with np.load(copied / "worst" / "seed0" / "kfold_probs.npz", allow_pickle=False) as copy:  # restorable as it was
        np.testing.assert_array_equal(copy["probs"], kfold_probs["probs"])
        np.testing.assert_array_equal(copy["ids"], kfold_probs["ids"])
        assert json.loads(str(copy["source"]))["config"] == {"data_dir": "<path>",
                                                             "workdir": "<runs_root>/label_issues/worst/seed0"}
    assert json.loads((copied / "worst" / "seed0" / "detection.json").read_text())["kfold"] == (
        "<runs_root>/label_issues/worst/seed0/kfold/p.npz")
    assert len((copied / "worst" / "seed0" / "label_issues_top1000.csv").read_text().splitlines()) == 1001
    assert_no_absolute_paths(copied)
    relabelled = json.loads((copied / "worst" / "relabel_refinery_seed0" / "results.json").read_text())
    assert relabelled["config"]["train_labels"] == "<train_labels_dir>/relabel_refinery.csv"  # the file's name kept
    text = (copied / "summary.md").read_text()
    assert "### worst: finding the known label errors (3 seeds;" in text
    assert ("| 1 | clean labels (Part two's generation 1) minus the noisy labels | flip-averaged | +20.00 (1) | "
            "0: +20.00 |") in text
    assert ("| 1 | the refinery's flags relabelled minus cleanlab's flags left out | flip-averaged | +3.00 (1) | "
            "0: +3.00 |") in text
    assert (copied / "summary.png").stat().st_size > 0 and (results_root / "part_three_headline.md").exists()
    assert not (results_root / "part_three_crops_008").exists()
