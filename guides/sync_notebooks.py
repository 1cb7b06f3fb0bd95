"""Generates each keras.io-format guide `guides/<guide>.py`'s notebook and rendered Markdown.

A guide is a Python script: a header docstring (`Title:`, `Author:`, `Date created:`,
`Last modified:`, `Description:`, `Accelerator:`), then prose in triple-quoted string blocks
between code. Each prose block becomes a Markdown cell, each code run a code cell, and an
"Open in Colab" badge pointing at the notebook follows the title.

- `guides/ipynb/<guide>.ipynb`: the notebook. The outputs of a run
  (`guides/render_guides.py` executes the guide and stores them) stay with every code cell whose
  source is unchanged, with what was run, where and how long in the notebook's metadata.
- `guides/md/<guide>.md`: the notebook rendered as Markdown, outputs and plots included (the
  plots as PNG files under `guides/md/img/<guide>/`, named by their content).

Usage:
    python guides/sync_notebooks.py          # rewrite every notebook and its Markdown
    python guides/sync_notebooks.py --check  # exit 1 if any of them is out of date
"""

import argparse
import base64
import hashlib
import json
import os
import re
import sys

GUIDES_DIR = os.path.dirname(os.path.abspath(__file__))
NOTEBOOK_DIR = os.path.join(GUIDES_DIR, "ipynb")
MARKDOWN_DIR = os.path.join(GUIDES_DIR, "md")
# The scripts in guides/ that make the guides' other forms, not guides themselves.
TOOLS = ("sync_notebooks.py", "render_guides.py")
# Where a rendered notebook keeps what was run: see `render_guides.run_record`.
RUN_KEY = "keras_matta_run"
REPOSITORY = "keras-matta/keras_matta"
HEADER_KEYS = ("Title", "Author", "Date created", "Last modified", "Description", "Accelerator")


def guide_paths():
    return sorted(
        os.path.join(GUIDES_DIR, name)
        for name in os.listdir(GUIDES_DIR)
        if name.endswith(".py") and name not in TOOLS
    )


def parse_header(text, path):
    match = re.match(r'\s*"""(.*?)"""', text, re.DOTALL)
    if not match:
        raise ValueError(f"{path}: a guide starts with a header docstring.")
    header = {}
    for line in match.group(1).strip().splitlines():
        key, _, value = line.partition(":")
        header[key.strip()] = value.strip()
    missing = [key for key in HEADER_KEYS if key not in header]
    if missing:
        raise ValueError(f"{path}: header lacks {missing}.")
    return header, text[match.end():]


def split_blocks(body):
    """Yields ("markdown" | "code", text) in order."""
    for index, part in enumerate(re.split(r'^"""\n?(.*?)^"""\n', body, flags=re.DOTALL | re.M)):
        text = part.strip("\n")
        if text.strip():
            yield ("markdown" if index % 2 else "code"), text


def notebook_for(path, rendered=None):
    """The guide's notebook; `rendered`, a notebook with a run's outputs, lends its outputs to
    every code cell whose source it holds unchanged, and its run record."""
    with open(path) as f:
        header, body = parse_header(f.read(), path)
    name = guide_name(path)
    badge = (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{REPOSITORY}/blob/main/guides/ipynb/{name}.ipynb)"
    )
    title = (
        f"# {header['Title']}\n\n"
        f"**Author:** {header['Author']}<br>\n"
        f"**Date created:** {header['Date created']}<br>\n"
        f"**Last modified:** {header['Last modified']}<br>\n"
        f"**Description:** {header['Description']}\n\n{badge}"
    )
    cells = [_cell("markdown", title)]
    cells += [_cell(kind, text) for kind, text in split_blocks(body)]
    metadata = {
        "accelerator": header["Accelerator"],
        "colab": {"name": name, "provenance": []},
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    if rendered is not None and RUN_KEY in rendered["metadata"]:
        metadata[RUN_KEY] = rendered["metadata"][RUN_KEY]
        _carry_outputs(rendered["cells"], cells)
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 0}


def _carry_outputs(rendered_cells, cells):
    # Matched by source, not position: adding a cell leaves the others' outputs in place.
    runs = {}
    for cell in rendered_cells:
        if cell["cell_type"] == "code" and cell["execution_count"] is not None:
            runs.setdefault("".join(cell["source"]), []).append(cell)
    for cell in cells:
        matches = runs.get("".join(cell["source"])) if cell["cell_type"] == "code" else None
        if matches:
            run = matches.pop(0)
            cell.update(execution_count=run["execution_count"], outputs=run["outputs"])


