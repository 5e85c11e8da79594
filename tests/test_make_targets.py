"""Every make target that runs a sweep honours DRY_RUN=1 and LIMIT=."""

from __future__ import annotations

import re
import shutil

import pytest

from bild_exp import paper
from tests.harness_fixtures import run_module
from tests.make_commands import dry_run_listing

SWEEP_TARGETS = [
    "demo",
    "demo-drafters",
    "demo-compiled",
    "demo-synopsis",
    "demo-mt",
    "humaneval",
    "bench",
    "bench-mt",
    *paper.EXPERIMENTS,
    "demo-figures",
]


@pytest.mark.parametrize("target", SWEEP_TARGETS)
def test_make_targets_honour_dry_run_and_limit(target):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    listing = dry_run_listing(target, limit=7)
    commands = [
        line for line in listing.splitlines() if re.search(r"bild_exp\.(sweep|bench)", line)
    ]
    assert commands, listing
    for command in commands:
        assert "dry_run=true" in command and "data.limit=7" in command, command
    assert "bild_exp.paper" not in listing  # nothing to compare after a dry run


def test_make_demo_dry_run_runs_nothing(tmp_path):
    finished = run_module("bild_exp.sweep", "experiment_name=demo", "data.limit=3", "dry_run=true")
    assert finished.returncode == 0 and "configurations" in finished.stdout
