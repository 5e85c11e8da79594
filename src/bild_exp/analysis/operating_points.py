"""Which configurations are best: Pareto frontiers per family, and the one operating-point
chooser (paper Table 1's rule and the ``ci`` rule) that the sweep, the bench and
``bild_exp.paper`` all call."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bild_exp.analysis.comparison import vanilla_row
from bild_exp.harness.config.plan import PARAM_COLUMNS


def pareto_mask(latency: Sequence[float], quality: Sequence[float]) -> list[bool]:
    """True for points no other point beats on both (lower latency, higher quality)."""
    points = list(zip(latency, quality, strict=True))
    mask = []
    for i, (lat_i, q_i) in enumerate(points):
        dominated = any(
            lat_j <= lat_i and q_j >= q_i and (lat_j < lat_i or q_j > q_i)
            for j, (lat_j, q_j) in enumerate(points)
            if j != i
        )
        mask.append(not dominated)
    return mask


def method_family(row: pd.Series) -> str:
    """Pareto curves are drawn per study and small-model variant (e.g. bild/aligned)."""
    variant = row["small_variant"]
    return row["study"] if variant in (None, "-") else f"{row['study']}/{variant}"


def add_pareto(summary: pd.DataFrame, quality: str) -> pd.DataFrame:
    summary = summary.copy()
    summary["family"] = summary.apply(method_family, axis=1)
    summary["pareto"] = False
    for _, group in summary.dropna(subset=["normalized_latency"]).groupby("family"):
        mask = pareto_mask(list(group["normalized_latency"]), list(group[quality]))
        summary.loc[group.index, "pareto"] = mask
    return summary


# What an operating point reports besides its quality: which run, how fast, its parameters.


# What an operating point reports besides its quality: which run, how fast, how sure, and
# every parameter of the run (PARAM_COLUMNS: a new method parameter is recorded unasked).
POINT_COLUMNS = (
    "config_id",
    "speedup",
    "speedup_low",
    "speedup_high",
    "quality_low",
    "quality_high",
    "quality_diff",
    "quality_diff_low",
    "quality_diff_high",
    "quality_p_value",
    "n_paired_examples",
    *PARAM_COLUMNS,
)
RULES = ("point", "ci")


def eligible_configs(
    group: pd.DataFrame, rule: str, quality: str, vanilla_quality: float, tolerance: float
) -> pd.DataFrame:
    """``point``: quality >= vanilla - tolerance (the paper's rule, on point estimates);
    ``ci``: the lower bound of the paired 95% interval of the quality difference is
    >= -tolerance (a reviewer's rule: the loss is bounded, not merely unobserved)."""
    if rule == "point":
        return group[group[quality] >= vanilla_quality - tolerance]
    if "quality_diff_low" not in group:
        return group.iloc[:0]
    return group[group["quality_diff_low"] >= -tolerance]


def best_point(
    group: pd.DataFrame, rule: str, quality: str, vanilla_quality: float, tolerance: float
) -> pd.Series | None:
    """The fastest configuration of ``group`` whose quality is within ``tolerance`` of
    vanilla large by ``rule`` (:func:`eligible_configs`); None when none is."""
    eligible = eligible_configs(group, rule, quality, vanilla_quality, tolerance)
    eligible = eligible.dropna(subset=["speedup"])
    return None if eligible.empty else eligible.loc[eligible["speedup"].idxmax()]


def vanilla_quality_of(summary: pd.DataFrame, group: pd.DataFrame, quality: str) -> float | None:
    """The quality of ``group``'s vanilla-large reference (same sampling settings)."""
    vanilla = vanilla_row(summary, group["config_id"].iloc[0])
    return None if vanilla is None else vanilla[quality]


def family_rows(summary: pd.DataFrame, family: str) -> pd.DataFrame:
    """The configurations of ``family`` (vanilla large excluded): a value of the summary's
    ``family`` column (``study``, or ``study/variant``: :func:`method_family`), or
    ``study/*`` for every small-model variant of a study."""
    others = summary[summary["method"] != "large"]
    if family.endswith("/*"):
        return others[others["study"] == family.removesuffix("/*")]
    return others[others["family"] == family]


def choose_point(
    summary: pd.DataFrame,
    family: str,
    quality: str,
    tolerance: float,
    rules: Sequence[str] = RULES,
) -> tuple[pd.Series | None, str | None]:
    """The fastest configuration of ``family`` (:func:`family_rows`) within ``tolerance``
    of its vanilla-large reference, by the first of ``rules`` that finds one, and that
    rule; (None, None) when no rule does or the family has no vanilla reference."""
    group = family_rows(summary, family)
    if group.empty:
        return None, None
    vanilla_quality = vanilla_quality_of(summary, group, quality)
    if vanilla_quality is None:
        return None, None
    for rule in rules:
        row = best_point(group, rule, quality, vanilla_quality, tolerance)
        if row is not None:
            return row, rule
    return None, None


def best_quality_at_speedup(
    group: pd.DataFrame, quality: str, min_speedup: float
) -> pd.Series | None:
    """The best-quality configuration of ``group`` at least ``min_speedup`` times as fast as
    vanilla large (paper Table 3's "match latency" row); None when none is."""
    fast = group.dropna(subset=[quality, "speedup"])
    fast = fast[fast["speedup"] >= min_speedup]
    return None if fast.empty else fast.loc[fast[quality].idxmax()]


def operating_points(
    summary: pd.DataFrame, quality: str, tolerances: Sequence[float] = (0.1, 1.0)
) -> pd.DataFrame:
    """Paper Table 1: per family, rule and tolerance, the best speedup whose quality is
    within ``tolerance`` of vanilla large (same sampling settings); ``rule`` says how
    "within" is judged (see :func:`eligible_configs`)."""
    rows = []
    for family, group in summary[summary["method"] != "large"].groupby("family"):
        vanilla_quality = vanilla_quality_of(summary, group, quality)
        if vanilla_quality is None:
            continue
        for rule in RULES:
            for tolerance in tolerances:
                best = best_point(group, rule, quality, vanilla_quality, tolerance)
                row = {"family": family, "rule": rule, "tolerance": tolerance}
                row["vanilla_quality"] = vanilla_quality
                row["quality"] = None if best is None else best[quality]
                row.update(
                    {name: None if best is None else best.get(name) for name in POINT_COLUMNS}
                )
                rows.append(row)
    return pd.DataFrame(rows)
