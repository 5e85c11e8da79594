"""Paper-style figures from summary rows (matplotlib, PNG and PDF).

- :func:`pareto_figure`: Figure 4 (quality vs normalised latency; vanilla large marked X,
  horizontal lines at vanilla quality and one point below; one curve per method family,
  e.g. unaligned vs aligned BiLD). Ablations (Figure 5) are the same plot over the
  ablation families.
- :func:`threshold_map`: Figure 10 (quality and speedup over alpha_FB x alpha_RB).
- :func:`oracle_curve`: Figure 2 (quality vs fraction of tokens the large model replaced).
- :func:`acceptance_figure`: per-position acceptance of draft tokens per method family.
- :func:`token_authorship`: Figure 9 (which model wrote each token of one output).
- :func:`cost_figure`: Figure 8 (analytical FLOPs, bytes moved and arithmetic intensity per
  token of vanilla large, vanilla small and BiLD's operating points, normalised to vanilla).

Figures 6 and 7 (BiLD early exit vs the full model, vs CALM) are :func:`pareto_figure`
over the families ``small/early_exit``, ``bild/early_exit`` and ``calm``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bild_exp.analysis.comparison import vanilla_row  # noqa: E402

FAMILY_LABELS = {
    "bild/base": "BiLD (unaligned)",
    "bild/aligned": "BiLD (aligned)",
    "bild_no_rollback/base": "BiLD, no rollback",
    "bild_no_fallback/base": "BiLD, no fallback",
    "speculative/base": "speculative",
    "bild_lossless/base": "BiLD lossless",
    "bild_long/base": "BiLD, 20 small steps",
    "hf_assisted/base": "HF assisted",
    "small/base": "vanilla small",
    "small/aligned": "vanilla small (aligned)",
    "bild/early_exit": "BiLD (early exit)",
    "small/early_exit": "exit layers only",
    "prompt_lookup": "prompt lookup",
    "calm": "CALM",
    "calm_full": "CALM model, no exit",
    "bild_lossless_quantized/int8": "BiLD lossless, int8 small",
    "bild_lossless_quantized/int4": "BiLD lossless, int4 small",
    "bild_quantized/int8": "BiLD, int8 small",
    "bild_quantized/int4": "BiLD, int4 small",
    "speculative_quantized/int8": "speculative, int8 small",
    "speculative_quantized/int4": "speculative, int4 small",
    "bild_lossless_ngram/base": "BiLD lossless, n-gram + small",
    "bild_lossless_ngram/int8": "BiLD lossless, n-gram + int8 small",
    "bild_lossless_ngram/int4": "BiLD lossless, n-gram + int4 small",
    "bild_ngram/base": "BiLD, n-gram + small",
    "bild_ngram/int8": "BiLD, n-gram + int8 small",
    "bild_ngram/int4": "BiLD, n-gram + int4 small",
    "speculative_ngram/base": "speculative, n-gram + small",
    "speculative_ngram/int8": "speculative, n-gram + int8 small",
    "speculative_ngram/int4": "speculative, n-gram + int4 small",
    "bild_lossless/int4": "BiLD lossless, int4 small",
    "speculative/int4": "speculative, int4 small",
}
COST_COLUMNS = {
    "flops_per_token": "FLOPs",
    "mops_bytes_per_token": "memory traffic (MOPs)",
    "arithmetic_intensity": "arithmetic intensity",
}


def save(figure: plt.Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return paths


def pareto_figure(
    summary: pd.DataFrame,
    quality: str,
    stem: Path,
    title: str = "",
    families: list[str] | None = None,
) -> list[Path]:
    """Quality vs latency normalised to vanilla large; frontier lines per family."""
    figure, axis = plt.subplots(figsize=(6, 4.2))
    vanilla = vanilla_row(summary)
    others = summary[(summary["method"] != "large") & summary["normalized_latency"].notna()]
    for family, group in others.groupby("family"):
        if families and family not in families:
            continue
        label = FAMILY_LABELS.get(family, family)
        points = axis.scatter(
            group["normalized_latency"], group[quality], s=18, alpha=0.5, label=label
        )
        draw_intervals(axis, group, quality, points.get_facecolor()[0])
        frontier = group[group["pareto"]].sort_values("normalized_latency")
        axis.plot(
            frontier["normalized_latency"],
            frontier[quality],
            color=points.get_facecolor()[0],
            lw=1.5,
        )
    mark_indistinguishable(axis, others, quality, families)
    if vanilla is not None:
        vanilla_quality = vanilla[quality]
        axis.scatter(
            [1.0],
            [vanilla_quality],
            marker="x",
            s=80,
            color="black",
            label="vanilla large",
            zorder=5,
        )
        axis.axhline(vanilla_quality, color="gray", ls="--", lw=0.8)
        axis.axhline(vanilla_quality - 1, color="gray", ls=":", lw=0.8, label="vanilla - 1")
    axis.set_xlabel("latency normalised to vanilla large")
    axis.set_ylabel(quality)
    axis.set_title(title)
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return save(figure, stem)


def draw_intervals(axis: plt.Axes, group: pd.DataFrame, quality: str, color) -> None:
    """Error bars on both axes: the quality interval and the speedup interval (as
    normalised latency, 1/speedup), where the summary has them."""
    needed = ["quality_low", "quality_high", "speedup_low", "speedup_high"]
    if not set(needed) <= set(group):
        return
    group = group.dropna(subset=needed)
    if group.empty:
        return
    x, y = group["normalized_latency"], group[quality]
    axis.errorbar(
        x,
        y,
        xerr=[
            (x - 1 / group["speedup_high"]).clip(lower=0),
            (1 / group["speedup_low"] - x).clip(lower=0),
        ],
        yerr=[(y - group["quality_low"]).clip(lower=0), (group["quality_high"] - y).clip(lower=0)],
        fmt="none",
        ecolor=color,
        alpha=0.35,
        lw=0.8,
    )


def indistinguishable_from_vanilla(summary: pd.DataFrame) -> pd.Series:
    """True where the paired interval of the quality difference contains zero."""
    if "quality_diff_low" not in summary:
        return pd.Series(False, index=summary.index)
    return (summary["quality_diff_low"] <= 0) & (summary["quality_diff_high"] >= 0)


def mark_indistinguishable(
    axis: plt.Axes, others: pd.DataFrame, quality: str, families: list[str] | None
) -> None:
    """Ring the points whose quality cannot be told apart from vanilla large's."""
    if families:
        others = others[others["family"].isin(families)]
    same = others[indistinguishable_from_vanilla(others)]
    if same.empty:
        return
    axis.scatter(
        same["normalized_latency"],
        same[quality],
        s=60,
        facecolors="none",
        edgecolors="black",
        lw=0.7,
        label="quality not distinguishable from vanilla",
    )


