"""Runs guides as a notebook does and stores what they print and plot.

Each guide runs in a fresh interpreter, in a temporary working directory, one code cell after
another in one namespace, as "run all" does in Colab. Per cell it keeps the text the cell
printed (carriage returns and backspaces resolved as a terminal shows them, so Keras' progress
bars leave their last state) and every Matplotlib figure it drew (as `%matplotlib inline`
does). The outputs go into `guides/ipynb/<guide>.ipynb`, with a record of the run (date,
backend, versions, hardware, size, wall time) in the notebook's metadata, and
`guides/sync_notebooks.py` renders that notebook as `guides/md/<guide>.md`. A cell that raises
stops the run and nothing is written.

Usage:
    python guides/render_guides.py                       # every guide, at full size
    python guides/render_guides.py getting_started shampoo --backend jax
    python guides/render_guides.py gpt2_medium_matta --smoke   # toy sizes (KERAS_MATTA_SMOKE=1)
"""

import argparse
import base64
import contextlib
import datetime
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback

import sync_notebooks

BACKENDS = ("jax", "tensorflow", "torch")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run guides and store their outputs.")
    parser.add_argument("guides", nargs="*", help="guide names (default: every guide)")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"),
                        choices=BACKENDS)
    parser.add_argument("--smoke", action="store_true", help="run at toy sizes")
    parser.add_argument("--execute", help=argparse.SUPPRESS)  # internal: the child process
    parser.add_argument("--record", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute:
        return execute_cells(args.execute, args.record)
    paths = {sync_notebooks.guide_name(path): path for path in sync_notebooks.guide_paths()}
    unknown = sorted(set(args.guides) - set(paths))
    if unknown:
        parser.error(f"unknown guides {unknown}; the guides are {sorted(paths)}")
    status = 0
    for name in args.guides or sorted(paths):
        status |= render_guide(paths[name], args.backend, args.smoke)
    return status


def render_guide(path, backend, smoke):
    """Runs one guide in a child interpreter; on success stores its outputs. Returns 0 or 1."""
    name = sync_notebooks.guide_name(path)
    env = dict(os.environ, KERAS_BACKEND=backend, MPLBACKEND="Agg")
    env.pop("KERAS_MATTA_SMOKE", None)
    if smoke:
        env["KERAS_MATTA_SMOKE"] = "1"
    with tempfile.TemporaryDirectory(prefix=f"render_{name}_") as workdir:
        record_path = os.path.join(workdir, "record.json")
        print(f"{name}: running on {backend}{' at smoke size' if smoke else ''}", file=sys.stderr)
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--execute", path, "--record",
             record_path], cwd=workdir, env=env)
        if child.returncode:
            print(f"{name}: failed; nothing written", file=sys.stderr)
            return 1
        with open(record_path) as f:
            record = json.load(f)
    record["run"].update(backend=backend, smoke=smoke)
    notebook = with_outputs(sync_notebooks.notebook_for(path), record)
    with open(sync_notebooks.notebook_path(path), "w") as f:
        f.write(sync_notebooks.render(notebook))
    sync_notebooks.write_markdown(notebook, path)
    print(f"{name}: wrote {os.path.relpath(sync_notebooks.markdown_path(path))}", file=sys.stderr)
    return 0


def with_outputs(notebook, record):
    """The notebook with each code cell's recorded outputs, and the run in its metadata."""
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    if len(code) != len(record["cells"]):
        raise ValueError(f"record has {len(record['cells'])} cells for {len(code)} code cells")
    for count, (cell, outputs) in enumerate(zip(code, record["cells"]), start=1):
        cell.update(execution_count=count, outputs=outputs)
    notebook["metadata"][sync_notebooks.RUN_KEY] = record["run"]
    return notebook


