"""Files shipped inside installed Python packages (GGUF checkpoints, HumanEval's data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def module_folder(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None
