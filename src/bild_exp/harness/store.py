"""Tidy result records on disk: one row per (configuration, example), written as parquet
parts with atomic renames, so a killed sweep loses nothing it had written and resumes
where it stopped. One process at a time computes records for a folder (a lock file with
the owner's pid), so two sweeps never compute and store the same record twice."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from bild_exp.errors import BildError

KEY = ["config_id", "example_id"]


class IncompatibleResultsError(BildError, ValueError):
    """A results folder holds records from a different task, pair, data or device."""


class CorruptedResultsError(BildError, OSError):
    """A part file of a results folder cannot be read."""


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
    """Records of one run folder: ``<dir>/parts/*.parquet`` plus ``compat.json``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.parts_dir = self.directory / "parts"

    def claim(self, fingerprint: dict[str, Any]) -> None:
        """Refuse to mix records from an incompatible configuration into this folder; the
        first claim writes the fingerprint."""
        if not self.check(fingerprint):
            atomic_write_json(self.directory / "compat.json", fingerprint)

    def check(self, fingerprint: dict[str, Any]) -> bool:
        """Raise if this folder holds another configuration's records; True if it has a
        fingerprint (False: a new folder)."""
        path = self.directory / "compat.json"
        if path.exists():
            stored = json.loads(path.read_text())
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
            return True
        return False

    def lock(self, config_id: str, wait: bool = False):
        """One process at a time computes a configuration's records in this folder."""
        return file_lock(self.directory / "locks" / f"{config_id}.lock", wait)

    def part_files(self) -> list[Path]:
        return sorted(self.parts_dir.glob("*.parquet")) if self.parts_dir.exists() else []

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        frame = pd.DataFrame(rows)
        atomic_write_bytes(
            self.parts_dir / f"part-{uuid.uuid4().hex}.parquet", frame.to_parquet(index=False)
        )

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """All records, one per (config_id, example_id) (the first written wins)."""
        parts = [read_part(path, columns) for path in self.part_files()]
        if not parts:
            return pd.DataFrame(columns=columns or KEY)
        frame = pd.concat(parts, ignore_index=True)
        return frame.drop_duplicates(subset=KEY, keep="first").reset_index(drop=True)

    def done_keys(self) -> set[tuple[str, str]]:
        frame = self.read(columns=KEY)
        return set(zip(frame["config_id"], frame["example_id"], strict=True))


def read_part(path: Path, columns: list[str] | None) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise CorruptedResultsError(
            f"results part {str(path)!r} cannot be read ({type(error).__name__}): move it out of "
            "parts/ (its records are then recomputed) or restore it; other parts are untouched"
        ) from None
