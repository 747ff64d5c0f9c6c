"""The inspection notebook runs top to bottom on the bundled data, so it cannot rot."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.bundled import BundledRun

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "inspect_dialogues.ipynb"


def _outputs(nb: nbformat.NotebookNode, kind: str) -> list[str]:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "stdout" and out.get("name") == "stdout":
                found.append(out["text"])
            elif kind in out.get("data", {}):
                found.append(out["data"][kind])
    return found


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(
        not c.get("outputs") and not c.get("execution_count")
        for c in nb.cells
        if c.cell_type == "code"
    )


def test_notebook_executes_on_the_bundled_data(bundled_run: BundledRun, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # As the README gives it: a path relative to the repository root, while Jupyter runs the
    # kernel in examples/.
    relative = os.path.relpath(bundled_run.stage_c, NOTEBOOK.parents[1])
    monkeypatch.setenv("CHATUMM_DATA_DIR", relative)
    monkeypatch.setenv("CHATUMM_N_DIALOGUES", "2")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the charts
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()  # the kernel inherits this process's environment, CHATUMM_* included
    html = "".join(_outputs(nb, "text/html"))
    assert html.count("turn 0 · user") >= 2  # two dialogues rendered as chat bubbles
    assert "data:image/jpeg;base64," in html  # with their images inline
    assert "distractor" in html and "dependency" in html
    assert _outputs(nb, "image/png"), "the task / depth / distractor charts"
    printed = "".join(_outputs(nb, "stdout"))
    assert f"reading {bundled_run.stage_c.resolve()}" in printed
    assert "--- prompt ---" in printed and "--- response ---" in printed
    assert "template/template-v1" in printed
