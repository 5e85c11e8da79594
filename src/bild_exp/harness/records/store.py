"""Tidy result records on disk: one row per (configuration, example), written as parquet
parts with atomic renames, so a killed sweep loses nothing it had written and resumes
where it stopped. One process at a time computes a configuration's records in a folder (a
lock file with the owner's pid), so two sweeps never compute and store a record twice.

Built for paper scale (~1.5 million records for Table 1): each example's source and
reference are stored once per folder (``examples/``), not in every record; parts are named
by configuration, so resuming one reads only that configuration's files; and a finished
configuration's parts are compacted into one file. Every step is an atomic rename followed
by deletions, so a kill at any point leaves either the old files or duplicates of identical
rows (dropped on read), never a loss."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from bild_exp.errors import BildError
from bild_exp.harness.records.fingerprint import migrate_fingerprint

KEY = ["config_id", "example_id"]
# One record per (configuration, example, timing block): an example re-timed in a later
# block (bild_exp.harness.run.blocks) adds a record; records written before blocks existed
# have no block_id and are keyed by the first two.
RECORD_KEY = [*KEY, "block_id"]
EXAMPLE_COLUMNS = ["source", "reference"]  # stored once per example in examples/
# part-<config_id>-<uuid>.parquet (schema-1 folders also hold part-<uuid>.parquet, any
# configuration, with sources in the records: migrate_records rewrites them)
CONFIG_PART = re.compile(r"part-(?P<config_id>[^-]+)-[0-9a-f]{32}\.parquet")
READ_RETRIES = 5  # a concurrent compaction may delete a listed part before it is read


class IncompatibleResultsError(BildError, ValueError):
    """A results folder holds records from a different task, pair, data or device."""


class CorruptedResultsError(BildError, OSError):
    """A part file of a results folder cannot be read."""


class UnwritableResultsError(BildError, OSError):
    """The results folder cannot be created or written."""


def check_writable(directory: Path, key: str = "results_dir") -> None:
    """One line unless ``directory`` exists as a writable folder or can be created: tried
    with a temporary file in it (or in its nearest existing parent), nothing left behind.
    Catches an existing regular file, a read-only filesystem, an immutable folder."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{str(existing)!r} is a file, not a folder"
    else:
        try:
            probe = existing / f".bild-write-test-{uuid.uuid4().hex}"
            probe.touch()
            probe.unlink()
        except OSError as error:
            problem = f"{str(existing)!r} cannot be written ({error.strerror or error})"
    if problem:
        raise UnwritableResultsError(
            f"{key}={str(directory)!r} is invalid: {problem}; accepted a folder this user can "
            "write (pass results_dir=<path>)"
        )


class BusyError(BildError, OSError):
    """Another live process is computing this configuration's records."""