def execute_cells(path, record_path):
    """The child process: runs the guide's code cells and writes the record."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    cells = [cell for cell in sync_notebooks.notebook_for(path)["cells"]
             if cell["cell_type"] == "code"]
    namespace = {"__name__": "__main__"}
    recorded = []
    started = time.perf_counter()
    for index, cell in enumerate(cells, start=1):
        outputs = CellOutputs()
        plt.show = lambda *args, outputs=outputs, **kwargs: outputs.add_figures(plt)
        cell_started = time.perf_counter()
        failed = False
        with contextlib.redirect_stdout(outputs.stream("stdout")), \
                contextlib.redirect_stderr(outputs.stream("stderr")):
            try:
                source = "".join(cell["source"])
                exec(compile(source, f"<{os.path.basename(path)} cell {index}>", "exec"),
                     namespace)
            except BaseException:
                failed = True
                traceback.print_exc()
        outputs.add_figures(plt)
        recorded.append(outputs.as_notebook())
        print(f"  cell {index}/{len(cells)}: {time.perf_counter() - cell_started:.1f} s",
              file=sys.stderr)
        if failed:  # the traceback is on the terminal already
            return 1
    run = dict(date=datetime.date.today().isoformat(),
               wall_time_s=round(time.perf_counter() - started, 1), **environment())
    with open(record_path, "w") as f:
        json.dump({"cells": recorded, "run": run}, f)
    return 0


class CellOutputs:
    """What one cell printed (stdout and stderr in the order they came) and plotted."""

    def __init__(self):
        self.outputs = []

    def stream(self, name):
        """A file for the cell's `name` stream; what it gets is also shown on the terminal,
        so a long cell shows its progress while it runs."""
        return _Stream(self.outputs, name)

    def add_figures(self, plt):
        for number in plt.get_fignums():
            figure = plt.figure(number)
            buffer = io.BytesIO()
            # Fixed metadata keeps the PNG bytes (and so the rendered file names) reproducible.
            figure.savefig(buffer, format="png", bbox_inches="tight",
                           metadata={"Software": None})
            plt.close(figure)
            self.outputs.append({
                "output_type": "display_data", "metadata": {},
                "data": {"image/png": base64.b64encode(buffer.getvalue()).decode(),
                         "text/plain": [f"<Figure {number}>"]},
            })

    def as_notebook(self):
        outputs = []
        for output in self.outputs:
            if output["output_type"] == "stream":
                text = terminal_text(output["raw"])
                if not text.strip():
                    continue
                output = {"output_type": "stream", "name": output["name"],
                          "text": text.splitlines(keepends=True)}
            outputs.append(output)
        return outputs


class _Stream(io.TextIOBase):
    def __init__(self, outputs, name):
        self._outputs, self._name = outputs, name

    def write(self, text):
        sys.__stderr__.write(text)
        last = self._outputs[-1] if self._outputs else None
        if last is not None and last.get("name") == self._name:
            last["raw"] += text
        else:
            self._outputs.append({"output_type": "stream", "name": self._name, "raw": text})
        return len(text)

    def flush(self):
        sys.__stderr__.flush()


# Colour and style escapes (Keras' progress bars use them): Markdown cannot show them.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def terminal_text(raw):
    """The text a terminal would show, without colours: "\\r" returns to the line's start and
    "\\b" steps back, so what a progress bar overwrote is gone."""
    lines = []
    for line in ANSI_ESCAPE.sub("", raw).split("\n"):
        shown, cursor = [], 0
        for char in line:
            if char == "\r":
                cursor = 0
            elif char == "\b":
                cursor = max(cursor - 1, 0)
            else:
                shown[cursor:cursor + 1] = [char]
                cursor += 1
        lines.append("".join(shown).rstrip())
    return "\n".join(lines)


def environment():
    """The versions and the hardware a run used; called after the guide imported its backend."""
    import keras

    import keras_matta

    backend = keras.config.backend()
    framework = importlib.import_module(backend)
    versions = [f"keras {keras.__version__}", f"{backend} {framework.__version__}",
                f"keras_matta {keras_matta.__version__}"]
    cpu = "CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    accelerators = [device for device in keras.distribution.list_devices()
                    if not device.lower().startswith("cpu")]
    hardware = f"{cpu} ({cores} cores), " + (
        ", ".join(accelerators) if accelerators else "no GPU or TPU")
    return {"versions": versions, "hardware": hardware}


if __name__ == "__main__":
    sys.exit(main())
