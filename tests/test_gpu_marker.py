"""The ``gpu`` marker: ``make test`` leaves the CUDA tests out; ``make test-gpu`` runs only
them and, without a CUDA device, skips each with its reason and exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.harness_fixtures import ENV, ROOT


def pytest_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_default_run_selects_no_gpu_test():
    listing = pytest_run("--collect-only", "-q", "tests/test_gpu.py")
    assert "no tests collected" in listing.stdout or " deselected" in listing.stdout
    assert "test_gpu.py::" not in listing.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: the tests run")
def test_without_cuda_make_test_gpu_skips_every_test_with_its_reason():
    run = pytest_run("-m", "gpu", "-q", "-rs", "tests/test_gpu.py")
    assert run.returncode == 0, run.stdout[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary
    assert "no CUDA device (torch.cuda.is_available() is False)" in run.stdout
