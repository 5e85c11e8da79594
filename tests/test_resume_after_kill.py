"""A sweep killed with SIGKILL mid-run and started again with the same command loses and
duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bild_exp.harness.records.store import RecordStore
from tests.harness_fixtures import tiny_overrides, write_task_files, write_tiny_pair

N_EXAMPLES = 12
GRID = [
    "grid.fallback_threshold=[0.3,0.7]",
    "grid.rollback_threshold=[1.0,3.0]",
    "grid.window=[2,3]",
]
N_CONFIGS = 1 + 2 + 2 * 2 * 2 + 2 * 2  # large, small x2, bild 2x2 x2 variants, speculative 2 x2


def sweep_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "bild_exp.sweep", *overrides]


def all_records(results: Path) -> pd.DataFrame:
    stores = [RecordStore(results / "sweep" / "custom_tiny")]
    stores += [RecordStore(d) for d in (results / "_baselines").iterdir()]
    return pd.concat([s.read() for s in stores], ignore_index=True)


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine: `make test-slow`
def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path):
    assets = (write_tiny_pair(tmp_path / "pair"), write_task_files(tmp_path, n=N_EXAMPLES))
    overrides = tiny_overrides(
        assets,
        tmp_path / "results",
        f"data.limit={N_EXAMPLES}",
        "pair.small_variants=[base,aligned]",
        *GRID,
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    process = subprocess.Popen(
        sweep_command(overrides), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    parts_dir = tmp_path / "results" / "sweep" / "custom_tiny" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        parts_dir.exists() and len(list(parts_dir.glob("*.parquet"))) >= 2
    ):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # it was killed mid-sweep, not finished
    before = all_records(tmp_path / "results")
    assert 0 < len(before) < N_CONFIGS * N_EXAMPLES

    finished = subprocess.run(sweep_command(overrides), env=env, capture_output=True, timeout=600)
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    after = all_records(tmp_path / "results")
    # every output once; a record killed mid-example whose vanilla pair is missing is timed
    # again beside vanilla in the second run's block (one record per block)
    assert len(after.drop_duplicates(["config_id", "example_id"])) == N_CONFIGS * N_EXAMPLES
    assert not after.duplicated(["config_id", "example_id", "block_id"]).any()
    assert after["block_id"].nunique() == 2
    # Nothing written before the kill was lost or rewritten.
    key = ["config_id", "example_id", "block_id"]
    kept = after.merge(before[[*key, "latency_s"]], on=key)
    assert len(kept) == len(before)
    assert (kept["latency_s_x"] == kept["latency_s_y"]).all()
    # No temporary files left behind count as records.
    assert all(p.suffix == ".parquet" for p in parts_dir.iterdir() if not p.name.startswith("."))
    summary = pd.read_csv(tmp_path / "results" / "sweep" / "custom_tiny" / "summary.csv")
    assert len(summary) == N_CONFIGS and (summary["n_examples"] == N_EXAMPLES).all()