def _cell(kind, text):
    lines = text.splitlines(keepends=True)
    cell = {"cell_type": kind, "metadata": {"colab_type": kind}, "source": lines}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def render(notebook):
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def guide_name(guide_path):
    return os.path.splitext(os.path.basename(guide_path))[0]


def notebook_path(guide_path):
    return os.path.join(NOTEBOOK_DIR, guide_name(guide_path) + ".ipynb")


def markdown_path(guide_path):
    return os.path.join(MARKDOWN_DIR, guide_name(guide_path) + ".md")


def read_notebook(guide_path):
    """The notebook on disk, or None."""
    target = notebook_path(guide_path)
    if not os.path.exists(target):
        return None
    with open(target) as f:
        return json.load(f)


def markdown_for(notebook, name):
    """(Markdown text, {path under guides/md/: PNG bytes}) for a notebook and its outputs."""
    run = notebook["metadata"].get(RUN_KEY)
    cells = notebook["cells"]
    parts = ["".join(cells[0]["source"]), run_summary(run, name)]
    images = {}
    for cell in cells[1:]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            parts.append(source)
            continue
        parts.append(f"```python\n{source}\n```")
        if run is not None and cell["execution_count"] is None:
            parts.append(f"*Not run since this cell changed: `python guides/render_guides.py "
                         f"{name}` renders it again.*")
        for output in cell["outputs"]:
            if output["output_type"] == "stream":
                parts.append("```\n" + "".join(output["text"]).rstrip("\n") + "\n```")
            elif "image/png" in output.get("data", {}):
                data = base64.b64decode(output["data"]["image/png"])
                image = f"img/{name}/{hashlib.sha256(data).hexdigest()[:16]}.png"
                images[image] = data
                parts.append(f"![png]({image})")
            elif output["output_type"] == "error":
                parts.append("```\n" + "\n".join(output["traceback"]) + "\n```")
    return "\n\n".join(parts) + "\n", images


def run_summary(run, name):
    """The rendered guide's header: what was run, on what, and how long it took."""
    if run is None:
        return (f"> Not rendered yet: `python guides/render_guides.py {name}` runs the guide and "
                f"stores its outputs here.")
    size = ("smoke size (`KERAS_MATTA_SMOKE=1`: toy models and data, so the numbers show what "
            "the guide prints, not what a full run gives)" if run["smoke"] else "full size")
    minutes, seconds = divmod(round(run["wall_time_s"]), 60)
    return (
        f"> Rendered on {run['date']} at {size}: `KERAS_BACKEND={run['backend']}` "
        f"({', '.join(run['versions'])}), on {run['hardware']}. "
        f"Wall time {minutes} min {seconds} s. Regenerate with "
        f"`python guides/render_guides.py {name}`."
    )


def write_markdown(notebook, guide_path, check=False):
    """Writes the guide's Markdown and its images; returns the paths that were (or, with
    `check`, would be) written or removed."""
    name = guide_name(guide_path)
    text, images = markdown_for(notebook, name)
    wanted = {os.path.join(MARKDOWN_DIR, path): data for path, data in images.items()}
    wanted[markdown_path(guide_path)] = text.encode()
    image_dir = os.path.join(MARKDOWN_DIR, "img", name)
    stale_images = [os.path.join(image_dir, file) for file in
                    (os.listdir(image_dir) if os.path.isdir(image_dir) else [])
                    if os.path.join(image_dir, file) not in wanted]
    changed = [path for path, data in wanted.items() if _read_bytes(path) != data]
    if not check:
        for path in changed:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(wanted[path])
        for path in stale_images:
            os.remove(path)
    return changed + stale_images


def _read_bytes(path):
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the guides' notebooks and Markdown.")
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    stale = []
    os.makedirs(NOTEBOOK_DIR, exist_ok=True)
    for path in guide_paths():
        target = notebook_path(path)
        current = open(target).read() if os.path.exists(target) else None
        notebook = notebook_for(path, json.loads(current) if current is not None else None)
        text = render(notebook)
        if current != text:
            stale.append(target)
            if not args.check:
                with open(target, "w") as f:
                    f.write(text)
        stale += write_markdown(notebook, path, check=args.check)
    for target in stale:
        print(("stale: " if args.check else "updated: ") + os.path.relpath(target))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
