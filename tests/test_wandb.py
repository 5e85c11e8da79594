"""W&B: offline runs write what they should; no key means offline; failures lose nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from bild_exp import sweep
from bild_exp.wandb_setup import report_to, resolve_mode
from tests.harness_fixtures import ONE_BILD_POINT, compose_sweep, tiny_overrides


def logger_cfg(**values):
    return OmegaConf.create(
        {"name": "wandb", "project": "p", "entity": None, "mode": None, "tags": [], **values}
    )


def test_mode_resolution(monkeypatch, caplog, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with caplog.at_level(logging.WARNING):
        assert resolve_mode(logger_cfg()) == "offline"
    assert "no API key" in caplog.text
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode(logger_cfg()) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(logger_cfg()) == "disabled"
    assert resolve_mode(logger_cfg(mode="offline")) == "offline"
    assert resolve_mode(OmegaConf.create({"name": "none"})) == "disabled"
    with pytest.raises(ValueError, match="logger.mode='sometimes'"):
        resolve_mode(logger_cfg(mode="sometimes"))
    assert report_to(OmegaConf.create({"name": "none"})) == "none"


def test_offline_run_is_written_next_to_the_results(tiny_assets, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    overrides = tiny_overrides(tiny_assets, tmp_path, *ONE_BILD_POINT)
    overrides = [o for o in overrides if o != "logger=none"] + [
        "logger=wandb",
        "logger.mode=offline",
    ]
    outcome = sweep.run(compose_sweep(overrides))
    runs = list((outcome.run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = {p.name: p for p in runs[0].rglob("*")}
    log_file = next(
        p for name, p in files.items() if name.endswith(".wandb")
    )  # the run's event log
    assert b"fallback_threshold" in log_file.read_bytes()  # the resolved config went in
    tables = [p for name, p in files.items() if name.endswith(".table.json")]
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert {"speedup", "config_id", "bleu"} <= set(table["columns"]) and len(table["data"]) == 2
    assert any(
        name.startswith("pareto") and name.endswith(".png") for name in files
    )  # the plot was logged


def test_wandb_failure_keeps_local_results(tiny_assets, tmp_path, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken_init)
    overrides = tiny_overrides(tiny_assets, tmp_path, "method=large")
    overrides = [o for o in overrides if o != "logger=none"] + [
        "logger=wandb",
        "logger.mode=offline",
    ]
    outcome = sweep.run(compose_sweep(overrides))
    assert len(pd.read_csv(outcome.run_dir / "summary.csv")) == 1


def test_baseline_only_sweep_logs_its_records(tiny_assets, tmp_path, monkeypatch):
    """method=large writes no records in the run folder: the artifact takes the baselines'
    (their parts and the examples' sources and references)."""
    import wandb

    added = []
    real_add_dir = wandb.Artifact.add_dir

    def recording_add_dir(self, local_path, name=None, **kwargs):
        added.append((local_path, name))
        return real_add_dir(self, local_path, name=name, **kwargs)

    monkeypatch.setattr(wandb.Artifact, "add_dir", recording_add_dir)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    overrides = tiny_overrides(tiny_assets, tmp_path, "method=large")
    overrides = [o for o in overrides if o != "logger=none"] + [
        "logger=wandb",
        "logger.mode=offline",
    ]
    outcome = sweep.run(compose_sweep(overrides))
    assert not (outcome.run_dir / "parts").exists()
    assert not (outcome.run_dir / "examples").exists()
    assert [Path(path).name for path, _ in added] == ["parts", "examples"]
    assert all("_baselines" in path for path, _ in added)
    runs = list((outcome.run_dir / "wandb").glob("offline-run-*"))
    log_file = next(p for p in runs[0].rglob("*.wandb"))
    for path, name in added:  # the artifact's manifest names each file under its folder
        stored = next(Path(path).glob("*.parquet")).name
        assert f"{name}/{stored}".encode() in log_file.read_bytes()
