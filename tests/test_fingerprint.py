"""compat.json's schema version: folders written by version 1 (keys left out where a setting
was unused) are read, migrated once and reused, never silently refused or mixed."""

from __future__ import annotations

import json

import pytest

from bild_exp.errors import InvalidParameterError
from bild_exp.harness.records.fingerprint import (
    SCHEMA_VERSION,
    baselines_folder,
    migrate_fingerprint,
    short_hash,
    version_1,
)
from bild_exp.harness.records.store import IncompatibleResultsError, RecordStore

BASE = {"task": "demo", "large": "l", "small": "s", "dtype": "float32", "max_new_tokens": 64}


def current(**changes) -> dict:
    return {
        "schema": SCHEMA_VERSION,
        **BASE,
        "early_exit_layers": None,
        "calm_model": None,
        "engine_compile_mode": None,
        "engine_cpu_kernels": "plain",
        **changes,
    }


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (BASE, current()),
        ({**BASE, "engine_compile": True}, current(engine_compile_mode="default")),
        (
            {**BASE, "engine_compile": True, "engine_compile_mode": "max-autotune"},
            current(engine_compile_mode="max-autotune"),
        ),
        ({**BASE, "engine_cpu_kernels": "prepacked"}, current(engine_cpu_kernels="prepacked")),
        ({**BASE, "early_exit_layers": 2}, current(early_exit_layers=2)),
    ],
)
def test_version_1_migrates_and_back(old, new):
    assert migrate_fingerprint(old) == new
    assert version_1(new) == old  # the old folder's name can be found from the new fingerprint


def test_unknown_schema_is_one_line():
    with pytest.raises(InvalidParameterError, match=r"^schema=9 in 'x/compat.json' is invalid"):
        migrate_fingerprint({**BASE, "schema": 9}, "x/compat.json")


def test_old_folder_is_accepted_and_rewritten_but_another_setting_still_refused(tmp_path):
    (tmp_path / "compat.json").write_text(json.dumps({**BASE, "engine_compile": True}))
    store = RecordStore(tmp_path)
    with pytest.raises(IncompatibleResultsError, match="engine_compile_mode='default'"):
        store.check(current())  # an eager run never joins a compiled folder
    store.claim(current(engine_compile_mode="default"))
    assert json.loads((tmp_path / "compat.json").read_text())["schema"] == SCHEMA_VERSION


def test_old_baselines_folder_is_renamed_once_and_a_dry_run_leaves_it(tmp_path):
    fingerprint = current(engine_cpu_kernels="prepacked")
    old = tmp_path / short_hash(version_1(fingerprint))
    old.mkdir()
    (old / "marker").write_text("records")
    assert baselines_folder(tmp_path, fingerprint, migrate=False) == old
    assert old.exists()
    new = baselines_folder(tmp_path, fingerprint)
    assert new == tmp_path / short_hash(fingerprint) != old
    assert (new / "marker").read_text() == "records" and not old.exists()
    assert baselines_folder(tmp_path, fingerprint) == new
