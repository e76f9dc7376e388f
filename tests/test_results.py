"""lr_jax.results, lr_jax.provenance and lr_jax.portable: the metric registry's tables, code and library versions,
reading format-1 files, portable copies without absolute paths (and the committed results carrying none), and the
experiment scripts that use them."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from lr_jax import config as config_lib
from lr_jax import portable, provenance, report, results
from lr_jax.analysis import designs

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMITTED = REPO_ROOT / "experiments" / "results"
HAS_GIT = shutil.which("git") is not None


def git(root, *args) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def generation_row(generation, train=0.9, val=0.8, test=None, trained_on=None):
    return {"generation": generation, "model": "small_cnn",
            "trained_on": trained_on or ("ground truth" if generation == 1 else f"generation {generation - 1}"),
            "val_accuracy": val, "test_accuracy": test, "train_accuracy": train,
            "train_val_gap": train - val, "train_test_gap": None if test is None else train - test,
            "label_entropy": 0.5, "label_agreement": 0.95, "ensemble_val_accuracy": val,
            "ensemble_test_accuracy": test, "train_seconds": 12.0, "images_per_second": 480.0}


# The table and the registry.


def test_markdown_table_shows_the_registry_metrics_that_some_generation_has():
    table = results.markdown_table([generation_row(1), generation_row(2, train=0.85, val=0.86)])
    header, rule, first, second = table.splitlines()
    assert header == ("| gen | model | trained on | val acc % | train acc % | train-val gap (points) | "
                      "label entropy (nats) | label agreement % | ensemble val acc % | train s | images/s |")
    assert rule.count("---") == 11
    assert first == "| 1 | small_cnn | ground truth | 80.00 | 90.00 | +10.00 | 0.5000 | 95.00 | 80.00 | 12.0 | 480 |"
    assert second.startswith("| 2 | small_cnn | generation 1 | 86.00 | 85.00 | -1.00 |")
    with_test = results.markdown_table([generation_row(1, test=0.7)])
    assert "| test acc % |" in with_test and "| train-test gap (points) |" in with_test and "| +20.00 |" in with_test


def test_the_report_reads_the_same_registry():
    """One registry: unique keys of known kinds (test_chain checks it names exactly what the chain writes)."""
    keys = [key for key, _, _ in results.METRICS]
    assert len(set(keys)) == len(keys) and {kind for _, _, kind in results.METRICS} <= set(results.KIND_FORMATS)
    assert not hasattr(report, "METRICS") and not hasattr(results, "TABLE_COLUMNS")


# Code and library versions.


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_code_version_names_the_commit_and_whether_tracked_files_changed(tmp_path):
    repo = tmp_path / "repo"
    (repo / "lr_jax").mkdir(parents=True)
    (repo / "lr_jax" / "module.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    assert provenance.code_version(str(repo)) == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    (repo / "untracked.txt").write_text("not part of the code\n")
    assert provenance.code_version(str(repo))["dirty"] is False
    (repo / "lr_jax" / "module.py").write_text("x = 2\n")
    assert provenance.code_version(str(repo))["dirty"] is True
    # A folder inside some other repository (an installed copy in a venv under a checkout) is not that code.
    assert provenance.code_version(str(repo / "lr_jax")) == {"commit": None, "dirty": None}


def test_code_version_is_null_outside_git_and_without_git(tmp_path, monkeypatch):
    assert provenance.code_version(str(tmp_path)) == {"commit": None, "dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable anywhere
    assert provenance.code_version(str(REPO_ROOT)) == {"commit": None, "dirty": None}


@pytest.mark.skipif(not HAS_GIT or not (REPO_ROOT / ".git").exists()
                    or pathlib.Path(provenance.SOURCE_ROOT).resolve() != REPO_ROOT,
                    reason="not a git checkout, or lr_jax imported from an installed copy")
def test_results_payload_records_this_checkout_and_the_library_versions():
    import chex
    import flax
    import jax
    import jaxlib
    import optax
    import orbax.checkpoint

    payload = results.results_payload(config_lib.Config(), config_lib.RunOptions(), {"description": "d"},
                                      [generation_row(1)], True, 1.0)
    assert payload["results_format"] == results.RESULTS_FORMAT == 2
    assert payload["code"]["commit"] == git(REPO_ROOT, "rev-parse", "HEAD")
    assert isinstance(payload["code"]["dirty"], bool)
    assert payload["code"]["host"] == provenance.host()
    assert payload["versions"] == {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                                   "optax": optax.__version__, "orbax-checkpoint": orbax.checkpoint.__version__,
                                   "chex": chex.__version__, "numpy": np.__version__}
    assert provenance.library_versions(("numpy", "no-such-distribution-xyz")) == {
        "numpy": np.__version__, "no-such-distribution-xyz": None}


# Format 1 (results.json files written before results_format existed).


def format_one_payload(workdir="/work/runs/small3/refinery_seed0"):
    """A results.json as the code before format 2 wrote it (the committed ones looked like this)."""
    rows = []
    for generation, (train, val) in enumerate(((0.70, 0.67), (0.65, 0.645)), start=1):
        rows.append({"generation": generation, "val_accuracy": val, "test_accuracy": None, "train_accuracy": train,
                     "train_test_gap": train - val, "label_entropy": 1.0, "label_agreement": train,
                     "ensemble_val_accuracy": val, "ensemble_test_accuracy": None, "model": "resnet20",
                     "trained_on": "ground truth" if generation == 1 else "generation 1",
                     "train_seconds": 100.0, "images_per_second": 400.0, "epochs": []})
    config = dict(dataclasses_config(), model="resnet20", data_dir="/work/data", workdir=workdir,
                  cache_dir="/work/lrcache")
    source = "image folder tree /work/data (decoded arrays from cache /work/lrcache/cifar10-6c60.npz)"
    return {"config": config, "dataset": {"description": f"{source}: 10000 train", "source": source},
            "complete": True, "wall_seconds": 519.0, "session_wall_seconds": 519.0, "generations": rows}


def dataclasses_config():
    import dataclasses

    return dataclasses.asdict(config_lib.Config(generations=2))


def test_format_one_is_upgraded_on_reading(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(format_one_payload()))
    payload = results.load_results(str(tmp_path))
    assert payload["results_format"] == 2 and payload["code"] is None and payload["versions"] is None
    first, second = payload["generations"]
    assert first["train_val_gap"] == pytest.approx(0.03) and first["train_test_gap"] is None
    assert first["label_agreement"] == 0.70  # generation 1 trained on ground truth: the train accuracy, as now
    assert second["label_agreement"] is None  # format 1 did not measure agreement with the teacher's labels
    assert payload["config"]["model"] == "resnet20_proj" and second["model"] == "resnet20_proj"
    assert payload["config"]["refinery_model"] is None
    # Format 1 kept the run options inside config: they move to run.
    assert set(payload["config"]) == set(config_lib.CONFIG_FIELDS)
    assert payload["run"] == {"data_dir": "/work/data", "workdir": "/work/runs/small3/refinery_seed0",
                              "cache_dir": "/work/lrcache"}
    current = results.results_payload(config_lib.Config(), config_lib.RunOptions(), {}, [generation_row(1)], True,
                                      1.0)
    assert results.upgrade_payload(current) is current  # the current format is left alone


# Portable copies.


def test_strip_paths_replaces_config_folders_and_any_other_absolute_path():
    placeholders = portable.path_placeholders({"data_dir": "/work/data", "workdir": "/work/runs/a/", "cache_dir":
                                              "relative/cache", "refinery_workdir": None})
    assert placeholders == [("/work/runs/a", "<workdir>"), ("/work/data", "<data_dir>")]
    text = ("read /work/data (cache /work/lrcache/c.npz) into /work/runs/a/checkpoints/1; not /work/data2/x; "
            "'/root/x/y' and /tmp/lr_jax_abc/d; epoch 1/6, 480 images/s, T-shirt/top, /usr/share/datasets/f")
    assert portable.strip_paths(text, placeholders) == (
        "read <data_dir> (cache <path>) into <workdir>/checkpoints/1; not <path>; '<path>' and <path>; "
        "epoch 1/6, 480 images/s, T-shirt/top, /usr/share/datasets/f")


def write_format_one_run(folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir(parents=True)
    payload = format_one_payload(workdir=str(folder))
    (folder / "results.json").write_text(json.dumps(payload, indent=2))
    (folder / "results.md").write_text(f"# old table\n\n{payload['dataset']['description']}\n")
    (folder / "log.txt").write_text(f"read cifar10 with reader: {payload['dataset']['source']}\n"
                                    f"config: {{'data_dir': '/work/data', 'workdir': '{folder}'}}\n"
                                    f"wall time 519.0 s; results in {folder}/results.json\n")
    np.savez_compressed(folder / "labels_summary.npz", generations=np.array([1, 2]))
    return folder


def assert_no_absolute_paths(folder: pathlib.Path) -> None:
    """No absolute path of a machine in `folder`'s text files, nor in the strings of its .npz archives."""
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".txt", ".csv", ".npz"):
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    arrays = [archive[name] for name in archive.files]  # each read (decompressed) once
                text = "\n".join(str(value) for array in arrays if array.dtype.kind == "U" for value in array.ravel())
            else:
                text = path.read_text()
            assert portable.ABSOLUTE_PATH.findall(text) == [], path
            for root in ("/work/", "/tmp/", "/root", str(REPO_ROOT)):
                assert root not in text, (path, root)


