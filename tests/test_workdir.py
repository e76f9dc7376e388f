"""lr_jax.workdir in-process: the recorded configuration checked on resuming, --overwrite's removals, the record's
data fingerprint and ResNet shortcut marker."""

import json
import os

import numpy as np
import pytest

from lr_jax import workdir
from lr_jax.data.splits import Splits


def tiny_splits(seed=0, num_train=8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_train + 4, 4, 4, 3), dtype=np.uint8)
    labels = np.arange(num_train + 4, dtype=np.int32) % 2
    return Splits(images[:num_train], labels[:num_train], images[num_train:], labels[num_train:], None, None,
                  ["a", "b"], np.full(3, 0.5, np.float32), np.full(3, 0.2, np.float32))


def record_of(**config):
    base = {"model": "tiny_cnn", "epochs": 2, "seed": 0, "generations": 2}
    return workdir.run_record({**base, **config}, tiny_splits())


def test_workdir_config_check(tmp_path):
    folder = str(tmp_path / "run")
    assert workdir.prepare_workdir(folder, record_of(), False, print) is False
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == "tiny_cnn"
    # The number of generations may change: the run resumes; so may run options that older records hold.
    same = record_of(workdir="elsewhere", generations=5, checkpoint_every=1, data_dir="/moved")
    assert workdir.prepare_workdir(folder, same, False, print) is True
    with pytest.raises(workdir.WorkdirError, match=r"different configuration \(epochs, model differ: "
                       r"epochs: workdir has 2, now 3; model: workdir has \"tiny_cnn\", now \"small_cnn\"\)"):
        workdir.prepare_workdir(folder, record_of(epochs=3, model="small_cnn"), False, print)
    other_data = workdir.run_record({"model": "tiny_cnn", "epochs": 2, "seed": 0}, tiny_splits(seed=1))
    with pytest.raises(workdir.WorkdirError, match=r"\(data differ"):
        workdir.prepare_workdir(folder, other_data, False, print)


def test_overwrite_removes_only_what_a_run_wrote(tmp_path):
    folder = tmp_path / "run"
    workdir.prepare_workdir(str(folder), record_of(), False, print)
    for name in ("results.json", "log.txt"):
        (folder / name).write_text("{}")
    (folder / "checkpoints" / "finished").mkdir(parents=True)
    (folder / "mine.txt").write_text("keep me")
    log = []
    workdir.prepare_workdir(str(folder), record_of(epochs=9), True, log.append)
    assert "--overwrite: removed" in log[0] and "checkpoints" in log[0]
    assert sorted(os.listdir(folder)) == ["config.json", "mine.txt"]
    assert json.loads((folder / "config.json").read_text())["epochs"] == 9


def test_run_record_marks_parameter_free_resnets():
    """Only `resnet<depth>` (option A shortcuts now, 1x1 projections in older workdirs) is marked, as either model."""
    assert record_of(model="resnet20")["resnet_shortcuts"] == "A"
    assert record_of(refinery_model="resnet56")["resnet_shortcuts"] == "A"
    for model in ("resnet20_proj", "small_cnn", "wrn16_4"):
        assert "resnet_shortcuts" not in record_of(model=model)


def test_check_same_data_compares_the_data_fingerprint(tmp_path):
    folder = str(tmp_path / "run")
    with pytest.raises(workdir.WorkdirError, match="no config.json or results.json"):
        workdir.check_same_data(folder, tiny_splits())
    workdir.prepare_workdir(folder, record_of(), False, print)
    workdir.check_same_data(folder, tiny_splits())
    with pytest.raises(workdir.WorkdirError, match=r"that run's data differ from this run's \(sha256"):
        workdir.check_same_data(folder, tiny_splits(seed=1))
    with pytest.raises(workdir.WorkdirError, match=r"\(num_train, sha256: it had \{num_train: 8, "):
        workdir.check_same_data(folder, tiny_splits(num_train=6))


def test_a_workdir_made_before_a_setting_existed_resumes_at_its_default():
    from lr_jax import workdir as workdir_lib
    from lr_jax.config import DEFAULTS

    recorded = {"model": "tiny_cnn", "epochs": 2}
    now = {"model": "tiny_cnn", "epochs": 2, "crop": DEFAULTS["crop"], "train_labels": None}
    assert workdir_lib.differing_keys(recorded, now) == []
    assert workdir_lib.differing_keys(recorded, {**now, "crop": "random_resized"}) == ["crop"]
