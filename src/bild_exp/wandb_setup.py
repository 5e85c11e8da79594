"""Weights & Biases set-up that never prompts and never blocks local results.

The mode follows ``logger.mode``, else ``WANDB_MODE``; with neither and no API key
(``WANDB_API_KEY`` or a ``~/.netrc`` entry) it falls back to ``offline`` and says so.
"""

from __future__ import annotations

import logging
import netrc
import os
from typing import Any

from bild_exp.errors import InvalidParameterError

log = logging.getLogger(__name__)
MODES = ("online", "offline", "disabled")


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(logger_cfg: Any) -> str:
    """``online``, ``offline`` or ``disabled`` for this run."""
    if logger_cfg is None or logger_cfg.get("name", "none") == "none":
        return "disabled"
    mode = check_mode(logger_cfg)
    if mode is None:
        if has_api_key():
            return "online"
        log.warning(
            "W&B: no API key and no mode set, logging offline (upload later with `wandb sync`)"
        )
        return "offline"
    return mode


def check_mode(logger_cfg: Any) -> str | None:
    """The configured mode (``logger.mode``, else ``WANDB_MODE``), refused unless known."""
    if logger_cfg is None or logger_cfg.get("name", "none") == "none":
        return None
    mode = logger_cfg.get("mode") or os.environ.get("WANDB_MODE")
    if mode is not None and mode not in MODES:
        source = "logger.mode" if logger_cfg.get("mode") else "WANDB_MODE"
        raise InvalidParameterError(f"{source}={mode!r} is invalid: accepted {', '.join(MODES)}")
    return mode


def report_to(logger_cfg: Any) -> str:
    """The Trainer's ``report_to`` value, with W&B's environment set for a non-interactive run."""
    mode = resolve_mode(logger_cfg)
    if mode == "disabled":
        return "none"
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_PROJECT", logger_cfg.get("project") or "bild-exp")
    os.environ["WANDB_SILENT"] = "true"
    return "wandb"
