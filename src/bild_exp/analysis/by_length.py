"""The per-length view: examples binned by vanilla large's answer length, each
configuration's speedup per bin. On HumanEval the short answers mostly restate the
function's stub (copied from the prompt: easy for every draft source) and the long ones
do not, so one overall speedup hides where a method gains. Pure functions over records."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bild_exp.analysis.comparison import (
    exact_share,
    reference_config_ids,
    speedup_columns,
    stats_settings,
)
from bild_exp.harness.run.blocks import same_block_pairs

N_BINS = 4  # quartiles of vanilla's answer lengths
LENGTH_COLUMNS = [
    "config_id",
    "bin",
    "length_low",
    "length_high",
    "n_examples",
    "n_timing_pairs",
    "speedup",
    "speedup_low",
    "speedup_high",
    "exact_match_vs_large",
]


def length_bins(lengths: pd.Series, n_bins: int = N_BINS) -> pd.Series:
    """Each example's bin (0 = shortest) by quantiles of ``lengths`` (example id ->
    vanilla's answer length in tokens); fewer bins where lengths repeat."""
    if lengths.empty:
        return pd.Series(dtype=int)
    codes = pd.qcut(lengths.rank(method="first"), min(n_bins, len(lengths)), labels=False)
    return codes.astype(int)


def by_length(
    outputs: pd.DataFrame,
    timings: pd.DataFrame,
    summary: pd.DataFrame,
    settings: dict[str, Any] | None = None,
    n_bins: int = N_BINS,
) -> pd.DataFrame:
    """One row per (configuration, length bin): the bin's token range and examples, the
    speedup over the bin's same-block pairs with its stratified bootstrap interval, and
    the share of answers equal to vanilla's. ``outputs``: one record per (configuration,
    example); ``timings``: every timed record."""
    settings = stats_settings(settings)
    references = reference_config_ids(summary)
    by_config = dict(tuple(outputs.groupby("config_id", sort=False)))
    timed = dict(tuple(timings.groupby("config_id", sort=False)))
    rows = []
    for config in summary["config_id"]:
        reference = references.get(config)
        if reference is None or reference not in by_config:
            continue
        vanilla = by_config[reference].set_index("example_id")
        bins = length_bins(vanilla["n_tokens"].astype(float), n_bins)
        mine = by_config[config].set_index("example_id")
        pairs = same_block_pairs(timed.get(config, mine.reset_index()), timed[reference])
        for code in sorted(bins.unique()):
            examples = bins.index[bins == code]
            lengths = vanilla.loc[examples, "n_tokens"]
            shared = mine.index.intersection(examples)
            row = {
                "config_id": config,
                "bin": int(code),
                "length_low": int(lengths.min()),
                "length_high": int(lengths.max()),
                "n_examples": len(shared),
                "n_timing_pairs": 0,
                "speedup": np.nan,
                "speedup_low": np.nan,
                "speedup_high": np.nan,
                "exact_match_vs_large": (
                    exact_share(mine.loc[shared, "tokens"], vanilla.loc[shared, "tokens"])
                    if len(shared)
                    else np.nan
                ),
            }
            in_bin = pairs[pairs["example_id"].isin(set(examples))]
            if len(in_bin):
                speed, _ = speedup_columns(in_bin, settings)
                row.update(
                    n_timing_pairs=len(in_bin),
                    speedup=speed["speedup"],
                    speedup_low=speed["speedup_low"],
                    speedup_high=speed["speedup_high"],
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=LENGTH_COLUMNS)


def length_table(view: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The view to read: one row per configuration, one column per bin holding the
    speedup and its interval (bins named by their token ranges)."""
    if view.empty:
        return pd.DataFrame()
    names = summary.set_index("config_id")
    label = {
        config: f"{names.at[config, 'study']} ({names.at[config, 'small_variant']})"
        for config in names.index
    }
    ranges = view.groupby("bin")[["length_low", "length_high"]].agg(
        {"length_low": "min", "length_high": "max"}
    )
    columns = {
        code: f"{int(r.length_low)}-{int(r.length_high)} tokens" for code, r in ranges.iterrows()
    }
    cells = view.assign(
        cell=[
            "" if pd.isna(s) else f"{s:.2f} [{lo:.2f}, {hi:.2f}]"
            for s, lo, hi in zip(
                view["speedup"], view["speedup_low"], view["speedup_high"], strict=True
            )
        ]
    )
    table = cells.pivot(index="config_id", columns="bin", values="cell").rename(columns=columns)
    counts = view.groupby("bin")["n_examples"].max()
    table.index = [label.get(config, config) for config in table.index]
    table.index.name = "configuration"
    table.columns.name = None
    header = {columns[code]: f"{columns[code]} (n={int(counts[code])})" for code in columns}
    return table.rename(columns=header)
