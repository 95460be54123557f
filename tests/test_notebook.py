"""notebooks/rank_vs_performance.ipynb runs top to bottom on the fixture sweep and draws its four figures."""

from __future__ import annotations

import os

import nbformat
from nbclient import NotebookClient

from peftlab import ROOT


def test_notebook_runs_on_fixture_sweep(monkeypatch):
    monkeypatch.setenv("PEFTLAB_SWEEP", str(ROOT / "tests" / "fixtures" / "sweep"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(ROOT / "notebooks" / "rank_vs_performance.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
                   ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 4
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "finished runs" in text and "best r=" in text and "parameters per unit of rank" in text
    assert os.environ["PEFTLAB_SWEEP"] in text
