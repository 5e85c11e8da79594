"""The dependency floors in pyproject.toml are versions this suite has run on."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# The oldest versions known to work: torch 2.6 is transformers 5's own floor for `.bin`
# checkpoints (the paper's authors ship .bin only); transformers 5.24 (the engine passes the
# `cache` keyword it introduced) and datasets 5.2 are the versions the suite was run on.
KNOWN_FLOORS = {"torch": "2.6", "transformers": "5.24", "datasets": "5.2"}


def floors() -> dict[str, Version]:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    result = {}
    for line in dependencies:
        requirement = Requirement(line)
        lows = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if lows:
            result[requirement.name] = max(lows)
    return result


def test_floors_are_no_older_than_what_is_known_to_work():
    declared = floors()
    for name, known in KNOWN_FLOORS.items():
        assert declared[name] >= Version(known), (name, declared[name], known)


def test_the_installed_versions_satisfy_the_floors():
    for name, floor in floors().items():
        if name in KNOWN_FLOORS:
            installed = Version(version(name).split("+")[0])
            assert installed >= floor, (name, installed, floor)
