"""Shared fixtures: tiny random models built from configs (no network)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.harness_fixtures import write_task_files, write_tiny_pair  # noqa: E402
from tests.tiny_models import FAMILIES, tiny_pair  # noqa: E402

# A test fails when bild_exp code triggers a FutureWarning or DeprecationWarning.
from tests.warning_guard import (  # noqa: E402, F401
    pytest_configure,
    pytest_runtest_call,
    pytest_runtest_setup,
    pytest_unconfigure,
)


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def pair(family: str):
    return tiny_pair(family, seed=0)


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """A tiny T5 pair (tokenizer, large, small, aligned small) and a tiny task on disk."""
    root = tmp_path_factory.mktemp("assets")
    return write_tiny_pair(root / "pair"), write_task_files(root)


# Slow tests (over ~25 s each on the 2-core CI machine with a cold inductor cache, measured
# with pytest --durations) carry @pytest.mark.slow where they are defined, or a slow
# pytest.param case: `make test` deselects them (addopts in pyproject), `make test-slow`
# runs them. Each area keeps a cheaper test in the default run.
