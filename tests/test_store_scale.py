"""Results storage at paper scale: sources stored once per example, one part per finished
configuration, resuming reads only the configuration's own parts, and every compaction
step safe against a kill (no loss, duplicates of identical rows dropped on read)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bild_exp import sweep
from bild_exp.harness.records import store as store_module
from bild_exp.harness.records.store import RecordStore, part_config
from bild_exp.harness.run.decode import FLUSH_EVERY
from tests.harness_fixtures import compose_sweep, tiny_overrides

N_EXAMPLES = FLUSH_EVERY + 3  # two parts per configuration before compaction
GRID = ("method=bild", "grid.fallback_threshold=[0.3,0.7]", "grid.rollback_threshold=[2.0]")


def rows(config_id: str, example_ids: range, **extra) -> list[dict]:
    return [
        {"config_id": config_id, "example_id": f"e{i}", "value": i, **extra} for i in example_ids
    ]


def sorted_records(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["config_id", "example_id"]).reset_index(drop=True)


def three_parts(directory: Path) -> tuple[RecordStore, pd.DataFrame]:
    """A store with configuration aaa's 12 records in three parts, and those records."""
    store = RecordStore(directory)
    for start in range(0, 12, 4):
        store.append(rows("aaa", range(start, start + 4)))
    return store, sorted_records(store.read())


