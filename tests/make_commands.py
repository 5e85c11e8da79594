"""What a make target would run, without running it (``make -n``), for the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run_listing(target: str, limit: int) -> str:
    """The commands `make <target> DRY_RUN=1 LIMIT=<limit>` would run, one per line."""
    return subprocess.run(
        ["make", "-n", "-s", "--no-print-directory", target, "DRY_RUN=1", f"LIMIT={limit}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
