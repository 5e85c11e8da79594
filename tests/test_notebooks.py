"""Every notebook runs top to bottom on a small results folder (no decoding inside)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from bild_exp import sweep
from tests.harness_fixtures import compose_sweep, tiny_overrides

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def results_dir(tiny_assets, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    overrides = tiny_overrides(
        tiny_assets,
        results,
        "method=ablations",
        "grid.fallback_threshold=[0.3,0.9]",
        "grid.rollback_threshold=[1.0,3.0]",
        "pair.small_variants=[base]",
    )
    return sweep.run(compose_sweep(overrides)).run_dir


def execute(path: Path, results_dir: Path, figures_dir: Path, monkeypatch) -> None:
    """Run a notebook top to bottom on ``results_dir``, drawing into ``figures_dir``."""
    monkeypatch.setenv("BILD_RESULTS_DIR", str(results_dir))
    monkeypatch.setenv("BILD_FIGURES_DIR", str(figures_dir))
    NotebookClient(
        nbformat.read(path, as_version=4),
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"pareto.ipynb", "ablations.ipynb", "per_token.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, results_dir, tmp_path, monkeypatch):
    execute(path, results_dir, tmp_path, monkeypatch)
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())
    assert os.environ["BILD_RESULTS_DIR"] == str(results_dir)


def test_per_token_notebook_runs_on_a_fresh_clone(tmp_path, monkeypatch):
    """The committed demo folder has summaries but no raw records (git-ignored)."""
    from tests.harness_fixtures import fresh_clone_copy

    run_dir = fresh_clone_copy("results/demo/demo_demo", tmp_path)
    assert not (run_dir / "parts").exists()
    path = next(p for p in NOTEBOOKS if p.name == "per_token.ipynb")
    execute(path, run_dir, tmp_path, monkeypatch)
    assert (tmp_path / "notebook_tokens.png").exists()


MAIN_JOB = "results/humaneval/humaneval_qwen2.5-coder_0.5b_1.5b"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_show_the_main_job_with_their_outputs(path):
    """Each notebook defaults to the HumanEval run and is committed executed (make
    notebooks): a reader sees its tables and figures without running anything."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert f"../{MAIN_JOB}" in code[0].source
    assert all(cell.execution_count for cell in code), "make notebooks: a cell was never run"
    outputs = [output for cell in code for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_make_notebooks_executes_them_in_place():
    from tests.make_commands import dry_run_listing

    assert "scripts/execute_notebooks.py" in dry_run_listing("notebooks", 1)