@contextmanager
def file_lock(path: Path, wait: bool, poll_s: float = 0.5) -> Iterator[None]:
    """Hold ``path`` as a lock file: an advisory ``flock`` plus the owner's pid and host.

    The kernel releases a flock when its owner dies, even by ``kill -9``, so a lock file
    left behind by a dead process is stale and taken over at once. ``wait=False`` raises
    :class:`BusyError` naming the owner; ``wait=True`` polls until the owner is done.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - closed in the finally below
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise BusyError(f"{str(path)!r} is held by {lock_owner(path)}") from None
                time.sleep(poll_s)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        handle.flush()
        yield
    finally:
        handle.close()  # releases the flock; the file stays (an unlocked file is stale)


def lock_owner(path: Path) -> str:
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"pid {owner.get('pid')} on {owner.get('host')}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a unique temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(
        path, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()
    )


class RecordStore:
    """Records of one run folder: ``<dir>/parts/*.parquet``, ``<dir>/examples/*.parquet``
    (source and reference per example id) and ``compat.json``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.parts_dir = self.directory / "parts"
        self.examples_dir = self.directory / "examples"
        self.saved_example_ids: set[str] = set()  # saved by this object: no rehashing

    @property
    def data_dirs(self) -> list[Path]:
        """The folders that hold this store's data: records and examples."""
        return [self.parts_dir, self.examples_dir]

    def claim(self, fingerprint: dict[str, Any]) -> None:
        """Refuse to mix records from an incompatible configuration into this folder; the
        first claim writes the fingerprint, and a claim of an older schema's folder rewrites
        it in the current one."""
        stored = self.check(fingerprint)
        if stored != fingerprint:  # a new folder, or an older schema's: migrate it once
            if stored is not None:
                self.migrate_records()
            atomic_write_json(self.directory / "compat.json", fingerprint)

    def migrate_records(self) -> int:
        """Rewrite a schema-1 folder's records in the current layout: each part not named
        by its configuration is split into per-configuration parts, and the sources and
        references its records hold move to ``examples/``. The new parts are written (by
        rename) before the old one is deleted: a kill in between leaves duplicates of
        identical rows, which reading drops. Returns the number of parts rewritten."""
        old_parts = [path for path in parquet_files(self.parts_dir) if part_config(path) is None]
        for path in old_parts:
            frame = read_part(path, None)
            held = [column for column in EXAMPLE_COLUMNS if column in frame]
            if held:
                examples = frame.drop_duplicates("example_id")
                columns = ["example_id", *EXAMPLE_COLUMNS]
                self.save_examples(examples.reindex(columns=columns).to_dict("records"))
                frame = frame.drop(columns=held)
            for config_id, records in frame.groupby("config_id", sort=False):
                self.write_part(str(config_id), records)
            path.unlink()
        return len(old_parts)

    def check(self, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        """Raise if this folder holds another configuration's records; return its
        ``compat.json`` as stored (None: a new folder)."""
        path = self.directory / "compat.json"
        if not path.exists():
            return None
        raw = read_json(
            path, "restore it, or move the folder aside and rerun (its records are recomputed)"
        )
        stored = migrate_fingerprint(raw, path)
        differing = sorted(
            k for k in stored.keys() | fingerprint.keys() if stored.get(k) != fingerprint.get(k)
        )
        if differing:
            key = differing[0]
            raise IncompatibleResultsError(
                f"results folder {str(self.directory)!r} was written with {key}={stored.get(key)!r}, "
                f"this run has {key}={fingerprint.get(key)!r}: accepted the same settings, "
                "or a new folder (set run=<name> or experiment_name=<name>)"
            )
        return raw

    def verify(self) -> None:
        """Every part and examples file's footer reads (before any model loads: a damaged
        file is reported at once, not after minutes of loading)."""
        for path in parquet_files(self.parts_dir) + parquet_files(self.examples_dir):
            try:
                pq.read_metadata(path)
            except FileNotFoundError:  # removed by a concurrent compaction: nothing damaged
                continue
            except Exception:  # noqa: BLE001 - pyarrow raises several types
                read_part(path, None)  # the one-line error (or the file is fine after all)

    def lock(self, config_id: str, wait: bool = False, shard: str = ""):
        """One process at a time computes a configuration's records in this folder (of one
        shard of the examples: ``shard`` names it, :func:`bild_exp.harness.run.long_run.shard_label`;
        shards hold disjoint examples, so their jobs run side by side)."""
        return file_lock(self.directory / "locks" / f"{config_id}{shard}.lock", wait)

    def part_files(self, config_id: str | None = None) -> list[Path]:
        """Every part, or ``config_id``'s own."""
        files = parquet_files(self.parts_dir)
        if config_id is None:
            return files
        return [path for path in files if part_config(path) == config_id]

    def save_block(self, block: dict[str, Any]) -> None:
        """``blocks/<block_id>.json``: a timing block's machine, start and per-call costs
        (bild_exp.harness.run.blocks), next to the records it timed."""
        atomic_write_json(self.directory / "blocks" / f"{block['block_id']}.json", block)

    def blocks(self) -> dict[str, dict[str, Any]]:
        """This folder's timing blocks by id."""
        folder = self.directory / "blocks"
        paths = sorted(folder.glob("*.json")) if folder.exists() else []
        return {
            path.stem: read_json(path, "delete it (its block is then unmodelled)") for path in paths
        }

    def save_examples(self, examples: list[dict[str, str]]) -> None:
        """Store ``{"example_id", "source", "reference"}`` rows once: the file is named by
        its content, so the same slice written twice (or by two sweeps at once) is one
        file, and a different slice adds another. A sweep calls it once per configuration:
        ids this object saved already are not hashed again (a CNN/DM slice is ~50 MB)."""
        ids = {example["example_id"] for example in examples}
        if ids <= self.saved_example_ids:
            return
        frame = pd.DataFrame(examples, columns=["example_id", *EXAMPLE_COLUMNS])
        digest = hashlib.sha256(frame.to_json(orient="values").encode()).hexdigest()[:24]
        path = self.examples_dir / f"examples-{digest}.parquet"
        if not path.exists():
            atomic_write_bytes(path, frame.to_parquet(index=False))
        self.saved_example_ids |= ids

    def examples(self) -> pd.DataFrame:
        """Source and reference per example id, indexed by example id."""
        frames = [read_part(path, None) for path in parquet_files(self.examples_dir)]
        if not frames:
            return pd.DataFrame(columns=EXAMPLE_COLUMNS, index=pd.Index([], name="example_id"))
        frame = pd.concat(frames, ignore_index=True).drop_duplicates("example_id")
        return frame.set_index("example_id")

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write one part of one configuration's records (source and reference go to
        :meth:`save_examples`, not here)."""
        if not rows:
            return
        frame = pd.DataFrame(rows)
        (config_id,) = frame["config_id"].unique()
        self.write_part(config_id, frame)

    def write_part(self, config_id: str, frame: pd.DataFrame) -> None:
        atomic_write_bytes(
            self.parts_dir / f"part-{config_id}-{uuid.uuid4().hex}.parquet",
            frame.to_parquet(index=False),
        )

    def compact(self, config_id: str) -> None:
        """Merge a configuration's parts into one file: write the merged file by atomic
        rename, then delete the parts it holds. A kill between the two leaves duplicates
        of identical rows, which reading drops and the next compaction removes."""
        files = [path for path in self.part_files(config_id) if part_config(path) == config_id]
        if len(files) < 2:
            return
        frame = pd.concat([read_part(path, None) for path in files], ignore_index=True)
        self.write_part(config_id, frame.drop_duplicates(subset=record_key(frame), keep="first"))
        for path in files:
            path.unlink(missing_ok=True)

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """All records, one per (config_id, example_id, block_id) (the first written wins),
        with each example's source and reference."""
        example_columns = [c for c in EXAMPLE_COLUMNS if columns is None or c in columns]
        record_columns = (
            None
            if columns is None
            else list(dict.fromkeys([*KEY, *(c for c in columns if c not in EXAMPLE_COLUMNS)]))
        )
        frame = self.read_records(record_columns)
        if example_columns:
            frame = with_examples(frame, self.examples(), example_columns)
        return frame if columns is None else frame.reindex(columns=columns)

    def read_records(
        self, columns: list[str] | None = None, config_id: str | None = None
    ) -> pd.DataFrame:
        """The records as written, deduplicated; only ``config_id``'s when given."""
        for attempt in range(READ_RETRIES):
            try:
                parts = [read_part(path, columns) for path in self.part_files(config_id)]
                break
            except FileNotFoundError:  # compacted away after listing: list again
                if attempt == READ_RETRIES - 1:
                    raise
        if not parts:
            return pd.DataFrame(columns=columns or KEY)
        frame = pd.concat(parts, ignore_index=True)
        if config_id is not None:
            frame = frame[frame["config_id"] == config_id]
        frame = frame.drop_duplicates(subset=record_key(frame), keep="first")
        return frame.reset_index(drop=True)

    def done_keys(self, config_id: str | None = None) -> set[tuple[str, str]]:
        """(config_id, example_id) of the stored records; only ``config_id``'s (reading
        only its parts) when given."""
        frame = self.read_records(KEY, config_id)
        return set(zip(frame["config_id"], frame["example_id"], strict=True))


def record_key(frame: pd.DataFrame) -> list[str]:
    """The columns that identify a record in ``frame`` (block_id where it has one)."""
    return [column for column in RECORD_KEY if column in frame]


def parquet_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.parquet")) if directory.exists() else []


def part_config(path: Path) -> str | None:
    """The configuration a part belongs to (None: a schema-1 part, any configuration)."""
    match = CONFIG_PART.fullmatch(path.name)
    return match["config_id"] if match else None


def with_examples(
    records: pd.DataFrame, examples: pd.DataFrame, columns: list[str]
) -> pd.DataFrame:
    """Records with their examples' ``columns``, placed after ``example_id``."""
    records = records.copy()
    for column in columns:
        records[column] = records["example_id"].map(examples[column]) if len(examples) else None
    if "example_id" in records:
        order = list(records.columns)
        for column in columns:
            order.remove(column)
        at = order.index("example_id") + 1
        records = records[order[:at] + columns + order[at:]]
    return records


def read_json(path: Path, remedy: str) -> dict[str, Any]:
    """A results folder's JSON file (``compat.json``, ``manifest.json``); a truncated or
    damaged one is one line naming the file and what to do."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = (
            f"not valid JSON: {error}" if isinstance(error, json.JSONDecodeError) else "not text"
        )
        raise CorruptedResultsError(f"{str(path)!r} is {reason} (truncated?): {remedy}") from None
    if not isinstance(value, dict):
        raise CorruptedResultsError(
            f"{str(path)!r} holds a JSON {type(value).__name__}, not an object: {remedy}"
        )
    return value


def read_part(path: Path, columns: list[str] | None) -> pd.DataFrame:
    """A part's records (``columns`` that it has: a part written before a column existed
    lacks it, and the column is absent from its frame)."""
    try:
        if columns is not None:
            present = set(pq.read_schema(path).names)
            columns = [column for column in columns if column in present]
        return pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise CorruptedResultsError(
            f"results part {str(path)!r} cannot be read ({type(error).__name__}): move it out of "
            "its folder (its records are then recomputed) or restore it; other files are untouched"
        ) from None
