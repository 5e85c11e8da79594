"""The lock of tested versions: written, read back, compared; the committed lock fits pyproject."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bild_exp.lockfile import (
    REPOSITORY_LOCK,
    describe,
    differences,
    installed_versions,
    lock_report,
    lock_text,
    python_marker,
    read_lock,
)

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_a_written_lock_reads_back_without_local_labels_or_the_project(tmp_path):
    path = tmp_path / "lock.txt"
    versions = {"torch": "2.13.0+cpu", "numpy": "2.4.6", "bild-exp": "0.1.0"}
    path.write_text(lock_text(versions, generated_by="test"))
    assert read_lock(path) == {"torch": "2.13.0", "numpy": "2.4.6"}
    assert f"numpy==2.4.6 ; {python_marker()}" in path.read_text().splitlines()


def test_pins_for_another_python_are_not_read(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_text('numpy==1.0 ; python_version == "2.7"\npandas==3.1.1\n')
    assert read_lock(path) == {"pandas": "3.1.1"}


@pytest.mark.parametrize("line", ["numpy>=1.0", "numpy", "not a requirement !!"])
def test_a_line_that_is_not_one_exact_pin_names_the_file_and_line(tmp_path, line):
    path = tmp_path / "lock.txt"
    path.write_text(f"# header\n{line}\n")
    with pytest.raises(ValueError, match=r"lock.txt:2: "):
        read_lock(path)


def test_differences_name_each_departure_and_ignore_local_labels():
    installed = {"torch": "2.13.0+cpu", "numpy": "2.5.0", "extra": "1.0"}
    locked = {"torch": "2.13.0", "numpy": "2.4.6", "gone": "3.0"}
    changed = differences(installed, locked)
    assert changed == {
        "numpy": {"installed": "2.5.0", "locked": "2.4.6"},
        "extra": {"installed": "1.0", "locked": None},
        "gone": {"installed": None, "locked": "3.0"},
    }
    assert "numpy: 2.4.6 (lock) -> 2.5.0 (here)" in describe(changed)


def test_lock_report_for_a_manifest(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_text(lock_text(installed_versions(), generated_by="test"))
    assert lock_report(path) == {"file": str(path), "matches": True, "differences": {}}
    path.write_text("pandas==0.0.1\n")
    report = lock_report(path)
    assert report["matches"] is False
    assert report["differences"]["pandas"]["locked"] == "0.0.1"
    assert lock_report(tmp_path / "missing.txt") is None


def test_the_committed_lock_pins_every_dependency_within_pyproject_ranges():
    pins = read_lock(REPOSITORY_LOCK)
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    requirements += [Requirement(line) for line in project["optional-dependencies"]["dev"]]
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {REPOSITORY_LOCK}"
        assert requirement.specifier.contains(pins[name]), (name, pins[name])