def acceptance_figure(summary: pd.DataFrame, stem: Path) -> list[Path]:
    """Per-position acceptance (probability that the i-th draft token a large pass checks
    is kept), pooled over each family's configurations; nothing is drawn without data."""
    if "position_drafted" not in summary:
        return []
    rows = summary.dropna(subset=["position_drafted"])
    if rows.empty:
        return []
    figure, axis = plt.subplots(figsize=(6, 4))
    for family, group in rows.groupby("family"):
        accepted, drafted = pooled_positions(group)
        positions = [i + 1 for i, d in enumerate(drafted) if d]
        rates = [a / d for a, d in zip(accepted, drafted, strict=True) if d]
        axis.plot(positions, rates, marker="o", ms=3, label=FAMILY_LABELS.get(family, family))
    source_lines(axis, rows)
    axis.set_xlabel("draft position checked by the large model")
    axis.set_ylabel("acceptance probability")
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return save(figure, stem)


def length_figure(view: pd.DataFrame, summary: pd.DataFrame, stem: Path) -> list[Path]:
    """Speedup over vanilla large per bin of vanilla's answer length (the per-length view,
    :func:`bild_exp.analysis.by_length.by_length`), one line per configuration with its
    interval as a band; nothing is drawn without data."""
    view = view.dropna(subset=["speedup"])
    if view.empty:
        return []
    families = summary.set_index("config_id")["family"] if "family" in summary else None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for config, rows in view.groupby("config_id", sort=False):
        family = families.get(config, config) if families is not None else config
        middle = (rows["length_low"] + rows["length_high"]) / 2
        line = axis.plot(
            middle, rows["speedup"], marker="o", ms=3, label=FAMILY_LABELS.get(family, family)
        )
        axis.fill_between(
            middle, rows["speedup_low"], rows["speedup_high"], alpha=0.12, color=line[0].get_color()
        )
    axis.axhline(1.0, color="black", lw=0.8)
    axis.set_xlabel("vanilla large's answer length (tokens; bin midpoints)")
    axis.set_ylabel("speedup over vanilla large")
    axis.legend(fontsize=6, ncol=2)
    axis.grid(alpha=0.3)
    return save(figure, stem)


def source_lines(axis: plt.Axes, rows: pd.DataFrame) -> None:
    """Configurations with two draft sources (``ngram+small``): each source's own
    per-position acceptance (positions from the start of its part of a pass), dashed."""
    if "ngram_acceptance_by_position" not in rows:
        return
    for _, row in rows.dropna(subset=["ngram_acceptance_by_position"]).iterrows():
        label = FAMILY_LABELS.get(row["family"], row["family"])
        for source, style in (("ngram", "--"), ("small", ":")):
            rates = json.loads(row[f"{source}_acceptance_by_position"])
            positions = list(range(1, len(rates) + 1))
            axis.plot(positions, rates, style, marker=".", ms=3, label=f"{label}: {source} part")


def pooled_positions(group: pd.DataFrame) -> tuple[list[int], list[int]]:
    """Summed per-position accepted and checked counts of several configurations."""
    accepted: list[int] = []
    drafted: list[int] = []
    for acc_text, drafted_text in zip(
        group["position_accepted"], group["position_drafted"], strict=True
    ):
        for totals, counts in (
            (accepted, json.loads(acc_text)),
            (drafted, json.loads(drafted_text)),
        ):
            totals.extend([0] * (len(counts) - len(totals)))
            for i, count in enumerate(counts):
                totals[i] += count
    return accepted, drafted


