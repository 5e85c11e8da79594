"""A load-immune second estimate of each record's latency: its recorded decoder calls
(``large_call_shapes``, ``small_call_shapes``) times per-call costs measured in the same
process right after its timed examples (the bench's cost model,
:mod:`bild_exp.bench.cost_model`). The ratio of measured to modelled latency per block
shows where load or overhead outside the model calls moved the wall clock."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import pandas as pd
import torch

from bild_exp.bench.cost_model import CallTimes, measure_paths, predicted_latency
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.harness.run.blocks import loaded
from bild_exp.models.pair import LoadedPair

SHORT_CALLS = 16  # every n_fed up to this is measured; longer calls (prefills) at their maximum
LONGEST_CALL = 1024


def call_shapes(records: pd.DataFrame, column: str) -> list[tuple[int, int]]:
    return [(int(n), int(c)) for calls in records[column].dropna() for n, c in calls]


def probe_sizes(shapes: list[tuple[int, int]]) -> tuple[list[int], int]:
    """The tokens-fed values to measure (every short one used, 1, and the longest call)
    and the cached length to measure them at (the calls' median)."""
    fed = {n for n, _ in shapes}
    ks = {1} | {n for n in fed if n <= SHORT_CALLS}
    longest = min(max(fed, default=1), LONGEST_CALL)
    ks.add(longest)
    cached = int(statistics.median(c for _, c in shapes)) if shapes else 16
    return sorted(ks), cached


def measure_block_costs(
    pair: LoadedPair,
    records: pd.DataFrame,
    input_ids: torch.Tensor,
    repeats: int,
    compile_mode: str | None,
) -> dict[str, CallTimes]:
    """Per-call costs of the large model and each small variant that this block's
    ``records`` called (an early-exit small shares the large model's layers: not modelled)."""
    models: dict[str, Any] = {"large": pair.large}
    models.update({v: m for v, m in pair.smalls.items() if not isinstance(m, EarlyExit)})
    costs = {}
    for name, model in models.items():
        if model is None:
            continue
        if name == "large":
            shapes = call_shapes(records, "large_call_shapes")
        else:
            mine = records[records["small_variant"] == name]
            shapes = call_shapes(mine, "small_call_shapes")
        if not shapes:
            continue
        ks, cached = probe_sizes(shapes)
        costs[name] = measure_paths(model, input_ids, ks, cached, repeats, 1, (compile_mode,))[
            compile_mode
        ]
    return costs


def costs_to_json(costs: dict[str, CallTimes]) -> dict[str, Any]:
    return {
        name: {"by_n_fed": {str(k): v for k, v in t.by_n_fed.items()}, "encoder": t.encoder}
        for name, t in costs.items()
    }


def costs_from_json(value: dict[str, Any]) -> dict[str, CallTimes]:
    return {
        name: CallTimes({int(k): float(v) for k, v in t["by_n_fed"].items()}, float(t["encoder"]))
        for name, t in (value or {}).items()
    }


def calls_of(value: Any) -> list:
    """A record's call shapes as a list (missing: none)."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    return list(value)


def modelled_latency(row: pd.Series, costs: dict[str, CallTimes]) -> float | None:
    """One record's modelled seconds (None where its calls are not recorded, e.g. HF's
    methods, or a model it called has no measured costs)."""
    large_calls, small_calls = (
        calls_of(row.get(c)) for c in ("large_call_shapes", "small_call_shapes")
    )
    if not large_calls and not small_calls:
        return None
    small = costs.get(row.get("small_variant")) if small_calls else None
    if (large_calls and "large" not in costs) or (small_calls and small is None):
        return None
    return predicted_latency(large_calls, small_calls, costs.get("large"), small)


def with_modelled_latency(records: pd.DataFrame, blocks: dict[str, dict]) -> pd.DataFrame:
    """``records`` with ``modelled_latency_s`` from their own block's measured costs
    (``blocks``: block id -> the block file's contents)."""
    costs = {block: costs_from_json(info.get("call_costs")) for block, info in blocks.items()}
    costs = {block: value for block, value in costs.items() if value}
    modelled = pd.Series(np.nan, index=records.index, dtype=float)
    if "block_id" not in records or not costs:
        return records.assign(modelled_latency_s=modelled)
    # only the records of blocks with measured costs (at paper scale, most have none); a
    # record the costs cannot model (HF methods) stays NaN
    for block, group in records[records["block_id"].isin(costs)].groupby("block_id"):
        values = [modelled_latency(row, costs[block]) for _, row in group.iterrows()]
        modelled[group.index] = [np.nan if value is None else value for value in values]
    return records.assign(modelled_latency_s=modelled)


def block_table(records: pd.DataFrame, blocks: dict[str, dict]) -> pd.DataFrame:
    """Per timing block and configuration: when and where it ran, its records, how many
    were timed under load, and measured over modelled latency (load and overhead show
    as a ratio that moves between blocks)."""
    timed = records.dropna(subset=["block_id"]) if "block_id" in records else records.iloc[:0]
    rows = []
    for (block, config), group in timed.groupby(["block_id", "config_id"], sort=False):
        info = blocks.get(block, {})
        modelled = group.get("modelled_latency_s")
        measured = group["latency_s"].sum()
        complete = modelled is not None and modelled.notna().all() and modelled.sum() > 0
        rows.append(
            {
                "block_id": block,
                "block_started": group["block_started"].iloc[0],
                "cpu_model": group["cpu_model"].iloc[0],
                "cpu_cores": group["cpu_cores"].iloc[0],
                "torch_threads": group["torch_threads"].iloc[0],
                "has_call_costs": bool(info.get("call_costs")),
                "config_id": config,
                "study": group["study"].iloc[0],
                "n_records": len(group),
                "n_loaded": int(loaded(group).sum()),
                "measured_s": measured,
                "modelled_s": modelled.sum() if complete else None,
                "measured_over_modelled": measured / modelled.sum() if complete else None,
            }
        )
    return pd.DataFrame(rows)
