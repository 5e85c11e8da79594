"""``make notebooks``: run every notebook top to bottom and save it with its outputs, so that
the committed notebooks show their tables and figures to a reader who runs nothing.

Each runs in ``notebooks/`` (its relative paths are from there) on its default results
folder, the main job's (``make humaneval``), unless ``BILD_RESULTS_DIR`` names another.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute_in_place(path: Path, timeout_s: int = 600) -> None:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=timeout_s,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    nbformat.write(notebook, path)


def main(argv: list[str]) -> None:
    paths = [Path(a) for a in argv] or sorted(NOTEBOOKS.glob("*.ipynb"))
    for path in paths:
        execute_in_place(path)
        print(f"executed {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
