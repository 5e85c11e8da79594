"""From a composed sweep config to the list of runs (pure: no model, no data loaded).

A *study* (``conf/method/*.yaml``) names an engine method, fixed parameters and the
grid axes it sweeps; a :class:`RunConfig` is one point: method, all parameters, the
small model variant and the seed. Every point is validated by the engine's own
parameter checks here, before anything loads.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bild_exp.decoding.registry import parameter_types, parse_params, spec_of
from bild_exp.errors import InvalidParameterError

BASELINE_METHODS = ("large", "small")
# base: pair.small | aligned: pair.small_aligned | early_exit: the large model's first
# pair.early_exit_layers decoder layers (paper Section 4.4) | int8, int4: pair.small with
# weight-only quantised linear layers (bild_exp.models.weight_only; int4 groups of
# pair.int4_group_size input columns)
SMALL_VARIANTS = ("base", "aligned", "early_exit", "int8", "int4")
GRID_AXES = (
    "fallback_threshold",
    "rollback_threshold",
    "window",
    "oracle_threshold",
    "num_assistant_tokens",
    "prompt_lookup_num_tokens",
    "exit_threshold",
    "decay_temperature",
)
# The parameters that make a vanilla-large run the reference of another run (greedy runs
# share one; nucleus runs pair by top_p, temperature and seed)
SAMPLING_COLUMNS = ("sampling", "top_p", "temperature", "seed")
# Parameters that are the same for every example of a run and identify it in result rows
# (read from the methods' parameter classes: a new parameter needs no edit here).
PARAM_COLUMNS = tuple(parameter_types())


@dataclass(frozen=True)
class RunConfig:
    """One decoding configuration: evaluated on every example of the data slice."""

    study: str  # the method preset's name, e.g. "bild_no_rollback"
    method: str  # the engine method, e.g. "bild"
    small_variant: str  # one of SMALL_VARIANTS ("-" for large and calm)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def config_id(self) -> str:
        """A short stable hash of everything that defines this configuration."""
        key = json.dumps([self.study, self.method, self.small_variant, self.params], sort_keys=True)
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    @property
    def is_baseline(self) -> bool:
        return self.study in BASELINE_METHODS

    def columns(self) -> dict[str, Any]:
        """The configuration as result-row columns (every parameter column present)."""
        row = {"config_id": self.config_id, "study": self.study, "method": self.method}
        row["small_variant"] = self.small_variant
        row.update({name: self.params.get(name) for name in PARAM_COLUMNS})
        return row


def sampling_params(cfg: DictConfig, seed: int) -> dict[str, Any]:
    if cfg.sampling == "greedy":
        return {"sampling": "greedy"}
    return {
        "sampling": cfg.sampling,
        "top_p": cfg.grid.top_p,
        "temperature": cfg.temperature,
        "seed": seed,
    }


def grid_points(study: DictConfig, grid: DictConfig) -> list[dict[str, Any]]:
    """The Cartesian product of the grid axes the study sweeps."""
    axes = list(study.get("sweep") or [])
    for axis in axes:
        if axis not in GRID_AXES:
            raise InvalidParameterError(
                f"sweep axis={axis!r} is invalid: accepted {', '.join(GRID_AXES)}"
            )
    values = []
    for axis in axes:
        axis_values = grid.get(axis)
        axis_values = [axis_values] if not OmegaConf.is_list(axis_values) else list(axis_values)
        if not axis_values:
            raise InvalidParameterError(f"grid.{axis}=[] is invalid: accepted a non-empty list")
        values.append(axis_values)
    return [dict(zip(axes, combination, strict=True)) for combination in itertools.product(*values)]


def small_variants(cfg: DictConfig, study: DictConfig | None = None) -> list[str]:
    """The study's own ``small_variants`` if set, else the pair's; each checked."""
    chosen = (study.get("small_variants") if study is not None else None) or cfg.pair.get(
        "small_variants"
    )
    variants = list(chosen or ["base"])
    for variant in variants:
        if variant not in SMALL_VARIANTS:
            raise InvalidParameterError(
                f"pair.small_variants entry={variant!r} is invalid: accepted {', '.join(SMALL_VARIANTS)}"
            )
        if variant == "aligned" and not cfg.pair.get("small_aligned"):
            raise InvalidParameterError(
                f"pair.small_variants includes 'aligned' but pair.small_aligned=None for pair {cfg.pair.name!r}: "
                "accepted a checkpoint id or folder"
            )
        if variant in ("base", "int8", "int4") and not cfg.pair.get("small"):
            raise InvalidParameterError(
                f"pair.small_variants includes {variant!r} but pair.small=None for pair {cfg.pair.name!r}: "
                "accepted a checkpoint id or folder"
            )
        layers = cfg.pair.get("early_exit_layers")
        if variant == "early_exit" and (
            not isinstance(layers, int) or isinstance(layers, bool) or layers < 1
        ):
            raise InvalidParameterError(
                f"pair.early_exit_layers={layers!r} is invalid for small variant 'early_exit': "
                "accepted an integer >= 1 (decoder layers the small model keeps)"
            )
    return variants


def bild_schedule(cfg: DictConfig, method: str, params: dict[str, Any]) -> dict[str, str]:
    """``{"schedule": ...}`` for a BiLD run when ``bild_schedule`` asks for the official loop
    and the study does not set one. The paper schedule, the engine's default, is left out of
    the parameters so that runs recorded before the option keep their configuration ids."""
    schedule = cfg.get("bild_schedule", "paper")
    if method != "bild" or "schedule" in params or schedule == "paper":
        return {}
    return {"schedule": schedule}


def as_typed(message: str, study: str, swept: set[str], fixed: set[str]) -> str:
    """The engine names a parameter (``window=0 is invalid``); the user typed a config key
    (``grid.window``, ``seeds``, ``method.<study>.params.window``): name that instead."""
    name = message.split("=", 1)[0]
    if name in swept:
        key = f"grid.{name}"
    elif name == "top_p":
        key = "grid.top_p"
    elif name == "seed":
        key = "seeds entry"
    elif name in fixed:
        key = f"method.{study}.params.{name}"
    else:
        return message
    return f"{key}{message[len(name) :]}"


def plan_runs(cfg: DictConfig) -> list[RunConfig]:
    """Every configuration the sweep evaluates; the large baseline is always included."""
    seeds = list(cfg.seeds) if cfg.sampling != "greedy" else [0]
    runs: list[RunConfig] = []
    studies = dict(cfg.method)
    if "large" not in studies:  # speedups are relative to vanilla large: always measure it
        studies = {
            "large": OmegaConf.create({"method": "large", "params": {}, "sweep": []}),
            **studies,
        }
    for study_name, study in studies.items():
        single = not spec_of(study.method).needs_small  # no small model: no small variant
        variants = ["-"] if single else small_variants(cfg, study)
        params_node = study.get("params")
        fixed = OmegaConf.to_container(params_node, resolve=True) if params_node is not None else {}
        for variant, point, seed in itertools.product(
            variants, grid_points(study, cfg.grid), seeds
        ):
            params = {**fixed, **point, **sampling_params(cfg, seed)}
            params.update(bild_schedule(cfg, study.method, params))
            try:  # the engine's validation, before any model loads
                parse_params(study.method, params)
            except InvalidParameterError as error:
                raise InvalidParameterError(
                    as_typed(str(error), study_name, set(point), set(fixed))
                ) from None
            runs.append(RunConfig(study_name, study.method, variant, params))
    return runs


def reference_runs(runs: list[RunConfig]) -> dict[str, str | None]:
    """Each run's vanilla-large reference: the large run with the same sampling settings
    (None where the plan has none); a large run is its own."""

    def key(run: RunConfig) -> tuple:
        return tuple(run.params.get(name) for name in SAMPLING_COLUMNS)

    large = {key(run): run.config_id for run in runs if run.method == "large"}
    return {run.config_id: large.get(key(run)) for run in runs}
