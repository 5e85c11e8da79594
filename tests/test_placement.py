"""One timed job per GPU, and parallel CPU jobs that share the cores."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import torch

from bild_exp.harness.records.store import file_lock
from bild_exp.harness.run import placement
from bild_exp.harness.run.placement import cpu_threads, lock_dir, placed


@pytest.fixture(autouse=True)
def private_locks(monkeypatch, tmp_path):
    monkeypatch.setenv("BILD_EXP_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_workers_times_threads_never_exceed_the_cores():
    assert cpu_threads(1, cores=16) == 16
    assert cpu_threads(2, cores=16) == 8
    assert cpu_threads(4, cores=2) == 1  # at least one thread each
    for n_jobs in range(1, 9):
        assert n_jobs * cpu_threads(n_jobs, cores=8) <= 8 or cpu_threads(n_jobs, cores=8) == 1


def test_parallel_cpu_jobs_get_their_share_of_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(placement, "parallel_jobs", lambda: 2)
    monkeypatch.setattr(placement.os, "cpu_count", lambda: 8)
    try:
        with placed(torch.device("cpu")) as device:
            assert device.type == "cpu" and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_outside_hydra_one_job_runs():
    assert placement.parallel_jobs() == 1


def test_a_busy_gpu_sends_the_next_job_to_a_free_one():
    with file_lock(lock_dir() / "cuda-0.lock", wait=False), placed(torch.device("cuda")) as device:
        assert device == torch.device("cuda", 1)


def test_a_named_gpu_is_waited_for_not_swapped(caplog):
    release = threading.Event()

    def hold():
        with file_lock(lock_dir() / "cuda-1.lock", wait=False):
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)  # the other job holds cuda:1
    threading.Timer(0.5, release.set).start()
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING), placed(torch.device("cuda", 1), poll_s=0.05) as device:
        waited = time.perf_counter() - start
    holder.join()
    assert device == torch.device("cuda", 1)
    assert waited >= 0.2
    assert "waiting" in caplog.text


def test_the_lock_is_released_when_the_job_ends():
    with placed(torch.device("cuda", 0)):
        pass
    with file_lock(lock_dir() / "cuda-0.lock", wait=False):  # free again
        pass
