"""Tidy result records on disk: one row per (configuration, example), written as parquet
parts with atomic renames, so a killed sweep loses nothing it had written and resumes
where it stopped, and parallel jobs merge without loss (every writer makes new parts)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

KEY = ["config_id", "example_id"]


class IncompatibleResultsError(ValueError):
    """A results folder holds records from a different task, pair, data or device."""


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
        """Refuse to mix records from an incompatible configuration into this folder."""
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
            return
        atomic_write_json(path, fingerprint)

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
        parts = [pd.read_parquet(path, columns=columns) for path in self.part_files()]
        if not parts:
            return pd.DataFrame(columns=columns or KEY)
        frame = pd.concat(parts, ignore_index=True)
        return frame.drop_duplicates(subset=KEY, keep="first").reset_index(drop=True)

    def done_keys(self) -> set[tuple[str, str]]:
        frame = self.read(columns=KEY)
        return set(zip(frame["config_id"], frame["example_id"], strict=True))
