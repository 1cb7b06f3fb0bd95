"""Generates `guides/ipynb/<guide>.ipynb` from each keras.io-format guide `guides/<guide>.py`.

A guide is a Python script: a header docstring (`Title:`, `Author:`, `Date created:`,
`Last modified:`, `Description:`, `Accelerator:`), then prose in triple-quoted string blocks
between code. Each prose block becomes a Markdown cell, each code run a code cell, and an
"Open in Colab" badge pointing at the notebook follows the title.

Usage:
    python guides/sync_notebooks.py          # rewrite every notebook
    python guides/sync_notebooks.py --check  # exit 1 if any notebook is out of date
"""

import argparse
import json
import os
import re
import sys

GUIDES_DIR = os.path.dirname(os.path.abspath(__file__))
NOTEBOOK_DIR = os.path.join(GUIDES_DIR, "ipynb")
REPOSITORY = "keras-matta/keras_matta"
HEADER_KEYS = ("Title", "Author", "Date created", "Last modified", "Description", "Accelerator")


def guide_paths():
    return sorted(
        os.path.join(GUIDES_DIR, name)
        for name in os.listdir(GUIDES_DIR)
        if name.endswith(".py") and name != os.path.basename(__file__)
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


def notebook_for(path):
    with open(path) as f:
        header, body = parse_header(f.read(), path)
    name = os.path.splitext(os.path.basename(path))[0]
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
    return {
        "cells": cells,
        "metadata": {
            "accelerator": header["Accelerator"],
            "colab": {"name": name, "provenance": []},
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 0,
    }


def _cell(kind, text):
    lines = text.splitlines(keepends=True)
    cell = {"cell_type": kind, "metadata": {"colab_type": kind}, "source": lines}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def render(notebook):
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def notebook_path(guide_path):
    name = os.path.splitext(os.path.basename(guide_path))[0]
    return os.path.join(NOTEBOOK_DIR, name + ".ipynb")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the guides' notebooks.")
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    stale = []
    os.makedirs(NOTEBOOK_DIR, exist_ok=True)
    for path in guide_paths():
        target = notebook_path(path)
        text = render(notebook_for(path))
        current = open(target).read() if os.path.exists(target) else None
        if current != text:
            stale.append(target)
            if not args.check:
                with open(target, "w") as f:
                    f.write(text)
    for target in stale:
        print(("stale: " if args.check else "wrote: ") + os.path.relpath(target))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
