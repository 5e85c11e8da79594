"""The sweep end to end on a tiny pair and task: configs, records, summary, resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bild_exp import sweep
from bild_exp.harness.records.store import IncompatibleResultsError
from tests.harness_fixtures import ONE_BILD_POINT, compose_sweep, tiny_overrides


def test_sweep_writes_records_summary_and_manifest(tiny_assets, tmp_path):
    cfg = compose_sweep(
        tiny_overrides(
            tiny_assets,
            tmp_path,
            "pair.small_variants=[base,aligned]",
            "grid.fallback_threshold=[0.3,0.9]",
            "grid.rollback_threshold=[1.0]",
            "grid.window=[2]",
        )
    )
    outcome = sweep.run(cfg)
    run_dir = outcome.run_dir
    assert run_dir == tmp_path / "sweep" / "custom_tiny"
    summary = pd.read_csv(run_dir / "summary.csv")
    # large + small x2 + bild (2 thresholds x 2 variants) + speculative x2
    assert len(summary) == 1 + 2 + 4 + 2
    assert set(summary["study"]) == {"large", "small", "bild", "speculative"}
    large = summary[summary["method"] == "large"].iloc[0]
    assert large["speedup"] == pytest.approx(1.0)
    assert (summary["n_examples"] == 6).all()
    records = outcome.records
    assert len(records) == 9 * 6
    assert records.groupby("config_id").size().eq(6).all()
    bild = records[records["method"] == "bild"]
    assert (bild["n_small_tokens"] + bild["n_large_tokens"] == bild["n_tokens"]).all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["n_examples"] == 6 and manifest["libraries"]["torch"]
    assert manifest["config"]["task"]["name"] == "custom"
    assert (run_dir / "pareto.png").exists() and (run_dir / "pareto.pdf").exists()
    # Baselines live in the shared cache and are reused.
    baseline_dirs = list((tmp_path / "_baselines").iterdir())
    assert len(baseline_dirs) == 1


def test_second_run_skips_everything_done(tiny_assets, tmp_path):
    overrides = tiny_overrides(tiny_assets, tmp_path, *ONE_BILD_POINT)
    first = sweep.run(compose_sweep(overrides))
    parts_before = sorted((first.run_dir / "parts").glob("*.parquet"))
    load = json.loads((first.run_dir / "manifest.json").read_text())["machine_load"]
    assert load["cores"] >= 1 and len(load["before"]) == 3
    peak = json.loads((first.run_dir / "manifest.json").read_text())["peak_memory_gb"]
    assert 0.05 < peak["host_rss"] < 24  # a process with torch loaded, on this machine
    second = sweep.run(compose_sweep(overrides))
    assert sorted((second.run_dir / "parts").glob("*.parquet")) == parts_before
    pd.testing.assert_frame_equal(first.records, second.records)
    # nothing was timed again: the manifest keeps the load of the run that timed the records
    second_manifest = json.loads((second.run_dir / "manifest.json").read_text())
    assert second_manifest["machine_load"] == load and second_manifest["peak_memory_gb"] == peak


def test_incompatible_results_folder_is_refused(tiny_assets, tmp_path):
    overrides = tiny_overrides(tiny_assets, tmp_path, "method=large")
    sweep.run(compose_sweep(overrides))
    with pytest.raises(IncompatibleResultsError, match="max_new_tokens"):
        sweep.run(compose_sweep([*overrides, "max_new_tokens=5"]))


def test_dry_run_loads_nothing(tiny_assets, tmp_path, capsys):
    cfg = compose_sweep(
        tiny_overrides(tiny_assets, tmp_path, "dry_run=true", "pair.large=/nonexistent")
    )
    assert sweep.run(cfg) is None
    assert "configurations" in capsys.readouterr().out
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine: `make test-slow`
def test_engine_compile_sweep_matches_eager_and_reports_compilation(tiny_assets, tmp_path):
    """engine.compile=true through the harness: the same records as eager, and the compile
    report in the manifest. (The tiny pair of the bench test: its kernels compile once.)"""
    methods = ["method=demo", "grid.fallback_threshold=[0.5]", "grid.rollback_threshold=[1.0]"]
    methods += ["grid.window=[3]", "pair.small_variants=[base]", "data.limit=3"]
    eager = sweep.run(compose_sweep(tiny_overrides(tiny_assets, tmp_path / "e", *methods)))
    compiled = sweep.run(
        compose_sweep(tiny_overrides(tiny_assets, tmp_path / "c", *methods, "engine.compile=true"))
    )
    key = ["config_id", "example_id"]
    left = eager.records.set_index(key).sort_index()
    right = compiled.records.set_index(key).sort_index()
    assert len(left) == len(right) > 0
    for column in ("tokens", "n_large_calls", "n_small_calls", "n_fallbacks", "n_rollbacks"):
        assert [list(v) if hasattr(v, "__len__") else v for v in left[column]] == [
            list(v) if hasattr(v, "__len__") else v for v in right[column]
        ], column
    report = json.loads((compiled.run_dir / "manifest.json").read_text())["compile"]
    assert report["large"]["n_graphs"] >= 1 and report["large"]["compile_s"] > 0
    assert "compile" not in json.loads((eager.run_dir / "manifest.json").read_text())
