"""guides/render_guides.py runs a guide as "run all" does and stores what it printed and drew.

A small guide written here is run by the renderer's child process; its record is compared with
what the cells were written to print, and the notebook and Markdown made from it with what
`sync_notebooks` derives from them.
"""

import base64
import json
import os
import subprocess
import sys

import pytest

GUIDES_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "guides")
sys.path.insert(0, GUIDES_DIR)
import render_guides  # noqa: E402
import sync_notebooks  # noqa: E402

GUIDE = '''"""
Title: A tiny guide
Author: tests
Date created: 2026/12/06
Last modified: 2026/12/06
Description: Prints, warns, draws.
Accelerator: None
"""

"""
## Printing
"""

import sys

value = 6 * 7
print("progress 1/2", end="\\r")
print("progress 2/2")
print("to stderr", file=sys.stderr)

"""
## Drawing
"""

import matplotlib.pyplot as plt

plt.plot([0, 1], [value, 0])
plt.show()
print("after the plot", value)
'''


def _run(tmp_path, guide_text):
    path = tmp_path / "tiny_guide.py"
    path.write_text(guide_text)
    record = tmp_path / "record.json"
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(GUIDES_DIR), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.run(
        [sys.executable, render_guides.__file__, "--execute", str(path), "--record",
         str(record)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return str(path), child, (json.loads(record.read_text()) if record.exists() else None)


@pytest.mark.backend_agnostic
def test_terminal_text_keeps_what_a_terminal_shows():
    assert render_guides.terminal_text("1/3 [=  ]\r2/3 [== ]\r3/3 [===]\ndone") == (
        "3/3 [===]\ndone")
    assert render_guides.terminal_text("loss: 2.1\b\b\b0.9  \nok") == "loss: 0.9\nok"
    assert render_guides.terminal_text("long line\rshort") == "shortline"
    assert render_guides.terminal_text("\x1b[1m63/63\x1b[0m \x1b[32m━━\x1b[0m") == "63/63 ━━"


@pytest.mark.slow
@pytest.mark.backend_agnostic
def test_a_guide_renders_with_its_printed_text_figures_and_run(tmp_path):
    path, child, record = _run(tmp_path, GUIDE)
    assert child.returncode == 0, child.stderr[-3000:]
    printing, drawing = record["cells"]
    assert printing == [
        {"output_type": "stream", "name": "stdout", "text": ["progress 2/2\n"]},
        {"output_type": "stream", "name": "stderr", "text": ["to stderr\n"]},
    ]
    # plt.show() draws where it is called, before what the cell prints next.
    figure, text = drawing
    assert base64.b64decode(figure["data"]["image/png"]).startswith(b"\x89PNG")
    assert text["text"] == ["after the plot 42\n"]
    run = record["run"]
    assert run["wall_time_s"] > 0 and run["versions"][0].startswith("keras ")

    record["run"].update(backend="jax", smoke=True)
    notebook = render_guides.with_outputs(sync_notebooks.notebook_for(path), record)
    assert [cell["execution_count"] for cell in notebook["cells"]
            if cell["cell_type"] == "code"] == [1, 2]
    markdown, images = sync_notebooks.markdown_for(notebook, "tiny_guide")
    (image, data), = images.items()
    assert data == base64.b64decode(figure["data"]["image/png"])
    assert markdown.index("progress 2/2") < markdown.index("## Drawing")
    assert markdown.index(f"![png]({image})") < markdown.index("after the plot 42")
    assert "at smoke size" in markdown and "`KERAS_BACKEND=jax`" in markdown

    # Editing one cell drops that cell's outputs only; the Markdown says it was not run.
    edited = tmp_path / "tiny_guide.py"
    edited.write_text(GUIDE.replace("plt.plot([0, 1]", "plt.plot([0, 2]"))
    synced = sync_notebooks.notebook_for(str(edited), notebook)
    code = [cell for cell in synced["cells"] if cell["cell_type"] == "code"]
    assert code[0]["outputs"] == printing and code[1]["outputs"] == []
    assert code[1]["execution_count"] is None
    assert "Not run since this cell changed" in sync_notebooks.markdown_for(synced, "x")[0]


@pytest.mark.slow
@pytest.mark.backend_agnostic
def test_a_failing_cell_stops_the_run_and_records_nothing(tmp_path):
    _, child, record = _run(tmp_path, GUIDE.replace("value = 6 * 7", "value = 6 / 0"))
    assert child.returncode == 1 and record is None
    assert "ZeroDivisionError" in child.stderr


@pytest.mark.backend_agnostic
def test_outputs_must_match_the_guides_code_cells(tmp_path):
    path = tmp_path / "tiny_guide.py"
    path.write_text(GUIDE)
    notebook = sync_notebooks.notebook_for(str(path))
    with pytest.raises(ValueError, match="record has 1 cells for 2 code cells"):
        render_guides.with_outputs(notebook, {"cells": [[]], "run": {}})


@pytest.mark.backend_agnostic
def test_an_unrendered_guide_says_how_to_render_it(tmp_path):
    path = tmp_path / "tiny_guide.py"
    path.write_text(GUIDE)
    markdown, images = sync_notebooks.markdown_for(sync_notebooks.notebook_for(str(path)), "t")
    assert "Not rendered yet: `python guides/render_guides.py t`" in markdown and not images
