"""The Colab TPU notebooks: committed clean, and run end to end on CPU with a tiny setting injected (nbclient)."""

import ast
import json
import os
import pathlib
import sys

import numpy as np
import pytest

from lr_jax import config as config_lib
from lr_jax import report

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = {"cifar10": REPO_ROOT / "experiments" / "cifar10_colab_tpu.ipynb",
             "svhn": REPO_ROOT / "experiments" / "svhn_colab_tpu.ipynb"}
KERNEL_NAME = "lr-jax-tests"  # a kernelspec of our own, so the kernel is this interpreter whatever else is installed


def parameters_cell(notebook) -> int:
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def assignments(source: str) -> dict:
    """{name: literal value} of the top-level `NAME = literal` lines of a cell."""
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(source).body
            if isinstance(node, ast.Assign)}


@pytest.mark.parametrize("dataset", sorted(NOTEBOOKS))
def test_notebook_is_committed_clean_with_paper_defaults(dataset):
    notebook = nbformat.read(NOTEBOOKS[dataset], as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), "outputs committed"
    defaults = assignments(notebook.cells[parameters_cell(notebook)].source)
    assert defaults["PRESET"] == "paper" and defaults["PRESET"] in config_lib.PRESETS
    assert defaults["DATA_DIR"] is None  # TFDS
    assert defaults["REPO_URL"] == "" and isinstance(defaults["EXTRA_FLAGS"], list) and defaults["SEEDS"]
    sources = "\n".join(cell.source for cell in code)
    assert 'if importlib.util.find_spec("lr_jax") is None:' in sources and "pip install" in sources
    assert f'runner.run("{dataset}", flags)' in sources and "jax.devices()" in sources


def install_cell(notebook):
    cells = [cell for cell in notebook.cells if cell.cell_type == "code" and "pip install" in cell.source]
    assert len(cells) == 1, "expected one install cell"
    return cells[0]


@pytest.mark.parametrize("dataset", sorted(NOTEBOOKS))
def test_install_cell_runs_only_where_lr_jax_is_missing(dataset, monkeypatch):
    """The install cell as IPython runs it, with the shell commands recorded instead of run."""
    import importlib.util

    from IPython.core.inputtransformer2 import TransformerManager

    code = TransformerManager().transform_cell(install_cell(nbformat.read(NOTEBOOKS[dataset], as_version=4)).source)
    commands = []
    shell = type("Shell", (), {"system": lambda self, command: commands.append(command)})()

    def run_cell(repo_url):
        exec(code, {"REPO_URL": repo_url, "get_ipython": lambda: shell})

    run_cell("")  # lr_jax is importable here: nothing to do
    assert commands == []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "lr_jax" else real_find_spec(name, *args))
    with pytest.raises(ValueError, match="set REPO_URL in the parameters cell"):
        run_cell("")
    run_cell("https://example.org/lr_jax.git")
    assert commands[0].startswith("git clone") and "{REPO_URL}" in commands[0]  # IPython expands it
    assert any("pip install" in c and "requirements.txt" in c and '"jax[tpu]"' in c for c in commands)
    assert "pip install" in commands[-1] and "--no-deps" in commands[-1]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> pathlib.Path:
    """A tiny image-folder tree (train/ and test/, 3 classes of 16x16 PNGs, classes told apart by brightness)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 8)):
        for label in range(3):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (16, 16, 3)) + 80 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def kernel_environment(tmp_path_factory):
    """A kernelspec that starts this very interpreter, found first through JUPYTER_PATH; the kernel inherits
    PYTHONPATH (lr_jax from this checkout), the 4 simulated CPU devices of conftest.py, and a JAX compilation
    cache shared by the notebooks of this module (the second notebook then compiles little)."""
    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "lr_jax tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter_dir))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        patch.setenv("JAX_PLATFORMS", "cpu")
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax_cache")))
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        yield


def inject_parameters(notebook, values: dict) -> None:
    """Papermill's way: a cell tagged 'injected-parameters' right after the 'parameters' cell."""
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(parameters_cell(notebook) + 1, cell)


@pytest.mark.parametrize("dataset", sorted(NOTEBOOKS))
def test_notebook_runs_end_to_end_on_cpu(dataset, image_folder, kernel_environment, tmp_path):
    notebook = nbformat.read(NOTEBOOKS[dataset], as_version=4)
    workdir = tmp_path / "runs"
    inject_parameters(notebook, dict(
        PRESET="tiny", DATA_DIR=str(image_folder), WORKDIR=str(workdir), SEEDS=[0],
        EXTRA_FLAGS=["--no_progress", "--train_size", "96", "--val_size", "12", "--batch_size", "32"],
    ))
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name=KERNEL_NAME,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "4 devices: [CpuDevice(id=0)" in printed  # the kernel sees every simulated device
    payload = json.loads((workdir / "seed0" / "results.json").read_text())
    assert payload["config"]["dataset"] == dataset and payload["run"]["preset"] == "tiny"
    assert payload["complete"] and [g["generation"] for g in payload["generations"]] == [1, 2]
    assert payload["dataset"]["devices"] == 4 and payload["dataset"]["num_test"] == 24

    shown = [output.data for output in outputs if output.output_type == "display_data"]
    drawn = [name for name in report.PLOTS if name != "label_repair"]  # that one: runs on --train_labels only
    assert sum("image/png" in data for data in shown) == len(drawn)
    markdown = [data["text/markdown"] for data in shown if "text/markdown" in data]
    assert len(markdown) == 1 and f"# Label Refinery: {dataset}" in markdown[0]
    for name in drawn:
        assert (workdir / "report" / f"{name}.png").stat().st_size > 1000
