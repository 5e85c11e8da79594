"""What identifies a results folder's records: the settings that must match for records
to share a folder (``compat.json``) and the data slice's fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bild_exp.data.tasks import Example, TaskSpec
from bild_exp.errors import InvalidParameterError
from bild_exp.harness.config.plan import RunConfig
from bild_exp.harness.config.settings import resolve_settings
from bild_exp.models.pair import LoadSettings


def dataset_fingerprint(examples: list[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(f"{example.id}\x00{example.source}\x00{example.target}\x01".encode())
    return digest.hexdigest()


# compat.json's layout. Version 1 (no "schema" key) left out the keys a setting did not use,
# so that folders written before the setting existed kept their fingerprint; version 2 states
# every key. migrate_fingerprint is the one step from 1 to 2.
SCHEMA_VERSION = 2
# What an absent key meant in version 1.
VERSION_1_DEFAULTS: dict[str, Any] = {
    "early_exit_layers": None,  # no early-exit run planned
    "calm_model": None,  # no CALM run planned
    "engine_compile_mode": None,  # the eager engine
    "engine_cpu_kernels": "plain",  # before the prepacked CPU path
}


def compatibility(
    cfg: DictConfig, task: TaskSpec, device: dict[str, Any], runs: list[RunConfig]
) -> dict[str, Any]:
    """What must match for records to share a folder (the data limit may grow).

    The early-exit depth and CALM's model count only when a planned run uses them (None
    otherwise): a sweep without them shares folders with sweeps that differ only there.
    """
    settings, load = resolve_settings(cfg), LoadSettings.of(cfg)
    uses = {
        "early_exit_layers": any(run.small_variant == "early_exit" for run in runs),
        "calm_model": any(run.method == "calm" for run in runs),
    }
    return {
        "schema": SCHEMA_VERSION,
        "task": task.name,
        "dataset": task.hub_id or str(task.data_files),
        "split": settings.split,
        "source_prefix": task.source_prefix,
        "large": cfg.pair.large,
        "small": cfg.pair.small,
        "small_aligned": cfg.pair.get("small_aligned"),
        "dtype": cfg.pair.dtype,
        "device": device["device_name"],
        # a baseline is never reused across library versions or matmul precision settings
        "torch": device["torch"],
        "transformers": device["transformers"],
        "float32_matmul_precision": device["float32_matmul_precision"],
        "cuda_matmul_allow_tf32": device["cuda_matmul_allow_tf32"],
        "max_new_tokens": settings.decode.max_new_tokens,
        "max_source_length": task.max_source_length,
        **{name: cfg.pair.get(name) if used else None for name, used in uses.items()},
        # compiled and eager timings never share a folder, nor do two compile modes
        "engine_compile_mode": settings.decode.compile_mode,
        # prepacked kernels round differently from plain ones
        "engine_cpu_kernels": load.cpu_kernels,
        **weight_keys(load, runs),
    }


def weight_keys(load: LoadSettings, runs: list[RunConfig]) -> dict[str, Any]:
    """The quantised weights' settings, stated only where they apply: a quantised large model
    is another model (``pair.large_weights``); the int4 group size defines the ``int4``
    small variant. Left out at their defaults, so that every folder written before they
    existed keeps its fingerprint (and its baselines folder its name)."""
    keys: dict[str, Any] = {}
    if load.large_weights != "float32":
        keys["large_weights"] = load.large_weights
    if load.large_weights == "int4" or any(run.small_variant == "int4" for run in runs):
        keys["int4_group_size"] = load.int4_group_size
    return keys


def migrate_fingerprint(stored: dict[str, Any], path: object = "compat.json") -> dict[str, Any]:
    """``stored`` (a folder's compat.json) in the current schema; one line for a schema this
    version does not know (a folder written by a newer bild-exp)."""
    schema = stored.get("schema", 1)
    if schema == SCHEMA_VERSION:
        return dict(stored)
    if schema != 1:
        raise InvalidParameterError(
            f"schema={schema!r} in {str(path)!r} is invalid: accepted 1 or {SCHEMA_VERSION} "
            "(written by a newer bild-exp: upgrade, or use another results_dir)"
        )
    migrated = {**VERSION_1_DEFAULTS, **stored, "schema": SCHEMA_VERSION}
    compiled = migrated.pop("engine_compile", False)
    migrated["engine_compile_mode"] = (
        stored.get("engine_compile_mode", "default") if compiled else None
    )
    return migrated


def version_1(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """``fingerprint`` as version 1 wrote it (the name of a baselines folder written then)."""
    old = {
        key: value
        for key, value in fingerprint.items()
        if key != "schema" and not (key in VERSION_1_DEFAULTS and value == VERSION_1_DEFAULTS[key])
    }
    mode = old.pop("engine_compile_mode", None)
    if mode is not None:
        old["engine_compile"] = True
        if mode != "default":
            old["engine_compile_mode"] = mode
    return old


def baselines_folder(root: Path, fingerprint: dict[str, Any], migrate: bool = True) -> Path:
    """The shared baselines folder of ``fingerprint`` under ``root``. A folder named by the
    version-1 fingerprint is renamed to the current name (``migrate``; a dry run only reads
    it where it is), so baselines measured before the schema change are reused."""
    current = root / short_hash(fingerprint)
    old = root / short_hash(version_1(fingerprint))
    if current.exists() or not old.exists():
        return current
    if not migrate:
        return old
    old.rename(current)
    return current


def run_folder(cfg: DictConfig, task: TaskSpec) -> Path:
    """``<results_dir>/<experiment_name>/<run>`` (run: ``<task>_<pair>`` unless set)."""
    return Path(cfg.results_dir) / cfg.experiment_name / (cfg.run or f"{task.name}_{cfg.pair.name}")


def short_hash(value: dict[str, Any]) -> str:
    return hashlib.sha1(repr(sorted(value.items())).encode()).hexdigest()[:16]
