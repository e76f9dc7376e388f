"""README.md's Python API example runs as written (on a tiny image folder instead of DATA_DIR)."""

from __future__ import annotations

import re

from cli_runs import REPO_ROOT, write_image_folder


def python_block(heading: str) -> str:
    """The first ```python block after `heading` in README.md."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_example_runs(tmp_path, monkeypatch, capsys):
    data = write_image_folder(tmp_path / "data")
    code = python_block("## Python API").replace("DATA_DIR", str(data))
    code = code.replace('"preset": "tiny",', '"preset": "tiny", "train_size": 32, "val_size": 8, "batch_size": 8,')
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()  # the data's and the chain's log lines, then the example's
    rows = [line for line in printed if re.match(r"\d+ (ground truth|generation \d+) ", line)]
    assert rows[0].startswith("1 ground truth ") and rows[1].startswith("2 generation 1 ") and len(rows) == 2
    assert printed[-1] == f"({32}, 4) tiny_cnn"
    assert namespace["soft_labels"].shape == (32, 4)
    assert (tmp_path / "runs" / "api" / "checkpoints" / "finished").is_dir()