def test_copy_portable_writes_current_format_without_paths(tmp_path):
    run = write_format_one_run(tmp_path / "abs" / "refinery_seed0")
    dest = tmp_path / "copy"
    written = portable.copy_portable(str(run), str(dest))
    assert sorted(pathlib.Path(p).name for p in written) == ["labels_summary.npz", "log.txt", "results.json",
                                                             "results.md"]
    assert_no_absolute_paths(dest)
    payload = json.loads((dest / "results.json").read_text())
    assert payload["results_format"] == 2
    assert (payload["run"]["data_dir"], payload["run"]["workdir"], payload["run"]["cache_dir"]) == (
        "<data_dir>", "<workdir>", "<cache_dir>")
    assert payload["dataset"]["source"] == "image folder tree <data_dir> (decoded arrays from cache <cache_dir>/cifar10-6c60.npz)"
    assert "results in <workdir>/results.json" in (dest / "log.txt").read_text()
    assert "| train-val gap (points) |" in (dest / "results.md").read_text()
    assert (dest / "labels_summary.npz").read_bytes() == (run / "labels_summary.npz").read_bytes()
    # In place, and again: nothing left to change.
    portable.copy_portable(str(run), str(run))
    assert_no_absolute_paths(run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    portable.copy_portable(str(run), str(run))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_copy_command_line_names_a_bad_run(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"config": {"dataset": "cifar10"}}))
    with pytest.raises(SystemExit) as exit_info:
        portable.main([str(tmp_path), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert f"{tmp_path / 'results.json'}: no 'config' object with 'dataset' and 'seed'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_committed_results_are_current_and_carry_no_absolute_paths():
    runs = sorted(path.parent for path in COMMITTED.rglob("results.json"))
    assert len(runs) >= 32
    for run in runs:
        with open(run / "results.json") as f:
            assert json.load(f)["results_format"] == results.RESULTS_FORMAT, run
    assert_no_absolute_paths(COMMITTED)


# The experiment scripts, as on a fresh clone.


def script_environment(tmp_path):
    """PATH with `python` = this interpreter, lr_jax importable from this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # a venv's python via a link
    (bin_dir / "python").chmod(0o755)  # would not find its venv, so exec it by its own path
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))


def test_collect_results_copies_runs_without_paths_and_reports(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        config = config_lib.Config(model="small_cnn", generations=2, seed=seed)
        run = config_lib.RunOptions(data_dir=str(tmp_path / "data"), workdir=str(runs / f"refinery_seed{seed}"),
                                    cache_dir=str(tmp_path / "cache"))
        info = {"description": f"image folder tree {tmp_path / 'data'}", "devices": 1, "platform": "cpu"}
        rows = [generation_row(1), generation_row(2, train=0.8, val=0.78)]
        results.write_results(run.workdir, results.results_payload(config, run, info, rows, True, 10.0))
        (runs / f"refinery_seed{seed}" / "log.txt").write_text(f"resuming the run in {run.workdir}\n")
        count = 4
        splits = types.SimpleNamespace(train_images=np.zeros((count, 8, 8, 3), np.uint8),
                                       train_labels=np.arange(count) % 3, class_names=["a", "b", "c"])
        chain = [types.SimpleNamespace(generation=g, soft_labels=np.full((count, 3), 1 / 3)) for g in (1, 2)]
        results.write_label_summary(run.workdir, splits, chain)
    dest = tmp_path / "fresh_clone" / "experiments" / "results" / "design"
    environment = script_environment(tmp_path)

    def collect():
        return subprocess.run(["bash", str(REPO_ROOT / "experiments" / "collect_results.sh"), str(runs),
                               str(dest.relative_to(tmp_path))],
                              cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)

    done = collect()
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in dest.iterdir()) == ["refinery_seed0", "refinery_seed1", "report"]
    assert (dest / "refinery_seed1" / "log.txt").read_text() == "resuming the run in <workdir>\n"
    assert "| small_cnn, precomputed | 80.00 ± 0.00 (2) | 78.00 ± 0.00 (2) |" in (
        dest / "report" / "summary.md").read_text()
    assert_no_absolute_paths(dest)

    # A fresh machine that has only seed 1's run: the report still covers both collected seeds.
    shutil.rmtree(runs / "refinery_seed0")
    again = collect()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "| small_cnn, precomputed | 80.00 ± 0.00 (2) | 78.00 ± 0.00 (2) |" in (
        dest / "report" / "summary.md").read_text()


def test_controls_resume_from_collected_copies_on_a_fresh_machine(tmp_path):
    """online_controls.sh with COLLECTED (the committed copies of collect_results.sh) on an empty runs folder: runs
    collected with all their generations are not trained again, the chain's generation 1 is retrained only for a
    control still to run (or NEED_CHAIN=1), matched_smoothing.json comes from the copies, and collecting again keeps
    the longer copy of the chain, or replaces a shorter copy with the longer run, after checking that the
    generations both hold agree (exit 3, nothing copied, when they do not)."""
    from cli_runs import write_image_folder

    data_dir = write_image_folder(tmp_path / "data")
    flags = ["--data_dir", str(data_dir), "--model", "tiny_cnn", "--batch_size", "8", "--val_size", "8",
             "--train_size", "32", "--eval_batch_size", "16", "--epochs", "1"]
    env = dict(script_environment(tmp_path), GENERATIONS="2",
               CONTROLS="matched_smoothing precomputed compute_matched")
    script = str(REPO_ROOT / "experiments" / "online_controls.sh")

    def controls(**extra):
        done = subprocess.run(["bash", script, "runs", "0", *flags], cwd=tmp_path, env=dict(env, **extra),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        return done.stdout

    def collect():
        return subprocess.run(["bash", str(REPO_ROOT / "experiments" / "collect_results.sh"), "runs", "copies",
                               "online_seed0"],
                              cwd=tmp_path, env=dict(env, FIRST="online"), capture_output=True, text=True,
                              timeout=300)

    def generations(path):
        with open(tmp_path / path / "results.json") as f:
            return json.load(f)["generations"]

    first = controls()
    assert first.count(": finished after ") == 4, first  # chain, matched smoothing, precomputed, compute-matched
    assert collect().returncode == 0
    assert sorted(p.name for p in (tmp_path / "copies").iterdir()) == sorted([
        "matched_smoothing.json", "matched_smoothing_seed0.json", "matched_smoothing_seed0", "online_seed0",
        "precomputed_seed0", "compute_matched_seed0", "report"])
    assert len(generations("copies/online_seed0")) == 2

    # A copy collected while the chain was at generation 1 is replaced by the longer run when they agree, and
    # refused (exit 3, nothing copied) when they do not.
    copy_record = tmp_path / "copies" / "online_seed0" / "results.json"
    record = json.loads(copy_record.read_text())
    copy_record.write_text(json.dumps(dict(record, generations=record["generations"][:1])))
    longer = collect()
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "replaced copies/online_seed0/results.json (1 generations; the run has 2, and the 1 both hold agree)" \
        in longer.stdout
    assert generations("copies/online_seed0") == record["generations"]
    tampered = dict(record, generations=[dict(record["generations"][0], val_accuracy=0.5)])
    copy_record.write_text(json.dumps(tampered))
    refused = collect()
    assert refused.returncode == 3 and "not the same computation (delete the copy" in refused.stderr, \
        refused.stderr[-3000:]
    assert json.loads(copy_record.read_text()) == tampered  # not overwritten
    copy_record.write_text(json.dumps(record))

    # A fresh machine: the runs are gone, the copies committed. One control is still to run, with the copies'
    # smoothing (changed here so that its origin shows).
    shutil.rmtree(tmp_path / "runs")
    shutil.rmtree(tmp_path / "copies" / "matched_smoothing_seed0")
    matched = json.loads((tmp_path / "copies" / "matched_smoothing.json").read_text())
    (tmp_path / "copies" / "matched_smoothing.json").write_text(json.dumps(dict(matched, smoothing_crops=0.123)))
    second = controls(COLLECTED="copies")
    assert "runs/precomputed_seed0: collected in copies, not trained again" in second
    assert "runs/compute_matched_seed0: collected in copies, not trained again" in second
    assert "runs/online_seed0: finished" in second and "1 generation(s), generation 1 val" in second, second
    assert "runs/matched_smoothing_seed0: finished" in second and second.count(": started") == 2, second
    with open(tmp_path / "runs" / "matched_smoothing_seed0" / "config.json") as f:
        assert json.load(f)["label_smoothing"] == 0.123
    retrained = generations("runs/online_seed0")
    assert len(retrained) == 1 and retrained[0]["val_accuracy"] == generations("copies/online_seed0")[0][
        "val_accuracy"]  # the same seed trained the same generation 1

    collected = collect()
    assert collected.returncode == 0, collected.stderr[-3000:]
    assert "kept copies/online_seed0/results.json (2 generations; the run has 1, and the 1 both hold agree)" in collected.stdout
    assert len(generations("copies/online_seed0")) == 2 and (tmp_path / "copies" / "matched_smoothing_seed0").is_dir()

    third = controls(COLLECTED="copies")  # everything collected: nothing trains
    assert ": started" not in third and third.count("not trained again") == 4, third

    # Generation 1 retrained only for others (the run has 1 generation, the copy 2) on a machine whose numerics
    # differ: the longer copy is kept, with a warning. The same difference where the run is as long is refused.
    copy_record = tmp_path / "copies" / "online_seed0" / "results.json"
    record = json.loads(copy_record.read_text())
    other_machine = json.loads(json.dumps(record))
    other_machine["generations"][0]["val_accuracy"] += 0.01
    copy_record.write_text(json.dumps(other_machine))
    kept = collect()
    assert kept.returncode == 0 and "kept copies/online_seed0/results.json (2 generations; the run has 1, retrained" \
        in kept.stderr and "another machine's numerics" in kept.stderr, kept.stderr[-3000:]
    assert json.loads(copy_record.read_text()) == other_machine
    copy_record.write_text(json.dumps(dict(other_machine, generations=other_machine["generations"][:1])))
    refused = collect()
    assert refused.returncode == 3 and "not the same computation" in refused.stderr, refused.stderr[-3000:]
    copy_record.write_text(json.dumps(record))

    # Only the compute-matched run (which reuses nothing of the chain) to train: the chain is not retrained.
    shutil.rmtree(tmp_path / "runs")
    shutil.rmtree(tmp_path / "copies" / "compute_matched_seed0")
    fourth = controls(COLLECTED="copies")
    assert fourth.count(": started") == 1 and "runs/compute_matched_seed0: finished" in fourth, fourth
    assert generations("runs/compute_matched_seed0") and not (tmp_path / "runs" / "online_seed0").exists()
    with open(tmp_path / "runs" / "compute_matched_seed0" / "config.json") as f:
        assert json.load(f)["epochs"] == 2  # 2 generations x the chain's 1 epoch, read from its collected copy

    # Everything collected, but label_issues.sh needs the chain's checkpoint (NEED_CHAIN=1): generation 1 alone.
    assert collect().returncode == 0
    shutil.rmtree(tmp_path / "runs")
    fifth = controls(COLLECTED="copies", NEED_CHAIN="1")
    assert fifth.count(": started") == 1 and "runs/online_seed0: finished" in fifth, fifth
    assert (tmp_path / "runs" / "online_seed0" / "checkpoints" / "finished" / "1").is_dir()
    assert [row["val_accuracy"] for row in generations("runs/online_seed0")] == [retrained[0]["val_accuracy"]]

    # A machine whose numerics differ (simulated by the copy's generation 1 differing), with a control that reuses
    # the chain still to run: the whole chain is trained again here, says why, and replaces the copy; a rerun of the
    # controls trains nothing more.
    assert collect().returncode == 0
    shutil.rmtree(tmp_path / "runs")
    shutil.rmtree(tmp_path / "copies" / "precomputed_seed0")
    copy_record = tmp_path / "copies" / "online_seed0" / "results.json"
    copy_record.write_text(json.dumps(dict(record, generations=[dict(record["generations"][0], val_accuracy=0.5),
                                                                 *record["generations"][1:]])))
    sixth = controls(COLLECTED="copies")
    assert "runs/online_seed0: generation 1 retrained on this machine ({'cpu'" in sixth, sixth
    assert "differs from its collected copy (generation 1: the run" in sixth and "the copy 0.5)" in sixth, sixth
    assert sixth.count(": started") == 3, sixth  # generation 1, the whole chain (generation 2), precomputed
    assert (tmp_path / "runs" / "online_seed0" / "replaces_collected_copy.txt").read_text().startswith(
        "generation 1 retrained on this machine")
    assert [row["val_accuracy"] for row in generations("runs/online_seed0")] == [
        row["val_accuracy"] for row in record["generations"]]  # this machine's chain: the original numbers here
    replaced = collect()
    assert replaced.returncode == 0 and "replaced copies/online_seed0/results.json (2 generations) with the run (2)" \
        in replaced.stdout, (replaced.stdout + replaced.stderr)[-3000:]
    assert generations("copies/online_seed0") == generations("runs/online_seed0")
    assert ": started" not in controls(COLLECTED="copies")

    # A chain collected part-way on another machine (its copy: generation 1 only, differing): trained whole here, it
    # replaces the copy.
    shutil.rmtree(tmp_path / "runs")
    partial = json.loads(copy_record.read_text())
    copy_record.write_text(json.dumps(dict(partial, generations=[dict(partial["generations"][0], val_accuracy=0.5)])))
    seventh = controls(COLLECTED="copies")
    assert seventh.count(": started") == 1 and "runs/online_seed0: finished" in seventh, seventh
    why = (tmp_path / "runs" / "online_seed0" / "replaces_collected_copy.txt").read_text()
    assert "where its copy collected part-way differs (generation 1: the run" in why and "\n" not in why.strip()
    assert why.strip() in seventh and why.strip() in (tmp_path / "runs" / "log.txt").read_text()  # said, and logged
    assert collect().returncode == 0 and generations("copies/online_seed0") == generations("runs/online_seed0")


def test_variants_script_passes_flags_through_and_logs_where_it_says(tmp_path):
    """The first variant starts (and here stops at once: bad data) with its output in RUNS_DIR/log.txt, the extra
    flags reach the runner (last, so they override), and the terminal gets a progress line per run."""
    done = subprocess.run(["bash", str(REPO_ROOT / "experiments" / "variants_cpu.sh"), str(tmp_path / "no_data"),
                           "fresh/runs/variants", "--cache_dir", str(tmp_path / "cache"), "--epochs", "0"],
                          cwd=tmp_path, env=script_environment(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]  # the runner's exit status for bad input, not bash's 1
    log = (tmp_path / "fresh" / "runs" / "variants" / "log.txt").read_text()
    assert "--epochs must be at least 1, got 0" in log  # the extra flag overrode the script's --epochs 6
    assert "fresh/runs/variants/precomputed: started" in done.stdout
    assert "fresh/runs/variants/precomputed: stopped with exit status 2" in done.stdout


def test_part_two_scripts_run_every_design_and_report_it(tmp_path):
    """experiments/part_two.sh on a tiny image folder (1 epoch, 2 generations): every design's runs, the controls'
    settings, generation 1 shared by the chain and its ground-truth control, and the report's pairings."""
    from cli_runs import write_image_folder

    data_dir = write_image_folder(tmp_path / "data")
    flags = ["--data_dir", str(data_dir), "--model", "tiny_cnn", "--batch_size", "8", "--val_size", "8",
             "--train_size", "32", "--eval_batch_size", "16", "--epochs", "1"]
    env = dict(script_environment(tmp_path), SEEDS="0", GENERATIONS="2", CONVERGED_EPOCHS="2")
    done = subprocess.run(["bash", str(REPO_ROOT / "experiments" / "part_two.sh"), "runs", *flags], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stderr + (tmp_path / "runs" / "online" / "log.txt").read_text())[-3000:]
    finished = [line for line in done.stdout.splitlines() if ": finished after " in line]
    assert len(finished) == 8, done.stdout  # online: chain + 4 controls; stronger: 1; converged: chain + 1 control
    assert any("runs/online/online_seed0: finished" in line and "2 generation(s), generation 2 val " in line
               for line in finished), done.stdout

    def payload(run):
        with open(tmp_path / "runs" / run / "results.json") as f:
            return json.load(f)

    online, truth = payload("online/online_seed0"), payload("online/ground_truth_seed0")
    assert [g["trained_on"] for g in online["generations"]] == ["ground truth", "generation 1"]
    assert online["config"]["label_mode"] == "online" and truth["config"]["label_mode"] == "ground_truth"
    assert [g["trained_on"] for g in truth["generations"]] == ["ground truth", "ground truth"]
    assert truth["generations"][0]["val_accuracy"] == online["generations"][0]["val_accuracy"]  # the copied gen 1
    with open(tmp_path / "runs" / "online" / "matched_smoothing.json") as f:
        matched = json.load(f)
    assert payload("online/matched_smoothing_seed0")["config"]["label_smoothing"] == round(matched["smoothing_crops"], 3)
    distilled = payload("online/distillation_seed0")
    assert (distilled["config"]["temperature"], distilled["config"]["gt_weight"]) == (4.0, 0.5)
    assert "reused" in distilled["generations"][0]["trained_on"] and len(distilled["generations"]) == 2
    assert online["config"]["epochs"] == 1  # the flags' schedule: online_controls.sh sets none without EPOCHS
    assert payload("online/compute_matched_seed0")["config"]["epochs"] == 2  # 2 generations x 1 epoch
    stronger = payload("stronger/online_seed0")
    assert stronger["config"]["refinery_workdir"].endswith("compute_matched_seed0")
    assert stronger["generations"][0]["val_accuracy"] == payload("online/compute_matched_seed0")["generations"][0][
        "val_accuracy"]
    assert payload("converged/online_seed0")["config"]["epochs"] == 2
    assert len(payload("converged/ground_truth_seed0")["generations"]) == 2

    done = subprocess.run(["bash", str(REPO_ROOT / "experiments" / "collect_part_two.sh"), "runs", "results"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    dest = tmp_path / "results" / "part_two_online"
    summary = (dest / "report" / "summary.md").read_text()
    flip = ", flip-averaged evaluation"  # the cpu preset's
    assert f"Reference: tiny_cnn, independent ground-truth models{flip}." in summary
    assert f"| tiny_cnn, online{flip} | validation | reference gen k, same seed |" in summary
    assert f"| tiny_cnn, online{flip} | validation | ensembles of gens 1..k" in summary
    assert summary.index("## tiny_cnn, online") < summary.index("## tiny_cnn, independent ground-truth models")
    # The stronger refinery's student, paired with design 1's ground-truth model of the same initialisation.
    stronger = (tmp_path / "results" / "part_two_stronger" / "report" / "summary.md").read_text()
    assert f"| tiny_cnn, online, reused refinery{flip} | validation | reference gen k, same seed |" in stronger
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "part_two_converged", "part_two_headline.md", "part_two_headline.png", "part_two_online", "part_two_stronger"]
    assert_no_absolute_paths(tmp_path / "results")
    # The headline subtracts, seed by seed, the partner's generation: here the compute-matched run minus the chain's
    # last generation, and the converged chain's plain accuracy minus its ground-truth models'.
    headline = (tmp_path / "results" / "part_two_headline.md").read_text().splitlines()
    compute = payload("online/compute_matched_seed0")["generations"][0]["val_accuracy"]
    expected = results.format_metric(compute - online["generations"][1]["val_accuracy"], "points")
    row = next(line for line in headline if "compute-matched ground truth minus the chain's last" in line)
    assert row.split(" | ")[3:5] == ["-", f"{expected} (1)"], row  # generation 2 is the chain's last here
    plain = [payload(f"converged/{name}_seed0")["generations"][1]["val_accuracy_no_flip"]
             for name in ("online", "ground_truth")]
    row = next(line for line in headline if "3 | online chain minus independent ground-truth models | without flip" in line
               or "converged teacher" in line and "| without flip |" in line)
    assert f"gen 2: 0: {results.format_metric(plain[0] - plain[1], 'points')}" in row, row


def test_host_reads_the_cpu_model_and_its_vector_extensions(tmp_path):
    """Two machines that differ in these can train different models from one seed: results.json names them."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some EPYC\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n\n"
                       "processor\t: 1\nmodel name\t: Some EPYC\nflags\t\t: fpu\n")
    read = provenance.host(str(cpuinfo))
    assert read["cpu"] == "Some EPYC" and read["isa"] == ["sse4_2", "avx", "avx2", "fma", "avx512f"]
    assert read["cpus"] == os.cpu_count()
    missing = provenance.host(str(tmp_path / "absent"))  # not Linux: no error, the fields it cannot read are None
    assert missing["isa"] is None and missing["cpus"] == os.cpu_count()


def test_results_record_the_code_the_run_started_with(monkeypatch):
    """The runner takes code_version() once, at its start: a commit made during a long run is not the run's code."""
    started_with = {"commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(provenance, "code_version", lambda *args: {"commit": "b" * 40, "dirty": True})
    config, run = config_lib.Config(), config_lib.RunOptions()
    assert results.results_payload(config, run, {}, [], False, 1.0, code=started_with)["code"] == started_with
    assert results.results_payload(config, run, {}, [], False, 1.0)["code"]["commit"] == "b" * 40


def test_part_two_table_names_a_folder_without_runs(tmp_path, capsys):
    from lr_jax.experiments import part_two_table

    (tmp_path / "online" / "notes").mkdir(parents=True)
    with pytest.raises(SystemExit) as stop:
        part_two_table.main([str(tmp_path)])
    assert stop.value.code == 2
    assert f"{tmp_path}: no run folders <name>_seed<S> with results.json" in capsys.readouterr().err


def test_part_three_script_gives_the_crop_designs_their_epochs(tmp_path):
    """part_three.sh trains the crop designs for CROP_EPOCHS (default designs.CROP_EPOCHS, 24) and the label sets at
    the preset's schedule; EPOCHS (a smaller trial) and the caller's flags still override it. The runner is a
    stand-in that records its flags and writes a results.json with the epochs it was given, so that no model is
    trained."""
    env = script_environment(tmp_path)
    calls = tmp_path / "calls.txt"
    (tmp_path / "bin" / "python").write_text(f"""#!/bin/bash
if [ "$1 $2" = "-m lr_jax.experiments.cifar10" ]; then
  echo "$*" >> "{calls}"
  workdir=${{@: -1}}; mkdir -p "$workdir/checkpoints/finished/1"
  epochs=$(echo "$*" | grep -o -- '--epochs [0-9]*' | tail -1 | cut -d' ' -f2)
  echo "{{\\"config\\": {{\\"epochs\\": ${{epochs:-12}}}}, \\"generations\\": []}}" > "$workdir/results.json"
  exit 0
fi
[ "$1 $2" = "-m lr_jax.experiments.crop_confidence" ] && exit 0  # the mechanism, measured on the refinery
exec "{sys.executable}" "$@"
""")
    (tmp_path / "runs" / "labels").mkdir(parents=True)
    (tmp_path / "runs" / "labels" / "worse_label.csv").write_text("index,label\n")
    script = str(REPO_ROOT / "experiments" / "part_three.sh")

    def epochs_by_design(*flags, **extra):
        calls.unlink(missing_ok=True)
        done = subprocess.run(["bash", script, "runs", "--data_dir", "/d", *flags], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env=dict(env, SEEDS="0", DESIGNS="crops_008 crops_035 aggre",
                                                               **extra))
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        found = {}
        for line in calls.read_text().splitlines():
            design = line.split("--workdir runs/")[1].split("/")[0]
            epochs = [word for previous, word in zip(line.split(), line.split()[1:]) if previous == "--epochs"]
            found.setdefault(design, set()).add(epochs[-1] if epochs else "preset")
            if design.startswith("crops"):
                assert "--crop random_resized --crop_scale " + ("0.08,1" if design == "crops_008" else "0.35,1") in line
        return found

    crop_epochs = str(designs.CROP_EPOCHS)  # the default, read from the headline row that states it
    assert epochs_by_design() == {"crops_008": {crop_epochs}, "crops_035": {crop_epochs}, "aggre": {"preset"}}
    assert epochs_by_design(CROP_EPOCHS="18") == {"crops_008": {"18"}, "crops_035": {"18"}, "aggre": {"preset"}}
    assert epochs_by_design(EPOCHS="2") == {"crops_008": {"2"}, "crops_035": {"2"}, "aggre": {"2"}}
    assert epochs_by_design("--epochs", "3") == {"crops_008": {"3"}, "crops_035": {"3"}, "aggre": {"3"}}