def threshold_map(
    summary: pd.DataFrame, quality: str, stem: Path, family: str = "bild/base"
) -> list[Path]:
    """Quality and speedup over the (fallback, rollback) threshold grid of one family."""
    group = summary[summary["family"] == family]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, value in zip(axes, (quality, "speedup"), strict=True):
        grid = group.pivot_table(
            index="rollback_threshold", columns="fallback_threshold", values=value
        )
        image = axis.imshow(grid.values, origin="lower", aspect="auto", cmap="viridis")
        axis.set_xticks(range(len(grid.columns)), [f"{c:g}" for c in grid.columns])
        axis.set_yticks(range(len(grid.index)), [f"{r:g}" for r in grid.index])
        axis.set_xlabel("fallback threshold")
        axis.set_ylabel("rollback threshold")
        axis.set_title(f"{value} ({FAMILY_LABELS.get(family, family)})")
        figure.colorbar(image, ax=axis)
    return save(figure, stem)


def oracle_curve(summary: pd.DataFrame, quality: str, stem: Path) -> list[Path]:
    """Quality vs the percentage of tokens the large model replaced (oracle study)."""
    group = summary[summary["method"] == "oracle"].sort_values("oracle_threshold")
    figure, axis = plt.subplots(figsize=(5, 4))
    replaced = 100 * group["n_oracle_replacements"] / group["n_tokens"]
    axis.plot(replaced, group[quality], marker="o")
    vanilla = vanilla_row(summary)
    if vanilla is not None:
        axis.axhline(vanilla[quality], color="gray", ls="--", lw=0.8, label="vanilla large")
        axis.legend(fontsize=7)
    axis.set_xlabel("% tokens replaced by the large model")
    axis.set_ylabel(quality)
    return save(figure, stem)


def token_authorship(
    pieces: list[str], from_large: list[bool], stem: Path, width: int = 60
) -> list[Path]:
    """One output with each token coloured by author (orange: large model, blue: small)."""
    lines, line, length = [], [], 0
    for piece, large in zip(pieces, from_large, strict=True):
        if length + len(piece) > width and line:
            lines.append(line)
            line, length = [], 0
        line.append((piece, large))
        length += len(piece) + 1
    lines.append(line)
    figure, axis = plt.subplots(figsize=(8, 0.4 * len(lines) + 0.6))
    axis.axis("off")
    for row, tokens in enumerate(lines):
        x = 0.0
        for piece, large in tokens:
            color = "tab:orange" if large else "tab:blue"
            axis.text(x, -row, piece, color=color, family="monospace", fontsize=10, va="top")
            x += (len(piece) + 1) / width
    axis.set_xlim(0, 1.05)
    axis.set_ylim(-len(lines), 0.5)
    axis.set_title("blue: small model, orange: large model", fontsize=9)
    return save(figure, stem)


def cost_rows(summary: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Vanilla large, vanilla small and each BiLD operating point, costs normalised to vanilla."""
    vanilla = vanilla_row(summary)
    if vanilla is None or pd.isna(vanilla["flops_per_token"]):
        return pd.DataFrame()
    chosen = [("vanilla large", vanilla)]
    for _, row in summary[summary["method"] == "small"].iterrows():
        chosen.append((FAMILY_LABELS.get(row["family"], row["family"]), row))
    by_id = summary.set_index("config_id")
    for _, point in points.dropna(subset=["config_id"]).iterrows():
        if not str(point["family"]).startswith("bild"):
            continue
        label = FAMILY_LABELS.get(point["family"], point["family"])
        rule = point.get("rule", "point")  # files written before the ci rule lack the column
        within = f"within {point['tolerance']:g}" + (" (ci rule)" if rule == "ci" else "")
        chosen.append((f"{label}, {within}", by_id.loc[point["config_id"]]))
    rows = []
    for label, row in chosen:
        entry = {
            "config": label,
            "speedup": row.get("speedup"),
            "speedup_low": row.get("speedup_low"),
            "speedup_high": row.get("speedup_high"),
        }
        for column in COST_COLUMNS:
            entry[column] = row[column]
            entry[f"{column}_normalized"] = row[column] / vanilla[column]
        rows.append(entry)
    return pd.DataFrame(rows)


def cost_figure(rows: pd.DataFrame, stem: Path) -> list[Path]:
    """Figure 8: grouped bars of FLOPs, MOPs and arithmetic intensity, vanilla large = 1.

    ``rows``: :func:`cost_rows` of one sweep.
    """
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(rows), 1)
    for index, (_, row) in enumerate(rows.iterrows()):
        values = [row[f"{column}_normalized"] for column in COST_COLUMNS]
        offsets = [group + (index - (len(rows) - 1) / 2) * width for group in range(3)]
        axis.bar(offsets, values, width, label=row["config"])
    axis.set_xticks(range(3), list(COST_COLUMNS.values()))
    axis.axhline(1.0, color="gray", ls="--", lw=0.8)
    axis.set_ylabel("per generated token, normalised to vanilla large")
    axis.set_title("analytical cost per token")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3, axis="y")
    return save(figure, stem)
