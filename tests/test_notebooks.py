"""The Colab notebooks run top to bottom (smoke size, CPU) and are stored without outputs."""

import os
import sys

import pytest

COLAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colab")
NOTEBOOKS = ["quickstart.ipynb", "finetune_qwen2_5_vl.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The kernel is this interpreter (its kernelspec runs `python` from PATH), on CPU, at the
    # smoke size, writing under tmp_path.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("VLMM_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("VLMM_NOTEBOOK_DIR", str(tmp_path))
    nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": COLAB}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    if name == "quickstart.ipynb":
        images = [
            o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
        ]
        assert len(images) >= 3  # the two plots and the frames of the inspected answers
        assert os.path.exists(tmp_path / "vlmm_quickstart" / "results.json")
    else:
        assert os.path.exists(tmp_path / "vlmm_finetune" / "grpo_hf" / "tokenizer.json")
