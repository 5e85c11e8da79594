"""What the GGUF modules share: the cache folder both write into, the scheme of a file
shipped in parts, and the one error both raise (a module of its own, so that
:mod:`bild_exp.models.gguf` imports :mod:`bild_exp.models.gguf_parts` and not back)."""

from __future__ import annotations

import os
from pathlib import Path

from bild_exp.errors import BildError

PARTS_SCHEME = "gguf-parts://"  # a file assembled from parts (bild_exp.models.gguf_parts)


class GGUFError(BildError, OSError):
    """A GGUF file cannot be found or converted."""


def cache_root() -> Path:
    """``$BILD_EXP_CACHE/gguf`` (default ``~/.cache/bild-exp/gguf``)."""
    return Path(os.environ.get("BILD_EXP_CACHE", "~/.cache/bild-exp")).expanduser() / "gguf"
