"""Results folders a user meets: committed folders that any device can rerun, a folder
from other settings refused in one line, Ctrl-C that says what was saved and resumes,
corrupted parts named, two processes on one folder, the lock of a killed owner."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from bild_exp import sweep
from bild_exp.harness.records.store import CorruptedResultsError, RecordStore
from bild_exp.harness.run import pipeline
from tests.harness_fixtures import (
    ENV,
    compose_sweep,
    fresh_clone_copy,
    run_module,
    stderr_lines,
    tiny_overrides,
    tracked_files,
)

# Committed result folders do not lock the user's device.


def test_a_fingerprint_is_committed_only_beside_its_committed_records():
    """Summaries commit no fingerprint (their records are not committed: any device reruns
    them); make humaneval commits its records, and with them the fingerprint that keeps a
    continuation on a machine with other library versions or settings from mixing in."""
    tracked = tracked_files("results")
    assert tracked
    for name in (n for n in tracked if n.endswith("compat.json")):
        folder = name.rsplit("/", 1)[0]
        assert name.startswith("results/humaneval/"), name
        assert any(n.startswith(f"{folder}/parts/part-") for n in tracked), name


def test_committed_demo_folder_reruns_on_another_device(tmp_path, monkeypatch):
    results = fresh_clone_copy("results", tmp_path).parent / "results"
    real = pipeline.device_description

    def other_device(device):
        return {**real(device), "device_name": "NVIDIA Tesla T4"}

    monkeypatch.setattr(pipeline, "device_description", other_device)
    cfg = compose_sweep(
        [
            "experiment_name=demo",
            f"results_dir={results}",
            "method=large",
            "data.limit=1",
            "data.warmup=0",
            "logger=none",
            "progress=false",
        ]
    )
    outcome = sweep.run(cfg)
    assert outcome.run_dir == results / "demo" / "demo_demo"
    assert len(outcome.records) == 1


def test_incompatible_folder_is_one_line(tiny_assets, tmp_path):
    overrides = tiny_overrides(tiny_assets, tmp_path, "method=large", "data.limit=2")
    args = [o for o in overrides if not o.startswith("task.max_new_tokens")]
    assert run_module("bild_exp.sweep", *args, "task.max_new_tokens=12").returncode == 0
    finished = run_module("bild_exp.sweep", *args, "task.max_new_tokens=5")
    assert finished.returncode == 2
    lines = stderr_lines(finished)
    assert len(lines) == 1 and "max_new_tokens=12" in lines[0], finished.stderr


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine: `make test-slow`
def test_ctrl_c_says_what_was_saved_and_resumes(tiny_assets, tmp_path):
    overrides = tiny_overrides(
        tiny_assets,
        tmp_path,
        "data.limit=12",
        "method=bild",
        "pair.small_variants=[base]",
        "grid.fallback_threshold=[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]",
        "grid.rollback_threshold=[1.0,2.0,3.0,4.0]",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "bild_exp.sweep", *overrides],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    parts = tmp_path / "sweep" / "custom_tiny" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and not (parts.exists() and any(parts.glob("*.parquet"))):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "resumes" in lines[0], stderr
    saved = int(re.search(r"(\d+) records in", lines[0]).group(1))
    assert saved == len(RecordStore(tmp_path / "sweep" / "custom_tiny").read()) > 0
    finished = run_module("bild_exp.sweep", *overrides)
    assert finished.returncode == 0, finished.stderr
    records = RecordStore(tmp_path / "sweep" / "custom_tiny").read()
    assert len(records) == 36 * 12


def test_corrupted_part_is_one_line(tmp_path):
    store = RecordStore(tmp_path)
    store.append([{"config_id": "a", "example_id": "1"}])
    (store.parts_dir / "part-broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(CorruptedResultsError, match="part-broken.parquet' cannot be read"):
        store.read()


# Two processes on one folder split the work; a dead owner's lock is stale.


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine: `make test-slow`
def test_two_sweeps_on_one_folder_never_compute_a_record_twice(tiny_assets, tmp_path):
    overrides = tiny_overrides(
        tiny_assets,
        tmp_path,
        "data.limit=12",
        "method=bild",
        "pair.small_variants=[base,aligned]",
        "grid.fallback_threshold=[0.2,0.4,0.6,0.8]",
        "grid.rollback_threshold=[1.0,3.0]",
    )
    command = [sys.executable, "-m", "bild_exp.sweep", *overrides]
    processes = [
        subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-2000:]
    stores = [RecordStore(tmp_path / "sweep" / "custom_tiny")]
    stores += [RecordStore(d) for d in (tmp_path / "_baselines").iterdir()]
    raw = pd.concat([pd.read_parquet(p) for s in stores for p in s.part_files()], ignore_index=True)
    assert len(raw) == (1 + 16) * 12  # large + 2 variants x 8 points, each example once
    assert not raw.duplicated(["config_id", "example_id"]).any()


def test_lock_of_a_killed_owner_is_taken_over(tmp_path):
    from bild_exp.harness.records.store import BusyError, file_lock

    lock = tmp_path / "locks" / "abc.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from bild_exp.harness.records.store import file_lock\n"
            f"with file_lock(Path({str(lock)!r}), wait=False):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(BusyError, match=f"pid {holder.pid}"), file_lock(lock, wait=False):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with file_lock(lock, wait=False):  # stale: its owner is dead
        assert str(os.getpid()) in lock.read_text()