@pytest.fixture(scope="module")
def swept(tiny_assets, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    overrides = tiny_overrides(
        tiny_assets, results, f"data.limit={N_EXAMPLES}", "pair.small_variants=[base]", *GRID
    )
    return results, overrides, sweep.run(compose_sweep(overrides))


def stores(results: Path) -> list[RecordStore]:
    return [RecordStore(results / "sweep" / "custom_tiny")] + [
        RecordStore(d) for d in (results / "_baselines").iterdir()
    ]


def test_records_hold_no_source_and_read_joins_it_back(swept, tiny_assets):
    results, _, outcome = swept
    for store in stores(results):
        for path in store.part_files():
            columns = pd.read_parquet(path).columns
            assert "source" not in columns and "reference" not in columns
        examples = store.examples()
        assert len(examples) == N_EXAMPLES and examples.index.is_unique
    records = outcome.records
    assert records["source"].notna().all() and records["reference"].notna().all()
    # each record's source and reference are its example's, as written in the task file
    by_id = records.drop_duplicates("example_id").set_index("example_id")
    task_rows = pd.read_json(tiny_assets[1]["validation"], lines=True).set_index("id")
    for example_id, row in by_id.iterrows():
        assert row["source"] == task_rows.loc[example_id, "de"]
        assert row["reference"] == task_rows.loc[example_id, "en"]


def test_each_finished_configuration_is_one_part(swept):
    results, _, outcome = swept
    part_counts = {}
    for store in stores(results):
        for path in store.part_files():
            part_counts[part_config(path)] = part_counts.get(part_config(path), 0) + 1
    assert set(part_counts) == set(outcome.records["config_id"])
    assert all(count == 1 for count in part_counts.values()), part_counts


def test_rerun_adds_no_examples_file_and_a_larger_slice_adds_one(swept):
    results, overrides, _ = swept
    run_store = RecordStore(results / "sweep" / "custom_tiny")
    before = sorted(run_store.examples_dir.iterdir())
    sweep.run(compose_sweep(overrides))  # everything done: nothing decoded, nothing written
    assert sorted(run_store.examples_dir.iterdir()) == before
    assert len(run_store.read()) == 2 * N_EXAMPLES
    larger = [o for o in overrides if not o.startswith("data.limit=")]
    sweep.run(compose_sweep([*larger, f"data.limit={N_EXAMPLES + 1}"]))
    assert len(list(run_store.examples_dir.iterdir())) == len(before) + 1
    assert len(run_store.examples()) == N_EXAMPLES + 1
    records = run_store.read()
    assert len(records) == 2 * (N_EXAMPLES + 1) and records["source"].notna().all()
    assert all(part_config(p) for p in run_store.part_files())  # still one part each
    assert len(run_store.part_files()) == 2


def test_resume_reads_only_the_configurations_own_parts(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    for config_id in ("aaa", "bbb", "ccc"):
        store.append(rows(config_id, range(3)))
        store.append(rows(config_id, range(3, 5)))
    store.append(rows("bbb", range(5, 6)))
    opened = []
    real_read_part = store_module.read_part
    monkeypatch.setattr(
        store_module,
        "read_part",
        lambda path, columns: opened.append(path) or real_read_part(path, columns),
    )
    assert store.done_keys("bbb") == {("bbb", f"e{i}") for i in range(6)}
    assert {part_config(p) for p in opened} == {"bbb"}
    assert len(opened) == 3
    assert len(store.done_keys()) == 3 * 5 + 1


def test_compaction_keeps_every_record_once(tmp_path):
    store = RecordStore(tmp_path)
    for start in range(0, 20, 4):
        store.append(rows("aaa", range(start, start + 4)))
    store.append(rows("bbb", range(2)))
    before = sorted_records(store.read())
    store.compact("aaa")
    assert [part_config(p) for p in store.part_files()].count("aaa") == 1
    assert [part_config(p) for p in store.part_files()].count("bbb") == 1
    pd.testing.assert_frame_equal(sorted_records(store.read()), before)


def killed_compaction(store: RecordStore, monkeypatch, owner, name: str, dies) -> None:
    """Compact configuration aaa with ``owner.name`` replaced by ``dies``, which stops the
    process (KeyboardInterrupt) part-way; then restore ``owner.name``."""
    monkeypatch.setattr(owner, name, dies)
    with pytest.raises(KeyboardInterrupt):
        store.compact("aaa")
    monkeypatch.undo()


def test_kill_after_the_merged_file_leaves_duplicates_that_reading_drops(tmp_path, monkeypatch):
    store, before = three_parts(tmp_path)
    real_unlink = Path.unlink
    deleted = []

    def dies_after_one_deletion(path, missing_ok=False):
        if deleted:
            raise KeyboardInterrupt  # the process is stopped mid-way through the deletions
        deleted.append(path)
        real_unlink(path, missing_ok=missing_ok)

    killed_compaction(store, monkeypatch, Path, "unlink", dies_after_one_deletion)
    assert len(store.part_files()) == 3  # the merged file plus two of the three parts
    pd.testing.assert_frame_equal(sorted_records(store.read()), before)
    assert len(store.done_keys("aaa")) == 12
    store.compact("aaa")  # the next compaction cleans up
    assert len(store.part_files()) == 1
    pd.testing.assert_frame_equal(sorted_records(store.read()), before)


def test_kill_while_writing_the_merged_file_loses_nothing(tmp_path, monkeypatch):
    store, before = three_parts(tmp_path)
    parts = store.part_files()

    def dies_before_rename(src, dst):
        raise KeyboardInterrupt

    killed_compaction(store, monkeypatch, store_module.os, "replace", dies_before_rename)
    assert store.part_files() == parts
    pd.testing.assert_frame_equal(sorted_records(store.read()), before)


def test_a_reader_racing_a_compaction_lists_again(tmp_path, monkeypatch):
    """Another sweep compacts a configuration between this reader's listing and reading."""
    store, before = three_parts(tmp_path)
    real_part_files = RecordStore.part_files
    raced = []

    def listing_then_compaction(self, config_id=None):
        listed = real_part_files(self, config_id)
        if not raced:
            raced.append(True)
            RecordStore(tmp_path).compact("aaa")
        return listed

    monkeypatch.setattr(RecordStore, "part_files", listing_then_compaction)
    pd.testing.assert_frame_equal(sorted_records(store.read()), before)
    assert raced


def test_schema_1_records_migrate_once_when_a_sweep_claims_the_folder(tmp_path):
    """A schema-1 folder (parts not named by configuration, sources in every record) is
    rewritten at claim: per-configuration parts, sources in examples/, nothing lost."""
    import json

    from bild_exp.harness.records.fingerprint import migrate_fingerprint

    store = RecordStore(tmp_path)
    (tmp_path / "parts").mkdir()
    legacy = pd.DataFrame(
        rows("aaa", range(2), source="s", reference="r")
        + rows("bbb", range(2), source="s", reference="r")
    )
    legacy.to_parquet(tmp_path / "parts" / ("part-" + "0" * 32 + ".parquet"), index=False)
    version_1 = {"task": "demo", "large": "l"}
    (tmp_path / "compat.json").write_text(json.dumps(version_1))
    store.claim(migrate_fingerprint(version_1))
    assert sorted(part_config(path) for path in store.part_files()) == ["aaa", "bbb"]
    assert json.loads((tmp_path / "compat.json").read_text())["schema"] == 2
    frame = sorted_records(store.read())
    assert len(frame) == 4 and set(frame["source"]) == {"s"} and set(frame["reference"]) == {"r"}
    assert "source" not in store.read_records().columns  # moved out of the records
    assert store.done_keys("bbb") == {("bbb", "e0"), ("bbb", "e1")}
    assert store.migrate_records() == 0  # once


def test_same_slice_saved_twice_is_one_file(tmp_path):
    store = RecordStore(tmp_path)
    slice_rows = [{"example_id": "e0", "source": "s", "reference": "r"}]
    store.save_examples(slice_rows)
    store.save_examples(slice_rows)
    assert len(list(store.examples_dir.iterdir())) == 1
    store.save_examples([*slice_rows, {"example_id": "e1", "source": "t", "reference": "q"}])
    assert len(list(store.examples_dir.iterdir())) == 2
    assert list(store.examples().index) == ["e0", "e1"]


def test_a_store_object_does_not_rehash_the_ids_it_saved(tmp_path, monkeypatch):
    """A sweep saves its slice once per configuration: only the first call hashes it."""
    store = RecordStore(tmp_path)
    slice_rows = [{"example_id": f"e{i}", "source": "s" * 100, "reference": "r"} for i in range(5)]
    store.save_examples(slice_rows)
    hashed = []
    real_sha256 = store_module.hashlib.sha256
    monkeypatch.setattr(
        store_module.hashlib, "sha256", lambda data: hashed.append(1) or real_sha256(data)
    )
    store.save_examples(slice_rows)
    store.save_examples(slice_rows[:3])
    assert not hashed
    RecordStore(tmp_path).save_examples(slice_rows)  # a new sweep's object checks the file
    assert hashed == [1] and len(list(store.examples_dir.iterdir())) == 1
